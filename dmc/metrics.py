"""Error measures (histories, tests, benchmarks) and ranking metrics for top-N recommendation."""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace

__all__ = ["recovery_error", "factor_recovery_error", "check_factor_pair", "rmse", "mae",
           "precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k"]


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


# -- ranking metrics (top-N recommendation) -----------------------------------
def _hits(recommended, relevant, k):
    """``hits[u, j]``: whether ``recommended[u, j]`` is among user u's relevant items,
    and the number of relevant items per user, for the first ``k`` columns.

    Vectorized over users: each (user, item) pair becomes one integer key, and
    one ``np.isin`` finds the recommended keys among the relevant ones.
    """
    recommended = np.asarray(recommended)
    if recommended.ndim != 2:
        raise ValueError("recommended must be a 2-D array (one row of ranked items per user); "
                         f"got shape {recommended.shape}.")
    if isinstance(relevant, (str, bytes)) or not hasattr(relevant, "__len__"):
        raise TypeError("relevant must be a sequence with one array-like of relevant items per user.")
    n_users = recommended.shape[0]
    if len(relevant) != n_users:
        raise ValueError(f"relevant lists {len(relevant)} users but recommended has {n_users} rows; "
                         "pass one collection of relevant items per row of recommended.")
    if k is None:
        k = recommended.shape[1]
    if not (isinstance(k, (int, np.integer)) and not isinstance(k, bool)) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}.")
    if k > recommended.shape[1]:
        raise ValueError(f"k={k} exceeds the {recommended.shape[1]} items recommended per user; "
                         "recommend at least k items.")
    recommended = recommended[:, :k]
    relevant = [np.asarray(list(r) if isinstance(r, (set, frozenset)) else r).ravel()
                for r in relevant]
    lengths = np.array([r.size for r in relevant], dtype=np.int64)
    flat = np.concatenate(relevant) if relevant else np.zeros(0, recommended.dtype)
    if flat.size and (recommended.dtype.kind in "USO") != (flat.dtype.kind in "USO"):
        # NumPy would compare 1 and "1" as equal strings after concatenation
        raise TypeError("recommended and relevant items must be ids of one comparable type "
                        f"(got {recommended.dtype} and {flat.dtype}).")
    try:
        vocabulary, codes = np.unique(np.concatenate([recommended.ravel(), flat]),
                                      return_inverse=True)
    except TypeError:
        raise TypeError("recommended and relevant items must be ids of one comparable type "
                        f"(got {recommended.dtype} and {flat.dtype}).") from None
    codes = codes.ravel().astype(np.int64)
    rec_codes, rel_codes = codes[:recommended.size], codes[recommended.size:]
    width = np.int64(vocabulary.size)
    rec_keys = np.repeat(np.arange(n_users, dtype=np.int64), k) * width + rec_codes
    # distinct (user, item) keys: duplicates within a user's relevant items count once
    rel_keys = np.unique(np.repeat(np.arange(n_users, dtype=np.int64), lengths) * width + rel_codes)
    counts = np.bincount(rel_keys // width, minlength=n_users).astype(np.int64)
    hits = np.isin(rec_keys, rel_keys).reshape(n_users, k)
    return hits, counts


def _need_relevant(counts, name):
    if np.any(counts == 0):
        raise ValueError(f"{name} is undefined for users without relevant items "
                         f"({int(np.sum(counts == 0))} of {counts.size}); drop those users first.")


def _reduce(values, average):
    return float(np.mean(values)) if average else values


def precision_at_k(recommended, relevant, k=None, *, average=True):
    """Share of the top-``k`` recommended items that are relevant, per user.

    Parameters
    ----------
    recommended : array of shape (n_users, n_recommended)
        Item ids per user, best first (e.g. the first output of ``recommend``).
    relevant : sequence of array-likes or sets
        ``relevant[u]``: the relevant items of user ``u`` (duplicates ignored).
    k : int, optional
        Cut-off (default: all columns of ``recommended``).
    average : bool, default=True
        Return the mean over users; False returns one value per user.

    Returns
    -------
    float or ndarray of shape (n_users,)
        ``hits@k / k``.
    """
    hits, _ = _hits(recommended, relevant, k)
    return _reduce(hits.sum(axis=1) / hits.shape[1], average)


def recall_at_k(recommended, relevant, k=None, *, average=True):
    """Share of each user's relevant items found in the top ``k``: ``hits@k / |relevant|``.

    Parameters and returns as :func:`precision_at_k`; every user needs at least
    one relevant item (ValueError otherwise).
    """
    hits, counts = _hits(recommended, relevant, k)
    _need_relevant(counts, "recall")
    return _reduce(hits.sum(axis=1) / counts, average)


def _discounts(k):
    return 1.0 / np.log2(np.arange(2, k + 2))


def ndcg_at_k(recommended, relevant, k=None, *, average=True):
    """Normalized discounted cumulative gain with binary relevance.

    ``DCG = sum_j hit_j / log2(j + 2)`` over positions ``j = 0 .. k-1``,
    divided by the DCG of an ideal list (``min(k, |relevant|)`` hits first).
    Parameters and returns as :func:`precision_at_k`; every user needs at
    least one relevant item.
    """
    hits, counts = _hits(recommended, relevant, k)
    _need_relevant(counts, "NDCG")
    discounts = _discounts(hits.shape[1])
    ideal = np.cumsum(discounts)[np.minimum(counts, hits.shape[1]) - 1]
    return _reduce((hits @ discounts) / ideal, average)


def map_at_k(recommended, relevant, k=None, *, average=True):
    """Mean average precision: ``AP@k = sum_j P@(j+1) hit_j / min(k, |relevant|)``.

    Parameters and returns as :func:`precision_at_k` (the average over users
    of AP@k is MAP@k); every user needs at least one relevant item.
    """
    hits, counts = _hits(recommended, relevant, k)
    _need_relevant(counts, "MAP")
    k = hits.shape[1]
    precision = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    return _reduce((precision * hits).sum(axis=1) / np.minimum(counts, k), average)
