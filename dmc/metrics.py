"""Error measures used in histories, tests and benchmarks."""

from __future__ import annotations

import numpy as np

__all__ = ["recovery_error", "rmse", "mae"]


def recovery_error(X, M_true) -> float:
    """``||X - M_true||_F / ||M_true||_F`` over all entries."""
    X = np.asarray(X, dtype=np.float64)
    M_true = np.asarray(M_true, dtype=np.float64)
    if X.shape != M_true.shape:
        raise ValueError(f"shapes differ: X {X.shape}, M_true {M_true.shape}")
    return float(np.linalg.norm(X - M_true) / np.linalg.norm(M_true))


def rmse(predicted, actual) -> float:
    """Root mean squared error between two equally long vectors."""
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return float(np.sqrt(np.mean(diff * diff)))


def mae(predicted, actual) -> float:
    """Mean absolute error between two equally long vectors."""
    diff = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return float(np.mean(np.abs(diff)))
