"""scikit-learn interoperability: the parameter protocol, clone, model selection."""

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from dmc import ConvergenceWarning, DeepMatrixCompleter, RatingsCompleter
from dmc._base import ParamsMixin
from dmc.datasets import make_low_rank, uniform_mask

sklearn = pytest.importorskip("sklearn", reason="scikit-learn not installed (dmc[sklearn])")
from sklearn.base import BaseEstimator, clone  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold, ParameterGrid, cross_val_score  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def triplets():
    """Ratings of a rank-2 user x item matrix plus noise, 60 users x 40 items, 50% observed."""
    rng = np.random.default_rng(0)
    truth = 3 + rng.normal(size=(60, 2)) @ rng.normal(size=(2, 40)) / 1.5
    users, items = np.nonzero(rng.random((60, 40)) < 0.5)
    ratings = truth[users, items] + 0.1 * rng.normal(size=users.size)
    return np.column_stack([users, items]), ratings


@pytest.mark.parametrize("cls", [DeepMatrixCompleter, RatingsCompleter])
def test_estimators_are_sklearn_estimators(cls):
    model = cls(rank=4, depth=4, random_state=3)
    assert isinstance(model, BaseEstimator)
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    assert model.set_params(rank=2) is model and model.rank == 2
    with pytest.raises(ValueError, match="(?i)invalid parameter"):
        model.set_params(rnak=2)
    assert "depth=4" in repr(model)


def test_clone_of_a_fitted_model_is_unfitted():
    M, mask = make_low_rank((20, 20), 2, 0.5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = DeepMatrixCompleter(rank=2, max_iter=20, random_state=0).fit(M, mask)
    copy = clone(model)
    assert not hasattr(copy, "left_factor_") and copy.rank == 2


def test_deep_matrix_completer_score_is_negative_rmse_on_held_out_entries():
    M, mask = make_low_rank((50, 40), 2, 0.5, random_state=0)
    held_out = mask & (uniform_mask(M.shape, 0.2, random_state=1))
    model = DeepMatrixCompleter(rank=3, random_state=0).fit(M, mask & ~held_out)
    predicted = model.transform()[held_out]
    expected = -np.sqrt(np.mean((predicted - M[held_out]) ** 2))
    assert model.score(M, held_out) == pytest.approx(expected, rel=1e-12)
    assert -1e-3 < model.score(M, held_out) <= 0
    with pytest.raises(ValueError, match="fitted on shape"):
        model.score(M[:10], held_out[:10])


def test_parameter_search_over_rank_and_depth_with_held_out_entries():
    """The search the docs show: clone + ParameterGrid, scored on held-out entries."""
    M, mask = make_low_rank((40, 40), 3, 0.5, random_state=0)
    validation = mask & uniform_mask(M.shape, 0.15, random_state=1)
    scores = {}
    for params in ParameterGrid({"rank": [1, 4], "depth": [3]}):
        model = clone(DeepMatrixCompleter(tol=1e-6, random_state=0)).set_params(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(M, mask & ~validation)
        scores[params["rank"]] = model.score(M, validation)
    # rank 1 cannot fit a rank-3 matrix; an overestimated budget of 4 can
    assert scores[4] > scores[1] and scores[4] > -1e-2


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
def test_ratings_completer_takes_scikit_learn_forms(triplets):
    X, y = triplets
    model = RatingsCompleter(rank=3, max_iter=2000, random_state=0)
    model.fit(X, y)
    explicit = RatingsCompleter(rank=3, max_iter=2000, random_state=0).fit(X[:, 0], X[:, 1], y)
    np.testing.assert_array_equal(model.predict(X), explicit.predict(X[:, 0], X[:, 1]))
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"user": X[:, 0], "item": X[:, 1]})
    np.testing.assert_array_equal(model.predict(frame), model.predict(X))
    from_frame = RatingsCompleter(rank=3, max_iter=2000, random_state=0).fit(frame, y)
    np.testing.assert_array_equal(from_frame.predict(X), model.predict(X))
    residual = np.sum((model.predict(X) - y) ** 2)
    assert model.score(X, y) == pytest.approx(1 - residual / np.sum((y - y.mean()) ** 2))
    with pytest.raises(TypeError, match=r"\(n, 2\)"):
        model.predict(np.zeros((3, 3), dtype=int))
    with pytest.raises(TypeError, match="ratings once"):
        RatingsCompleter().fit(X, y, y=y)
    with pytest.raises(TypeError, match="needs the ratings"):
        RatingsCompleter().fit(X)


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")  # rank 1 / depth 2 fits are slow
def test_grid_search_cv_on_ratings(triplets):
    X, y = triplets
    # shuffled folds: X is sorted by user, and unshuffled folds would hold out whole users
    folds = KFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(RatingsCompleter(max_iter=2000, random_state=0),
                          {"rank": [1, 3], "depth": [2, 3]}, cv=folds,
                          scoring="neg_root_mean_squared_error")
    search.fit(X, y)
    assert set(search.best_params_) == {"rank", "depth"}
    assert np.all(np.isfinite(search.cv_results_["mean_test_score"]))
    # rank 3 reaches about 0.14 on a split like these; rank 1 stays at about 0.77
    assert search.best_params_["rank"] == 3 and search.best_score_ > -0.2
    assert isinstance(search.best_estimator_, RatingsCompleter)
    scores = cross_val_score(RatingsCompleter(rank=3, max_iter=2000, random_state=0), X, y,
                             cv=KFold(2, shuffle=True, random_state=0))
    assert scores.shape == (2,) and np.all(scores > 0.9)  # R^2


def test_without_scikit_learn_the_fallback_protocol_is_used():
    script = textwrap.dedent("""
        import sys
        sys.modules["sklearn"] = None  # as if scikit-learn were not installed
        from dmc import DeepMatrixCompleter
        from dmc._base import ParamsMixin
        from dmc.datasets import make_low_rank
        model = DeepMatrixCompleter(rank=2, max_iter=20, tol=1e-2, random_state=0)
        assert isinstance(model, ParamsMixin)
        assert model.set_params(depth=4).get_params()["depth"] == 4
        try:
            model.set_params(rnak=2)
        except ValueError as error:
            assert "Invalid parameter" in str(error)
        M, mask = make_low_rank((20, 20), 2, 0.5, random_state=0)
        model.fit(M, mask)
        print(repr(model))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT),
                              "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "DeepMatrixCompleter(depth=4, max_iter=20, random_state=0, rank=2, tol=0.01)"


def test_params_mixin_matches_sklearn_protocol():
    class Toy(ParamsMixin):
        def __init__(self, a=1, *, b="x"):
            self.a = a
            self.b = b

    toy = Toy(a=2)
    assert toy.get_params() == {"a": 2, "b": "x"}
    assert repr(toy) == "Toy(a=2)"
    assert clone(toy).get_params() == toy.get_params()
