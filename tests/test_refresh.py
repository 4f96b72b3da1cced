"""Subspace refresh (dmc.refresh), each piece against an independent reference.

- ``rebalance`` keeps the end-to-end product (checked against the dense
  product before) and balances the chain.
- ``residual_top_pairs`` matches numpy's dense SVD of the residual.
- ``SubspaceRefresh`` puts the residual's top pairs, signed to grow, in the
  never-grown columns and leaves the product unchanged up to those columns'
  tiny contribution; the solver restarts the step rule after a refresh.
- On a small ill-conditioned problem whose smallest direction the initial
  gradient misses, the preconditioned rule stalls without refresh and
  recovers with it.
"""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmc import DeepMatrixCompleter, models, steps
from dmc.backend import make_pattern, observed_triplets
from dmc.datasets import make_low_rank
from dmc.refresh import RefreshSchedule, SubspaceRefresh, rebalance, residual_top_pairs
from dmc.solver import ConvergenceWarning, gradient_descent


def _dense_residual(obs, A, B):
    R = np.zeros(obs.shape)
    R[obs.observed_rows, obs.observed_cols] = (A @ B.T)[obs.observed_rows, obs.observed_cols] - obs.values
    return R


@settings(max_examples=15, deadline=None)
@given(depth=st.integers(1, 4), k=st.integers(1, 6), seed=st.integers(0, 10_000))
def test_rebalance_keeps_the_product_and_balances(depth, k, seed):
    rng = np.random.default_rng(seed)
    factors = models.DeepFactors(rng.standard_normal((9, k)),
                                 [rng.standard_normal((k, k)) for _ in range(depth)],
                                 rng.standard_normal((7, k)))
    before = models.end_to_end(factors)
    left, inner, right, s = rebalance(factors, np)
    after = models.end_to_end(models.DeepFactors(left, inner, right))
    np.testing.assert_allclose(after, before, rtol=1e-9, atol=1e-9 * np.abs(before).max())
    np.testing.assert_allclose(s, np.linalg.svd(models.inner_product(factors.inner),
                                                compute_uv=False), rtol=1e-10)
    for w in inner:  # every inner factor diag(s ** (1 / depth))
        np.testing.assert_allclose(w, np.diag(s ** (1.0 / depth)), atol=1e-12)


@pytest.mark.parametrize("kernels", ["scipy", "numba"])
def test_residual_top_pairs_match_dense_svd(kernels):
    if kernels == "numba":
        pytest.importorskip("numba")
    M, mask = make_low_rank((60, 45), 4, 0.5, random_state=0)
    obs, _ = observed_triplets(M, mask)
    pattern = make_pattern(obs, np.float64, kernels=kernels)
    rng = np.random.default_rng(1)
    A, B = 0.3 * rng.standard_normal((60, 3)), 0.3 * rng.standard_normal((45, 3))
    u, s, v = residual_top_pairs(lambda a, b: pattern.residual_products(a, b, obs.values),
                                 A, B, 2, np.random.default_rng(2), np, n_iter=8)
    U, S, Vt = np.linalg.svd(_dense_residual(obs, A, B))
    np.testing.assert_allclose(s, S[:2], rtol=1e-6)
    for i in range(2):  # the same pair up to a common sign
        assert abs(u[:, i] @ U[:, i]) == pytest.approx(1.0, abs=1e-6)
        assert (u[:, i] @ U[:, i]) * (v[:, i] @ Vt[i]) == pytest.approx(1.0, abs=1e-6)


def _dead_and_live(seed=0, dead_size=1e-6, rotate=False):
    """Two grown directions (singular values 2 and 1) and four small ones
    (``dead_size``), on a 50 x 40 problem; ``rotate`` puts a random rotation
    in the last inner factor, so the chain is not diagonal.  Returns the
    factors, the pattern's ``residual_products`` and the observations."""
    rng = np.random.default_rng(seed)
    M, mask = make_low_rank((50, 40), 3, 0.6, random_state=3)
    obs, _ = observed_triplets(M, mask)
    pattern = make_pattern(obs, np.float64)
    k, depth = 6, 3
    U = models.random_orthogonal(50, k, rng)
    V = models.random_orthogonal(40, k, rng)
    sizes = np.array([2.0, 1.0] + [dead_size] * 4) ** (1.0 / depth)
    inner = [np.diag(sizes) for _ in range(depth)]
    if rotate:
        inner[-1] = models.random_orthogonal(k, k, rng) @ inner[-1]
    factors = models.DeepFactors(U, inner, V)
    return factors, (lambda a, b: pattern.residual_products(a, b, obs.values)), obs


def test_refresh_reaims_dead_directions_at_the_residual():
    # two grown directions (singular values ~1) and four never grown (1e-9)
    factors, products, obs = _dead_and_live(dead_size=1e-9, rotate=True)
    k, depth = 6, 3
    U, V = factors.left, factors.right  # the refresh rewrites them in place
    before = models.end_to_end(factors)
    R = _dense_residual(obs, factors.left @ models.inner_product(factors.inner), factors.right)

    refresh = SubspaceRefresh(products, np, every=10, random_state=4)
    assert refresh(factors) == 4
    after = models.end_to_end(factors)
    np.testing.assert_allclose(after, before, atol=1e-6 * np.abs(before).max())
    live_left, new_left = factors.left[:, :2], factors.left[:, 2:]
    live_right, new_right = factors.right[:, :2], factors.right[:, 2:]
    # orthogonal to the live columns
    assert np.abs(new_left.T @ live_left).max() < 1e-8 * np.abs(live_left).max()
    assert np.abs(new_right.T @ live_right).max() < 1e-8 * np.abs(live_right).max()
    # the leading new pair is the residual's top pair with the live part projected out
    # (numpy's dense SVD as the reference), signed so that -R pulls its singular value up
    top_u, _, top_vt = np.linalg.svd(R)
    Ql, _ = np.linalg.qr(live_left)
    Qr, _ = np.linalg.qr(live_right)
    want_u = top_u[:, 0] - Ql @ (Ql.T @ top_u[:, 0])
    want_v = top_vt[0] - Qr @ (Qr.T @ top_vt[0])
    u0 = new_left[:, 0] / np.linalg.norm(new_left[:, 0])
    v0 = new_right[:, 0] / np.linalg.norm(new_right[:, 0])
    assert abs(u0 @ want_u) / np.linalg.norm(want_u) > 0.99
    assert abs(v0 @ want_v) / np.linalg.norm(want_v) > 0.99
    assert u0 @ R @ v0 < 0
    # a chain with nothing dead is left alone
    grown = models.DeepFactors(U.copy(), [np.eye(k) for _ in range(depth)], V.copy())
    assert refresh(grown) == 0


def _small_solver_problem():
    """A 20 x 15, rank-2, 60%-observed problem, its pattern and small compressed factors (k = 4)."""
    M, mask = make_low_rank((20, 15), 2, 0.6, random_state=0)
    obs, _ = observed_triplets(M, mask)
    pattern = make_pattern(obs, np.float64)
    rng = np.random.default_rng(0)
    factors = models.init_compressed(models.random_orthogonal(20, 4, rng),
                                     models.random_orthogonal(15, 4, rng), 3, 0.1)
    return obs, pattern, factors


def test_solver_calls_refresh_every_n_steps_and_restarts_the_rule():
    obs, pattern, factors = _small_solver_problem()
    calls, inits = [], []

    class Refresh:
        every = 4

        def __call__(self, f):
            calls.append(1)
            return len(calls) % 2  # changes the factors on every other call

    class Rule(steps.ConstantStep):
        def init(self, f, context):
            inits.append(1)
            return super().init(f, context)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gradient_descent(factors, lambda f: models.sparse_loss_and_gradients(f, pattern, obs.values),
                         Rule([1e-4] * 5), max_iter=17, tol=0.0, observed_norm=1.0,
                         refresh=Refresh())
    assert len(calls) == 4  # before steps 4, 8, 12, 16
    assert len(inits) == 1 + 2  # the start, and after the two refreshes that changed something


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
@pytest.mark.parametrize("seed", [0, 1])
def test_refresh_recovers_the_direction_the_initial_gradient_misses(seed):
    M, mask = make_low_rank((80, 60), 3, 0.4, condition_number=30, random_state=seed)
    errors = {}
    for every in (None, 100):
        # outer damping as large as the inner: U and V turn slowly, as plain GD's would
        rule = steps.PreconditionedStep(damping=1e-2, outer_damping=1e-2)
        model = DeepMatrixCompleter(rank=6, step_rule=rule, refresh_every=every,
                                    max_iter=1500, tol=0, random_state=0)
        model.fit(M, mask)
        errors[every] = np.linalg.norm(model.transform() - M) / np.linalg.norm(M)
    assert errors[None] > 1e-2  # stalled on the smallest direction's plateau
    assert errors[100] < 1e-4


def test_auto_refresh_follows_the_step_rule():
    model = DeepMatrixCompleter()
    auto = model._refresh_schedule(steps.make_step_rule("preconditioned"))
    assert (auto.every, auto.stall_window) == (100, 20)
    assert model._refresh_schedule(steps.make_step_rule("adaptive")) is None
    fixed = DeepMatrixCompleter(refresh_every=50)._refresh_schedule(steps.make_step_rule("adaptive"))
    assert (fixed.every, fixed.stall_window) == (50, None)
    assert DeepMatrixCompleter(refresh_every=None)._refresh_schedule(
        steps.make_step_rule("preconditioned")) is None
    assert DeepMatrixCompleter(method="narrow")._refresh_schedule(
        steps.make_step_rule("preconditioned")) is None


@pytest.mark.parametrize("bad", [0, -3, 2.5, "often", True])
def test_refresh_every_validation(bad):
    M, mask = make_low_rank((20, 20), 2, 0.5, random_state=0)
    with pytest.raises(ValueError, match="refresh_every"):
        DeepMatrixCompleter(rank=2, refresh_every=bad).fit(M, mask)


def test_refresh_every_with_the_original_model_is_an_error():
    M, mask = make_low_rank((20, 20), 2, 0.5, random_state=0)
    with pytest.raises(ValueError, match="compressed"):
        DeepMatrixCompleter(rank=2, method="original", refresh_every=100).fit(M, mask)


def test_subspace_refresh_parameter_checks():
    with pytest.raises(ValueError, match="every"):
        SubspaceRefresh(lambda a, b: None, np, every=0)
    with pytest.raises(ValueError, match="dead"):
        SubspaceRefresh(lambda a, b: None, np, dead=1.5)


def _exact_factors_of(M_dense, n_carried, k, depth, rng):
    """Factors whose product is the top ``n_carried`` singular terms of
    ``M_dense`` exactly (the other ``k - n_carried`` columns random, with
    singular value 1e-12 in the chain), as a fit that learned them would be.
    ``U`` is 4 times longer and the chain 4 times smaller than the SVD's, so
    the chain's singular values are not the fit's."""
    u, s, vt = np.linalg.svd(M_dense)
    m, n = M_dense.shape
    left = np.concatenate([u[:, :n_carried], models.random_orthogonal(m, k - n_carried, rng)], axis=1)
    right = np.concatenate([vt[:n_carried].T, models.random_orthogonal(n, k - n_carried, rng)], axis=1)
    values = np.concatenate([s[:n_carried], np.full(k - n_carried, 1e-12)]) / 4
    return models.DeepFactors(4 * left, [np.diag(values ** (1.0 / depth))] * depth, right), s


def _planted(spectrum, shape=(50, 40), seed=0):
    rng = np.random.default_rng(seed)
    u = models.random_orthogonal(shape[0], len(spectrum), rng)
    v = models.random_orthogonal(shape[1], len(spectrum), rng)
    return (u * np.asarray(spectrum)) @ v.T, rng


def test_refresh_keeps_a_small_direction_the_data_resolve():
    # singular values 2, 1, 5e-4 (below dead = 1e-3 of the top) and 1e-7: the
    # fit carries the first three exactly, so the residual is the 1e-7 term
    # and the 5e-4 direction is resolved; re-aiming it would lose it
    M, rng = _planted([2.0, 1.0, 5e-4, 1e-7])
    mask = np.random.default_rng(1).random(M.shape) < 0.7
    obs, _ = observed_triplets(M, mask)
    pattern = make_pattern(obs, np.float64)
    kernel = lambda a, b: pattern.residual_products(a, b, obs.values)  # noqa: E731
    factors, s = _exact_factors_of(M, 3, 6, 3, rng)
    refresh = SubspaceRefresh(kernel, np, observed_fraction=mask.mean(), random_state=0)
    assert refresh(factors) == 3  # only the three never-grown columns
    after = models.end_to_end(factors)
    # the 5e-4 direction is still in the fit: the error is the 1e-7 term, not 5e-4
    assert np.linalg.norm(after - M) < 1e-5
    # resolved_scale: the smallest singular value of the live fit (numpy's SVD of
    # the dense product of the kept columns as the reference)
    np.testing.assert_allclose(refresh.resolved_scale, s[2], rtol=1e-8)

    # the same fit with a margin that puts the residual's level above 5e-4:
    # the small direction counts as unresolved, is re-aimed, and drops out
    factors, _ = _exact_factors_of(M, 3, 6, 3, np.random.default_rng(2))
    residual_top = np.linalg.svd(_dense_residual(obs, factors.left @ models.inner_product(factors.inner),
                                                 factors.right), compute_uv=False)[0]
    margin = 1e-2 * mask.mean() / residual_top  # level 1e-2: between 5e-4 and 1
    refresh = SubspaceRefresh(kernel, np, observed_fraction=mask.mean(), margin=margin,
                              random_state=0)
    assert refresh(factors) == 4
    assert np.linalg.norm(models.end_to_end(factors) - M) > 4e-4
    np.testing.assert_allclose(refresh.resolved_scale, s[1], rtol=1e-8)


def test_resolved_scale_is_none_when_nothing_stands_clear():
    M, rng = _planted([1.0, 0.5, 1e-7])
    mask = np.ones(M.shape, dtype=bool)
    obs, _ = observed_triplets(M, mask)
    pattern = make_pattern(obs, np.float64)
    factors, _ = _exact_factors_of(M, 2, 5, 2, rng)
    refresh = SubspaceRefresh(lambda a, b: pattern.residual_products(a, b, obs.values), np,
                              margin=1e9, random_state=0)  # level 1e9 x 1e-7 = 100: above all
    assert refresh.resolved_scale is None
    assert refresh(factors) == 3
    assert refresh.resolved_scale is None


def test_solver_restarts_the_rule_at_the_resolved_scale():
    obs, pattern, factors = _small_solver_problem()
    measured = iter([None, 0.25, 0.25, 0.125])
    seen = []

    class Refresh:  # never re-aims, only measures
        every = 3
        resolved_scale = None

        def __call__(self, f):
            self.resolved_scale = next(measured)
            return 0

    class Rule(steps.ConstantStep):
        def init(self, f, context):
            seen.append(context.resolved_scale)
            return super().init(f, context)

    context = steps.StepContext(lr=1e-4, outer_ratio=1.0, target_scale=1.0, observed_fraction=0.6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gradient_descent(factors, lambda f: models.sparse_loss_and_gradients(f, pattern, obs.values),
                         Rule([1e-4] * 5), max_iter=13, tol=0.0, observed_norm=1.0,
                         refresh=Refresh(), context=context)
    # the start, then a restart only when the measurement changed
    assert seen == [None, 0.25, 0.125]


def test_subspace_refresh_checks_margin_and_observed_fraction():
    for bad in (0, -1.0, np.inf, "big"):
        with pytest.raises(ValueError, match="margin"):
            SubspaceRefresh(lambda a, b: None, np, margin=bad)
    for bad in (0, 1.5, None):
        with pytest.raises(ValueError, match="observed_fraction"):
            SubspaceRefresh(lambda a, b: None, np, observed_fraction=bad)


@pytest.mark.parametrize("residual, pruned", [(None, False), (0.5, False), (1e-4, False),
                                              (1e-5, False), (9e-6, True), (1e-12, True)])
def test_refresh_prunes_the_dead_directions_only_near_the_end(residual, pruned):
    factors, products, _ = _dead_and_live()
    refresh = SubspaceRefresh(products, np, every=10, random_state=4)  # prune_below=1e-5
    assert refresh(factors, residual) == 4
    s = np.linalg.svd(models.inner_product(factors.inner), compute_uv=False)
    np.testing.assert_allclose(s[:2], [2.0, 1.0], rtol=1e-10)  # the live ones untouched
    # the chain's singular values of the re-aimed columns (their lengths are
    # those of the live columns, so the chain's values are the ones to check)
    expected = 1e-9 * 2.0 if pruned else 1e-6
    np.testing.assert_allclose(s[2:], expected, rtol=1e-8)


def test_refresh_pruning_can_be_switched_off_and_never_raises_a_direction():
    factors, products, _ = _dead_and_live(dead_size=1e-12)  # already below prune_to * top
    assert SubspaceRefresh(products, np, every=10, random_state=4)(factors, 1e-9) == 4
    s = np.linalg.svd(models.inner_product(factors.inner), compute_uv=False)
    np.testing.assert_allclose(s[2:], 1e-12, rtol=1e-8)
    factors, products, _ = _dead_and_live()
    assert SubspaceRefresh(products, np, every=10, prune_below=None, random_state=4)(factors, 1e-9) == 4
    s = np.linalg.svd(models.inner_product(factors.inner), compute_uv=False)
    np.testing.assert_allclose(s[2:], 1e-6, rtol=1e-8)


def test_schedule_every_n_steps_without_stall_detection():
    schedule = RefreshSchedule(4, stall_window=None)
    due = []
    for iteration in range(1, 14):
        schedule.observe(iteration, 1.0)  # flat: a stall, ignored without a window
        due.append(schedule.due(iteration))
    assert [i for i, d in zip(range(1, 14), due) if d] == [4, 8, 12]


def test_an_inactive_schedule_waits_and_then_starts_at_its_first_active_record():
    state = {"on": False}
    schedule = RefreshSchedule(4, stall_window=None, active=lambda: state["on"])
    due = []
    for iteration in range(1, 20):
        state["on"] = iteration >= 7
        schedule.observe(iteration, 1.0)
        due.append(schedule.due(iteration))
    # nothing while inactive (steps 1-6, although 4 is a multiple of every);
    # then every 4 steps counted from step 7
    assert [i for i, d in zip(range(1, 20), due) if d] == [11, 15, 19]
    with pytest.raises(TypeError, match="active must be a callable"):
        RefreshSchedule(active=True)


def test_auto_refresh_of_the_switching_rule_starts_at_the_switch():
    rule = steps.make_step_rule("switching")
    schedule = DeepMatrixCompleter()._refresh_schedule(rule)
    assert (schedule.every, schedule.stall_window) == (100, 20)
    for iteration in range(0, 300, 10):
        schedule.observe(iteration, 1.0)
        assert not schedule.due(iteration)
    rule.switched_at = 300
    schedule.observe(300, 1.0)
    assert not schedule.due(301) and schedule.due(400)
    adaptive_then_constant = steps.SwitchOnStall("adaptive", "constant")
    assert DeepMatrixCompleter()._refresh_schedule(adaptive_then_constant) is None


def test_schedule_fires_on_a_stall_and_not_while_the_residual_falls():
    schedule = RefreshSchedule(100, stall_window=20, stall_ratio=0.9)
    # records every 10 steps; the residual halves every 10 steps until step 40, then
    # falls by 5% per 10 steps: 0.9025 over 20 steps, above 0.9, a stall
    residuals = {0: 1.0, 10: 0.5, 20: 0.25, 30: 0.125, 40: 0.0625, 50: 0.0625 * 0.95,
                 60: 0.0625 * 0.95**2}
    fired = []
    for iteration in range(1, 70):
        if schedule.due(iteration):
            fired.append(iteration)
        if iteration in residuals:
            schedule.observe(iteration, residuals[iteration])
    # first chance after the record at 60 (0.9025 of the record at 40): step 61
    assert fired == [61]
    # after a refresh the window starts again: flat records, but no stall before 20 steps
    later = []
    for iteration in range(62, 100):
        if schedule.due(iteration):
            later.append(iteration)
        schedule.observe(iteration, 1.0)
    assert later == [83]  # the record at 82 against the first one after the refresh, at 62


def test_schedule_stall_compares_with_a_record_a_full_window_back():
    schedule = RefreshSchedule(1000, stall_window=20, stall_ratio=0.9)
    schedule.observe(0, 1.0)
    schedule.observe(10, 0.95)  # only 10 steps back: no comparison yet
    assert not schedule.due(15)
    schedule.observe(20, 0.89)  # 0.89 of the record 20 steps back: falling, not stalled
    assert not schedule.due(21)
    schedule.observe(30, 0.88)  # 0.926 of the record at 10: stalled
    assert schedule.due(31)


@pytest.mark.parametrize("kwargs, match", [(dict(every=0), "every"), (dict(stall_window=0), "stall_window"),
                                           (dict(stall_window=2.5), "stall_window"),
                                           (dict(stall_ratio=1.0), "stall_ratio"),
                                           (dict(stall_ratio=0), "stall_ratio")])
def test_schedule_parameter_checks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RefreshSchedule(**kwargs)


@pytest.mark.parametrize("kwargs, match", [(dict(prune_below=1.0), "prune_below"),
                                           (dict(prune_below=-1e-3), "prune_below"),
                                           (dict(prune_to=0.0), "prune_to")])
def test_refresh_prune_parameter_checks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SubspaceRefresh(lambda a, b: None, np, **kwargs)


def test_solver_follows_the_schedule_and_passes_the_residual():
    obs, pattern, factors = _small_solver_problem()
    calls = []

    class Refresh:
        schedule = RefreshSchedule(6, stall_window=None)
        every = 6

        def __call__(self, f, residual):
            calls.append(residual)
            return 0

    observed = []
    original_observe = Refresh.schedule.observe
    Refresh.schedule.observe = lambda i, r: (observed.append((i, r)), original_observe(i, r))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = gradient_descent(factors, lambda f: models.sparse_loss_and_gradients(f, pattern, obs.values),
                                  [1e-4] * 5, max_iter=20, tol=0.0, observed_norm=2.0,
                                  record_every=5, refresh=Refresh())
    # records at 0, 5, 10, 15, 20; refreshes before steps 6, 12, 18
    assert [i for i, _ in observed] == [0, 5, 10, 15, 20]
    losses = result.history["train_loss"]
    np.testing.assert_allclose([r for _, r in observed], np.sqrt(2 * losses) / 2.0)
    # each refresh sees the residual of the last record before it (steps 5, 10, 15)
    np.testing.assert_allclose(calls, [observed[1][1], observed[2][1], observed[3][1]])


@settings(max_examples=60, deadline=None)
@given(every=st.integers(1, 60), window=st.one_of(st.none(), st.integers(1, 40)),
       record_every=st.integers(1, 15),
       factors=st.lists(st.floats(0.5, 1.2), min_size=1, max_size=40))
def test_schedule_invariants(every, window, record_every, factors):
    # residuals follow random factors per record; the solver's order: due() before
    # the step, then a record at that step
    schedule = RefreshSchedule(every, stall_window=window, stall_ratio=0.9)
    residual, fired, last = 1.0, [], 0
    n_steps = record_every * len(factors)
    for iteration in range(1, n_steps + 1):
        if schedule.due(iteration):
            gap = iteration - last
            assert gap <= every  # never later than `every` after the last one
            if window is None:
                assert gap == every
            else:
                assert gap == every or gap >= window  # a stall needs a full window
            fired.append(iteration)
            last = iteration
        if iteration % record_every == 0:
            residual *= factors[iteration // record_every - 1]
            schedule.observe(iteration, residual)
    # with no stall detection the refreshes are exactly the multiples of `every`
    if window is None:
        assert fired == list(range(every, n_steps + 1, every))


def _fire_gaps(schedule, residual_after_refresh, n_steps=600, start=1.0):
    """Gaps between refreshes when every record (each step) shows ``residual``
    (``start`` at first), which ``residual_after_refresh(r)`` updates at each refresh."""
    residual, fired, last = start, [], 0
    for iteration in range(1, n_steps + 1):
        if schedule.due(iteration):
            fired.append(iteration - last)
            last = iteration
            residual = residual_after_refresh(residual)
        schedule.observe(iteration, residual)
    return fired


def test_schedule_backs_off_after_refreshes_that_do_not_help():
    # a flat residual (a noise floor): every window is a stall; after three
    # unhelpful refreshes in a row each further one doubles the window, up to every
    flat = _fire_gaps(RefreshSchedule(100, stall_window=10), lambda r: r, start=0.01)
    # the first refresh waits for a record 10 steps after the first one (at step 1)
    assert flat[:4] == [12, 11, 11, 11]
    assert flat[4:8] == [21, 41, 81, 100]
    assert set(flat[8:]) == {100}
    # refreshes that help (the residual halves at each) keep the window short
    helping = _fire_gaps(RefreshSchedule(100, stall_window=10), lambda r: r / 2)
    assert helping[0] == 12 and set(helping[1:]) == {11}


def test_reaimed_columns_are_as_long_as_the_live_ones_on_average():
    factors, products, _ = _dead_and_live()
    factors.left[:, :2] *= [3.0, 5.0]  # live columns of lengths 3 and 5 (and 2, 4 on the right)
    factors.right[:, :2] *= [2.0, 4.0]
    assert SubspaceRefresh(products, np, every=10, random_state=4)(factors) == 4
    np.testing.assert_allclose(np.linalg.norm(factors.left[:, 2:], axis=0), 4.0, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(factors.right[:, 2:], axis=0), 3.0, rtol=1e-12)
    np.testing.assert_allclose(sorted(np.linalg.norm(factors.left[:, :2], axis=0)), [3.0, 5.0],
                               rtol=1e-12)


def test_refresh_of_a_chain_without_inner_factors_changes_nothing():
    rng = np.random.default_rng(0)
    factors = models.DeepFactors(rng.standard_normal((6, 3)), [], rng.standard_normal((5, 3)))
    before = [a.copy() for a in factors.arrays()]
    assert SubspaceRefresh(lambda a, b: None, np)(factors, 1e-9) == 0
    for a, b in zip(factors.arrays(), before):
        np.testing.assert_array_equal(a, b)


def test_schedule_boundaries():
    default = RefreshSchedule()
    assert (default.every, default.stall_window, default.stall_ratio) == (100, 20, 0.9)
    RefreshSchedule(5, stall_window=1)  # the smallest window
    # a fall by exactly the ratio is progress, not a stall
    schedule = RefreshSchedule(1000, stall_window=10, stall_ratio=0.5)
    schedule.observe(0, 1.0)
    schedule.observe(10, 0.5)
    assert not schedule.due(11)
    schedule.observe(20, 0.25)
    assert not schedule.due(21)
    # a refresh after which the residual fell by exactly the ratio helped: the
    # window stays, even at a level far from 1
    exact = _fire_gaps(RefreshSchedule(100, stall_window=10, stall_ratio=0.5), lambda r: r * 0.5)
    assert set(exact[1:]) == {11}
