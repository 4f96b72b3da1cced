"""Synthetic low-rank completion problems (and, later, real rating data)."""

from __future__ import annotations

import numpy as np
import scipy.sparse.linalg as spla

__all__ = ["make_low_rank", "uniform_mask"]


def _rng(random_state):
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**32 - 1))
    return np.random.default_rng(random_state)


def _check_shape(shape):
    if len(shape) != 2 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"shape must be two positive integers (m, n); got {shape!r}.")
    return int(shape[0]), int(shape[1])


def uniform_mask(shape, observed_fraction, random_state=None) -> np.ndarray:
    """Boolean mask with exactly ``round(p * m * n)`` True entries, uniform.

    Drawn without replacement, so the count is exact.
    """
    m, n = _check_shape(shape)
    if not 0.0 < observed_fraction <= 1.0:
        raise ValueError(f"observed_fraction must be in (0, 1]; got {observed_fraction!r}.")
    rng = _rng(random_state)
    count = int(round(observed_fraction * m * n))
    if count < 1:
        raise ValueError(f"observed_fraction={observed_fraction} observes no entry of a {m} x {n} matrix.")
    mask = np.zeros(m * n, dtype=bool)
    mask[rng.choice(m * n, size=count, replace=False)] = True
    return mask.reshape(m, n)


def make_low_rank(shape, rank, observed_fraction, *, noise=0.0, random_state=None):
    """A random rank-``rank`` matrix and a uniform observation mask.

    The paper's recipe: a standard Gaussian ``m x n`` matrix truncated to its
    top-``rank`` singular triplets (so singular values are about
    ``sqrt(m) + sqrt(n)``, entries O(1) in size).

    Parameters
    ----------
    shape : tuple of int
        ``(m, n)``; rectangles are fine.
    rank : int
        True rank, ``1 <= rank <= min(m, n)``.
    observed_fraction : float in (0, 1]
        The mask observes exactly ``round(observed_fraction * m * n)`` entries.
    noise : float, default=0
        Standard deviation of Gaussian noise added to the observed values.
    random_state : int, Generator or None

    Returns
    -------
    M_true : ndarray of shape (m, n)
        The noiseless low-rank matrix.
    mask : ndarray of bool, shape (m, n)
        True = observed.
    M_noisy : ndarray of shape (m, n), only when ``noise > 0``
        ``M_true`` plus noise on the observed entries (unobserved entries are
        NaN), the matrix to fit.
    """
    m, n = _check_shape(shape)
    if int(rank) != rank or not 1 <= rank <= min(m, n):
        raise ValueError(f"rank must be an integer in [1, min(m, n)] = [1, {min(m, n)}]; got {rank!r}.")
    if noise < 0:
        raise ValueError(f"noise must be >= 0; got {noise!r}.")
    rng = _rng(random_state)
    gaussian = rng.standard_normal((m, n))
    if rank < min(m, n) and min(m, n) > 200:
        u, s, vt = spla.svds(gaussian, k=rank, v0=rng.standard_normal(min(m, n)))
    else:
        u, s, vt = np.linalg.svd(gaussian, full_matrices=False)
        u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    M_true = (u * s) @ vt
    mask = uniform_mask((m, n), observed_fraction, rng)
    if noise == 0:
        return M_true, mask
    M_noisy = np.where(mask, M_true + noise * rng.standard_normal((m, n)), np.nan)
    return M_true, mask, M_noisy
