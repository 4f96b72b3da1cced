"""DeepMatrixCompleter's own pieces against hand-built references (tiny fits).

Range checks at their exact boundaries, the rescaling of the fitted factors,
the step-size and subspace wiring of ``fit``, and the outputs against the
dense product of the factors.  Found by mutation testing (tools/mutation.py).
"""

import math
import warnings

import numpy as np
import pytest

from dmc import ConvergenceWarning, DeepMatrixCompleter, models, steps, subspace
from dmc.datasets import make_low_rank
from dmc.estimator import _check_output_range, _check_raw_range, _rescaled
from dmc.observations import as_observations


def _fit(M, mask=None, **params):
    params.setdefault("rank", 2)
    params.setdefault("max_iter", 3)
    params.setdefault("random_state", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return DeepMatrixCompleter(**params).fit(M, mask)


@pytest.fixture(scope="module")
def problem():
    return make_low_rank((12, 10), 2, 0.6, random_state=0)


def test_raw_range_boundaries():
    for exponent in (-63, 0, 64):
        _check_raw_range(exponent)
    for exponent in (-64, 65):
        with pytest.raises(ValueError, match="outside the range normalize=False supports"):
            _check_raw_range(exponent)


@pytest.mark.parametrize("name", ["float32", "float64"])
def test_output_range_boundaries(name):
    info = np.finfo(name)
    tiny, high = float(info.tiny), float(info.max) / 16
    for ok in (tiny, 1.0, high):
        _check_output_range(ok, name)
    for bad in (tiny * 0.5, np.nextafter(high, np.inf), 0.0):
        with pytest.raises(ValueError, match=f"do not fit the model's dtype {name}"):
            _check_output_range(bad, name)


@pytest.mark.parametrize("n_inner", [0, 1, 3])
def test_rescaled_scales_the_product_and_keeps_factors_balanced(n_inner):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((4, 2))] + [rng.standard_normal((2, 2)) for _ in range(n_inner)] \
        + [rng.standard_normal((3, 2))]
    original = [a.copy() for a in arrays]
    factors = models.DeepFactors.from_arrays(arrays)
    out = _rescaled(factors, 8.0)
    X = original[0]
    for w in reversed(original[1:-1]):
        X = X @ w
    np.testing.assert_allclose(models.end_to_end(out), 8.0 * X @ original[-1].T, rtol=1e-12)
    share = 8.0 ** (1.0 / (n_inner if n_inner else 2))
    scaled = out.inner if n_inner else [out.left, out.right]
    before = original[1:-1] if n_inner else [original[0], original[-1]]
    for a, b in zip(scaled, before):
        np.testing.assert_allclose(a, share * b, rtol=1e-12)
    if n_inner:  # the outer factors keep their size
        np.testing.assert_array_equal(out.left, original[0])
        np.testing.assert_array_equal(out.right, original[-1])
    assert _rescaled(factors, 1.0) is factors


def test_fit_outputs_are_the_product_of_the_fitted_factors(problem):
    M, mask = problem
    for params in ({"method": "compressed"}, {"method": "narrow", "depth": 2},
                   {"method": "original", "depth": 3}):
        model = _fit(M, mask, **params)
        chain = [model.left_factor_, *model.inner_factors_, model.right_factor_]
        X = models.end_to_end(models.DeepFactors.from_arrays(chain))
        np.testing.assert_allclose(model.transform(), X, rtol=1e-12)
        row, col = model.get_low_rank_factors()
        np.testing.assert_allclose(row @ col.T, X, rtol=1e-10, atol=1e-14)
        row_np, col_np = model.get_low_rank_factors(as_numpy=True)
        assert isinstance(row_np, np.ndarray) and row_np.shape[0] == 12 and col_np.shape[0] == 10
        rows, cols = np.array([0, 11, 3]), np.array([9, 0, 4])
        np.testing.assert_allclose(model.predict(rows, cols), X[rows, cols], rtol=1e-10)
        np.testing.assert_allclose(model.predict(list(rows), list(cols), as_numpy=True), X[rows, cols],
                                   rtol=1e-10)
        assert model.predict(np.array([], dtype=int), np.array([], dtype=int)).shape == (0,)
        # score: minus the RMSE over the observed entries, by hand
        expected = -np.sqrt(np.mean((X - M)[mask] ** 2))
        assert model.score(M, mask) == pytest.approx(expected, rel=1e-10)
        assert model.shape_ == (12, 10)


def test_widths_and_depths_of_the_three_models(problem):
    M, mask = problem
    compressed = _fit(M, mask, rank=2, depth=4)
    assert compressed.left_factor_.shape == (12, 4) and len(compressed.inner_factors_) == 4
    narrow = _fit(M, mask, rank=2, depth=3, method="narrow")
    assert narrow.left_factor_.shape == (12, 4) and len(narrow.inner_factors_) == 1
    original = _fit(M, mask, rank=2, depth=3, method="original")
    assert original.left_factor_.shape == (12, 12) and original.right_factor_.shape == (10, 12)
    wide = _fit(M, mask, rank=2, depth=3, method="original", width=7)
    assert wide.left_factor_.shape == (12, 7)


def test_rank_boundary_is_half_the_smaller_side(problem):
    M, mask = problem
    assert _fit(M, mask, rank=5).left_factor_.shape == (12, 10)
    with pytest.raises(ValueError, match="rank=6 is too large"):
        _fit(M, mask, rank=6)


def test_compressed_start_and_lr_follow_the_initial_gradient(problem):
    """With max_iter small and lr tiny, the first record is the documented start."""
    M, mask = problem
    eps, depth = 1e-2, 3
    model = _fit(M, mask, rank=2, depth=depth, init_scale=eps, max_iter=1, record_every=1)
    obs = as_observations(M, mask)
    exponent = math.frexp(np.max(np.abs(obs.values)))[1]
    unit = as_observations(np.ldexp(M, -exponent), mask)
    rng = np.random.default_rng(0)
    q = subspace.RandomOrthogonal(M.shape, rng)
    G0 = subspace.initial_gradient(unit, q, eps**depth)
    s1 = np.linalg.svd(G0.toarray(), compute_uv=False)[:2]
    np.testing.assert_allclose(model.initial_singular_values_, np.ldexp(s1, exponent), rtol=1e-8)
    p = mask.mean()
    relative = s1[0] / p / 10.0
    assert model.scale_ == pytest.approx(relative * 2.0**exponent, rel=1e-8)
    assert model.lr_ == pytest.approx(models.spectral_step_size(s1[0] / relative, p, depth), rel=1e-8)
    # first record: loss of the start E0 restricted to the subspace, in units of M
    spectrum = subspace.top_singular_triplets(G0, 2, rng)
    U, V = subspace.invariant_subspace(spectrum, q, rng)
    X0 = models.end_to_end(models.init_compressed(U, V, depth, eps)) * model.scale_
    assert model.history_["train_loss"][0] == pytest.approx(0.5 * np.sum((X0 - M)[mask] ** 2), rel=1e-8)


def test_normalize_false_keeps_the_data_unit_and_its_start(problem):
    M, mask = problem
    eps, depth = 0.1, 3
    model = _fit(8.0 * M, mask, rank=2, depth=depth, init_scale=eps, normalize=False, max_iter=1,
                 record_every=1, lr=1e-9, step_rule="constant")
    assert model.scale_ == 1.0 and model.lr_ == 1e-9
    obs = as_observations(8.0 * M, mask)
    exponent = math.frexp(np.max(np.abs(obs.values)))[1]
    unit = as_observations(np.ldexp(8.0 * M, -exponent), mask)
    rng = np.random.default_rng(0)
    q = subspace.RandomOrthogonal(M.shape, rng)
    G0 = subspace.initial_gradient(unit, q, math.ldexp(eps**depth, -exponent))  # P(E0 - M) / c
    s1 = np.linalg.svd(G0.toarray(), compute_uv=False)[:2]
    np.testing.assert_allclose(model.initial_singular_values_, np.ldexp(s1, exponent), rtol=1e-8)


def test_step_rule_and_context_reach_the_solver(problem, monkeypatch):
    M, mask = problem
    seen = {}
    original_init = steps.ConstantStep.init

    def spy(self, factors, context=None):
        seen["context"] = context
        return original_init(self, factors, context)
    monkeypatch.setattr(steps.ConstantStep, "init", spy)
    model = _fit(M, mask, rank=2, step_rule="constant", gamma=0.25, lr=0.01)
    ctx = seen["context"]
    assert ctx.lr == 0.01 and ctx.outer_ratio == 0.25 and ctx.xp.__name__.endswith("numpy")
    assert ctx.observed_fraction == pytest.approx(mask.mean())
    # normalized: s_1 / p of the fitted (divided) data is the reference scale 10
    assert ctx.target_scale == pytest.approx(10.0, rel=1e-12)
    assert model.initial_singular_values_[0] / model.scale_ / mask.mean() == pytest.approx(10.0)
    _fit(M, mask, rank=2, method="narrow", lr=0.01, gamma=0.25)
    assert seen["context"].outer_ratio == 1.0  # wide models: one step for every factor
    assert type(DeepMatrixCompleter(method="narrow")._step_rule()) is steps.ConstantStep
    assert type(DeepMatrixCompleter()._step_rule()) is steps.Momentum


def test_fit_records_every_and_the_callback_record(problem):
    M, mask = problem
    model = _fit(M, mask, max_iter=7, record_every=3, tol=0.0)
    np.testing.assert_array_equal(model.history_["iteration"], [0, 3, 6, 7])
    assert model.n_iter_ == 7 and model.stop_reason_ == "max_iter" and model.converged_ is False


def test_recovery_error_is_in_units_of_m(problem):
    M, mask = problem
    model = _fit(M, mask, max_iter=1, record_every=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(M, mask, ground_truth=M)
    X = model.transform()
    assert model.history_["recovery_error"][-1] == pytest.approx(
        np.linalg.norm(X - M) / np.linalg.norm(M), rel=1e-6)
    with pytest.raises(ValueError, match="ground_truth must be finite"):
        model.fit(M, mask, ground_truth=np.where(mask, M, np.nan))
    with pytest.raises(ValueError, match=r"ground_truth has shape \(12, 9\)"):
        model.fit(M, mask, ground_truth=[list(r) for r in M[:, :9]])


def test_all_zero_observations_and_parameter_boundaries(problem):
    M, mask = problem
    with pytest.raises(ValueError, match="all observed values are zero"):
        _fit(np.zeros((12, 10)), mask)
    _fit(M, mask, gamma=0.0, tol=0.0, depth=2, width=1, method="original", record_every=1)
    for name, bad in (("gamma", -1e-9), ("tol", -1e-9), ("init_scale", 0.0), ("lr", 0.0),
                      ("width", 0), ("max_iter", 0), ("record_every", 0), ("depth", 1),
                      ("init_scale", math.inf), ("lr", math.inf), ("gamma", math.inf), ("lr", "fast")):
        with pytest.raises(ValueError, match=name):
            _fit(M, mask, **{name: bad})
    with pytest.raises(TypeError, match="normalize must be True or False"):
        _fit(M, mask, normalize=1)
    _fit(M, mask, normalize=np.bool_(True))


def test_fit_transform_is_fit_then_transform_with_fit_params(problem):
    M, mask = problem
    params = dict(rank=2, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = DeepMatrixCompleter(**params)
        X = model.fit_transform(M, mask, ground_truth=M)
        reference = DeepMatrixCompleter(**params).fit(M, mask)
    np.testing.assert_array_equal(X, reference.transform())
    assert "recovery_error" in model.history_


def test_outputs_on_the_torch_backend_and_as_numpy(problem):
    torch = pytest.importorskip("torch")
    M, mask = problem
    model = _fit(M, mask, backend="torch", device="cpu")
    X = model.transform()
    assert isinstance(X, torch.Tensor)
    X_np = model.transform(as_numpy=True)
    assert isinstance(X_np, np.ndarray)
    np.testing.assert_allclose(X_np, X.numpy(), rtol=1e-12)
    rows, cols = np.array([0, 11]), np.array([9, 0])
    assert isinstance(model.predict(rows, cols), torch.Tensor)
    got = model.predict(rows, cols, as_numpy=True)
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, X_np[rows, cols], rtol=1e-10)
    row, col = model.get_low_rank_factors()
    assert isinstance(row, torch.Tensor) and isinstance(col, torch.Tensor)
    row_np, col_np = model.get_low_rank_factors(as_numpy=True)
    assert isinstance(row_np, np.ndarray) and isinstance(col_np, np.ndarray)
    np.testing.assert_allclose(row_np @ col_np.T, X_np, rtol=1e-10, atol=1e-14)
    score = model.score(M, mask)
    assert type(score) is float
    assert score == pytest.approx(-np.sqrt(np.mean((X_np - M)[mask] ** 2)), rel=1e-10)


def test_predict_names_the_bad_index(problem):
    M, mask = problem
    model = _fit(M, mask)
    with pytest.raises(ValueError, match=r"cols must lie in \[0, 10\); got values in \[0, 10\]"):
        model.predict([0, 1], [0, 10])
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 12\); got values in \[-1, 0\]"):
        model.predict([-1, 0], [0, 1])
    with pytest.raises(TypeError, match="cols must hold integers; got dtype float64"):
        model.predict([0, 1], [0.0, 1.0])
