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
    difference = xp.linalg.vector_norm(xp.reshape(X - M_true, (-1,)))
    return float(difference / xp.linalg.vector_norm(xp.reshape(M_true, (-1,))))


def rmse(predicted, actual) -> float:
    """Root mean squared error between two equally long vectors."""
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return float(np.sqrt(np.mean(diff * diff)))


def mae(predicted, actual) -> float:
    """Mean absolute error between two equally long vectors."""
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return float(np.mean(np.abs(diff)))
