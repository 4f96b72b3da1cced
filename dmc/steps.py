"""Step rules: how a gradient becomes an update (DESIGN.md section 7).

A step rule is a small object with one job, in the spirit of optax's
gradient transformations.  The solver calls

    state = rule.init(factors, context)
    updates, state = rule.update(factors, grads, state)     # every step
    factor -= update                                         # for each factor

and records ``rule.step_size(state)`` (the step of the inner factors) in the
history.  Rules work on the arrays of any backend with operators and
array-api functions only, so a step never synchronises with the host.

Rules
-----
:class:`ConstantStep`
    Plain gradient descent with fixed per-factor step sizes: the paper's
    method, kept for reproduction and for the theorem test.
:class:`RelativeStep`
    One common scalar step per iteration, large while the factors are tiny
    (the first plateau) and capped by the stability limit at the current
    scale of the product.  A common scalar keeps the direction of the
    gradient, so the fit follows the gradient-flow path, only faster: the
    implicit low-rank bias comes from that path.
:class:`PreconditionedStep`
    Damped per-direction preconditioning of every factor (the analogue of
    ScaledGD(lambda) for the compressed deep factorization), so that the
    number of steps no longer grows with the spread of the singular values.
:class:`Momentum`
    Heavy-ball momentum over any of the above (a transform of a rule's
    updates).
:class:`SwitchOnStall`
    One rule until the fit stalls, then another (``step_rule="switching"``:
    adaptive, then preconditioned).

``step_rule="adaptive"`` is ``Momentum(RelativeStep(), beta=0.5)``; which
rule ``step_rule="auto"`` takes is decided by the estimator from the
sampling (:func:`well_sampled`).

The rules see the factors through :class:`dmc.models.DeepFactors` (``left``,
``inner``, ``right``) and the problem through a :class:`StepContext`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from array_api_compat import device

from ._base import is_int, is_real
from .models import inner_product

__all__ = ["StepContext", "sum_over_rows", "ConstantStep", "RelativeStep", "PreconditionedStep", "Momentum",
           "SwitchOnStall", "make_step_rule", "STEP_RULES", "well_sampled", "is_preconditioned",
           "residual_stalled"]


def well_sampled(observed_per_line, k, *, per_column=2):
    """Whether a sparsely observed row or column holds at least ``per_column * k`` entries.

    ``observed_per_line`` is :meth:`dmc.observations.Observations.sparse_line_count`
    (None when unknown: not well sampled), ``k`` the width of the compressed
    model.  Where it holds, a Newton-like step sized for ``p`` times the full
    Gram matrix is safe: :class:`PreconditionedStep` takes its long outer
    step there and ``DeepMatrixCompleter(step_rule="auto")`` chooses the
    preconditioned rule.  2k, not k: at 1.1-1.5 k the long outer step
    converged without early stopping but diverged with it (100 x 100, rank 5,
    budget 10, 30% observed); below 2k the preconditioned rule ended at
    another interpolant on exact low-rank data (100 x 100, 20-30% observed,
    budgets 10 and 20: recovery error 0.03-0.25 where the adaptive rule
    reached 1e-8; benchmarks/README.md, "Peers").  Between k and 2k
    (``per_column=1``) the estimator takes :class:`SwitchOnStall`.
    """
    return observed_per_line is not None and observed_per_line >= per_column * k


def residual_stalled(records, window, ratio):
    """Whether a fit has stalled: its last recorded relative residual is above
    ``ratio`` times that of the latest record at least ``window`` steps older.

    ``records``: ``(iteration, residual)`` pairs in order, the last one now.
    Shared by :class:`SwitchOnStall` and :class:`dmc.refresh.RefreshSchedule`.
    """
    now, residual = records[-1]
    earlier = [r for i, r in records if i <= now - window]
    return bool(earlier) and residual > ratio * earlier[-1]


@dataclass(frozen=True)
class StepContext:
    """What a step rule may know about the problem, fixed at the start of a fit.

    Attributes
    ----------
    lr : float
        Base step of the inner factors: ``lr_`` of the estimator, the
        ``lr="auto"`` step (:func:`dmc.models.spectral_step_size`) by default.
    outer_ratio : float
        Step of the outer factors ``left``/``right`` relative to the inner
        ones (``gamma`` for the compressed model, 1 for the wide ones).
    target_scale : float
        Estimated top singular value of the matrix being fitted (``s_1 / p``
        from the initial gradient), the scale the factors grow to.
    observed_fraction : float
        ``|Omega| / (m n)``.
    xp : module
        The array namespace of the factors.
    row_sum : callable or None
        In a distributed fit (:mod:`dmc.distributed`) each process holds a
        block of the rows of ``left``: ``row_sum`` sums a small array over
        the processes (all-reduce), and a rule must pass every quantity it
        sums over the rows of ``left`` (a Gram matrix ``left.T @ left``, a
        norm of ``left`` or its gradient) through :func:`sum_over_rows`.
        None for one process.
    resolved_scale : float or None
        The smallest singular value of the current fit that the data
        resolve, from the last subspace refresh
        (:attr:`dmc.refresh.SubspaceRefresh.resolved_scale`); None before
        the first one.  :class:`PreconditionedStep` lowers its damping to it.
    observed_per_line : float or None
        Observed entries in a sparsely observed row or column
        (:meth:`dmc.observations.Observations.sparse_line_count`, the 10th
        percentile); None when unknown.  ``PreconditionedStep(outer="auto")``
        takes long outer steps only where it is at least twice the width k.
    """

    lr: float
    outer_ratio: float
    target_scale: float
    observed_fraction: float
    xp: object = np
    row_sum: object = None
    resolved_scale: float | None = None
    observed_per_line: float | None = None


def sum_over_rows(context, partial):
    """``partial`` summed over the processes holding rows of ``left`` (itself for one process)."""
    row_sum = getattr(context, "row_sum", None)
    return partial if row_sum is None else row_sum(partial)


def _norm(x, xp):
    """Frobenius norm as a 0-d array on the array's device (no host sync)."""
    return xp.sqrt(xp.sum(x * x))


def _tiny(x, xp):
    """The smallest normal number of ``x``'s dtype: a guard against division by
    zero that does not round to 0 in float32 (as 1e-300 would)."""
    return float(xp.finfo(x.dtype).tiny)


def _smallest(values, xp):
    return functools.reduce(xp.minimum, values)


class ConstantStep:
    """``f <- f - step_f * grad f`` with a fixed step per factor.

    Parameters
    ----------
    step_sizes : sequence of float, optional
        One step per array of ``factors.arrays()``.  Default (None): the
        context's ``lr`` on the inner factors and ``outer_ratio * lr`` on
        ``left`` and ``right``.
    """

    def __init__(self, step_sizes=None):
        self.step_sizes = None if step_sizes is None else [float(s) for s in step_sizes]

    def init(self, factors, context=None):
        steps = self.step_sizes
        if steps is None:
            outer = context.outer_ratio * context.lr
            steps = [outer] + [context.lr] * len(factors.inner) + [outer]
        if len(steps) != len(factors.arrays()):
            raise ValueError(f"{len(steps)} step sizes for {len(factors.arrays())} factors.")
        return {"steps": steps}

    def update(self, factors, grads, state):
        updates = []
        for grad, step in zip(grads.arrays(), state["steps"]):
            if step == 0.0:
                updates.append(None)
            else:
                grad *= step  # the gradient arrays are fresh each step: scale in place
                updates.append(grad)
        return updates, state

    def step_size(self, state):
        steps = state["steps"]
        return steps[1] if len(steps) > 2 else steps[0]


def _top_singular_value(C, vector, xp, iterations=2):
    """Power iteration on ``C^T C`` from the previous step's vector.

    ``C`` changes little between steps, so two warm-started iterations track
    its top singular value; matrix products only, so it stays on the device.
    Returns ``(sigma, vector)``.
    """
    for _ in range(iterations):
        w = C.T @ (C @ vector)
        vector = w / (_norm(w, xp) + _tiny(w, xp))
    return _norm(C @ vector, xp), vector


class RelativeStep:
    """One common scalar step: bounded relative change, capped by stability.

    At step t, with ``W_l`` the inner factors and ``C`` their product,

        eta_t = min( max(lr, tau * min_l ||W_l|| / ||grad W_l||),
                     lr * (target_scale / sigma_t) ** (2 (L - 1) / L) )

    and ``outer_ratio * eta_t`` on ``left`` and ``right``.  ``sigma_t`` is
    the top singular value of ``C`` (warm-started power iteration).

    Why: from ``eps`` times the identity the loss is almost flat in the
    factors, so the ``lr="auto"`` step, sized for the end of the fit, moves
    them by a relative ``~ lr * sigma * eps**(L-2)`` per step (the plateau).
    Bounding instead the relative change of every inner factor by ``tau``
    lets them grow geometrically.  The second term is the same stability
    limit that defines ``lr`` (:func:`dmc.models.spectral_step_size`), at the
    current scale of the product instead of the target's, so the step falls
    back to ``lr`` as the fit reaches its scale.  A common scalar keeps the
    gradient's direction: the iterates follow gradient flow, so the implicit
    low-rank bias of small-step gradient descent is kept (tested against a
    constant small step).

    Parameters
    ----------
    tau : float, default=0.05
        Bound on the relative change ``||delta W_l|| / ||W_l||`` per step
        while the plateau lasts.
    """

    def __init__(self, tau=0.05):
        if not is_real(tau) or not 0 < tau < 1:
            raise ValueError(f"tau must be a number in (0, 1); got {tau!r}.")
        self.tau = float(tau)

    def init(self, factors, context):
        if not factors.inner:
            raise ValueError("RelativeStep needs at least one inner factor (depth >= 3 for the "
                             "wide models); use step_rule='constant'.")
        k = factors.inner[0].shape[0]
        xp = context.xp
        vector = xp.ones_like(factors.inner[0][:, 0]) / math.sqrt(k)
        depth = len(factors.inner)
        return {"context": context, "vector": vector, "eta": context.lr,
                "exponent": 2.0 * (depth - 1) / depth}

    def _scalar_step(self, factors, grads, state):
        context, xp = state["context"], state["context"].xp
        ratios = [_norm(w, xp) / (_norm(g, xp) + _tiny(g, xp))
                  for w, g in zip(factors.inner, grads.inner)]
        relative = self.tau * _smallest(ratios, xp)
        product = inner_product(factors.inner)
        sigma, state["vector"] = _top_singular_value(product, state["vector"], xp)
        stable = context.lr * (context.target_scale / (sigma + _tiny(product, xp))) ** state["exponent"]
        return xp.minimum(xp.maximum(relative, context.lr), stable)

    def update(self, factors, grads, state):
        eta = self._scalar_step(factors, grads, state)
        state["eta"] = eta
        outer = state["context"].outer_ratio * eta
        updates = [grads.left * outer]
        for grad in grads.inner:
            grad *= eta
            updates.append(grad)
        updates.append(grads.right * outer)
        return updates, state

    def step_size(self, state):
        return state["eta"]


class PreconditionedStep:
    """Damped Gram preconditioning of every factor (ScaledGD(lambda)-like).

    Each factor ``F`` of ``X = left W_L ... W_1 right^T`` sits between a
    product ``P`` on its left and ``S`` on its right (``X = P F S``); its
    gradient is preconditioned by the damped Gram matrices of both,

        D_F = (P^T P + lambda_P I)^-1  grad F  (S S^T + lambda_S I)^-1,

    (the ``m x k`` and ``n x k`` outer factors only on their inner side).
    The Gram matrices are k x k, so this costs O(L k^3 + (m + n) k^2) per
    step, nothing next to the O(|Omega| k) gradient.  For a direction the
    fit has learned (singular value far above the damping) the update is a
    Newton-like step whose speed does not depend on that singular value,
    so directions with sigma_1 / kappa converge as fast as sigma_1: the
    step count no longer grows like kappa.  Directions still far below the
    damping move as in plain gradient descent with the step scaled by
    ``1 / (lambda_P lambda_S)``.  Measured, this is not the gradient-descent
    path: with few observations per degree of freedom it recovers less than
    the adaptive rule (benchmarks/README.md).  The estimator pairs it with
    :class:`dmc.refresh.SubspaceRefresh`, which brings in the small
    directions that the initial subspace misses.

    The damping is absolute, a fraction ``damping`` of the squared size a
    product of ``d`` balanced inner factors has at the damping scale,
    ``lambda = damping * scale ** (2 d / L)`` (the outer factors count
    as size 1): relative damping would give tiny factors giant steps.  The
    damping scale starts at the target scale (the estimated top singular
    value) and, after each subspace refresh, follows the smallest singular
    value that the data resolve (``context.resolved_scale``, never below
    ``scale_floor`` times the target scale).  With a damping fixed at the
    top scale, a learned direction with ``sigma_1 / kappa`` moves at
    ``kappa**-2 / damping`` of the Newton speed: that, not the plateaus, was
    what made the step count grow with kappa (600 x 500, rank 4, 25%,
    budget 8, steps to recovery error 1e-6 at kappa = 1 / 10 / 100 / 1000:
    400 / 670 / 2,120 / not in 5,000 with the fixed damping and a refresh
    every 300 steps; 400 / 670 / 1,380 / 2,000 with the following damping,
    the same refreshes and margin 30).

    The step is ``eta_t = min(newton / (L p), tau * min_l ||W_l|| / ||D_l||)``
    on the inner factors (``p`` the observed fraction: ``1 / (L p)`` is the
    Newton step on a learned direction, which ``L`` factors share) and
    ``outer * eta_t`` on ``left`` and ``right``.  The second term bounds the
    relative change of the inner factors while they are small, as in
    :class:`RelativeStep`.

    Parameters
    ----------
    damping : float, default=1e-2
        Damping of the inner factors' preconditioners, relative to the
        squared size of the products at the target scale.
    newton : float, default=0.5
        Fraction of the Newton step taken on learned directions.
    outer : "auto" or float, default="auto"
        Step of the preconditioned outer factors relative to the inner ones.
        The Newton step of ``left`` or ``right`` alone is ``1 / p``, ``L``
        times the inner one, so ``outer / L`` of the Newton step turns the
        subspace towards the data.  ``"auto"``: 1.5 when a sparsely observed
        row or column (the 10th percentile of the counts,
        ``context.observed_per_line``) holds at least 2 k observed entries,
        0.3 otherwise or when the count is unknown.  The long step is faster
        and recovers more on low samples, as long as it is stable; it is not
        where rows hold few entries for k columns (each row's sampled Gram
        matrix is then far from ``p`` times the full one, and a step of
        ``1 / p`` overshoots).  Measured (compressed, depth 3, tol 1e-6, three seeds;
        rho = that count over k; recovery error or divergence):

        - 600 x 500, rank 4, 25%, budget 8 (rho 7.8), steps to recovery
          error 1e-6 at kappa = 1 / 10 / 100 / 1000, refreshes every 300
          steps: 400 / 670 / 1,380 / 2,000 with 0.3, 180 / 480 / 1,220 /
          1,510 with 1.0, 140 / 450 / 1,230 / 1,510 with 1.5;
        - 100 x 100, rank 5, budget 10, 30% (rho 1.2): 1.5 reached 2-3e-6 in
          about 500 steps, 0.3 stopped at 5e-3 to 5e-2 after 8,000, 0.54 at
          7e-4 to 2e-2; rank 3, budget 5, 20% (rho 1.5): 1.5 2-5e-6, 0.3 3-7e-2;
        - diverged with 1.5: 100 x 100, rank 5, budget 25, 20% (rho 0.3, three
          of three) and budget 10, 20% (rho 0.74, two of three); with 0.3
          none (they end at recovery errors 0.2-0.3 either way); 1.0 and 0.6
          diverged there too; 100 x 100, rank 5, budget 10, 30% with early
          stopping (rho 1.1 on the 90% fitted) diverged at step 1,510 with
          1.5, hence the margin of 2.
    tau : float, default=0.2
        Bound on the relative change of the inner factors per step.
    outer_damping : float, default=1e-3
        The same for the outer factors ``U``, ``V``.  Their preconditioner is
        the Gram matrix of the whole product ``C V^T``, whose singular values
        are those of the fit itself: a direction with ``sigma_1 / kappa``
        sits at ``kappa**-2`` of the top one there, so this damping (at the
        damping scale) bounds the condition number at which ``U`` and ``V``
        still turn quickly towards a small direction (about
        ``1 / sqrt(outer_damping)`` below the damping scale).
    scale_floor : float, default=1e-3
        The damping scale never goes below ``scale_floor`` times the target
        scale, however small the resolved directions are.


    Notes
    -----
    Defaults from ``benchmarks/conditioning.py``-style runs (600 x 500, rank
    4, 25%, budget 8, fixed damping at the target scale, refresh every 300
    steps), steps to 1e-6 at kappa =
    1 / 10 / 100 / 1000, for ``(damping, outer_damping)``: (1e-2, 1e-2):
    420 / 870 / 2,480 / not in 5,000; (1e-2, 1e-3): 410 / 690 / 2,120 / not
    in 5,000; (3e-3, 1e-4): 400 / 620 / 980 / not in 5,000; (1e-3, 1e-5):
    stalls at 1e-3 on kappa = 1 (a spurious direction grows: too little
    damping loses the low-rank bias).  Less damping than the default also
    lost recovery on small problems (30 x 40, rank 3, 60% observed, kappa
    10, budget 4: 2-3e-2 on two of six with (3e-3, 1e-4), all six below
    3e-7 with the default).
    """

    # outer="auto": the long outer step where every row and column is well
    # sampled, the short one elsewhere (see the class docstring)
    long_outer, short_outer = 1.5, 0.3

    def __init__(self, damping=1e-2, newton=0.5, outer="auto", tau=0.2, outer_damping=1e-3,
                 scale_floor=1e-3):
        checks = [("damping", damping, 0, math.inf), ("newton", newton, 0, 2), ("tau", tau, 0, 1),
                  ("scale_floor", scale_floor, 0, 1)]
        if isinstance(outer, str) and outer != "auto":
            raise ValueError(f'outer must be "auto" or a number in (0, 2); got {outer!r}.')
        if not isinstance(outer, str):
            checks.append(("outer", outer, 0, 2))
        for name, value, low, high in checks:
            if not is_real(value) or not low < value < high:
                raise ValueError(f"{name} must be a number in ({low}, {high}); got {value!r}.")
        self.damping, self.newton, self.tau = float(damping), float(newton), float(tau)
        self.outer = outer if isinstance(outer, str) else float(outer)
        if not (is_real(outer_damping) and 0 < outer_damping < math.inf):
            raise ValueError(f"outer_damping must be a positive number; got {outer_damping!r}.")
        self.outer_damping = float(outer_damping)
        self.scale_floor = float(scale_floor)

    def damping_scale(self, context):
        """The scale the dampings are taken at: the target scale, or the
        smallest resolved singular value once a refresh has measured it."""
        scale = context.target_scale
        if context.resolved_scale is None:
            return scale
        return min(scale, max(context.resolved_scale, self.scale_floor * scale))

    def init(self, factors, context):
        depth = len(factors.inner)
        if depth == 0:
            raise ValueError("PreconditionedStep needs at least one inner factor.")
        # lambda for a product of d inner factors, d = 0 .. depth
        scale = self.damping_scale(context)
        dampings = [self.damping * scale ** (2.0 * d / depth)
                    for d in range(depth)] + [self.outer_damping * scale ** 2]
        eta_max = self.newton / (depth * context.observed_fraction)
        k, first = factors.inner[0].shape[0], factors.inner[0]
        eye = context.xp.eye(k, dtype=first.dtype, device=device(first))
        return {"context": context, "dampings": dampings, "eta_max": eta_max, "eta": eta_max,
                "eye": eye, "outer": self.outer_step(k, context)}

    def outer_step(self, k, context):
        """The outer factors' step relative to the inner one, ``outer`` resolved."""
        if self.outer != "auto":
            return self.outer
        well = well_sampled(getattr(context, "observed_per_line", None), k)
        return self.long_outer if well else self.short_outer

    def update(self, factors, grads, state):
        context, xp = state["context"], state["context"].xp
        dampings, eye = state["dampings"], state["eye"]
        inner, depth = factors.inner, len(factors.inner)
        left_gram = sum_over_rows(context, factors.left.T @ factors.left)
        right_gram = factors.right.T @ factors.right

        # right_grams[l]: Gram S_l S_l^T of S_l = W_{l-1} .. W_1 right^T
        right_grams = [right_gram]
        for w in inner[:-1]:
            right_grams.append(w @ right_grams[-1] @ w.T)
        left_grams = [left_gram]
        for w in inner[:0:-1]:
            left_grams.append(w.T @ left_grams[-1] @ w)
        left_grams.reverse()  # left_grams[l]: Gram of left W_L .. W_{l+1}

        # outer factors: X = left (C right^T) and X = (left C) right^T
        product_right = inner_product(inner)
        outer_left_gram = product_right @ right_gram @ product_right.T
        outer_right_gram = product_right.T @ left_gram @ product_right
        lam = dampings[depth]
        # every damped Gram matrix inverted in one batched call: 2 L + 2 small
        # solves one by one cost more in call overhead than in arithmetic
        # (measured at k = 16, depth 3, m x n = 600 x 500: 0.20 against 0.23
        # ms per update; the same at k = 32).  The matrices are symmetric
        # positive definite with eigenvalues at least their damping, so the
        # inverses are as accurate as solves (updates within 1e-12).
        damped = ([left_grams[l] + dampings[depth - 1 - l] * eye for l in range(depth)]
                  + [right_grams[l] + dampings[l] * eye for l in range(depth)]
                  + [outer_left_gram + lam * eye, outer_right_gram + lam * eye])
        inverses = xp.linalg.inv(xp.stack(damped))
        directions = [inverses[l] @ grad @ inverses[depth + l]
                      for l, grad in enumerate(grads.inner)]
        ratios = [_norm(w, xp) / (_norm(d, xp) + _tiny(d, xp)) for w, d in zip(inner, directions)]
        eta = xp.minimum(self.tau * _smallest(ratios, xp), state["eta_max"])
        state["eta"] = eta
        outer_step = state["outer"] * eta
        # G (A + lam I)^-1 through the k x k inverse: the Grams are symmetric,
        # and solve(A, G.T).T with an m x k G cost 7x more (measured: 560
        # against 80 us at k = 16, m = 600; half of a whole step)
        d_left = grads.left @ inverses[2 * depth]
        d_right = grads.right @ inverses[2 * depth + 1]
        updates = [d_left * outer_step] + [d * eta for d in directions] + [d_right * outer_step]
        return updates, state

    def step_size(self, state):
        return state["eta"]


class Momentum:
    """Heavy-ball momentum over any step rule: ``v <- beta * v + update``.

    A transform of another rule's updates (as optax chains transforms): the
    step taken is the velocity ``v``, a running sum of the rule's updates
    with weights ``beta**age``.  On the slowly converging tail of a fit
    (the outer factors ``U``, ``V`` settling at ``gamma`` times the inner
    step) it multiplies the effective step by up to ``1 / (1 - beta)``
    while staying stable where plain steps of that size would not
    (heavy ball on a quadratic is stable for steps up to
    ``2 (1 + beta) / curvature``).  It changes the discrete path; the
    benchmarks check that recovery does not.

    Parameters
    ----------
    rule : step rule
        The rule whose updates are accumulated.
    beta : float, default=0.8
        Momentum coefficient in [0, 1); 0 is the rule itself.
    """

    def __init__(self, rule, beta=0.8):
        if not is_real(beta) or not 0 <= beta < 1:
            raise ValueError(f"beta must be a number in [0, 1); got {beta!r}.")
        self.rule = make_step_rule(rule)
        self.beta = float(beta)

    def init(self, factors, context):
        return {"rule": self.rule.init(factors, context), "velocity": None}

    def update(self, factors, grads, state):
        updates, state["rule"] = self.rule.update(factors, grads, state["rule"])
        velocity = state["velocity"]
        if velocity is None:
            # copies: a rule may return its gradient arrays, which the next step replaces
            state["velocity"] = [None if u is None else u + 0.0 for u in updates]
        else:
            for v, u in zip(velocity, updates):
                if v is not None:
                    v *= self.beta
                    v += u
        # the solver only reads the updates (factor -= update), so the
        # velocity arrays can be handed out as they are
        return state["velocity"], state

    def step_size(self, state):
        return self.rule.step_size(state["rule"])


class SwitchOnStall:
    """One step rule until the fit stalls, then another.

    ``step_rule="switching"`` is ``SwitchOnStall(adaptive, PreconditionedStep())``:
    the adaptive rule follows the gradient-flow path, which recovers the
    most from few observations, but on a spread-out spectrum it learns one
    direction per plateau and the plateaus grow with the condition number;
    the preconditioned rule does not wait, but from a small start on sparse
    rows it can end at another interpolant.  Started adaptive and switched
    when the fit stalls, a fit that converges never switches (the same path
    and result as the adaptive rule), and one that stalls gets the
    preconditioned rule (with the subspace refresh, which the estimator
    starts at the switch) from a state whose large directions are already
    learned.

    Measured (compressed, depth 3, defaults otherwise; two sets of 30
    random exact problems with k to 2k observed entries in a sparse row or
    column, 30-250 rows and columns, 15-70% observed, rank 1-5, kappa 1 /
    10 / 100, seeds 7 and 11): 30 and 29 recovered to below 1e-5, against
    14 and 6 with the adaptive rule (the others stopped at 1e-2 to 0.2
    after 20,000 steps), worse on none.  Below k entries (with a 200-step
    window) it switched on plateaus of well-conditioned problems that the
    adaptive rule recovers (100 x 100, 20%, budgets 10 and 20: 0.18 against
    8e-7), which is why
    ``step_rule="auto"`` uses it only between k and 2k.

    The solver reports the relative residual on the observed entries at
    every record (:meth:`observe`); the fit has stalled when it is below
    ``below`` and above ``ratio`` times the residual ``window`` steps
    earlier.  The rule keeps the switch on itself (the solver re-initialises
    the state after a subspace refresh), so use one object per fit: the
    estimators copy a step rule object before fitting.

    Parameters
    ----------
    first, second : step rule or name
    window : int, default=1000
        Steps over which a stall is measured.  Long, so that the plateaus
        between directions of a well-conditioned fit do not count: with 200
        a 40 x 40, rank-3, 42%-observed fit (budget 4) switched on a
        450-step plateau that the adaptive rule then left by itself, and the
        preconditioned rule ended at another interpolant (0.087 against
        2.8e-6); on ill-conditioned data the adaptive rule stalls for
        thousands of steps, so 1000 switches there too (30 random problems
        with k to 2k entries per sparse line, seed 11: 29 recovered with
        either window, against 6 with the adaptive rule alone).
    ratio : float, default=0.9
    below : float, default=0.5
        Stalls are looked for only once the residual is below this: the
        first plateau, before anything is learned, is the first rule's.
    """

    def __init__(self, first="adaptive", second="preconditioned", *, window=1000, ratio=0.9,
                 below=0.5):
        if not is_int(window) or window < 1:
            raise ValueError(f"window must be a positive integer; got {window!r}.")
        for name, value in (("ratio", ratio), ("below", below)):
            if not is_real(value) or not 0 < value < 1:
                raise ValueError(f"{name} must be a number in (0, 1); got {value!r}.")
        self.first, self.second = make_step_rule(first), make_step_rule(second)
        self.window, self.ratio, self.below = int(window), float(ratio), float(below)
        self.switched_at = None  # the record at which the fit switched; None before
        self._records = []

    @property
    def switched(self):
        """Whether the second rule is in use."""
        return self.switched_at is not None

    @property
    def current(self):
        """The rule in use."""
        return self.second if self.switched else self.first

    def observe(self, iteration, residual):
        """Record the relative residual at ``iteration``; switch once the fit has stalled."""
        if self.switched:
            return
        records, cutoff = self._records, iteration - self.window
        records.append((iteration, float(residual)))
        while len(records) > 1 and records[1][0] <= cutoff:  # keep one record at or before it
            records.pop(0)
        if residual < self.below and residual_stalled(records, self.window, self.ratio):
            self.switched_at, self._records = iteration, []

    def init(self, factors, context):
        self._context = context
        return {"switched": self.switched, "state": self.current.init(factors, context)}

    def update(self, factors, grads, state):
        if self.switched and not state["switched"]:
            state = {"switched": True, "state": self.second.init(factors, self._context)}
        updates, state["state"] = self.current.update(factors, grads, state["state"])
        return updates, state

    def step_size(self, state):
        return (self.second if state["switched"] else self.first).step_size(state["state"])


def is_preconditioned(rule):
    """Whether ``rule`` steps with :class:`PreconditionedStep`: alone, under
    :class:`Momentum`, or as the rule a :class:`SwitchOnStall` uses now."""
    rule = rule.current if isinstance(rule, SwitchOnStall) else rule
    rule = rule.rule if isinstance(rule, Momentum) else rule
    return isinstance(rule, PreconditionedStep)


def _adaptive():
    """``step_rule="adaptive"``: RelativeStep with heavy-ball momentum 0.5.

    Measured (benchmarks/README.md, DESIGN section 7): on 1000 x 1000, rank
    5, 20%, rank budget 10, steps to recovery error 1e-6 were 6,280
    (constant), 1,080 (RelativeStep), 520 (beta 0.5), 360 (0.65), 180 (0.8).
    Beta 0.65 and 0.8 no longer reached tol=1e-5 within 60,000 steps on
    small underdetermined problems (24 x 24, rank 2, 30-40% observed,
    budget 6), where 0.5 converged in 3,400-6,100 (RelativeStep alone
    6,700-11,700), to the same completed entries.
    """
    return Momentum(RelativeStep(), beta=0.5)


STEP_RULES = {"constant": ConstantStep, "adaptive": _adaptive,
              "preconditioned": PreconditionedStep, "switching": SwitchOnStall}


def make_step_rule(step_rule):
    """A step rule object from a name in :data:`STEP_RULES` or an object with ``init``/``update``."""
    if isinstance(step_rule, str):
        if step_rule not in STEP_RULES:
            raise ValueError(f"step_rule must be one of {sorted(STEP_RULES)} or a step rule "
                             f"object; got {step_rule!r}.")
        return STEP_RULES[step_rule]()
    if all(callable(getattr(step_rule, name, None)) for name in ("init", "update", "step_size")):
        return step_rule
    raise TypeError(f"step_rule must be one of {sorted(STEP_RULES)} or an object with init, "
                    f"update and step_size methods (see dmc.steps); got {step_rule!r}.")
