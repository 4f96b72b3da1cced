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
current residual.  :class:`SubspaceRefresh` does that step explicitly, every
``every`` steps:

1. rebalance: with ``C = A diag(s) B^T`` (a k x k SVD), replace
   ``U <- U A``, ``V <- V B`` and every ``W_l <- diag(s ** (1/L))``; the
   product ``X`` is unchanged;
2. directions with ``s_i <= dead * s_1`` (never grown) get, instead of their
   old columns, the top singular pairs of the residual
   ``R = P_Omega(X - M)``, orthogonalised against the live columns and
   signed so that gradient descent grows them (``u`` goes in with a minus
   sign: ``M - X ~ -R``).  Their singular values stay as tiny as they were,
   so the fit still grows each one from a small start; only the direction
   is new.

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
from .models import inner_product

__all__ = ["SubspaceRefresh", "rebalance", "residual_top_pairs"]


def rebalance(factors, xp):
    """Rotate ``(U, V)`` onto the singular vectors of ``C`` and balance the chain.

    Returns ``(left, inner, right, s)``: new arrays with the same product
    ``left @ inner[-1] @ ... @ inner[0] @ right.T`` and ``inner`` all equal
    to ``diag(s ** (1 / L))``, ``s`` the singular values of ``C`` in
    descending order.
    """
    C = inner_product(factors.inner)
    A, s, Bt = xp.linalg.svd(C)  # C = A diag(s) Bt; the outer factors absorb A and Bt
    depth = len(factors.inner)
    root = s ** (1.0 / depth)
    diag = xp.eye(s.shape[0], dtype=s.dtype, device=device(s)) * root[None, :]
    return factors.left @ A, [diag] * depth, factors.right @ Bt.T, s


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


def residual_top_pairs(residual_products, A, B, n_pairs, rng, xp, *, n_iter=4, oversample=4):
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
    n_iter : int
        Power iterations (each one application of ``R`` and one of ``R^T``).
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


class SubspaceRefresh:
    """Every ``every`` steps, rebalance and re-aim the never-grown directions.

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
        one (of ``C``) counts as never grown.
    random_state : numpy.random.Generator
        Draws the subspace iteration's starting blocks.
    """

    def __init__(self, residual_products, xp, *, every=300, dead=1e-3, random_state=None):
        if not is_int(every) or every < 1:
            raise ValueError(f"every must be a positive integer; got {every!r}.")
        if not is_real(dead) or not 0 < dead < 1:
            raise ValueError(f"dead must be a number in (0, 1); got {dead!r}.")
        self.residual_products, self.xp = residual_products, xp
        self.every, self.dead = every, float(dead)
        self.rng = np.random.default_rng(random_state)

    def __call__(self, factors):
        xp = self.xp
        if not factors.inner:
            return 0
        left, inner, right, s = rebalance(factors, xp)
        dead_mask = s <= self.dead * s[0]
        n_dead = int(xp.sum(xp.astype(dead_mask, xp.int64)))  # one host sync per refresh
        if n_dead == 0 or n_dead == s.shape[0]:
            return 0  # nothing learned yet (the first plateau), or nothing to re-aim
        alive = s.shape[0] - n_dead  # s is descending: the dead are the last columns
        A = left @ inner_product(inner)
        u, _, v = residual_top_pairs(self.residual_products, A, right, n_dead, self.rng, xp)
        live_left = _orthonormalise(left[:, :alive], xp)
        live_right = _orthonormalise(right[:, :alive], xp)
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
