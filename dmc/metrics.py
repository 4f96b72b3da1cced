"""Error measures used in histories, tests and benchmarks."""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace

__all__ = ["recovery_error", "rmse", "mae"]


def recovery_error(X, M_true) -> float:
    """``||X - M_true||_F / ||M_true||_F`` over all entries, on the arrays' device.

    Works for NumPy, torch and CuPy arrays (through array-api-compat); one
    host synchronisation for the result.
    """
    if not hasattr(X, "shape") or not hasattr(M_true, "shape"):
        X, M_true = np.asarray(X, dtype=np.float64), np.asarray(M_true, dtype=np.float64)
    if tuple(X.shape) != tuple(M_true.shape):
        raise ValueError(f"shapes differ: X {tuple(X.shape)}, M_true {tuple(M_true.shape)}")
    xp = array_namespace(X, M_true)
    # the ratio is scale-free: divide by max |M_true| first so that the squares inside
    # the norms stay in range for any magnitude float64 holds (1e300 included)
    largest = xp.max(xp.abs(M_true)) if M_true.size else 0.0
    if float(largest) > 0.0 and np.isfinite(float(largest)):
        X, M_true = X / largest, M_true / largest
    difference = xp.linalg.vector_norm(xp.reshape(X - M_true, (-1,)))
    return float(difference / xp.linalg.vector_norm(xp.reshape(M_true, (-1,))))


def rmse(predicted, actual) -> float:
    """Root mean squared error between two equally long vectors."""
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    largest = float(np.max(np.abs(diff))) if diff.size else 0.0
    if largest == 0.0 or not np.isfinite(largest):
        return float(np.sqrt(np.mean(diff * diff)))
    # scaled by the largest difference: no overflow (or underflow) of the squares
    return largest * float(np.sqrt(np.mean((diff / largest) ** 2)))


def mae(predicted, actual) -> float:
    """Mean absolute error between two equally long vectors."""
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return float(np.mean(np.abs(diff)))
