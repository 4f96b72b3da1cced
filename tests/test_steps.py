"""Step rules (dmc.steps): each against an independent reference.

- ConstantStep is plain gradient descent: the solver with it matches a
  hand-written loop ``f -= step * grad`` step for step.
- RelativeStep keeps the gradient-flow path: it reaches the same completed
  matrix as constant small-step gradient descent on an underdetermined
  problem, where the implicit bias decides the answer (so does the default,
  RelativeStep with momentum 0.5; a rule that leaves gradient flow,
  PreconditionedStep, does not).
- Momentum is heavy ball, checked against a hand-written loop.
- PreconditionedStep's direction solves the damped Gram equations, checked
  against explicitly formed products and inverses.
"""

import math
import types
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmc import DeepMatrixCompleter, DivergenceError, models, steps
from dmc.backend import make_pattern, observed_triplets
from dmc.datasets import make_low_rank
from dmc.solver import ConvergenceWarning, gradient_descent


def _random_factors(rng, m, n, k, depth, scale=1.0):
    return models.DeepFactors(rng.standard_normal((m, k)) / np.sqrt(m),
                              [scale * rng.standard_normal((k, k)) for _ in range(depth)],
                              rng.standard_normal((n, k)) / np.sqrt(n))


def _problem(m=30, n=20, rank=2, fraction=0.5, seed=0):
    M, mask = make_low_rank((m, n), rank, fraction, random_state=seed)
    obs, _ = observed_triplets(M, mask)
    pattern = make_pattern(obs, np.float64)
    return M, mask, obs, pattern


def test_constant_step_is_plain_gradient_descent():
    rng = np.random.default_rng(0)
    M, mask, obs, pattern = _problem()
    factors = _random_factors(rng, 30, 20, 4, 3, scale=0.5)
    reference = factors.copy()
    step_sizes = [1e-3, 2e-2, 3e-2, 4e-2, 5e-4]

    def loss_and_gradients(f):
        return models.sparse_loss_and_gradients(f, pattern, obs.values)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = gradient_descent(factors, loss_and_gradients, steps.ConstantStep(step_sizes),
                                  max_iter=7, tol=0.0, observed_norm=1.0, record_every=1)
    for _ in range(7):  # by hand
        _, grads = loss_and_gradients(reference)
        for array, grad, step in zip(reference.arrays(), grads.arrays(), step_sizes):
            array -= step * grad
    for got, want in zip(factors.arrays(), reference.arrays()):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(result.history["step_size"], 2e-2)


def test_momentum_is_heavy_ball():
    rng = np.random.default_rng(1)
    M, mask, obs, pattern = _problem()
    factors = _random_factors(rng, 30, 20, 4, 3, scale=0.5)
    reference = factors.copy()
    step_sizes = [1e-3, 2e-2, 3e-2, 4e-2, 0.0]  # a frozen factor stays frozen
    beta = 0.7

    def loss_and_gradients(f):
        return models.sparse_loss_and_gradients(f, pattern, obs.values)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gradient_descent(factors, loss_and_gradients,
                         steps.Momentum(steps.ConstantStep(step_sizes), beta=beta),
                         max_iter=9, tol=0.0, observed_norm=1.0, record_every=1)
    velocity = [np.zeros_like(a) for a in reference.arrays()]
    for _ in range(9):  # x <- x - v,  v <- beta v + step * grad
        _, grads = loss_and_gradients(reference)
        for array, v, grad, step in zip(reference.arrays(), velocity, grads.arrays(), step_sizes):
            v[...] = beta * v + step * grad
            array -= v
    for got, want in zip(factors.arrays(), reference.arrays()):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def _explicit_chain(f):
    """Dense left/right products around each factor, built from scratch."""
    inner = f.inner
    chains = []
    for l in range(len(inner)):
        left = f.left
        for w in reversed(inner[l + 1:]):
            left = left @ w
        right = f.right.T
        for w in inner[:l]:
            right = w @ right
        chains.append((left, right))
    return chains


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_preconditioned_direction_solves_damped_gram_equations(depth):
    rng = np.random.default_rng(depth)
    m, n, k = 12, 9, 4
    f = _random_factors(rng, m, n, k, depth)
    grads = _random_factors(rng, m, n, k, depth)
    expected_grads = grads.copy()
    context = steps.StepContext(lr=1.0, outer_ratio=0.01, target_scale=3.0, observed_fraction=0.5)
    rule = steps.PreconditionedStep(damping=0.1, newton=0.5, outer=0.3, tau=1e-9, outer_damping=0.02)
    state = rule.init(f, context)
    updates, state = rule.update(f, grads, state)
    eta = float(state["eta"])
    lam = [0.1 * 3.0 ** (2.0 * d / depth) for d in range(depth)] + [0.02 * 3.0 ** 2]
    for l, (P, S) in enumerate(_explicit_chain(f)):
        want = (np.linalg.inv(P.T @ P + lam[depth - 1 - l] * np.eye(k)) @ expected_grads.inner[l]
                @ np.linalg.inv(S @ S.T + lam[l] * np.eye(k)))
        np.testing.assert_allclose(updates[1 + l], eta * want, rtol=1e-9, atol=1e-14)
    C = np.linalg.multi_dot(f.inner[::-1]) if depth > 1 else f.inner[0]
    right_product = C @ f.right.T  # X = left @ right_product
    left_product = f.left @ C      # X = left_product @ right.T
    want_left = expected_grads.left @ np.linalg.inv(right_product @ right_product.T + lam[depth] * np.eye(k))
    want_right = expected_grads.right @ np.linalg.inv(left_product.T @ left_product + lam[depth] * np.eye(k))
    np.testing.assert_allclose(updates[0], 0.3 * eta * want_left, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(updates[-1], 0.3 * eta * want_right, rtol=1e-9, atol=1e-14)
    # tau tiny: the relative-change bound is the one that binds
    ratio = min(np.linalg.norm(w) / np.linalg.norm(u / eta) for w, u in zip(f.inner, updates[1:-1]))
    assert eta == pytest.approx(1e-9 * ratio, rel=1e-9)


def _complete(M, mask, rule, lr="auto"):
    # the paper's gamma: at the default 0.05 the relative step alone (no momentum)
    # took 14,560 steps here against 4,540 for constant steps (same completed matrix)
    # (the preconditioned rule sizes its own steps: it takes neither lr nor gamma)
    steps_given = {} if rule == "preconditioned" else {"lr": lr, "gamma": 0.01}
    model = DeepMatrixCompleter(rank=6, step_rule=rule, init_scale=1e-2, tol=1e-5, **steps_given,
                                max_iter=100000, record_every=20, random_state=0)
    return model.fit(M, mask)


def _unobserved_gap(model, reference, mask):
    X, X_ref = model.transform(), reference.transform()
    return np.linalg.norm((X - X_ref)[~mask]) / np.linalg.norm(X_ref[~mask])


def test_relative_step_follows_the_constant_small_step_path():
    # 24 x 24, rank 2, 30% observed, rank budget 6 (k = 12): the observed
    # entries do not determine X; where gradient descent ends is its implicit
    # bias.  Every fit stops at the same residual (tol), so the completed
    # entries differ only by the path taken.
    M, mask = make_low_rank((24, 24), 2, 0.3, random_state=3)
    slow = _complete(M, mask, "constant")
    small_step = _complete(M, mask, "constant", lr=slow.lr_ / 4)
    fast = _complete(M, mask, steps.RelativeStep(tau=0.01))
    assert slow.converged_ and small_step.converged_ and fast.converged_
    assert _unobserved_gap(fast, small_step, mask) < 1e-3
    assert fast.n_iter_ < slow.n_iter_  # the plateau is skipped
    # the default adds heavy-ball momentum (beta 0.5): a different discrete
    # path that stays close to gradient flow (measured gap 1.5e-4)
    default = _complete(M, mask, "adaptive")
    assert default.converged_ and _unobserved_gap(default, small_step, mask) < 1e-3
    # the comparison tells paths apart: preconditioning leaves gradient flow
    # and ends elsewhere (which is why it is not the default)
    other = _complete(M, mask, "preconditioned")
    assert other.converged_ and _unobserved_gap(other, small_step, mask) > 0.05


@settings(max_examples=6, deadline=None)
@given(m=st.integers(30, 45), n=st.integers(30, 45), rank=st.integers(1, 3),
       rule=st.sampled_from(["adaptive", "auto"]), seed=st.integers(0, 2**16))
def test_adaptive_rule_completes(m, n, rank, rule, seed):
    # depth 3; depth 2 has a slow tail (U, V at gamma * lr) and depth 4 a
    # plateau per singular value under every rule but "preconditioned"
    M, mask = make_low_rank((m, n), rank, 0.7, random_state=seed)
    model = DeepMatrixCompleter(rank=rank + 1, step_rule=rule, tol=1e-7,
                                max_iter=10000, random_state=seed).fit(M, mask)
    assert model.converged_
    X = model.transform()
    assert np.linalg.norm(X - M) / np.linalg.norm(M) < 1e-4
    assert np.all(np.isfinite(model.history_["step_size"]))


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
@settings(max_examples=8, deadline=None)
@given(m=st.integers(30, 60), n=st.integers(30, 60), rank=st.integers(1, 4),
       budget_over=st.integers(0, 6), fraction=st.floats(0.25, 0.8),
       kappa=st.sampled_from([1.0, 10.0, 100.0]), seed=st.integers(0, 2**16))
def test_preconditioned_rule_with_defaults_never_diverges(m, n, rank, budget_over, fraction,
                                                          kappa, seed):
    # the auto outer step is long only on well-sampled rows and columns, so the
    # defaults (with the stall-triggered refresh and pruning) stay finite from
    # 25% observed on, including rows with fewer entries than the width (120
    # random draws of this test: none diverged, against 3 of 60 with
    # outer=1.5 everywhere); where the data determine the matrix comfortably
    # they also recover it.  Known limit: below that, with a handful of entries
    # per row (54 x 42, 15.6%, 3 in the sparse rows, rank budget 9) the rule
    # diverged after ~1,900 steps, as it did before the auto outer step.
    M, mask = make_low_rank((m, n), rank, fraction, condition_number=kappa, random_state=seed)
    model = DeepMatrixCompleter(rank=rank + budget_over, step_rule="preconditioned", tol=1e-7,
                                max_iter=3000, random_state=seed).fit(M, mask)
    assert np.all(np.isfinite(model.transform()))
    dof = rank * (m + n - rank)
    if fraction >= 0.6 and mask.sum() >= 4 * dof and kappa <= 10:
        assert np.linalg.norm(model.transform() - M) / np.linalg.norm(M) < 1e-3


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
@pytest.mark.parametrize("shape", [(40, 30), (30, 40)])
def test_preconditioned_rule_completes_ill_conditioned(shape):
    # kappa = 10: in 5,000 steps the constant step is still on its plateau
    # (error 1.0) and the adaptive one waits on the third direction (0.32);
    # preconditioning reaches 1e-7 (measured on three seeds)
    M, mask = make_low_rank(shape, 3, 0.6, condition_number=10.0, random_state=1)
    model = DeepMatrixCompleter(rank=4, step_rule="preconditioned", tol=1e-8, max_iter=5000,
                                random_state=0).fit(M, mask)
    assert np.linalg.norm(model.transform() - M) / np.linalg.norm(M) < 1e-5


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")  # capped on purpose
def test_adaptive_rule_leaves_the_plateau_constant_steps_stay_on():
    # depth 4 from eps = 1e-3: the constant step needs ~1 / (lr sigma eps**2)
    # steps to leave the start; the adaptive one leaves it within the cap
    M, mask = make_low_rank((20, 20), 2, 0.6, random_state=0)
    fits = {rule: DeepMatrixCompleter(rank=3, depth=4, step_rule=rule, tol=1e-8, max_iter=2000,
                                      random_state=0).fit(M, mask)
            for rule in ("constant", "adaptive")}
    errors = {rule: np.linalg.norm(f.transform() - M) / np.linalg.norm(M) for rule, f in fits.items()}
    assert errors["constant"] > 0.99 and errors["adaptive"] < 0.8


def test_step_rule_validation():
    M, mask = make_low_rank((20, 20), 2, 0.5, random_state=0)
    with pytest.raises(ValueError, match="step_rule must be one of"):
        DeepMatrixCompleter(step_rule="fast").fit(M, mask)
    with pytest.raises(TypeError, match="step_rule must be one of"):
        DeepMatrixCompleter(step_rule=3).fit(M, mask)
    with pytest.raises(ValueError, match='method="compressed" only'):
        DeepMatrixCompleter(rank=2, method="narrow", step_rule="adaptive").fit(M, mask)
    with pytest.raises(ValueError, match="tau"):
        steps.RelativeStep(tau=2)
    with pytest.raises(ValueError, match="damping"):
        steps.PreconditionedStep(damping=0)
    with pytest.raises(ValueError, match="beta"):
        steps.Momentum("adaptive", beta=1.0)


def test_constant_rule_history_records_lr():
    M, mask = make_low_rank((20, 20), 2, 0.5, random_state=0)
    model = DeepMatrixCompleter(rank=2, step_rule="constant", max_iter=30, tol=0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(M, mask)
    np.testing.assert_array_equal(model.history_["step_size"], model.lr_)


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
@pytest.mark.parametrize("rule", ["adaptive", "preconditioned"])
def test_float32_tiny_gradients_do_not_divide_by_zero(rule):
    # float32, no normalization, depth 4 from eps = 1e-3 on data of size 1e-12:
    # the gradients underflow to exact zeros; the rules' guards must not
    # (a 1e-300 guard is 0 in float32: 0 / 0, a RuntimeWarning, an error here)
    M, mask = make_low_rank((20, 20), 2, 0.6, random_state=0)
    model = DeepMatrixCompleter(rank=2, depth=4, step_rule=rule, normalize=False, dtype="float32",
                                max_iter=30, random_state=0).fit((M * 1e-12).astype(np.float32), mask)
    assert np.all(np.isfinite(model.history_["step_size"]))
    assert np.all(np.isfinite(model.transform()))


# -- unit checks with hand-computed values (found by mutation testing, tools/mutation.py)

def _context(**kwargs):
    values = dict(lr=0.1, outer_ratio=0.01, target_scale=4.0, observed_fraction=0.5)
    values.update(kwargs)
    return steps.StepContext(**values)


def _diagonal_factors(inner_diagonals, m=3, n=2):
    """Factors with diagonal inner factors, so products and norms are by hand."""
    k = len(inner_diagonals[0])
    return models.DeepFactors(np.ones((m, k)), [np.diag(np.asarray(d, float)) for d in inner_diagonals],
                              np.ones((n, k)))


def test_constant_step_defaults_and_step_size():
    assert steps.StepContext(1.0, 1.0, 1.0, 1.0).xp is np
    factors = _diagonal_factors([[1.0, 1.0], [1.0, 1.0]])
    rule = steps.ConstantStep()
    assert rule.step_sizes is None
    state = rule.init(factors, _context())
    assert state["steps"] == pytest.approx([0.001, 0.1, 0.1, 0.001], rel=1e-15)
    assert rule.step_size(state) == pytest.approx(0.1)
    two = steps.ConstantStep([3, 2])
    assert two.step_sizes == [3.0, 2.0] and all(type(s) is float for s in two.step_sizes)
    assert two.step_size({"steps": [3.0, 2.0]}) == 3.0
    assert steps.ConstantStep([1.0, 5.0, 7.0]).step_size({"steps": [1.0, 5.0, 7.0]}) == 5.0
    with pytest.raises(ValueError, match="3 step sizes for 4 factors"):
        steps.ConstantStep([1.0, 2.0, 3.0]).init(factors, None)
    grads = _diagonal_factors([[2.0, 2.0], [3.0, 3.0]])
    updates, _ = steps.ConstantStep([0.5, 0.0, 2.0, 1.0]).update(
        factors, grads, {"steps": [0.5, 0.0, 2.0, 1.0]})
    assert updates[1] is None
    np.testing.assert_array_equal(updates[0], 0.5 * np.ones((3, 2)))
    np.testing.assert_array_equal(updates[2], 2.0 * np.diag([3.0, 3.0]))
    np.testing.assert_array_equal(updates[3], np.ones((2, 2)))


def test_norm_tiny_smallest():
    x = np.array([[3.0, 0.0], [0.0, 4.0]])
    assert float(steps._norm(x, np)) == 5.0
    assert steps._tiny(np.zeros(2, np.float32), np) == float(np.finfo(np.float32).tiny)
    assert steps._tiny(np.zeros(2), np) == float(np.finfo(np.float64).tiny)
    assert float(steps._smallest([np.float64(3.0), np.float64(1.0), np.float64(2.0)], np)) == 1.0


def test_power_iteration_two_warm_steps_hand_computed():
    C = np.diag([3.0, 1.0])
    v0 = np.ones(2) / np.sqrt(2)
    sigma, v = steps._top_singular_value(C, v0, np)
    # C^T C = diag(9, 1): two steps give (81, 1) / sqrt(6562); sigma = ||C v||
    v_expected = np.array([81.0, 1.0]) / np.sqrt(6562.0)
    np.testing.assert_allclose(v, v_expected, rtol=1e-14)
    assert float(sigma) == pytest.approx(np.sqrt(243.0**2 + 1.0) / np.sqrt(6562.0), rel=1e-14)
    sigma1, v1 = steps._top_singular_value(C, v0, np, iterations=1)
    np.testing.assert_allclose(v1, np.array([9.0, 1.0]) / np.sqrt(82.0), rtol=1e-14)
    # the zero matrix: the guard keeps the vector finite
    sigma0, vz = steps._top_singular_value(np.zeros((2, 2)), v0, np)
    assert float(sigma0) == 0.0 and np.all(vz == 0.0)


def test_relative_step_init_state():
    factors = _diagonal_factors([[1.0] * 4, [1.0] * 4, [1.0] * 4])
    state = steps.RelativeStep().init(factors, _context())
    np.testing.assert_allclose(state["vector"], np.full(4, 0.5), rtol=1e-15)
    assert state["eta"] == 0.1 and state["exponent"] == pytest.approx(4.0 / 3.0, rel=1e-15)
    assert steps.RelativeStep().tau == 0.05 and type(steps.RelativeStep(1 / 4).tau) is float
    with pytest.raises(ValueError, match="at least one inner factor"):
        steps.RelativeStep().init(models.DeepFactors(np.ones((3, 2)), [], np.ones((2, 2))), _context())


@pytest.mark.parametrize("tau", [0, 1, -0.5, 1.5, "0.1", None])
def test_relative_step_tau_must_be_in_the_open_unit_interval(tau):
    with pytest.raises(ValueError, match="tau must be a number in"):
        steps.RelativeStep(tau=tau)


@pytest.mark.parametrize("a, g, lr, target, expected", [
    # inner = [a I, a I] (k = 2), grads = [g I, 2 g I]; product a^2 I, sigma = a^2, exponent 1
    # relative = tau * min(a/g, a/(2g)) = 0.1 * a / (2 g); stable = lr * target / a^2
    (1.0, 1.0, 0.01, 100.0, 0.05),     # relative 0.05 > lr; stable 1: relative binds
    (1.0, 1.0, 0.2, 100.0, 0.2),       # relative 0.05 < lr: lr binds
    (2.0, 1.0, 0.01, 2.0, 0.005),      # relative 0.1, stable 0.01 * 2 / 4 = 0.005 binds
])
def test_relative_step_scalar_hand_computed(a, g, lr, target, expected):
    factors = _diagonal_factors([[a, a], [a, a]])
    grads = _diagonal_factors([[g, g], [2 * g, 2 * g]])
    grads.left = np.full((3, 2), 3.0)
    grads.right = np.full((2, 2), 5.0)
    context = _context(lr=lr, outer_ratio=0.5, target_scale=target)
    rule = steps.RelativeStep(tau=0.1)
    state = rule.init(factors, context)
    updates, state = rule.update(factors, grads, state)
    eta = float(state["eta"])
    assert eta == pytest.approx(expected, rel=1e-12)
    assert float(rule.step_size(state)) == eta
    np.testing.assert_allclose(updates[0], np.full((3, 2), 3.0 * 0.5 * eta), rtol=1e-12)
    np.testing.assert_allclose(updates[1], eta * np.diag([g, g]), rtol=1e-12)
    np.testing.assert_allclose(updates[2], eta * np.diag([2 * g, 2 * g]), rtol=1e-12)
    np.testing.assert_allclose(updates[3], np.full((2, 2), 5.0 * 0.5 * eta), rtol=1e-12)


def test_relative_step_stable_term_uses_the_depth_exponent():
    # three inner factors 2 I: product 8 I, sigma 8, exponent 4/3; tiny tau, so
    # eta = min(lr, lr * (target / 8)^(4/3)) with target 1: lr * 16^(-1) ... by hand
    factors = _diagonal_factors([[2.0, 2.0]] * 3)
    grads = _diagonal_factors([[1.0, 1.0]] * 3)
    rule = steps.RelativeStep(tau=1e-6)
    state = rule.init(factors, _context(lr=0.3, target_scale=1.0))
    _, state = rule.update(factors, grads, state)
    assert float(state["eta"]) == pytest.approx(0.3 * (1.0 / 8.0) ** (4.0 / 3.0), rel=1e-12)


@pytest.mark.parametrize("name, value", [("damping", 0), ("damping", -1.0), ("newton", 0),
                                         ("newton", 2), ("outer", 0), ("outer", 2), ("tau", 0),
                                         ("tau", 1), ("tau", "x")])
def test_preconditioned_parameter_ranges(name, value):
    with pytest.raises(ValueError, match=f"{name} must be a number in"):
        steps.PreconditionedStep(**{name: value})


def test_preconditioned_defaults_and_init_hand_computed():
    rule = steps.PreconditionedStep()
    assert (rule.damping, rule.newton, rule.outer, rule.tau, rule.outer_damping) == (
        1e-2, 0.5, "auto", 0.2, 1e-3)
    edge = steps.PreconditionedStep(damping=1e9, newton=1.999, outer=1.999, tau=0.999)
    assert edge.newton == 1.999
    factors = _diagonal_factors([[1.0, 1.0, 1.0]] * 2)
    state = steps.PreconditionedStep(damping=0.5, newton=0.8, outer_damping=0.5).init(
        factors, _context(target_scale=9.0))
    # lambda_d = 0.5 * 9^(2 d / 2) = 0.5 * 9^d for d = 0, 1, 2; eta_max = 0.8 / (2 * 0.5)
    np.testing.assert_allclose(state["dampings"], [0.5, 4.5, 40.5], rtol=1e-15)
    assert state["eta_max"] == pytest.approx(0.8) and state["eta"] == state["eta_max"]
    np.testing.assert_array_equal(state["eye"], np.eye(3))
    with pytest.raises(ValueError, match="at least one inner factor"):
        rule.init(models.DeepFactors(np.ones((3, 2)), [], np.ones((2, 2))), _context())


@pytest.mark.parametrize("per_line, expected", [(None, 0.3), (0.0, 0.3), (3.0, 0.3), (5.99, 0.3),
                                                (6.0, 1.5), (40.0, 1.5)])
def test_preconditioned_auto_outer_step_follows_the_sparse_lines(per_line, expected):
    factors = _diagonal_factors([[1.0, 1.0, 1.0]] * 2)  # k = 3
    state = steps.PreconditionedStep().init(factors, _context(observed_per_line=per_line))
    assert state["outer"] == expected
    # a number is used as given, whatever the sampling
    fixed = steps.PreconditionedStep(outer=0.7).init(factors, _context(observed_per_line=40.0))
    assert fixed["outer"] == 0.7


def test_preconditioned_outer_step_scales_the_outer_updates():
    rng = np.random.default_rng(1)
    f = _random_factors(rng, 6, 5, 3, 2)
    grads = _random_factors(rng, 6, 5, 3, 2)
    updates = {}
    for per_line in (None, 10.0):
        rule = steps.PreconditionedStep()
        state = rule.init(f, _context(observed_per_line=per_line))
        copies = models.DeepFactors.from_arrays([g.copy() for g in grads.arrays()])
        updates[per_line], _ = rule.update(f, copies, state)
    # inner updates alike; outer ones 1.5 / 0.3 = 5 times longer when well sampled
    for a, b in zip(updates[None][1:-1], updates[10.0][1:-1]):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    for a, b in ((updates[None][0], updates[10.0][0]), (updates[None][-1], updates[10.0][-1])):
        np.testing.assert_allclose(b, 5.0 * a, rtol=1e-12)


@pytest.mark.parametrize("bad", [0, 0.0, -1e-3, math.inf, float("nan"), "x", None])
def test_preconditioned_outer_damping_validation(bad):
    with pytest.raises(ValueError, match="^outer_damping must be a positive number"):
        steps.PreconditionedStep(outer_damping=bad)


def test_preconditioned_outer_number_is_stored_as_float_and_auto_needs_no_count():
    rule = steps.PreconditionedStep(outer=1)
    assert rule.outer == 1.0 and isinstance(rule.outer, float)
    # a context without observed_per_line (a rule used outside the estimators)
    bare = types.SimpleNamespace(lr=0.1, outer_ratio=0.01, target_scale=4.0,
                                 observed_fraction=0.5, xp=np, resolved_scale=None)
    assert steps.PreconditionedStep().outer_step(3, bare) == 0.3


@pytest.mark.parametrize("bad", ["fast", "AUTO", None, 0.0, 2.5])
def test_preconditioned_outer_validation(bad):
    with pytest.raises(ValueError, match="outer must be"):
        steps.PreconditionedStep(outer=bad)


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
def test_preconditioned_auto_outer_step_is_stable_and_long_where_it_may_be():
    # 60 x 60, rank 4, rank budget 15 (k = 30), 20% observed: about 12 entries
    # per row, fewer than 2k: the long outer step diverges here (measured on
    # seeds 1, 2, 3), auto takes the short one
    M, mask = make_low_rank((60, 60), 4, 0.2, random_state=1)
    with pytest.raises(DivergenceError):
        DeepMatrixCompleter(rank=15, step_rule=steps.PreconditionedStep(outer=1.5), max_iter=8000,
                            tol=1e-6, random_state=0).fit(M, mask)
    DeepMatrixCompleter(rank=15, step_rule="preconditioned", max_iter=8000, tol=1e-6,
                        random_state=0).fit(M, mask)  # no DivergenceError
    # 100 x 100, rank 3, budget 5 (k = 10), 30%: about 24 per row, the long step
    # recovers where the short one stalls (measured 1e-2 after 8,000 steps)
    M, mask = make_low_rank((100, 100), 3, 0.3, random_state=1)
    fit = DeepMatrixCompleter(rank=5, step_rule="preconditioned", max_iter=2000, tol=1e-6,
                              random_state=0).fit(M, mask)
    assert np.linalg.norm(fit.transform() - M) / np.linalg.norm(M) < 1e-4


def test_preconditioned_eta_capped_by_the_newton_step():
    # large tau: eta = eta_max = newton / (depth p) = 0.5 / (2 * 0.25) = 1
    rng = np.random.default_rng(0)
    f = _random_factors(rng, 6, 5, 3, 2)
    grads = _random_factors(rng, 6, 5, 3, 2, scale=1e-9)  # tiny inner directions
    rule = steps.PreconditionedStep(tau=0.999)
    state = rule.init(f, _context(observed_fraction=0.25))
    _, state = rule.update(f, grads, state)
    assert float(state["eta"]) == 1.0 and rule.step_size(state) is state["eta"]


@pytest.mark.parametrize("beta", [-0.1, 1.0, 2, "0.5", None])
def test_momentum_beta_range(beta):
    with pytest.raises(ValueError, match="beta must be a number in"):
        steps.Momentum("constant", beta=beta)


def test_momentum_accepts_names_and_zero_beta_is_the_rule():
    m = steps.Momentum("constant")
    assert isinstance(m.rule, steps.ConstantStep) and m.beta == 0.8
    factors = _diagonal_factors([[1.0, 1.0]])
    rule = steps.Momentum(steps.ConstantStep([1.0, 0.5, 0.0]), beta=0.0)
    state = rule.init(factors, None)
    assert state["velocity"] is None
    for _ in range(3):
        grads = _diagonal_factors([[2.0, 2.0]])
        updates, state = rule.update(factors, grads, state)
        np.testing.assert_array_equal(updates[0], np.ones((3, 2)))
        np.testing.assert_array_equal(updates[1], np.diag([1.0, 1.0]))
        assert updates[2] is None
    assert rule.step_size(state) == 0.5


def test_momentum_first_velocity_is_a_copy():
    factors = _diagonal_factors([[1.0, 1.0]])
    rule = steps.Momentum(steps.ConstantStep([1.0, 1.0, 1.0]), beta=0.5)
    state = rule.init(factors, None)
    grads = _diagonal_factors([[2.0, 2.0]])
    updates, state = rule.update(factors, grads, state)
    grads.left[...] = 100.0  # the rule's update was this array: the velocity must not follow
    np.testing.assert_array_equal(state["velocity"][0], np.ones((3, 2)))


def test_make_step_rule():
    assert type(steps.make_step_rule("constant")) is steps.ConstantStep
    assert type(steps.make_step_rule("preconditioned")) is steps.PreconditionedStep
    adaptive = steps.make_step_rule("adaptive")
    assert type(adaptive) is steps.Momentum and adaptive.beta == 0.5
    assert type(adaptive.rule) is steps.RelativeStep and adaptive.rule.tau == 0.05
    switching = steps.make_step_rule("switching")
    assert type(switching) is steps.SwitchOnStall and switching.window == 1000
    assert type(switching.first) is steps.Momentum and type(switching.second) is steps.PreconditionedStep
    rule = steps.RelativeStep()
    assert steps.make_step_rule(rule) is rule
    with pytest.raises(ValueError, match=r"step_rule must be one of \['adaptive', 'constant', "
                                         r"'preconditioned', 'switching'\] or a step rule object; got 'x'"):
        steps.make_step_rule("x")

    class Partial:
        def init(self, factors, context):
            return None

        def update(self, factors, grads, state):
            return [], state
    with pytest.raises(TypeError, match="init, update and step_size"):
        steps.make_step_rule(Partial())
    assert set(steps.STEP_RULES) == {"constant", "adaptive", "preconditioned", "switching"}


def test_relative_step_with_zero_inner_gradients_takes_the_stable_step():
    # inner gradients exactly zero (outer ones not): the relative bound is infinite,
    # so the step is the stability limit lr * target / sigma = 0.1 * 100 / 1 = 10
    factors = _diagonal_factors([[1.0, 1.0], [1.0, 1.0]])
    grads = _diagonal_factors([[0.0, 0.0], [0.0, 0.0]])
    rule = steps.RelativeStep()
    state = rule.init(factors, _context(lr=0.1, target_scale=100.0, outer_ratio=1.0))
    updates, state = rule.update(factors, grads, state)
    assert float(state["eta"]) == pytest.approx(10.0, rel=1e-12)
    np.testing.assert_allclose(updates[0], 10.0 * np.ones((3, 2)), rtol=1e-12)


def test_relative_step_from_zero_inner_factors_is_lr():
    factors = _diagonal_factors([[0.0, 0.0], [0.0, 0.0]])
    grads = _diagonal_factors([[1.0, 1.0], [1.0, 1.0]])
    rule = steps.RelativeStep()
    state = rule.init(factors, _context(lr=0.1, target_scale=100.0))
    with np.errstate(over="ignore"):  # as in the solver: the stability bound is inf here
        _, state = rule.update(factors, grads, state)
    assert float(state["eta"]) == 0.1


def test_relative_step_with_one_inner_factor():
    factors = _diagonal_factors([[2.0, 2.0, 2.0]])
    grads = _diagonal_factors([[1.0, 1.0, 1.0]])
    rule = steps.RelativeStep(tau=0.5)
    state = rule.init(factors, _context(lr=0.1, target_scale=8.0))
    np.testing.assert_allclose(state["vector"], np.full(3, 1 / np.sqrt(3)), rtol=1e-15)
    assert state["exponent"] == 0.0
    _, state = rule.update(factors, grads, state)
    # relative 0.5 * 2 / 1 = 1; stable lr * (8 / 2)^0 = 0.1
    assert float(state["eta"]) == pytest.approx(0.1)


def test_preconditioned_step_with_zero_inner_gradients_takes_the_newton_cap():
    rng = np.random.default_rng(1)
    f = _random_factors(rng, 6, 5, 3, 2)
    grads = _random_factors(rng, 6, 5, 3, 2, scale=0.0)
    rule = steps.PreconditionedStep()
    state = rule.init(f, _context(observed_fraction=0.25))
    updates, state = rule.update(f, grads, state)
    assert float(state["eta"]) == 1.0  # newton / (depth p) = 0.5 / (2 * 0.25)
    assert np.all(np.isfinite(updates[0])) and np.any(updates[0] != 0)


def test_preconditioned_step_keeps_float32():
    rng = np.random.default_rng(2)
    f = _random_factors(rng, 6, 5, 3, 2)
    grads = _random_factors(rng, 6, 5, 3, 2)
    f = models.DeepFactors.from_arrays([a.astype(np.float32) for a in f.arrays()])
    grads = models.DeepFactors.from_arrays([a.astype(np.float32) for a in grads.arrays()])
    rule = steps.PreconditionedStep()
    state = rule.init(f, _context())
    assert state["eye"].dtype == np.float32
    updates, _ = rule.update(f, grads, state)
    assert all(u.dtype == np.float32 for u in updates)


def test_momentum_keeps_the_state_its_rule_returns():
    class Counting:
        """Returns a new state each step; its updates are the step count."""

        def init(self, factors, context):
            return 0

        def update(self, factors, grads, state):
            return [np.full(a.shape, float(state + 1)) for a in grads.arrays()], state + 1

        def step_size(self, state):
            return float(state)

    factors = _diagonal_factors([[1.0, 1.0]])
    rule = steps.Momentum(Counting(), beta=0.5)
    state = rule.init(factors, None)
    velocities = []
    for _ in range(3):
        updates, state = rule.update(factors, factors, state)
        velocities.append(float(updates[1][0, 0]))
    assert velocities == [1.0, 0.5 * 1.0 + 2.0, 0.5 * 2.5 + 3.0]
    assert rule.step_size(state) == 3.0


def test_relative_step_warm_starts_the_power_iteration():
    # product diag(3, 1): each step runs two more iterations from the stored vector,
    # so after two steps the vector is (3^8, 1) / norm and sigma follows it
    factors = _diagonal_factors([[3.0, 1.0], [1.0, 1.0]])
    grads = _diagonal_factors([[1.0, 1.0], [1.0, 1.0]])
    rule = steps.RelativeStep(tau=1e-9)
    state = rule.init(factors, _context(lr=0.1, target_scale=0.3))
    _, state = rule.update(factors, grads, state)
    np.testing.assert_allclose(state["vector"], np.array([81.0, 1.0]) / np.hypot(81.0, 1.0), rtol=1e-14)
    _, state = rule.update(factors, grads, state)
    np.testing.assert_allclose(state["vector"], np.array([3.0**8, 1.0]) / np.hypot(3.0**8, 1.0), rtol=1e-14)
    sigma = np.hypot(3.0**9, 1.0) / np.hypot(3.0**8, 1.0)
    assert float(state["eta"]) == pytest.approx(0.1 * 0.3 / sigma, rel=1e-12)


def test_preconditioned_damping_scale_follows_the_resolved_scale_within_bounds():
    rule = steps.PreconditionedStep(scale_floor=1e-3)
    assert rule.damping_scale(_context(target_scale=4.0)) == 4.0  # nothing measured yet
    assert rule.damping_scale(_context(target_scale=4.0, resolved_scale=0.5)) == 0.5
    assert rule.damping_scale(_context(target_scale=4.0, resolved_scale=1e-9)) == pytest.approx(4e-3)
    assert rule.damping_scale(_context(target_scale=4.0, resolved_scale=9.0)) == 4.0


def test_preconditioned_dampings_are_taken_at_the_damping_scale():
    # by hand: depth 2, damping 1e-2, outer 1e-3 at scale 0.5:
    # inner lambda_d = 1e-2 * 0.5 ** (2 d / 2) for d = 0, 1; outer 1e-3 * 0.5 ** 2
    factors = _diagonal_factors([[1.0, 2.0], [3.0, 1.0]])
    state = steps.PreconditionedStep().init(factors, _context(target_scale=4.0, resolved_scale=0.5))
    np.testing.assert_allclose(state["dampings"], [1e-2, 1e-2 * 0.5, 1e-3 * 0.25])


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "low"])
def test_preconditioned_scale_floor_validation(bad):
    with pytest.raises(ValueError, match="^scale_floor must be a number in"):
        steps.PreconditionedStep(scale_floor=bad)


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
@pytest.mark.parametrize("seed", [0, 1, 3])
def test_preconditioned_rule_with_refresh_reaches_tol(seed):
    # Before pruning (dmc.refresh, step 4), a direction that grew a little
    # after a re-aim had to shrink back polynomially: the loss crawled from
    # 9.6e-12 at step 1,200 to 1.9e-12 at 6,000 and tol was never reached.
    M, mask = make_low_rank((30, 40), 3, 0.6, condition_number=10.0, random_state=seed)
    params = dict(rank=4, step_rule="preconditioned", max_iter=3000, random_state=1)
    without_refresh = DeepMatrixCompleter(refresh_every=None, **params).fit(M, mask)
    assert without_refresh.converged_  # the comparison point: plain preconditioning gets there
    assert DeepMatrixCompleter(**params).fit(M, mask).converged_


# -- SwitchOnStall ----------------------------------------------------------------------
class _Recorder:
    """A step rule that returns its name as the update and counts its inits."""

    def __init__(self, name):
        self.name, self.inits = name, 0

    def init(self, factors, context):
        self.inits += 1
        return {"name": self.name}

    def update(self, factors, grads, state):
        return self.name, state

    def step_size(self, state):
        return 1.0 if self.name == "first" else 2.0


def test_switch_on_stall_switches_once_the_residual_stalls_below_the_threshold():
    first, second = _Recorder("first"), _Recorder("second")
    rule = steps.SwitchOnStall(first, second, window=30, ratio=0.9, below=0.5)
    state = rule.init(None, "context")
    # above `below`: a flat residual is the first plateau, not a stall
    for i in range(0, 100, 10):
        rule.observe(i, 0.8)
    assert not rule.switched
    # falling by more than 10% per 30 steps: no stall
    for i, r in zip(range(100, 160, 10), [0.4, 0.3, 0.2, 0.15, 0.1, 0.07]):
        rule.observe(i, r)
    assert not rule.switched
    assert rule.update(None, None, state)[0] == "first" and rule.step_size(state) == 1.0
    rule.observe(160, 0.069)
    rule.observe(170, 0.068)  # 30 steps back (140): 0.1; 0.068 < 0.09, still falling
    assert not rule.switched
    rule.observe(180, 0.0675)  # 30 back (150): 0.07 * 0.9 = 0.063 < 0.0675: stalled
    assert rule.switched and rule.switched_at == 180
    updates, state = rule.update(None, None, state)
    assert updates == "second" and rule.step_size(state) == 2.0
    assert second.inits == 1 and first.inits == 1
    rule.observe(190, 0.5)  # after the switch the records are not looked at
    assert rule.switched_at == 180
    # a restart of the state (a subspace refresh) stays with the second rule
    assert rule.update(None, None, rule.init(None, "context"))[0] == "second"


def test_switch_on_stall_needs_a_full_window():
    rule = steps.SwitchOnStall(_Recorder("a"), _Recorder("b"), window=50)
    for i in range(0, 50, 10):
        rule.observe(i, 0.1)  # flat, but never 50 steps back
    assert not rule.switched
    rule.observe(50, 0.1)
    assert rule.switched


@pytest.mark.parametrize("kwargs, match", [({"window": 0}, "window"), ({"window": 2.5}, "window"),
                                           ({"ratio": 1.0}, "ratio"), ({"below": 0}, "below")])
def test_switch_on_stall_parameter_checks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        steps.SwitchOnStall(**kwargs)


def test_switching_without_a_stall_is_the_adaptive_rule_exactly():
    # a well-conditioned problem the adaptive rule completes without stalling
    M, mask = make_low_rank((79, 147), 4, 0.62, random_state=2)
    adaptive = DeepMatrixCompleter(rank=12, step_rule="adaptive", random_state=0).fit(M, mask)
    switching = DeepMatrixCompleter(rank=12, step_rule="switching", random_state=0).fit(M, mask)
    assert switching.converged_ and switching.n_iter_ == adaptive.n_iter_
    np.testing.assert_array_equal(switching.transform(), adaptive.transform())
    np.testing.assert_array_equal(switching.history_["step_size"], adaptive.history_["step_size"])


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
def test_switching_takes_the_preconditioned_rule_after_a_stall():
    # kappa 100 on k to 2k entries per sparse line: the adaptive rule stalls
    M, mask = make_low_rank((102, 85), 2, 0.29, condition_number=100, random_state=16)
    fit = DeepMatrixCompleter(rank=6, step_rule="switching", max_iter=3000, random_state=0).fit(M, mask)
    steps_taken = fit.history_["step_size"]
    # after the switch PreconditionedStep's step ends at newton / (L p) = 0.5 / (3 p)
    newton_step = 0.5 / (3 * mask.mean())
    assert steps_taken[-1] == pytest.approx(newton_step, rel=1e-12)
    assert not np.any(np.isclose(steps_taken[:10], newton_step))  # adaptive at first
    assert np.linalg.norm(fit.transform() - M) / np.linalg.norm(M) < 1e-5
