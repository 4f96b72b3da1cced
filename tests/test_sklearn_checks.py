"""scikit-learn's ``check_estimator`` checks that apply to a matrix completer (issue 13).

``check_estimator`` as a whole assumes a feature-matrix estimator: ``fit(X,
y)`` with X of shape (n_samples, n_features) and ``predict(X)``.  The dmc
estimators take a partially observed matrix (``DeepMatrixCompleter.fit(M,
mask)``, ``predict(rows, cols)``) or (user, item) id pairs
(``RatingsCompleter``), so the checks that feed random feature matrices do not
apply; docs/model-selection.md lists them and says why.  The ones below test
the estimator protocol itself and run here whenever scikit-learn is installed.
"""

import warnings

import pytest

estimator_checks = pytest.importorskip("sklearn.utils.estimator_checks")

from dmc import DeepMatrixCompleter, RatingsCompleter  # noqa: E402

PROTOCOL_CHECKS = [
    "check_estimator_cloneable", "check_estimator_repr", "check_no_attributes_set_in_init",
    "check_parameters_default_constructible", "check_get_params_invariance", "check_set_params",
    "check_do_not_raise_errors_in_init_or_set_params", "check_estimator_tags_renamed",
    "check_valid_tag_types", "check_mixin_order",
]
# DeepMatrixCompleter passes these as well: it accepts sparse input and rejects 1-D input
MATRIX_CHECKS = ["check_estimator_sparse_array", "check_estimator_sparse_matrix",
                 "check_estimator_sparse_tag", "check_fit1d", "check_requires_y_none"]
# RatingsCompleter.predict(X) has scikit-learn's signature, so its unfitted check applies
RATINGS_CHECKS = ["check_estimators_unfitted"]


def _cases():
    for check in PROTOCOL_CHECKS + MATRIX_CHECKS:
        yield DeepMatrixCompleter(rank=1, max_iter=5), check
    for check in PROTOCOL_CHECKS + RATINGS_CHECKS:
        yield RatingsCompleter(rank=1, max_iter=5), check


@pytest.mark.parametrize("estimator, check", list(_cases()),
                         ids=lambda x: x if isinstance(x, str) else type(x).__name__)
def test_scikit_learn_check(estimator, check):
    function = getattr(estimator_checks, check, None)
    if function is None:
        pytest.skip(f"this scikit-learn has no {check}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at max_iter=5, scikit-learn's own notes
        function(type(estimator).__name__, estimator)
