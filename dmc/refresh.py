"""Subspace refresh: point the compressed model's dead directions at the current residual.

The compressed model ``X = U C V^T`` (``C = W_L ... W_1``, k x k) trains
inside the subspace pair ``(U, V)`` fixed by the *initial* gradient
(DESIGN.md section 3).  On a finite sample that pair describes the large
singular directions of the target well and the small ones poorly: on a
600 x 500, rank-4, 25%-observed matrix with singular values spread over a
factor kappa = 10, the smallest principal cosine between the true column
space and ``span(U)`` (k = 8) was 0.19, and it stayed there.  A missing
direction can only enter through ``U`` and ``V``, whose gradient along a
column is proportional to ``C``'s singular value there, tiny for a
direction not yet learned: gradient descent leaves it on a plateau whose
length grows with kappa.

What gradient descent from an infinitesimal start does instead is greedy
low-rank learning (Li, Luo and Lyu, ICLR 2021): once the learned directions
have converged, the next one to grow is the top singular pair of the
current residual.  :class:`SubspaceRefresh` does that step explicitly,
whenever its :class:`RefreshSchedule` says so (below):

1. rebalance: with ``C = A diag(s) B^T`` (a k x k SVD), replace
   ``U <- U A``, ``V <- V B`` and every ``W_l <- diag(s ** (1/L))``; the
   product ``X`` is unchanged;
2. directions with ``s_i <= dead * s_1`` that the data do not resolve
   (their size in the fit is below ``margin`` times the residual's top
   singular value over ``p``, the observed fraction) count as never grown.
   They get, instead of their old columns, the top singular pairs of the
   residual
   ``R = P_Omega(X - M)``, orthogonalised against the live columns and
   signed so that gradient descent grows them (``u`` goes in with a minus
   sign: ``M - X ~ -R``).  Their singular values stay as tiny as they were,
   so the fit still grows each one from a small start; only the direction
   is new;
   A small direction that the data do resolve is kept: the smallest true
   direction of a target with ``kappa >= 1 / dead`` sits there, and
   re-aiming it threw away what it had learned (kappa = 1000 did not
   converge in 5,000 steps);
3. measure :attr:`SubspaceRefresh.resolved_scale`, the smallest singular
   value of the fit that stands clear of the residual (at least ``margin``
   times the residual's top singular value over ``p``, about the size of
   what the residual could still grow).  A preconditioned step rule
   damps at that scale instead of the top one
   (:class:`dmc.steps.PreconditionedStep`), so that small learned
   directions converge as fast as large ones; directions at the level of
   the residual (on a low sample, the ones that fit noise) do not count.

4. prune, once the fit is close (relative residual on the observed entries
   below ``prune_below``): the never-grown directions are set back to a
   singular value of ``prune_to`` times the top one.  Near the end of an
   exact fit such a direction is spurious: one that grew a little after an
   earlier re-aim, and now has to shrink back.  In a deep chain a small
   singular value shrinks only polynomially (its gradient vanishes with
   it), so without pruning the last digits took thousands of steps (30 x
   40, rank 3, 60%, kappa 10, budget 4: a direction at 2e-6 of the top held
   the loss at 3e-11 for 3,000 steps; pruned, tol 1e-7 was reached at step
   390).

*When* to refresh is a separate object, :class:`RefreshSchedule`: every
``every`` steps, and sooner when the fit stalls (the relative residual fell
by less than a factor ``stall_ratio`` over the last ``stall_window``
steps), which is what a plateau looks like: the learned directions have
converged and the next one has not started to grow.

The residual's singular pairs come from a few steps of randomized subspace
iteration on the observed pattern's own kernel
(``residual_products(A, B) -> (loss, R @ B, R^T @ A)``) with zero-padded
extra columns, so a refresh costs a handful of gradient evaluations, runs on
the fit's backend, and forms nothing of size m x n.
"""

from __future__ import annotations

import numpy as np
from array_api_compat import device

from ._base import is_int, is_real
from .backend import to_numpy
from .models import inner_product
from .steps import residual_stalled

__all__ = ["RefreshSchedule", "SubspaceRefresh", "rebalance", "residual_top_pairs"]


def rebalance(factors, xp):
    """Rotate ``(U, V)`` onto the singular vectors of ``C`` and balance the chain.

    Returns ``(left, inner, right, s)``: new arrays with the same product
    ``left @ inner[-1] @ ... @ inner[0] @ right.T`` and ``inner`` all equal
    to ``diag(s ** (1 / L))``, ``s`` the singular values of ``C`` in
    descending order.
    """
    C = inner_product(factors.inner)
    A, s, Bt = xp.linalg.svd(C)  # C = A diag(s) Bt; the outer factors absorb A and Bt
    return factors.left @ A, _balanced_chain(s, len(factors.inner), xp), factors.right @ Bt.T, s


def _balanced_chain(s, depth, xp):
    """``depth`` copies of ``diag(s ** (1 / depth))``: a balanced chain with product ``diag(s)``."""
    root = s ** (1.0 / depth)
    return [xp.eye(s.shape[0], dtype=s.dtype, device=device(s)) * root[None, :]] * depth


def _orthonormalise(X, xp, against=None):
    """Orthonormal columns spanning ``X`` minus its part in ``range(against)``
    (``against`` with orthonormal columns); two passes for accuracy.  Each
    column keeps the sign of its input column (QR may flip it), so that
    paired left and right vectors stay paired."""
    Q = X
    for _ in range(2):
        if against is not None:
            Q = Q - against @ (against.T @ Q)
        Q, _ = xp.linalg.qr(Q)
    signs = xp.sign(xp.sum(Q * X, axis=0))
    return Q * xp.where(signs == 0, xp.ones_like(signs), signs)


def residual_top_pairs(residual_products, A, B, n_pairs, rng, xp, *, n_iter=2, oversample=4):
    """Top singular pairs of ``R = P_Omega(A @ B.T - M)`` by randomized subspace iteration.

    Parameters
    ----------
    residual_products : callable
        ``(A', B') -> (loss, R' @ B', R'^T @ A')`` for ``R' = P_Omega(A' B'^T - M)``,
        the observed pattern's kernel.
    A, B : arrays of shape (m, k), (n, k)
        The current factorization ``X = A @ B.T``.
    n_pairs : int
    rng : numpy.random.Generator
        Draws the starting block.
    xp : array namespace
    n_iter : int, default=2
        Power iterations (each one application of ``R`` and one of ``R^T``).
        The pairs only aim new directions that gradient descent then
        adjusts: with 2 instead of 4 the conditioning fits (600 x 500, rank
        4, 25%, budgets 4 / 8 / 16, kappa 1 to 1000) took the same steps
        within 10 and the refreshes cost half (they were a fifth of a
        kappa-100 fit's time).
    oversample : int
        Extra columns carried along for accuracy.

    Returns
    -------
    u : array of shape (m, n_pairs)
    s : array of shape (n_pairs,)
    v : array of shape (n, n_pairs)
    """
    (m, k), n = A.shape, B.shape[0]
    width = min(n_pairs + oversample, m, n)
    dev, dtype = device(A), A.dtype
    zeros_m = xp.zeros((m, width), dtype=dtype, device=dev)
    zeros_n = xp.zeros((n, width), dtype=dtype, device=dev)

    def times_residual(Y):  # R @ Y: extra columns on the right side only
        _, RB, _ = residual_products(xp.concat([A, zeros_m], axis=1), xp.concat([B, Y], axis=1))
        return RB[:, k:]

    def residual_transpose_times(Z):  # R^T @ Z
        _, _, RtA = residual_products(xp.concat([A, Z], axis=1), xp.concat([B, zeros_n], axis=1))
        return RtA[:, k:]

    Y = xp.asarray(rng.standard_normal((n, width)), dtype=dtype, device=dev)
    Y = _orthonormalise(Y, xp)
    for _ in range(n_iter):
        Z = _orthonormalise(times_residual(Y), xp)
        Y = _orthonormalise(residual_transpose_times(Z), xp)
    Z = _orthonormalise(times_residual(Y), xp)
    small = residual_transpose_times(Z).T  # Z^T R, width x n
    u_small, s, vt = xp.linalg.svd(small, full_matrices=False)
    return (Z @ u_small)[:, :n_pairs], s[:n_pairs], vt[:n_pairs].T


def _small_but_resolved_first(sizes, n_small, level, xp, dev):
    """Among the last ``n_small`` columns (the small ones), those whose size in
    the fit (``sizes``, ``s_i ||left_i|| ||right_i||``) reaches ``level`` count
    as alive.  Returns ``(order, n_dead)``: a column permutation that puts them
    before the dead ones (None when none is kept), and the number of dead
    columns."""
    k = sizes.shape[0]
    kept = np.flatnonzero(sizes[k - n_small:] >= level) + (k - n_small)
    if kept.size == 0:
        return None, n_small
    dead = np.setdiff1d(np.arange(k - n_small, k), kept)
    order = np.concatenate([np.arange(k - n_small), kept, dead])
    return xp.asarray(order, device=dev), int(dead.size)


class RefreshSchedule:
    """When to refresh: every ``every`` steps, and sooner when the fit stalls.

    The solver reports the relative residual on the observed entries at
    every history record (:meth:`observe`) and asks before every step
    whether a refresh is due (:meth:`due`).  A refresh is due ``every``
    steps after the last one, or, with ``stall_window``, as soon as the
    last record's residual is above ``stall_ratio`` times the residual of
    the latest record at least ``stall_window`` steps older (both after the
    last refresh).  A plateau is a stall: the learned directions have
    converged and the next one has not started to grow, and a refresh
    re-aims a direction at it.

    After more than two refreshes in a row that did not help (the residual
    at the next one not below ``stall_ratio`` times the residual at it) each
    further one doubles the window, up to ``every``; one that helped sets it
    back.  At a noise floor every window
    is a stall: without the back-off a noisy fit (300 x 250, rank 20,
    preconditioned, 3,000 steps) refreshed 97 times (41 with it, 30 with a
    refresh every 100 steps only) and took 16% longer than every 100 steps,
    for the same error.  Doubling after the first unhelpful refresh already
    cost steps on the conditioning problems (budget 8, kappa 100 / 1000: 390 /
    470 against 370 / 410); after the third it cost none.

    Measured (600 x 500, rank 4, 25%, budget 8, preconditioned rule, steps
    to recovery error 1e-6 at kappa = 1 / 10 / 100 / 1000): every 300 steps
    alone 140 / 450 / 1,230 / 1,510; every 300 and on stalls (window 20,
    ratio 0.894 on the residual, i.e. 0.8 on the loss) 150 / 240 / 500 /
    490; every 100 and on stalls 150 / 220 / 370 / 410.

    Parameters
    ----------
    every : int, default=100
        Steps between refreshes at most.
    stall_window : int or None, default=20
        Steps over which a stall is measured, and the fewest steps between
        two refreshes triggered by stalls; None: refresh every ``every``
        steps only.
    stall_ratio : float, default=0.9
        A fit whose relative residual fell by less than this factor over
        ``stall_window`` steps has stalled.
    active : callable or None, default=None
        ``active() -> bool``: while False, no refresh is due and records are
        not kept; the schedule starts at the first record at which it is
        True (for :class:`dmc.steps.SwitchOnStall`, whose second rule is the
        one that needs refreshes).  None: always active.
    """

    patience = 2  # unhelpful refreshes in a row before the window starts to grow

    def __init__(self, every=100, stall_window=20, stall_ratio=0.9, active=None):
        if not is_int(every) or every < 1:
            raise ValueError(f"every must be a positive integer; got {every!r}.")
        if stall_window is not None and (not is_int(stall_window) or stall_window < 1):
            raise ValueError(f"stall_window must be a positive integer or None; got {stall_window!r}.")
        if not is_real(stall_ratio) or not 0 < stall_ratio < 1:
            raise ValueError(f"stall_ratio must be a number in (0, 1); got {stall_ratio!r}.")
        self.every, self.stall_window, self.stall_ratio = every, stall_window, float(stall_ratio)
        self._window = stall_window  # grows while refreshes do not help
        self._unhelpful = 0  # refreshes in a row after which the residual did not fall
        self._last = 0
        self._last_residual = None  # the residual when the last refresh was due
        self._records = []  # (iteration, relative residual) since the last refresh
        self._stalled = False  # what the records say; they change only in observe
        if active is not None and not callable(active):
            raise TypeError(f"active must be a callable or None; got {active!r}.")
        self.active = active
        self._started = active is None

    def observe(self, iteration, residual):
        """Record the relative residual at ``iteration``."""
        if not self._started:
            if not self.active():
                return
            self._started, self._last = True, iteration  # the schedule starts here
        self._records.append((iteration, float(residual)))
        self._stalled = self._stall_in_records()

    def due(self, iteration):
        """Whether to refresh before step ``iteration``; True restarts the schedule."""
        if not self._started:
            return False
        due = iteration - self._last >= self.every or self._stalled
        if due:
            residual = self._records[-1][1] if self._records else None
            if self._window is not None and residual is not None:
                helped = (self._last_residual is None
                          or residual <= self.stall_ratio * self._last_residual)
                self._unhelpful = 0 if helped else self._unhelpful + 1
                backoff = 2 ** max(0, self._unhelpful - self.patience)
                self._window = min(self.stall_window * backoff, self.every)
            self._last_residual = residual
            self._last, self._records, self._stalled = iteration, [], False
        return due

    def _stall_in_records(self):
        if self._window is None or not self._records:  # (records start at the last refresh)
            return False
        return residual_stalled(self._records, self._window, self.stall_ratio)


class SubspaceRefresh:
    """Rebalance, re-aim the never-grown directions and, near the end, prune them.

    See the module docstring.  Called by :func:`dmc.solver.gradient_descent`
    as ``refresh(factors) -> int`` (the number of directions replaced; the
    factors are updated in place and the step rule restarts when it is
    positive).

    Parameters
    ----------
    residual_products : callable
        The observed pattern's kernel, ``(A, B) -> (loss, R @ B, R^T @ A)``.
    xp : array namespace
    every : int, default=300
        Steps between refreshes.
    dead : float, default=1e-3
        A direction with singular value at most ``dead`` times the largest
        one (of ``C``) is a candidate for re-aiming; it is re-aimed unless
        the data resolve it (see ``margin``).  1e-4 left spurious
        directions alive on small low-sample problems (60 x 60, rank 5,
        40% observed, kappa 100, refreshes every 100 steps: 1 of 6
        recovered against 6 of 6).
    observed_fraction : float, default=1.0
        ``p = |Omega| / (m n)``: the residual's singular values over ``p``
        estimate those of the full residual.
    margin : float, default=30
        A direction is resolved by the data when its size in the fit is at
        least ``margin`` times the residual's top singular value over
        ``p``.  3 let a spurious direction at 3e-4 of the top count as
        resolved on 3 of 6 small 30 x 40 problems and lowered the damping
        to it; 30 recovered all 6 (both with refreshes every 100 steps).
    prune_below : float or None, default=1e-5
        Below this relative residual on the observed entries (the value
        passed to :meth:`__call__`) the never-grown directions are pruned
        instead of only re-aimed (module docstring, step 4); None: never.
    prune_to : float, default=1e-9
        Singular value of a pruned direction, relative to the top one.
    schedule : RefreshSchedule, optional
        When the solver calls the refresh; default ``RefreshSchedule(every,
        stall_window=None)``, every ``every`` steps.
    random_state : numpy.random.Generator
        Draws the subspace iteration's starting blocks.

    Attributes
    ----------
    resolved_scale : float or None
        After a refresh that found small directions: the smallest singular
        value of the fit ``X = U C V^T`` among the live directions that is
        at least ``margin`` times the residual's top singular value over
        ``p``; None before the first such refresh or when no direction
        stands clear of the residual.
    """

    def __init__(self, residual_products, xp, *, every=300, dead=1e-3, observed_fraction=1.0,
                 margin=30.0, prune_below=1e-5, prune_to=1e-9, schedule=None, random_state=None):
        if schedule is None:
            schedule = RefreshSchedule(every, stall_window=None)  # checks every
        if prune_below is not None and (not is_real(prune_below) or not 0 < prune_below < 1):
            raise ValueError(f"prune_below must be a number in (0, 1) or None; got {prune_below!r}.")
        if not is_real(prune_to) or not 0 < prune_to < 1:
            raise ValueError(f"prune_to must be a number in (0, 1); got {prune_to!r}.")
        if not is_real(dead) or not 0 < dead < 1:
            raise ValueError(f"dead must be a number in (0, 1); got {dead!r}.")
        if not is_real(observed_fraction) or not 0 < observed_fraction <= 1:
            raise ValueError(f"observed_fraction must be a number in (0, 1]; got {observed_fraction!r}.")
        if not is_real(margin) or not 0 < margin < np.inf:
            raise ValueError(f"margin must be a positive finite number; got {margin!r}.")
        self.residual_products, self.xp = residual_products, xp
        self.schedule, self.every, self.dead = schedule, schedule.every, float(dead)
        self.prune_below = None if prune_below is None else float(prune_below)
        self.prune_to = float(prune_to)
        self.observed_fraction, self.margin = float(observed_fraction), float(margin)
        self.resolved_scale = None
        self.rng = np.random.default_rng(random_state)

    def __call__(self, factors, residual=None):
        """Refresh ``factors`` in place; returns the number of directions changed.

        ``residual`` is the fit's current relative residual on the observed
        entries (the solver passes the last recorded one); below
        ``prune_below`` the re-aimed directions are also pruned.
        """
        xp = self.xp
        if not factors.inner:
            return 0
        left, inner, right, s = rebalance(factors, xp)
        dead_mask = s <= self.dead * s[0]
        n_small = int(xp.sum(xp.astype(dead_mask, xp.int64)))  # one host sync per refresh
        if n_small == 0 or n_small == s.shape[0]:
            return 0  # nothing learned yet (the first plateau), or nothing to re-aim
        A = left @ inner_product(inner)
        u, residual_values, v = residual_top_pairs(self.residual_products, A, right, n_small,
                                                   self.rng, xp)
        residual_top = float(residual_values[0]) / self.observed_fraction
        level = self.margin * residual_top
        sizes = np.asarray(to_numpy(s * xp.linalg.vector_norm(left, axis=0)
                                    * xp.linalg.vector_norm(right, axis=0)))
        # A small direction that the data resolve (a true one of a target with
        # kappa >= 1 / dead) is kept: re-aiming it would throw away what it learned.
        order, n_dead = _small_but_resolved_first(sizes, n_small, level, xp, device(s))
        if order is not None:
            left, right, s = (xp.take(left, order, axis=1), xp.take(right, order, axis=1),
                              xp.take(s, order, axis=0))
            inner = _balanced_chain(s, len(inner), xp)
        alive = s.shape[0] - n_dead  # the dead are the last columns
        self.resolved_scale = self._resolved_scale(left[:, :alive], s[:alive], right[:, :alive],
                                                   level)
        if n_dead == 0:
            return 0  # the measurement above is all this refresh does
        u, v = u[:, :n_dead], v[:, :n_dead]
        live_left = _orthonormalise(left[:, :alive], xp)
        live_right = _orthonormalise(right[:, :alive], xp)
        if self.prune_below is not None and residual is not None and residual < self.prune_below:
            alive_mask = xp.arange(s.shape[0], device=device(s)) < alive
            s = xp.where(alive_mask, s, xp.minimum(s, self.prune_to * s[0]))
            inner = _balanced_chain(s, len(inner), xp)
        # new columns as long as the live ones are on average
        left_norm = xp.mean(xp.linalg.vector_norm(left[:, :alive], axis=0))
        right_norm = xp.mean(xp.linalg.vector_norm(right[:, :alive], axis=0))
        # M - X ~ -R: -u v^T grows from a positive singular value
        new_left = -_orthonormalise(u, xp, against=live_left) * left_norm
        new_right = _orthonormalise(v, xp, against=live_right) * right_norm
        factors.left[...] = xp.concat([left[:, :alive], new_left], axis=1)
        factors.right[...] = xp.concat([right[:, :alive], new_right], axis=1)
        for old, new in zip(factors.inner, inner):
            old[...] = new
        return n_dead

    def _resolved_scale(self, left, s, right, level):
        """The smallest singular value of ``left diag(s) right^T`` that is at
        least ``level``, or None (see the class docstring).
        The columns of ``left`` and ``right`` need not be orthonormal: the
        singular values come from the k x k Cholesky factors of their Grams."""
        xp = self.xp
        try:
            left_chol = xp.linalg.cholesky(left.T @ left)
            right_chol = xp.linalg.cholesky(right.T @ right)
            values = xp.linalg.svdvals((left_chol.T * s[None, :]) @ right_chol)
        except (np.linalg.LinAlgError, RuntimeError):  # torch raises a RuntimeError subclass
            return None  # collinear live columns: no measurement this time
        values = np.asarray(to_numpy(values), dtype=np.float64)  # one host sync per refresh
        clear = values[values >= level]
        return float(clear.min()) if clear.size and np.all(np.isfinite(values)) else None
