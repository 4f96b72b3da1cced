"""Error measures used in histories, tests and benchmarks."""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace

__all__ = ["recovery_error", "factor_recovery_error", "check_factor_pair", "rmse", "mae"]


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


def check_factor_pair(pair, shape) -> None:
    """``pair = (A, B)`` must be two 2-D arrays with ``A @ B.T`` of ``shape``; else ValueError/TypeError."""
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise TypeError(f"a factor-pair ground truth is a tuple (A, B) with M* = A @ B.T; got "
                        f"{type(pair).__name__} of length {len(pair) if hasattr(pair, '__len__') else '?'}.")
    A, B = pair
    for name, factor in (("A", A), ("B", B)):
        if not hasattr(factor, "shape") or len(factor.shape) != 2:
            raise TypeError(f"ground_truth factor {name} must be a 2-D array; got "
                            f"{type(factor).__name__} of shape {getattr(factor, 'shape', None)}.")
    m, n = shape
    if tuple(A.shape)[0] != m or tuple(B.shape)[0] != n or tuple(A.shape)[1] != tuple(B.shape)[1]:
        raise ValueError(f"ground_truth (A, B) has shapes {tuple(A.shape)} and {tuple(B.shape)}; "
                         f"M* = A @ B.T must be {m} x {n}: A needs shape ({m}, r) and B ({n}, r).")
    for name, factor in (("A", A), ("B", B)):
        if not bool(np.all(np.isfinite(np.asarray(factor.detach().cpu() if hasattr(factor, "detach")
                                                  else factor)))):
            raise ValueError(f"ground_truth factor {name} must be finite.")


def factor_recovery_error(row_factors, column_factors, A, B, *, row_sum=None) -> float:
    """``||P Q^T - A B^T||_F / ||A B^T||_F`` from the factors, never forming an m x n array.

    ``P`` (m x k) and ``Q`` (n x k) are the model's row and column factors
    (:meth:`dmc.DeepMatrixCompleter.get_low_rank_factors`), ``A`` (m x r) and
    ``B`` (n x r) those of the truth.  With ``[Q, B] = Q_1 R_1`` (thin QR),
    ``P Q^T - A B^T = [P, -A] R_1^T Q_1^T`` and ``Q_1`` has orthonormal
    columns, so the error's norm is that of the m x (k + r) matrix
    ``[P, -A] R_1^T``: O((m + n)(k + r)^2) work, and the difference is formed
    row by row in a (k + r)-dimensional basis, so it keeps full relative
    accuracy down to errors near machine precision (a Gram-matrix expansion
    ``||X||^2 - 2 <X, M*> + ||M*||^2`` would lose everything below about
    1e-8).  The denominator is ``||A R_2^T||_F`` with ``B = Q_2 R_2``.

    Parameters
    ----------
    row_factors, column_factors, A, B : arrays of one namespace (NumPy, torch, CuPy)
    row_sum : callable, optional
        In a distributed fit the rows of ``row_factors`` and ``A`` are split
        over processes (the same rows on each): ``row_sum`` sums the two
        partial squared norms over them (an all-reduce).

    Returns
    -------
    float
    """
    P, Q = row_factors, column_factors
    xp = array_namespace(P, Q, A, B)
    if row_sum is None:
        # scale-free ratio: divide both products by max|A| max|B| (no overflow of the squares)
        a_max, b_max = (float(xp.max(xp.abs(F))) if F.shape[0] else 0.0 for F in (A, B))
        if 0.0 < a_max < np.inf and 0.0 < b_max < np.inf:
            P, A, Q, B = P / a_max, A / a_max, Q / b_max, B / b_max
    _, R1 = xp.linalg.qr(xp.concat([Q, B], axis=1))
    _, R2 = xp.linalg.qr(B)
    difference = xp.concat([P, -A], axis=1) @ R1.T
    truth = A @ R2.T
    parts = xp.stack([xp.sum(difference * difference), xp.sum(truth * truth)])
    if row_sum is not None:
        parts = row_sum(parts)
    return float(xp.sqrt(parts[0] / parts[1]))


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
