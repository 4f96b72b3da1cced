"""What the recommender-facing estimators share: raw ids and top-k recommendation.

:class:`dmc.RatingsCompleter` and :class:`dmc.InteractionsCompleter` both
take ``(user, item, ...)`` data with arbitrary ids (numbers or strings), map
them to rows and columns with ``np.unique``, and answer ``recommend`` by
scoring all items for a batch of users, leaving out the items each user
interacted with in training, and keeping the ``k`` best.  The scores are the
estimator's own (a callable ``rows -> (len(rows), n_items) array``); the
rest is here, once.
"""

from __future__ import annotations

import numpy as np

from ._base import is_int

__all__ = ["as_ids", "encode_ids", "lookup", "sorted_pairs", "recommend_top_k"]

# scores computed at most this many entries at a time (users x items), so that
# recommending for all users of a large catalogue keeps memory bounded
_BATCH_ENTRIES = 1 << 22


def as_ids(name, values):
    """``values`` as a 1-D array of integer or string ids (a scalar becomes length 1)."""
    array = np.asarray(values)
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got an array of shape {array.shape}.")
    if array.dtype.kind not in "iuUSO":
        raise TypeError(
            f"{name} must hold integer or string ids; got dtype {array.dtype}. "
            "Float ids are ambiguous: convert them, e.g. users.astype(int).")
    return array


def encode_ids(ids):
    """``(known, codes)``: the sorted distinct ids and each id's position among them."""
    known, codes = np.unique(ids, return_inverse=True)
    return known, codes.astype(np.int64).ravel()


def lookup(known, ids):
    """Positions of ``ids`` in the sorted ``known`` ids and whether each is known."""
    ids = as_ids("ids", ids)
    if ids.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, bool)
    try:
        position = np.searchsorted(known, ids)
    except TypeError:
        raise TypeError(f"ids of dtype {ids.dtype} cannot be compared with the fitted ids "
                        f"of dtype {known.dtype}.") from None
    position = np.minimum(position, known.size - 1)
    return position.astype(np.int64), known[position] == ids


def sorted_pairs(rows, cols):
    """The order that sorts ``(rows, cols)`` row-major, and the first repeated pair (or None)."""
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    same = np.flatnonzero((rows[1:] == rows[:-1]) & (cols[1:] == cols[:-1]))
    return order, (int(same[0]) if same.size else None)


def _check_k(k):
    if not is_int(k) or k < 1:
        raise ValueError(f"k must be a positive integer; got {k!r}.")


def recommend_top_k(scores, user, k, *, user_ids, item_ids, observed=None,
                    exclude_observed=True, what="user"):
    """Top-``k`` items for one user or a batch of users.

    Parameters
    ----------
    scores : callable
        ``rows -> ndarray of shape (len(rows), n_items)``: the estimator's
        scores for the users at those rows (float64; higher is better).
    user : id or array-like of ids
        Known ids; a scalar gives 1-D answers, an array one row per user.
    k : int
        Capped at the number of items.
    user_ids, item_ids : ndarray
        The sorted fitted ids.
    observed : (rows, cols), optional
        Training pairs sorted by row (``sorted_pairs``), left out when
        ``exclude_observed``.
    exclude_observed : bool
    what : str
        The name of a user in error messages.

    Returns
    -------
    items : ndarray of ids, shape (k,) or (n_users, k)
    scores : ndarray of float, same shape
        Best first; slots beyond a user's candidate items hold ``-inf``.
    """
    _check_k(k)
    if not isinstance(exclude_observed, (bool, np.bool_)):
        raise TypeError(f"exclude_observed must be True or False; got {exclude_observed!r}.")
    single = np.ndim(user) == 0
    users = as_ids(what, user)
    r, known = lookup(user_ids, users)
    if not known.all():
        raise ValueError(f"unknown {what} id(s) {users[~known][:5].tolist()}; recommend needs "
                         f"{what}s seen in fit.")
    n_items = item_ids.size
    k = min(k, n_items)
    top = np.empty((r.size, k), np.int64)
    top_scores = np.empty((r.size, k))
    batch = max(1, _BATCH_ENTRIES // max(n_items, 1))
    for start in range(0, r.size, batch):
        rows = r[start:start + batch]
        block = np.array(scores(rows), dtype=np.float64)  # a fresh, writable copy
        if exclude_observed and observed is not None:
            obs_rows, obs_cols = observed
            lo = np.searchsorted(obs_rows, rows, side="left")
            hi = np.searchsorted(obs_rows, rows, side="right")
            counts = hi - lo
            slot = np.repeat(np.arange(rows.size), counts)
            # positions lo[s] .. hi[s]-1 for each slot s, without a Python loop
            offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
            block[slot, obs_cols[np.repeat(lo, counts) + offsets]] = -np.inf
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        top[start:start + rows.size] = np.take_along_axis(part, order, axis=1)
        top_scores[start:start + rows.size] = np.take_along_axis(part_scores, order, axis=1)
    ids = item_ids[top]
    return (ids[0], top_scores[0]) if single else (ids, top_scores)
