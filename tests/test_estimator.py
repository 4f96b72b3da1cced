"""DeepMatrixCompleter's own pieces against hand-built references (tiny fits).

Range checks at their exact boundaries, the rescaling of the fitted factors,
the step-size and subspace wiring of ``fit``, and the outputs against the
dense product of the factors.  Found by mutation testing (tools/mutation.py).
"""

import math
import types
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


def test_documented_defaults():
    assert DeepMatrixCompleter().get_params() == dict(
        rank=10, depth=3, method="compressed", init_scale=1e-3, lr="auto", gamma=0.05,
        step_rule="auto", refresh_every="auto", width=None, normalize=True, max_iter=20000,
        tol=1e-7, record_every=10, callbacks=None, verbose=0, backend="auto", device=None,
        dtype=None, random_state=None, early_stopping=False, validation_fraction=0.1,
        n_iter_no_change=50, distributed=False)
    model = DeepMatrixCompleter(device="cpu", dtype="float32")
    assert model.device == "cpu" and model.dtype == "float32"


def test_more_parameter_checks(problem):
    M, mask = problem
    assert _fit(M, mask, rank=1).left_factor_.shape == (12, 2)
    _fit(M, mask, method="narrow", step_rule="constant")
    _fit(M, mask, step_rule="preconditioned")
    for method in ("narrow", "original"):
        with pytest.raises(ValueError, match='applies to method="compressed" only'):
            _fit(M, mask, method=method, step_rule="adaptive")
    with pytest.raises(ValueError, match='dtype must be None, "float32" or "float64"'):
        _fit(M, mask, dtype="float16")
    with pytest.raises(TypeError, match="callbacks must be None"):
        _fit(M, mask, callbacks=5)


def test_dtype_choice(problem):
    M, mask = problem
    for params, data, expected in (({}, M, np.float64), ({}, M.astype(np.float32), np.float32),
                                   ({"dtype": "float32"}, M, np.float32),
                                   ({"dtype": "float64"}, M.astype(np.float32), np.float64),
                                   ({"method": "original"}, M.astype(np.float32), np.float32)):
        model = _fit(data, mask, **params)
        assert model.left_factor_.dtype == expected and model.transform().dtype == expected, params
    with pytest.raises(ValueError, match="do not fit the model's dtype float32"):
        _fit(M * 1e38, mask, dtype="float32")


def test_start_time_includes_initialization(problem, monkeypatch):
    import time

    import dmc.estimator

    M, mask = problem
    before = time.perf_counter()
    monkeypatch.setattr(dmc.estimator, "time", types.SimpleNamespace(perf_counter=lambda: 0.0))
    model = _fit(M, mask, max_iter=1)
    assert model.history_["time"][0] >= before  # counted from the estimator's start (0 here)


def test_verbose_and_callbacks_reach_the_solver(problem, capsys):
    M, mask = problem
    seen = []
    _fit(M, mask, max_iter=4, record_every=2, verbose=2, callbacks=lambda record: seen.append(record))
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["iteration=0", "iteration=2", "iteration=4"]
    assert [r["iteration"] for r in seen] == [0, 2, 4]


def test_default_rule_is_adaptive_and_paths_are_sparse_or_dense(problem, monkeypatch):
    M, mask = problem
    calls = {"momentum": 0, "dense": 0, "sparse": 0}
    original_update = steps.Momentum.update

    def momentum_update(self, *args):
        calls["momentum"] += 1
        return original_update(self, *args)
    monkeypatch.setattr(steps.Momentum, "update", momentum_update)
    for name, function in (("dense", models.dense_loss_and_gradients),
                           ("sparse", models.sparse_loss_and_gradients)):
        def counted(*args, _name=name, _function=function):
            calls[_name] += 1
            return _function(*args)
        monkeypatch.setattr(models, f"{name}_loss_and_gradients", counted)
    _fit(M, mask, max_iter=2)
    assert calls == {"momentum": 3, "dense": 0, "sparse": 3}  # never an m x n array
    _fit(M, mask, max_iter=2, method="original")
    assert calls == {"momentum": 3, "dense": 3, "sparse": 3}  # the dense reference


def test_recovery_error_of_a_converged_fit_is_in_units_of_m():
    M, mask = make_low_rank((12, 10), 1, 0.9, random_state=2)
    model = _fit(3.0 * M, mask, rank=1, max_iter=3000, tol=1e-6)
    assert model.converged_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(3.0 * M, mask, ground_truth=[list(row) for row in 3.0 * M])  # a list works too
    X = model.transform()
    expected = np.linalg.norm(X - 3.0 * M) / np.linalg.norm(3.0 * M)
    assert expected < 0.1
    assert model.history_["recovery_error"][-1] == pytest.approx(expected, rel=1e-6)


def test_wide_models_record_the_top_singular_value_only(problem):
    M, mask = problem
    model = _fit(M, mask, method="narrow")
    s1 = np.linalg.svd(np.where(mask, M, 0.0), compute_uv=False)[0]
    np.testing.assert_allclose(model.initial_singular_values_, [s1], rtol=1e-8)


def test_extreme_magnitudes(problem):
    M, mask = problem
    # normalize=True fits any magnitude; the raw-range check applies to normalize=False only
    assert np.isfinite(_fit(M * 2.0**70, mask).transform()).all()
    with pytest.raises(ValueError, match="outside the range normalize=False supports"):
        _fit(M * 2.0**70, mask, normalize=False)
    # singular values past float64 are reported as inf, silently (s_1 of 40 x 40 ones is 40)
    model = _fit(np.full((40, 40), 1e307), rank=1, max_iter=2)
    assert np.isinf(model.initial_singular_values_[0]) and np.isfinite(model.scale_)
    with pytest.raises(ValueError, match="too large to normalize"):
        _fit(np.full((200, 200), 1e307), rank=1)


def test_rescaled_by_exactly_two():
    factors = models.DeepFactors(np.ones((2, 1)), [np.ones((1, 1))], np.ones((3, 1)))
    np.testing.assert_array_equal(_rescaled(factors, 2.0).inner[0], [[2.0]])


def test_torch_input_selects_the_torch_backend(problem):
    torch = pytest.importorskip("torch")
    M, mask = problem
    model = _fit(torch.tensor(M), torch.tensor(mask))
    assert model.backend_.name == "torch"


def _independent_sparse_line_count(mask):
    """The 10th percentile of the per-row and per-column counts, the smaller one."""
    return min(np.quantile(mask.sum(axis=1), 0.1), np.quantile(mask.sum(axis=0), 0.1))


@pytest.mark.parametrize("params, per_line, expected", [
    ({"rank": 5}, 20.0, "preconditioned"),          # 2k = 4 * rank entries: well sampled
    ({"rank": 5}, 19.9, "switching"),               # k to 2k: adaptive until it stalls
    ({"rank": 5}, 10.0, "switching"),
    ({"rank": 5}, 9.9, "adaptive"),
    ({"rank": 5}, None, "adaptive"),                # unknown: not well sampled
    ({"rank": 10}, 39.0, "switching"),
    ({"rank": 5, "lr": 0.1}, 1e6, "adaptive"),     # lr sizes the adaptive step: honoured
    ({"rank": 5, "gamma": 0.2}, 1e6, "adaptive"),
    ({"rank": 5, "method": "narrow"}, 1e6, "constant"),
    ({"rank": 5, "depth": 2}, 1e6, "adaptive"),      # measured: diverged
    ({"rank": 5, "depth": 4}, 1e6, "adaptive"),      # measured: never left the start
    ({"rank": 5, "init_scale": 1e-2}, 20.0, "preconditioned"),
    ({"rank": 5, "init_scale": 0.1}, 1e6, "adaptive"),  # measured: diverged or stalled
    ({"rank": 5, "step_rule": "adaptive"}, 1e6, "adaptive"),
    ({"rank": 5, "step_rule": "preconditioned"}, 1.0, "preconditioned"),
])
def test_auto_step_rule_follows_the_sampling(params, per_line, expected):
    assert DeepMatrixCompleter(**params)._step_rule_name(per_line) == expected


def test_auto_step_rule_is_adaptive_in_distributed_fits():
    # the subspace refresh is not distributed; set directly (no process group needed)
    model = DeepMatrixCompleter(rank=5)
    model.distributed = True
    assert model._step_rule_name(1e6) == "adaptive"


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
def test_defaults_recover_a_well_sampled_ill_conditioned_matrix():
    # singular values over a factor 30: the adaptive rule learns one direction
    # per plateau and is still far off after 2,000 steps; on data this well
    # sampled "auto" takes the preconditioned rule, which is not
    M, mask = make_low_rank((150, 120), 3, 0.4, condition_number=30, random_state=1)
    assert _independent_sparse_line_count(mask) >= 4 * 4
    fit = DeepMatrixCompleter(rank=4, max_iter=2000, random_state=0).fit(M, mask)
    assert fit.step_rule_ == "preconditioned"
    assert np.linalg.norm(fit.transform() - M) / np.linalg.norm(M) < 1e-5
    slow = DeepMatrixCompleter(rank=4, step_rule="adaptive", max_iter=2000, random_state=0).fit(M, mask)
    assert slow.step_rule_ == "adaptive"
    assert np.linalg.norm(slow.transform() - M) / np.linalg.norm(M) > 1e-2


def test_sparse_data_keep_the_adaptive_rule():
    M, mask = make_low_rank((60, 60), 3, 0.2, random_state=0)
    assert _independent_sparse_line_count(mask) < 2 * 5
    fit = DeepMatrixCompleter(rank=5, max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit.fit(M, mask)
    assert fit.step_rule_ == "adaptive"


@pytest.mark.parametrize("param", [{"lr": 0.1}, {"gamma": 0.2}])
def test_preconditioned_rejects_the_steps_it_would_ignore(param):
    name = next(iter(param))
    with pytest.raises(ValueError, match=f"{name}=.*no effect with the preconditioned"):
        DeepMatrixCompleter(rank=1, step_rule="preconditioned", **param).fit(np.eye(4), np.ones((4, 4), bool))


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
def test_defaults_recover_a_moderately_sampled_ill_conditioned_matrix():
    # k to 2k entries in a sparse line, singular values over a factor 100:
    # the adaptive rule is still far off after 3,000 steps (measured 1e-2 after
    # 20,000); "auto" switches to the preconditioned rule when it stalls
    M, mask = make_low_rank((102, 85), 2, 0.29, condition_number=100, random_state=16)
    line = _independent_sparse_line_count(mask)
    assert 2 * 6 <= line < 4 * 6
    fit = DeepMatrixCompleter(rank=6, max_iter=3000, random_state=0).fit(M, mask)
    assert fit.step_rule_ == "switching"
    assert np.linalg.norm(fit.transform() - M) / np.linalg.norm(M) < 1e-5
    slow = DeepMatrixCompleter(rank=6, step_rule="adaptive", max_iter=3000, random_state=0).fit(M, mask)
    assert np.linalg.norm(slow.transform() - M) / np.linalg.norm(M) > 1e-3


def test_a_step_rule_object_is_not_changed_by_fitting():
    # SwitchOnStall keeps its switch on itself: the estimator fits a copy
    M, mask = make_low_rank((102, 85), 2, 0.29, condition_number=100, random_state=16)
    rule = steps.SwitchOnStall()
    fit = DeepMatrixCompleter(rank=6, step_rule=rule, max_iter=1000, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit.fit(M, mask)
    assert fit.step_rule is rule and not rule.switched and rule._records == []
    assert fit.step_rule_ == "SwitchOnStall"


def test_early_stopping_does_not_stop_on_a_plateau():
    # the adaptive rule learns one direction, then sits on a plateau (recovery error 1.0e-2
    # from about step 1,000): the validation RMSE stops improving, but the training loss
    # stops falling too, so early stopping lets the fit go on instead of ending it there
    M, mask = make_low_rank((102, 85), 2, 0.29, condition_number=100, random_state=16)
    with pytest.warns(ConvergenceWarning, match="plateau between singular directions") as caught:
        adaptive = DeepMatrixCompleter(rank=6, step_rule="adaptive", early_stopping=True,
                                       max_iter=3000, random_state=0).fit(M, mask)
    assert "preconditioned" in str(caught[0].message)  # the way off the plateau
    assert adaptive.stop_reason_ == "max_iter" and adaptive.n_iter_ == 3000
    assert np.linalg.norm(adaptive.transform() - M) / np.linalg.norm(M) > 1e-3
    # the switching rule leaves it (its stopper also waits a stall window before the switch)
    # and the preconditioned rule recovers the matrix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        waited = DeepMatrixCompleter(rank=6, step_rule="switching", early_stopping=True,
                                     random_state=0).fit(M, mask)
    assert np.linalg.norm(waited.transform() - M) / np.linalg.norm(M) < 1e-5


class _ScriptedStopper:  # says stop from its third call on, with records_since_best = calls
    patience, records_since_best = 3, 0

    def __call__(self, record, state):
        self.records_since_best += 1
        return self.records_since_best >= self.patience


def _falling(start=1.0):
    """Records whose training loss falls 5% each (learning, so not a plateau)."""
    loss = start
    while True:
        loss *= 0.95
        yield {"train_loss": loss}


def test_the_stopper_waits_a_window_only_before_the_switch():
    from dmc.estimator import _after_plateau

    rule = steps.SwitchOnStall(window=40)
    callback = _after_plateau(_ScriptedStopper(), rule, record_every=10)
    callback({"train_loss": 10.0}, None)  # the first record sets the reference loss
    records = _falling()
    said = [callback(next(records), None) for _ in range(8)]
    # stop would come at the 3rd call; 40 steps (4 records of 10) later instead
    assert said == [False] * 6 + [True, True]
    rule.switched_at = 100
    callback = _after_plateau(_ScriptedStopper(), rule, record_every=10)
    callback({"train_loss": 10.0}, None)
    records = _falling()
    assert [callback(next(records), None) for _ in range(3)] == [False, False, True]
    plain = _after_plateau(_ScriptedStopper())
    plain({"train_loss": 10.0}, None)
    records = _falling()
    assert [plain(next(records), None) for _ in range(3)] == [False, False, True]


def test_the_stopper_never_stops_on_a_flat_training_loss():
    from dmc.estimator import _after_plateau

    callback = _after_plateau(_ScriptedStopper())
    callback({"train_loss": 10.0}, None)
    # past the initial plateau, then flat: the patience runs out, but nothing was learned
    flat = [callback({"train_loss": 1.0 - 1e-5 * i}, None) for i in range(20)]
    assert not any(flat)
    # learning again: the first record 1% below the loss at the best record stops it
    assert callback({"train_loss": 0.995}, None) is False
    assert callback({"train_loss": 0.989}, None) is True
