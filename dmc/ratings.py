"""``RatingsCompleter``: a recommender-facing deep factorization for rating data.

Where :class:`dmc.DeepMatrixCompleter` takes a matrix, this estimator takes
``(user, item, rating)`` triplets with arbitrary ids (numbers or strings),
keeps the id mapping, and answers in those ids: ``predict(users, items)``
and ``recommend(user, k)``.  The model stays the compressed deep
factorization of Yaras et al. (DESIGN.md section 3) trained by gradient
descent on the observed entries, with what noisy real ratings need added
around it:

    rating(u, i) ~ mu + b_u + b_i + s * (U Wt_L ... Wt_1 V^T)_{u i}

* ``mu``: the global mean of the training ratings (the data are centred
  before the initial gradient is taken, so the invariant subspace describes
  the interactions, not the mean);
* ``b_u``, ``b_i`` (``biases=True``): user and item biases trained by the
  same gradient descent, with an L2 penalty ``bias_penalty``.  They ride in
  the one sampled kernel call per step: with ``A = [U C, b_u, 1]`` and
  ``B = [V, 1, b_i]`` the prediction on Omega is ``A B^T`` and
  ``residual_products(A, B)`` returns the bias gradients as its last
  columns;
* ``s``: the data scale (the estimator's ``normalize``), so that ``lr="auto"``
  and ``init_scale`` act as on synthetic data;
* early stopping on a validation split held out from the training ratings
  (``validation_fraction``, ``n_iter_no_change``), restoring the factors of
  the best validation RMSE: small-initialized deep factorizations learn
  singular directions one after another, so the stopping time acts as the
  rank and shrinkage choice on noisy data;
* clipping of predictions to the observed rating range (``clip=True``);
* item- and user-kNN corrections of the fitted model's training residuals
  (``neighbours``, ``user_neighbours``; ``dmc._neighbours``), added to
  every prediction;
* optional item side information (``fit(..., item_features=...)``),
  learned as feature embeddings added to the item factors.

Measured effects on MovieLens 100K are in ``benchmarks/README.md``
(section "movielens") and in the docstring of :class:`RatingsCompleter`.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import scipy.sparse as sp

from . import _day_bias, _neighbours, models, subspace
from ._base import (BaseCompleter, check_bools, check_callbacks, check_integers, check_lr, check_reals,
                    check_validation_fraction, check_verbose, is_int, is_real, solver_callbacks)
from ._early_stopping import EarlyStopping, validation_split
from ._recommend import as_ids as _as_1d
from ._recommend import encode_ids, lookup, recommend_top_k
from .backend import compute_threads, make_pattern
from .datasets import _rng
from .exceptions import not_fitted
from .metrics import rmse
from .observations import Observations
from .solver import ConvergenceWarning, gradient_descent

__all__ = ["RatingsCompleter"]


class _BiasedFactors:
    """Deep factors plus user and item bias vectors, in the solver's protocol.

    ``arrays()`` lists ``[left, *inner, right, user_bias, item_bias]`` and,
    with implicit feedback, the item factors ``implicit`` (``Y``, n x k) and,
    with item features, their embeddings ``features`` (``E``, f x k); the
    solver updates each in place with its own step size.  ``rated`` is the
    fixed m x n sparse matrix ``N`` with ``N[u, j] = |R(u)|^(-1/2)`` for the
    items ``j`` user ``u`` rated (SVD++): a user's left factor is ``U[u] +
    N[u] Y``.  ``item_features`` is the fixed n x f matrix ``F``: an item's
    right factor is ``V[i] + F[i] E`` (SVDFeature).
    """

    def __init__(self, factors, user_bias, item_bias, implicit=None, rated=None, features=None,
                 item_features=None):
        self.factors = factors
        self.user_bias = user_bias
        self.item_bias = item_bias
        self.implicit, self.rated = implicit, rated
        self.features, self.item_features = features, item_features

    def arrays(self):
        extra = [a for a in (self.implicit, self.features) if a is not None]
        return [*self.factors.arrays(), self.user_bias, self.item_bias, *extra]

    def copy(self):
        return _BiasedFactors(self.factors.copy(), self.user_bias.copy(), self.item_bias.copy(),
                              None if self.implicit is None else self.implicit.copy(), self.rated,
                              None if self.features is None else self.features.copy(),
                              self.item_features)

    def right(self):
        """``V + F E``: the items' right factors, item features included."""
        if self.features is None:
            return self.factors.right
        return self.factors.right + self.item_features @ self.features

    def left(self):
        """``U + N Y``: the users' left factors, implicit feedback included."""
        if self.implicit is None:
            return self.factors.left
        return self.factors.left + self.rated @ self.implicit

    def row_factors(self):
        product = models.inner_product(self.factors.inner)
        return self.left() if product is None else self.left() @ product


def item_feature_matrix(item_features, item_ids):
    """``item_features`` as a float (len(item_ids), n_features) array, rows in ``item_ids``' order.

    ``item_features``: an :class:`dmc.datasets.ItemFeatures` or a pair
    ``(ids, values)`` (``values`` of shape (len(ids), n_features)), or a
    pandas DataFrame indexed by item id with one column per feature.  Every
    id in ``item_ids`` needs a row; rows of other ids are ignored.
    """
    if hasattr(item_features, "index") and hasattr(item_features, "columns"):  # DataFrame
        ids, values = np.asarray(item_features.index), item_features.to_numpy()
    elif isinstance(item_features, tuple) and len(item_features) in (2, 3):
        ids, values = item_features[0], item_features[1]
    else:
        raise TypeError(
            "item_features must be a pair (ids, values) with values of shape (len(ids), "
            "n_features), a dmc.datasets.ItemFeatures, or a pandas DataFrame indexed by item id; "
            f"got {type(item_features).__name__}.")
    ids = _as_1d("item_features ids", ids)
    values = np.asarray(values)
    if values.ndim != 2 or values.shape[0] != ids.size or values.shape[1] == 0:
        raise ValueError(f"item_features values must have shape (len(ids), n_features) with "
                         f"n_features >= 1; got {values.shape} for {ids.size} ids.")
    if values.dtype.kind not in "biuf" or not np.all(np.isfinite(values)):
        raise ValueError(f"item_features values must be finite numbers (e.g. 0/1 flags); got "
                         f"dtype {values.dtype}" + ("" if values.dtype.kind not in "biuf"
                                                    else " with NaN or inf") + ".")
    known, codes = encode_ids(ids) if ids.dtype.kind == item_ids.dtype.kind or (
        ids.dtype.kind in "iu" and item_ids.dtype.kind in "iu") else (None, None)
    if known is None:
        raise TypeError(f"item_features ids (dtype {ids.dtype}) and the ratings' item ids (dtype "
                        f"{item_ids.dtype}) must both be integers or both strings.")
    if known.size != ids.size:
        raise ValueError("item_features holds an item id more than once; keep one row per item.")
    position, found = lookup(known, item_ids)
    if not found.all():
        raise ValueError(f"item_features has no row for item id(s) {item_ids[~found][:5].tolist()}"
                         f" ({int((~found).sum())} of the {item_ids.size} rated items); every "
                         "rated item needs one (all zeros for an item without features).")
    order = np.empty(ids.size, dtype=np.intp)
    order[codes] = np.arange(ids.size)
    return values[order[position]].astype(np.float64)


def unit_columns(features):
    """``features`` with each nonzero column divided by its Euclidean norm.

    For 0/1 flags: ``1 / sqrt(number of items with the feature)``, so that a
    genre shared by 700 movies moves its embedding no faster than one of 20
    (the embedding's gradient sums over the feature's items).
    """
    norms = np.linalg.norm(features, axis=0)
    return features / np.where(norms > 0, norms, 1.0)


def implicit_matrix(rows, cols, shape):
    """``N``: ``|R(u)|^(-1/2)`` at the (user, item) pairs rated, as CSR (SVD++'s normalisation)."""
    counts = np.bincount(rows, minlength=shape[0]).astype(np.float64)
    weights = 1.0 / np.sqrt(counts[rows])
    return sp.csr_matrix((weights, (rows, cols)), shape=shape)


# ratings whose largest magnitude lies outside [2**-4, 2**32] are fitted divided
# by a power of two (exact) that brings it into [0.5, 1), and the fit is scaled
# back: the initial gradient P_Omega(E0 - M) then describes the data, not E0
# (tiny ratings), and no sum or square leaves float64 (huge ones).  Ratings
# inside the range are fitted as given.
# step of the implicit-feedback item factors Y, relative to that of U and V
_IMPLICIT_STEP = 0.3
# neighbours="auto": KNNBaseline's k
_DEFAULT_NEIGHBOURS = 40
_UNSHIFTED_EXPONENTS = (-3, 33)  # frexp exponents e, max |r| in [2**(e-1), 2**e)
# fitted attributes and history entries in rating units (times 2**shift) or squared
_RATING_UNIT_STATE = ("global_mean_", "scale_", "row_factors_", "user_bias_", "item_bias_",
                      "implicit_factors_")


def _rating_shift(ratings):
    """The power of two ``shift`` that ``fit`` divides the ratings by (0: none)."""
    largest = float(np.max(np.abs(ratings)))
    exponent = math.frexp(largest)[1]
    low, high = _UNSHIFTED_EXPONENTS
    return 0 if largest == 0.0 or low <= exponent <= high else exponent


_COLUMN_NAMES = {
    "user": ("user", "user_id", "userId", "users"),
    "item": ("item", "item_id", "itemId", "movie_id", "movieId", "items"),
    "rating": ("rating", "ratings", "score"),
}


def _columns(df, roles):
    """The DataFrame's columns for ``roles`` (e.g. ``("user", "item")``), as arrays."""
    columns = [str(c) for c in df.columns]
    found = []
    for role in roles:
        name = next((c for c in _COLUMN_NAMES[role] if c in columns), None)
        if name is None:
            raise ValueError(f"the DataFrame needs a {role!r} column (one of "
                             f"{_COLUMN_NAMES[role]}); it has {columns}.")
        found.append(np.asarray(df[name]))
    return found


def _pairs(X, items=None):
    """``(users, items)`` from a pair of arrays, an (n, 2) array or a DataFrame."""
    if items is not None:
        return X, items
    if hasattr(X, "columns"):
        return tuple(_columns(X, ("user", "item")))
    pairs = np.asarray(X)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise TypeError("pass (users, items) as two equally long arrays, or X as an (n, 2) "
                        f"array or DataFrame of (user, item) pairs; got shape {pairs.shape}.")
    return pairs[:, 0], pairs[:, 1]


def _triplets(X, y, items, ratings):
    """``(users, items, ratings)`` from ``fit``'s input forms.

    ``fit(users, items, ratings)``; ``fit(df)`` with a rating column;
    scikit-learn's ``fit(X, y)`` with X an (n, 2) array or a DataFrame of
    (user, item) pairs (``y`` arrives positionally in ``items``).
    """
    if ratings is None and (hasattr(X, "columns") or np.ndim(X) == 2):
        if items is not None and y is not None:
            raise TypeError("pass the ratings once: fit(X, y).")
        ratings = items if items is not None else y
        if ratings is None:
            if not hasattr(X, "columns"):
                raise TypeError("fit(X, y) needs the ratings y for the (user, item) pairs in X.")
            return tuple(_columns(X, ("user", "item", "rating")))
        if hasattr(X, "columns") and any(str(c) in _COLUMN_NAMES["rating"] for c in X.columns):
            raise TypeError("pass ratings either as the DataFrame's rating column or as y, not both.")
        return (*_pairs(X), ratings)
    if ratings is None:
        ratings = y
    if items is None or ratings is None:
        raise TypeError(
            "fit takes fit(users, items, ratings) with three equally long arrays, "
            "fit(X, y) with X an (n, 2) array of (user, item) pairs, or fit(df) with a "
            "DataFrame holding user, item and rating columns.")
    return X, items, ratings


def _carried_over(previous, user_ids, item_ids, shift):
    """A previous fit's training state on new ids (warm start).

    ``previous`` is ``(state, old_user_ids, old_item_ids)``; users and items
    seen before keep their factors and biases, new ones start at zero, ones
    absent from the new data are dropped.
    """
    state, old_users, old_items = previous
    if state["shift"] != shift:
        raise ValueError("warm_start needs ratings of the magnitude fitted before (they are fitted "
                         "divided by another power of two); fit afresh with warm_start=False.")

    def moved(rows, old_ids, new_ids):
        position = np.minimum(np.searchsorted(old_ids, new_ids), old_ids.size - 1)
        known = old_ids[position] == new_ids
        out = np.zeros((new_ids.size, *rows.shape[1:]))
        out[known] = rows[position[known]]
        return out

    carried = dict(state)
    for name, ids in (("left", (old_users, user_ids)), ("user_bias", (old_users, user_ids)),
                      ("right", (old_items, item_ids)), ("item_bias", (old_items, item_ids)),
                      ("implicit", (old_items, item_ids))):
        if state[name] is not None:
            carried[name] = moved(state[name], *ids)
    return carried


class RatingsCompleter(BaseCompleter):
    """Deep matrix completion for (user, item, rating) data with raw ids.

    The ratings matrix is modelled as ``mu + b_u + b_i + X`` with ``X`` the
    compressed deep factorization ``U Wt_L ... Wt_1 V^T`` (width ``2 *
    rank``, ``U, V`` from the initial gradient's truncated SVD) and trained by
    full-batch gradient descent on the observed ratings, with early stopping
    on a held-out part of them (module docstring).

    Use it to predict ratings.  For top-N recommendation (which items to
    show) use :class:`dmc.InteractionsCompleter`: ranking by predicted rating
    ranks worse than item popularity on MovieLens 100K, while a model of the
    full interaction matrix ranks well (docs page "Top-N recommendation");
    with ratings at hand, ``InteractionsCompleter(target="weights")`` fitted
    to them ranks better still (u1 NDCG@10 0.475 against 0.443 on the 0/1
    interactions and 0.185 for this estimator).

    Parameters
    ----------
    rank : int, default=32
        Rank budget; the model width is ``2 * rank``.  With early stopping the
        budget may overestimate: directions are learned one at a time.
    depth : int, default=3
        Number of inner factors ``L`` (>= 2).
    init_scale : float, default=0.1
        ``eps``: the inner factors start at ``eps * I``.  The synthetic
        default 1e-3 leaves the model on its initial plateau for thousands of
        steps on ratings (the escape time grows like ``1 / eps``); 0.2 and
        more start too close to a fit and overfit before early stopping can
        act.
    lr : "auto" or float, default="auto"
        Step size of the inner factors on the normalized data (see
        :class:`dmc.DeepMatrixCompleter`); the value used is ``lr_``.
    lr_multiplier : float, default=0.1
        Multiplies the ``"auto"`` step size, so that the validation error
        is checked finely enough for early stopping to find its minimum.
    gamma : float, default=30.0
        Step size ratio of ``U, V`` to the inner factors.  Unlike the
        synthetic setting (0.01), the subspace of the initial gradient of
        noisy ratings is a poor basis and must move; the gradient of ``U``
        and ``V`` carries the small inner product ``Wt_L ... Wt_1`` as a
        factor, hence the large ratio.  10 gave validation RMSE within the
        seeds' spread of 30, with and without implicit feedback
        (benchmarks/README.md, "RatingsCompleter candidates").
    biases : bool, default=True
        Fit user and item biases alongside the factors.
    bias_penalty : float, default=5.0
        L2 penalty ``bias_penalty / 2 * (||b_u||^2 + ||b_i||^2)`` on the
        biases (in rating units, on the plain-sum loss), which shrinks the
        bias of a user or item with few ratings toward zero.
    bias_lr : float, default=0.5
        Step of the biases, as a fraction of the largest stable one: each
        bias moves by ``bias_lr * gradient / (count + bias_penalty)``
        (diagonally preconditioned gradient descent; counts are the user's
        or item's number of training ratings).
    bias_warmup : int, default=20
        Gradient steps on the biases alone before the deep factorization is
        initialized, so that the initial gradient, hence the invariant
        subspace and the scale, describe the interactions and not the
        biases.  0 starts the biases at zero.
    weight_decay : float, default=0.0
        L2 penalty ``weight_decay / 2 * sum ||factor||^2`` on all factors of
        the deep product, on the normalized scale.  It did not help on
        MovieLens (see Notes); early stopping does the regularizing.
    validation_fraction : float, default=0.1
        Fraction of the training ratings held out for early stopping; 0
        turns early stopping off (then ``max_iter`` steps are taken).
    n_iter_no_change : int, default=20
        Stop after this many records (every ``record_every`` steps) without
        a better validation RMSE, and restore the best factors.
    refit : bool, default=True
        After early stopping, train again from the same start on all the
        training ratings (validation part included) for the number of steps
        the best state took (about doubles the fit time).
    clip : bool, default=True
        Clip predictions to ``rating_range``.
    rating_range : (float, float), optional
        Default: the smallest and largest training rating.
    max_iter : int, default=3000
    record_every : int, default=10
    callbacks : callable or list of callables, optional
        Each is called at every record of the first training run with the
        record (a dict with the keys of ``history_``); a true return value
        stops the fit.  Not saved by :meth:`save`.
    verbose : int or bool, default=0
        0: silent; 1 (or True): a progress bar with the training loss and
        validation RMSE (tqdm; lines every 5 s without it); 2: a line per
        record.  Ctrl-C stops a fit cleanly at any level: the best state so
        far is kept and the refit is skipped (``stop_reason_ ==
        "interrupted"``).
    random_state : int, numpy Generator or None
        Seeds the validation split and the subspace construction.
    implicit_feedback : bool, default=True
        Add SVD++'s implicit feedback: a user's left factor is ``U[u] +
        |R(u)|^(-1/2) sum over the items j the user rated of Y[j]``, with the
        item factors ``Y`` trained alongside (step ``0.3 * gamma * lr``,
        0.3 times that of ``U, V``: 1 and 0.1 gave validation RMSE 0.9246
        and 0.9216 against 0.9213 on MovieLens 100K, 10 diverged).  Which
        items a user rated carries information beyond the ratings' values:
        on MovieLens 100K it lowered the test RMSE from 0.9209 to 0.9158 on
        u1 and from 0.9097 to 0.9045 over the five splits, at about 1.5x the
        fit time (``benchmarks/README.md``).
    warm_start : bool, default=False
        When fitted before, continue from the previous fit's factors,
        biases, mean and scale instead of a fresh start (scikit-learn's
        ``warm_start``): ``fit`` on the same ratings continues the descent
        where it stopped, and on new ratings (more users, items or ratings)
        it starts from what was learned, new users and items at zero.
        Needs the same ``rank``, ``depth`` and ``implicit_feedback``.  The
        item-kNN correction is recomputed from the continued fit's residuals.
    neighbours : "auto" or int, default="auto"
        Item-kNN correction of the deep model's residuals (KNNBaseline-style,
        the neighbourhood part of Koren's 2008 integrated model, with the
        deep model as the baseline; module ``dmc._neighbours``): after the
        fit, a prediction for user ``u`` and item ``i`` gets ``sum_j s_ij
        r_uj / (sum_j |s_ij| + neighbour_damping)`` added, over the
        ``neighbours`` items ``j`` most similar to ``i`` among those ``u``
        rated (``r_uj``: training residuals; ``s_ij``: their shrunk cosine
        similarity).  ``"auto"`` is 40 up to 10,000 items and 0 beyond (the
        dense n_items x n_items similarity matrix would take more than
        0.8 GB); an integer > 0 beyond 10,000 items is ignored with a
        UserWarning.  0 turns the correction off.  On MovieLens 100K it
        lowered the test RMSE from 0.9158 to 0.9119 on u1 (five splits:
        ``benchmarks/README.md``) at about 0.5 s of fit time.
    user_neighbours : "auto" or int, default="auto"
        The same correction with users and items swapped, added to it: over
        the ``user_neighbours`` users ``v`` most similar to ``u`` among those
        who rated ``i``, ``sum_v s_uv r_vi / (sum_v |s_uv| +
        neighbour_damping)``.  ``"auto"``: 40 up to 10,000 users, 0 beyond.
        On MovieLens 100K it lowered the five-split mean test RMSE from
        0.9010 (item-kNN alone) to 0.9001, every split by 0.0007..0.0012
        (validation: 0.8995 -> 0.8991; ``benchmarks/ratings_knn_variants.py``).
    neighbour_shrinkage : float, default=100.0
        The similarity of items rated together by ``n`` users (of users who
        rated ``n`` items in common) is multiplied by ``n / (n +
        neighbour_shrinkage)``.
    neighbour_damping : float, default=1.0
        Added to the correction's denominator: shrinks it where the
        neighbours are few or weakly similar.
    feature_lr : float, default=2.0
        Step of the item-feature embeddings ``E`` (``fit(...,
        item_features=...)``), relative to that of ``U, V``; the feature
        columns are scaled to unit norm first.  On a validation split of
        MovieLens 100K u1 with the 19 genres, 1, 2 and 3 gave RMSE 0.8981,
        0.8973 and 0.8968 against 0.8995 without features, and 10 diverged.
        On the test splits (with both kNN corrections) the genres helped u1
        (0.9107 -> 0.9077) but hurt u2 (0.8987 -> 0.9130): five-split mean
        0.9011 against 0.9001, so item features stay opt-in.
    day_bias_penalty : float, default=5.0
        With ``fit(..., timestamps=...)``: shrinkage of the user-day biases
        (timeSVD++'s ``b_{u,t}``), fitted last on the training residuals:
        per (user, day), the residuals' sum over ``count +
        day_bias_penalty``.  ``predict(..., timestamps=...)`` adds the bias
        of the (user, day) when training saw it.  On a validation split of
        MovieLens 100K u1: RMSE 0.8991 without, 0.8949 / 0.8948 / 0.8950 /
        0.8955 at 2 / 5 / 10 / 20.

    Attributes
    ----------
    user_ids_, item_ids_ : ndarray
        The known ids, sorted; row ``r`` of the model is user ``user_ids_[r]``.
    global_mean_ : float
    day_bias_keys_, day_bias_ : ndarray or None
        The user-day biases (``fit(..., timestamps=...)``; None without):
        sorted int64 keys of (user row, UTC day) and, in rating units, the
        bias of each.
    user_bias_, item_bias_ : ndarray
        In rating units (zeros when ``biases=False``).
    row_factors_, column_factors_ : ndarray
        ``X = row_factors_ @ column_factors_.T`` in rating units.
    implicit_factors_ : ndarray of shape (n_items, k)
        The implicit-feedback item factors ``Y`` in the coordinates of
        ``row_factors_`` (zeros without ``implicit_feedback``); used by
        :meth:`fold_in`.
    rating_range_ : (float, float)
    feature_factors_ : ndarray of shape (n_features, k) or None
        The item-feature embeddings ``E`` (None without ``item_features``):
        ``column_factors_[i]`` includes ``F[i] E``, ``F`` the features with
        unit-norm columns.
    n_neighbours_ : int
        Neighbours the item-kNN correction uses (0: no correction).
    item_similarities_ : ndarray of shape (n_items, n_items) or None
        Dense, symmetric, zero diagonal: the shrunk residual cosine
        similarities (None when ``n_neighbours_ == 0``).
    n_user_neighbours_ : int
        Neighbours the user-kNN correction uses (0: none).
    user_similarities_ : ndarray of shape (n_users, n_users) or None
        As ``item_similarities_``, between users.
    scale_, lr_ : float
    best_iter_ : int
        Step with the best validation RMSE (``n_iter_`` without early stopping).
    n_iter_ : int
        Steps taken.
    history_ : dict of 1-D ndarrays
        ``iteration``, ``time``, ``train_loss`` and, with early stopping,
        ``validation_rmse``.
    stop_reason_ : {"callback", "max_iter", "interrupted"}
        Why the first training run ended (early stopping counts as
        ``"callback"``).
    fit_time_ : float
        Seconds spent in ``fit``.

    Notes
    -----
    Measured on MovieLens 100K u1 with the defaults before implicit
    feedback (``gamma=30``, ``implicit_feedback=False``; test RMSE,
    ``random_state=0``; these give 0.9209, seeds 1 and 2 give 0.9191 and
    0.9209), one change at a time from them: ``clip=False`` 0.9217; ``bias_warmup=0``
    0.9281; ``refit=False`` 0.9248; ``gamma=1`` 0.9280; ``biases=False``
    0.9378; ``depth=2`` 0.9464 (0.9384 at ``lr_multiplier=0.02``);
    ``depth=4`` 0.9306 (slower: it needs another ``gamma``); ``rank=16``
    0.9217; no early stopping (``validation_fraction=0``) 1.2099 after 1000
    steps.  With the earlier settings ``gamma <= 1``, weight decay 1e-6..1e-4 changed the RMSE by < 0.001 and 1e-3
    erased the interactions (0.956, the biases alone); ``init_scale=1e-3``
    had not left its plateau after 3000 steps (0.956).

    Unknown ids in :meth:`predict` get ``mu + b_u`` (unknown item), ``mu + b_i``
    (unknown user) or ``mu`` (both unknown), clipped like any prediction.
    """

    # recommend(exclude_observed=True) needs the pairs; warm_start the training state
    # and the kNN correction the training residuals (aligned with _observed)
    _persisted_private = ("_observed", "_state", "_residuals")

    def __init__(self, rank=32, *, depth=3, init_scale=0.1, lr="auto", lr_multiplier=0.1,
                 gamma=30.0, biases=True, bias_penalty=5.0, bias_lr=0.5, bias_warmup=20,
                 weight_decay=0.0,
                 validation_fraction=0.1, n_iter_no_change=20, refit=True, clip=True,
                 rating_range=None, max_iter=3000, record_every=10, callbacks=None,
                 verbose=0, random_state=None, implicit_feedback=True, warm_start=False,
                 neighbours="auto", user_neighbours="auto", neighbour_shrinkage=100.0,
                 neighbour_damping=1.0,
                 feature_lr=2.0, day_bias_penalty=5.0):
        self.rank = rank
        self.depth = depth
        self.init_scale = init_scale
        self.lr = lr
        self.lr_multiplier = lr_multiplier
        self.gamma = gamma
        self.biases = biases
        self.bias_penalty = bias_penalty
        self.bias_lr = bias_lr
        self.bias_warmup = bias_warmup
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.refit = refit
        self.clip = clip
        self.rating_range = rating_range
        self.max_iter = max_iter
        self.record_every = record_every
        self.callbacks = callbacks
        self.verbose = verbose
        self.random_state = random_state
        self.implicit_feedback = implicit_feedback
        self.warm_start = warm_start
        self.neighbours = neighbours
        self.user_neighbours = user_neighbours
        self.neighbour_shrinkage = neighbour_shrinkage
        self.neighbour_damping = neighbour_damping
        self.feature_lr = feature_lr
        self.day_bias_penalty = day_bias_penalty

    # -- validation ----------------------------------------------------------
    def _check_params(self):
        check_integers(self, {"rank": 1, "depth": 2, "max_iter": 1, "record_every": 1,
                              "n_iter_no_change": 1, "bias_warmup": 0})
        check_reals(self, ("init_scale", "lr_multiplier", "bias_lr", "feature_lr"), positive=True)
        check_reals(self, ("gamma", "bias_penalty", "weight_decay", "neighbour_shrinkage",
                           "neighbour_damping", "day_bias_penalty"), positive=False)
        for name, kind in (("neighbours", "item"), ("user_neighbours", "user")):
            value = getattr(self, name)
            if not (value == "auto" if isinstance(value, str) else is_int(value) and value >= 0):
                raise ValueError(f'{name} must be "auto" or an integer >= 0 (0: no {kind}-kNN '
                                 f'correction); got {value!r}.')
        check_lr(self.lr)
        check_validation_fraction(self.validation_fraction)
        check_callbacks(self.callbacks)
        check_verbose(self.verbose)
        check_bools(self, ("biases", "clip", "refit", "implicit_feedback", "warm_start"))
        if self.rating_range is not None:
            low, high = self._check_range(self.rating_range)
            if not low < high:
                raise ValueError(f"rating_range must be (low, high) with low < high; got {self.rating_range!r}.")

    @staticmethod
    def _check_range(rating_range):
        try:
            low, high = (float(v) for v in rating_range)
        except (TypeError, ValueError):
            raise ValueError(f"rating_range must be a pair (low, high); got {rating_range!r}.") from None
        return low, high

    # -- fitting -------------------------------------------------------------
    def fit(self, X, items=None, ratings=None, *, y=None, item_features=None, timestamps=None):
        """Fit the model to rating triplets.

        Parameters
        ----------
        X : array-like of ids, array of shape (n, 2), or pandas.DataFrame
            One of:

            * the users (integers or strings), with ``items`` and ``ratings``;
            * a DataFrame with ``user``, ``item`` and ``rating`` columns
              (``user_id``/``item_id``/``movie_id``/``userId``/``movieId``
              also accepted), then ``items`` and ``ratings`` stay None;
            * scikit-learn's form ``fit(X, y)``: an (n, 2) array (both
              columns share one dtype) or a DataFrame of (user, item) pairs,
              with the ratings as ``y``, so that ``GridSearchCV`` and
              ``cross_val_score`` work.
        items : array-like of ids, optional
            Same length as the users; in ``fit(X, y)`` it receives ``y``.
        ratings : array-like of float, optional
            Same length.  Any finite magnitude: ratings whose largest
            magnitude lies outside [0.0625, 8.6e9) are fitted divided by a
            power of two near it (exactly) and the fit is scaled back (the
            progress display and callbacks then see the divided units); a
            ValueError says when the fitted factors would overflow float64
            (largest ratings near 1e307).
        y : array-like of float, optional
            The ratings, for ``fit(X, y=...)``.
        item_features : ItemFeatures, (ids, values) pair or pandas.DataFrame, optional
            Side information on the items, learned as extra item factors
            (SVDFeature): item ``i``'s right factor becomes ``V[i] + F[i] E``
            with ``F[i]`` its feature vector and ``E`` (n_features x k,
            ``feature_factors_``) trained from zero with step ``feature_lr``
            times that of ``V``.  Give a pair ``(ids, values)`` with
            ``values`` of shape (len(ids), n_features), e.g.
            :func:`dmc.datasets.load_movielens_100k_genres` (0/1 genre
            flags), or a DataFrame indexed by item id with a column per
            feature.  Every rated item needs a row (zeros for an item
            without features); rows of other ids are ignored.  With
            ``warm_start`` the continued fit needs the same number of
            features.
        timestamps : array-like, optional
            When each rating was given: Unix seconds, ``datetime64`` values or
            a pandas datetime column, one per rating.  Fits user-day biases
            (``day_bias_penalty``) after the model, which
            ``predict(..., timestamps=...)`` adds: a user's ratings of one day
            share an offset that no user x item factorization expresses.  On
            MovieLens 100K (:func:`dmc.datasets.load_movielens_100k_timestamps`)
            they lowered the test RMSE of every official split.

        Returns
        -------
        self
        """
        start = time.perf_counter()
        self._check_params()
        users, items, ratings = _triplets(X, y, items, ratings)
        users, items = _as_1d("users", users), _as_1d("items", items)
        ratings = np.asarray(ratings)
        if ratings.ndim != 1 or ratings.dtype.kind not in "iuf":
            raise TypeError(f"ratings must be a 1-D array of numbers; got dtype {ratings.dtype} "
                            f"and shape {ratings.shape}.")
        if not users.shape == items.shape == ratings.shape:
            raise ValueError(f"users, items and ratings must be equally long; got "
                             f"{users.shape[0]}, {items.shape[0]} and {ratings.shape[0]}.")
        if ratings.size == 0:
            raise ValueError("no ratings: there is nothing to fit.")
        ratings = ratings.astype(np.float64)
        if not np.all(np.isfinite(ratings)):
            raise ValueError("ratings must be finite (drop missing ratings instead of storing NaN).")
        days = None if timestamps is None else _day_bias.day_numbers(timestamps, ratings.size)
        previous = self._warm_state() if self.warm_start else None
        self.user_ids_, rows = encode_ids(users)
        self.item_ids_, cols = encode_ids(items)
        features = (None if item_features is None
                    else unit_columns(item_feature_matrix(item_features, self.item_ids_)))
        if previous is not None and (
                (previous[0].get("features") is None) != (features is None)
                or features is not None and previous[0]["features"].shape[0] != features.shape[1]):
            had = previous[0].get("features")
            raise ValueError(
                "warm_start continues the previous fit, which had "
                + ("no item_features" if had is None else f"{had.shape[0]} item features")
                + "; pass the same kind of item_features, or fit afresh with warm_start=False.")
        shape = (self.user_ids_.size, self.item_ids_.size)
        if 2 * self.rank > min(shape):
            raise ValueError(f"rank={self.rank} is too large for {shape[0]} users and {shape[1]} "
                             f"items: 2 * rank must be <= {min(shape)}.")
        order = np.lexsort((cols, rows))
        rows, cols, ratings = rows[order], cols[order], ratings[order]
        days = None if days is None else days[order]
        same = (rows[1:] == rows[:-1]) & (cols[1:] == cols[:-1])
        if np.any(same):
            i = int(np.flatnonzero(same)[0])
            user, item = (self.user_ids_[rows[i]].item(), self.item_ids_[cols[i]].item())
            raise ValueError(f"user {user!r} rated item {item!r} "
                             "more than once; keep one rating per pair (e.g. the latest).")
        rating_range = (self._check_range(self.rating_range) if self.rating_range is not None
                        else (float(ratings.min()), float(ratings.max())))
        shift = _rating_shift(ratings)  # extreme magnitudes: fit ratings / 2**shift, scale back
        ratings = np.ldexp(ratings, -shift)
        # _train clips validation predictions to rating_range_, in the units trained on
        self.rating_range_ = tuple(math.ldexp(v, -shift) for v in rating_range)
        self._observed = (rows, cols)  # for recommend(exclude_observed=True)

        init = None if previous is None else _carried_over(previous, self.user_ids_, self.item_ids_,
                                                          shift)
        rng = _rng(self.random_state)
        train = validation_split(ratings.size, self.validation_fraction, rng, what="ratings")
        initial_state = rng.bit_generator.state
        fitted, result, best_iter = self._train(
            shape, rows, cols, ratings, train, rng, start, max_iter=self.max_iter,
            callbacks=solver_callbacks(self.callbacks), init=init, features=features)
        # an interrupted fit keeps its best state; the refit would start over
        if self.refit and self.validation_fraction > 0 and result.stop_reason != "interrupted":
            rng.bit_generator.state = initial_state
            refitted, refit_result, _ = self._train(
                shape, rows, cols, ratings, np.ones_like(train), rng, start,
                max_iter=max(best_iter, 1), callbacks=[], init=init, features=features)
            if refit_result.stop_reason != "interrupted":
                fitted = refitted
        if shift:  # back to rating units
            with np.errstate(over="ignore"):
                fitted.update({name: np.ldexp(fitted[name], shift) for name in _RATING_UNIT_STATE})
            fitted["global_mean_"], fitted["scale_"] = float(fitted["global_mean_"]), float(fitted["scale_"])
            self.rating_range_ = rating_range
            if not all(np.all(np.isfinite(fitted[name])) for name in _RATING_UNIT_STATE):
                raise ValueError(
                    f"ratings up to {np.max(np.abs(rating_range)):.3g} are too large: the fitted "
                    "factors and biases, in rating units, exceed float64's maximum "
                    f"{np.finfo(np.float64).max:.3g} (they can be larger than the ratings; the "
                    "margin needed depends on the data, about 1e300 usually fits); divide the "
                    "ratings by a constant first.")
        fitted["_state"]["shift"] = shift
        for name, value in fitted.items():
            setattr(self, name, value)
        self._fit_neighbours(rows, cols, np.ldexp(ratings, shift))
        self._fit_day_biases(rows, cols, np.ldexp(ratings, shift), days)
        history = result.history
        if shift:
            history = dict(history)
            with np.errstate(over="ignore"):  # squares of huge ratings: inf
                history["train_loss"] = np.ldexp(history["train_loss"], 2 * shift)
            if "validation_rmse" in history:
                history["validation_rmse"] = np.ldexp(history["validation_rmse"], shift)
        self.n_iter_, self.best_iter_, self.history_ = result.n_iter, best_iter, history
        self.stop_reason_ = result.stop_reason
        self.fit_time_ = time.perf_counter() - start
        return self

    def _warm_state(self):
        """``(state, user_ids, item_ids)`` of the previous fit to continue, or None (none yet)."""
        state = getattr(self, "_state", None)
        if state is None or not hasattr(self, "row_factors_"):
            return None
        if (np.shape(state.get("left"))[:1] != self.user_ids_.shape
                or np.shape(state.get("right"))[:1] != self.item_ids_.shape):
            raise ValueError("the previous fit's training state does not match its ids (a "
                             "modified model file?); fit afresh with warm_start=False.")
        k = state["right"].shape[1]
        if (len(state["inner"]) != self.depth or k != 2 * self.rank
                or (state["implicit"] is None) == bool(self.implicit_feedback)):
            raise ValueError(
                "warm_start continues the previous fit, which had rank "
                f"{k // 2}, depth {len(state['inner'])} and implicit_feedback="
                f"{state['implicit'] is not None}; keep those parameters, or fit afresh with "
                "warm_start=False.")
        return state, self.user_ids_, self.item_ids_

    def _train(self, shape, rows, cols, ratings, train, rng, start, *, max_iter, callbacks,
               init=None, features=None):
        """Gradient descent on the ``train`` part.

        ``init``: a previous fit's ``_state`` (warm start), whose mean, scale
        and factors the descent continues from; None starts afresh.
        ``features``: the item feature matrix ``F`` (n_items x f) or None.
        Returns the fitted attributes of the state kept (a dict), the
        solver's result and the step of that state.
        """
        L, eps = self.depth, self.init_scale
        mu = float(ratings[train].mean()) if init is None else init["mu"]
        obs = Observations(shape, rows[train], cols[train], ratings[train] - mu)
        penalty = self.bias_penalty  # the same number on the scaled loss (both sides scale by s^2)
        user_counts = np.bincount(obs.observed_rows, minlength=shape[0]).astype(np.float64)
        item_counts = np.bincount(obs.observed_cols, minlength=shape[1]).astype(np.float64)
        user_step = self.bias_lr / (user_counts + penalty)
        item_step = self.bias_lr / (item_counts + penalty)
        user_bias, item_bias = np.zeros(shape[0]), np.zeros(shape[1])
        if init is None and self.biases:
            # bias-only gradient descent first, so that the initial gradient (and the
            # invariant subspace) describes the interactions rather than the biases
            for _ in range(self.bias_warmup):
                residual = user_bias[obs.observed_rows] + item_bias[obs.observed_cols] - obs.values
                user_bias -= user_step * (np.bincount(obs.observed_rows, residual, shape[0])
                                          + penalty * user_bias)
                item_bias -= item_step * (np.bincount(obs.observed_cols, residual, shape[1])
                                          + penalty * item_bias)
        p = obs.observed_fraction
        rated = implicit_matrix(obs.observed_rows, obs.observed_cols, shape) if self.implicit_feedback else None
        if init is None:
            interactions = Observations(shape, obs.observed_rows, obs.observed_cols, obs.values
                                        - user_bias[obs.observed_rows] - item_bias[obs.observed_cols])
            q = subspace.RandomOrthogonal(shape, rng)
            G0 = subspace.initial_gradient(interactions, q, eps**L)
            spectrum = subspace.top_singular_triplets(G0, self.rank, rng)
            U, V = subspace.invariant_subspace(spectrum, q, rng)
            scale = float(spectrum.singular_values[0] / p)
            factors = models.init_compressed(np.ascontiguousarray(U), np.ascontiguousarray(V), L, eps)
            state = _BiasedFactors(factors, user_bias / scale, item_bias / scale,
                                   None if rated is None else np.zeros((rated.shape[1], U.shape[1])), rated,
                                   None if features is None else np.zeros((features.shape[1], U.shape[1])),
                                   features)
        else:
            scale, factors = init["scale"], models.DeepFactors(
                init["left"].copy(), [w.copy() for w in init["inner"]], init["right"].copy())
            state = _BiasedFactors(factors, init["user_bias"].copy(), init["item_bias"].copy(),
                                   None if rated is None else init["implicit"].copy(), rated,
                                   None if features is None else init["features"].copy(), features)
        values = obs.values / scale
        lr = (models.spectral_step_size(p, p, L) if self.lr == "auto" else float(self.lr))
        lr *= self.lr_multiplier
        k = factors.width
        pattern = make_pattern(obs, np.float64)
        ones_m, ones_n = np.ones((shape[0], 1)), np.ones((shape[1], 1))
        wd = self.weight_decay

        def loss_and_gradients(s):
            product = models.inner_product(s.factors.inner)
            left, right = s.left(), s.right()
            factors = s.factors if s.implicit is None and s.features is None else models.DeepFactors(
                left, s.factors.inner, right)
            A = left if product is None else left @ product
            if self.biases:
                A_aug = np.hstack([A, s.user_bias[:, None], ones_m])
                B_aug = np.hstack([right, ones_n, s.item_bias[:, None]])
                loss, RB, RtA = pattern.residual_products(A_aug, B_aug, values)
                grads = models.assemble_gradients(factors, product, RB[:, :k], RtA[:, :k])
                gu = (RB[:, k] + penalty * s.user_bias) * user_step
                gi = (RtA[:, k + 1] + penalty * s.item_bias) * item_step
                loss = loss + 0.5 * penalty * (s.user_bias @ s.user_bias + s.item_bias @ s.item_bias)
            else:
                loss, RB, RtA = pattern.residual_products(A, right, values)
                grads = models.assemble_gradients(factors, product, RB, RtA)
                gu, gi = np.zeros(shape[0]), np.zeros(shape[1])
            if wd:
                for g, f in zip(grads.arrays(), s.factors.arrays()):
                    g += wd * f
                    loss = loss + 0.5 * wd * float((f * f).sum())
            # d/dY of a loss of U + N Y: N^T (its gradient in U)
            g_implicit = None if s.implicit is None else s.rated.T @ grads.left
            # and d/dE of a loss of V + F E: F^T (its gradient in V)
            g_features = None if s.features is None else s.item_features.T @ grads.right
            return loss, _BiasedFactors(grads, gu, gi, g_implicit, features=g_features)

        validation = ~train
        v_rows, v_cols, v_values = rows[validation], cols[validation], ratings[validation]
        low, high = self.rating_range_

        def validation_rmse(s):
            A = s.row_factors()
            pred = mu + scale * (np.einsum("ij,ij->i", A[v_rows], s.right()[v_cols])
                                 + s.user_bias[v_rows] + s.item_bias[v_cols])
            if self.clip:
                np.clip(pred, low, high, out=pred)
            return rmse(pred, v_values)

        stopper = EarlyStopping("validation_rmse", self.n_iter_no_change)

        metrics, callbacks = {}, list(callbacks)
        if validation.any():
            metrics["validation_rmse"] = validation_rmse
            callbacks.insert(0, stopper)
        outer = self.gamma * lr
        step_sizes = [outer] + [lr] * L + [outer, 1.0, 1.0] + (
            [_IMPLICIT_STEP * outer] if self.implicit_feedback else []) + (
            [self.feature_lr * outer] if features is not None else [])
        with warnings.catch_warnings(), compute_threads("numpy"):
            warnings.simplefilter("ignore", ConvergenceWarning)  # its tol message does not apply
            result = gradient_descent(
                state, loss_and_gradients, step_sizes, max_iter=max_iter, tol=0.0,
                observed_norm=float(np.linalg.norm(values)), record_every=self.record_every,
                metrics=metrics, callbacks=callbacks, loss_unit=scale**2, start_time=start,
                verbose=int(self.verbose))
        if stopper.best_state is not None:
            state, best_iter = stopper.best_state, stopper.best_iter
            if result.stop_reason == "max_iter":
                warnings.warn(
                    f"validation RMSE still improved within the last {self.n_iter_no_change} "
                    f"records at max_iter={max_iter}; raise max_iter or lr_multiplier.",
                    ConvergenceWarning, stacklevel=3)
        else:
            best_iter = result.n_iter
        product = models.inner_product(state.factors.inner)
        fitted = {  # in rating units
            "global_mean_": mu, "scale_": scale, "lr_": lr,
            "row_factors_": scale * state.row_factors(),
            "column_factors_": state.right().copy(),
            # E: item i's column factor is V[i] + F[i] E (None without item_features)
            "feature_factors_": None if state.features is None else state.features.copy(),
            # Y Wt_L ... Wt_1 times the scale: a folded-in user's implicit part (fold_in)
            "implicit_factors_": (np.zeros_like(state.factors.right) if state.implicit is None
                                  else scale * (state.implicit if product is None
                                                else state.implicit @ product)[:shape[1]]),
            # the training state on the fitted (normalized) scale, for warm_start
            "_state": {"mu": mu, "scale": scale, "left": state.factors.left.copy(),
                       "inner": [w.copy() for w in state.factors.inner],
                       "right": state.factors.right.copy(), "user_bias": state.user_bias.copy(),
                       "item_bias": state.item_bias.copy(),
                       "implicit": None if state.implicit is None else state.implicit.copy(),
                       "features": None if state.features is None else state.features.copy()},
            "user_bias_": scale * state.user_bias, "item_bias_": scale * state.item_bias,
        }
        return fitted, result, best_iter

    # -- item-kNN correction of the residuals ----------------------------------
    def _neighbour_count(self, name, n):
        """Neighbours the ``name`` correction uses with ``n`` items or users (0: none)."""
        value, kind = getattr(self, name), "item" if name == "neighbours" else "user"
        if value == 0:
            return 0
        if n > _neighbours.MAX_ITEMS:
            if value != "auto":
                attribute = "n_neighbours_" if kind == "item" else "n_user_neighbours_"
                warnings.warn(
                    f"{name}={value} is ignored: with {n} {kind}s (more than "
                    f"{_neighbours.MAX_ITEMS}) the dense {kind}-{kind} similarity matrix would "
                    f"take {8 * n**2 / 1e9:.1f} GB; the model is fitted without the {kind}-kNN "
                    f"correction ({attribute} = 0).", UserWarning, stacklevel=4)
            return 0
        return _DEFAULT_NEIGHBOURS if value == "auto" else int(value)

    def _fit_neighbours(self, rows, cols, ratings):
        """Training residuals and item and user similarities of the fitted model (``fit``'s last step)."""
        self._residuals = ratings - self._deep_scores(rows, cols)
        finite = bool(np.all(np.isfinite(self._residuals)))
        shape = (self.user_ids_.size, self.item_ids_.size)
        self.n_neighbours_ = self._neighbour_count("neighbours", shape[1]) if finite else 0
        self.n_user_neighbours_ = self._neighbour_count("user_neighbours", shape[0]) if finite else 0
        self.item_similarities_ = self.user_similarities_ = None
        if self.n_neighbours_:
            self.item_similarities_ = _neighbours.item_similarities(
                rows, cols, self._residuals, shape[1], self.neighbour_shrinkage)
        if self.n_user_neighbours_:
            self.user_similarities_ = _neighbours.item_similarities(
                cols, rows, self._residuals, shape[0], self.neighbour_shrinkage)

    def _fit_day_biases(self, rows, cols, ratings, days):
        """User-day biases on the residuals of the fitted model, kNN corrections included
        (``fit``'s last step); None without timestamps."""
        self.day_bias_keys_ = self.day_bias_ = None
        if days is None:
            return
        residuals = ratings - self._deep_scores(rows, cols) - self._pair_corrections(rows, cols)
        if not np.all(np.isfinite(residuals)):
            return  # ratings near float64's limit: no correction rather than inf
        self.day_bias_keys_, self.day_bias_ = _day_bias.fit_day_biases(
            _day_bias.day_keys(rows, days), residuals, self.day_bias_penalty)

    def _deep_scores(self, rows, cols):
        """``mu + b_u + b_i + X[u, i]`` at known (row, column) pairs, not clipped."""
        return (self.global_mean_ + self.user_bias_[rows] + self.item_bias_[cols]
                + np.einsum("ij,ij->i", self.row_factors_[rows], self.column_factors_[cols]))

    def _corrected(self):
        """Whether predictions carry the item-kNN correction (False for models saved before it)."""
        return (getattr(self, "n_neighbours_", 0) > 0
                and getattr(self, "item_similarities_", None) is not None)

    def _user_corrected(self):
        """Whether predictions carry the user-kNN correction."""
        return (getattr(self, "n_user_neighbours_", 0) > 0
                and getattr(self, "user_similarities_", None) is not None)

    def _residual_matrix(self, by_item=False):
        """The training residuals as CSR, users x items (``by_item``: items x users)."""
        rows, cols = self._observed
        shape = (self.user_ids_.size, self.item_ids_.size)
        if by_item:
            order = np.lexsort((rows, cols))
            rows, cols, values, shape = cols[order], rows[order], self._residuals[order], shape[::-1]
        else:
            values = self._residuals
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))])
        return sp.csr_matrix((values, cols, indptr), shape=shape)

    def _pair_corrections(self, r, c):
        """Item- and user-kNN corrections at known (row, column) pairs."""
        out = np.zeros(r.size)
        if self._corrected() and r.size:
            out += _neighbours.pair_corrections(self.item_similarities_, self._residual_matrix(),
                                                r, c, self.n_neighbours_, self.neighbour_damping)
        if self._user_corrected() and r.size:
            out += _neighbours.pair_corrections(
                self.user_similarities_, self._residual_matrix(by_item=True), c, r,
                self.n_user_neighbours_, self.neighbour_damping)
        return out

    # -- using the fit -------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "row_factors_"):
            raise not_fitted(self)

    def _lookup(self, known, ids):
        """Positions of ``ids`` in the sorted ``known`` ids and whether each is known."""
        return lookup(known, ids)

    def predict(self, users, items=None, *, timestamps=None):
        """Predicted ratings for ``(users[i], items[i])``, in the fitted ids.

        Parameters
        ----------
        users : array-like of ids, scalar, (n, 2) array or DataFrame
            The users, with ``items``; or, with ``items=None``, (user,
            item) pairs as an (n, 2) array or a DataFrame with user and item
            columns (scikit-learn's ``predict(X)``).
        items : array-like of ids or scalar, optional
            Same length as ``users``.
        timestamps : array-like, optional
            When each rating would be given (as in :meth:`fit`): adds the
            user-day bias of each known user on that day, when training saw
            the user rate on it (0 otherwise).  Only for a model fitted
            with timestamps.

        Returns
        -------
        ndarray of float, shape (len(users),)
            ``mu + b_u + b_i + X[u, i]`` plus the kNN corrections (see
            ``neighbours``) and, with ``timestamps``, the user-day biases,
            clipped to ``rating_range_`` when ``clip=True``.  An unknown user or item contributes neither a
            bias nor an interaction: ``mu + b_i`` for an unknown user,
            ``mu + b_u`` for an unknown item, ``mu`` for both.
        """
        self._check_fitted()
        users, items = _pairs(users, items)
        users, items = _as_1d("users", users), _as_1d("items", items)
        if users.shape != items.shape:
            raise ValueError(f"users and items must be equally long; got {users.size} and {items.size}.")
        r, known_r = self._lookup(self.user_ids_, users)
        c, known_c = self._lookup(self.item_ids_, items)
        both = known_r & known_c
        pred = np.full(users.size, self.global_mean_)
        pred += np.where(known_r, self.user_bias_[r], 0.0)
        pred += np.where(known_c, self.item_bias_[c], 0.0)
        pred[both] += np.einsum("ij,ij->i", self.row_factors_[r[both]], self.column_factors_[c[both]])
        pred[both] += self._pair_corrections(r[both], c[both])
        if timestamps is not None:
            if getattr(self, "day_bias_", None) is None:
                raise ValueError("this model was fitted without timestamps, so it has no "
                                 "user-day biases to add: pass timestamps to fit as well, or "
                                 "predict without them.")
            days = _day_bias.day_numbers(timestamps, users.size)
            pred[known_r] += _day_bias.day_biases_at(self.day_bias_keys_, self.day_bias_,
                                                     _day_bias.day_keys(r[known_r], days[known_r]))
        if self.clip:
            np.clip(pred, *self.rating_range_, out=pred)
        return pred

    def score(self, X, y, sample_weight=None):
        """Coefficient of determination R^2 of ``predict(X)`` against ratings ``y``.

        scikit-learn's regressor score, so that ``GridSearchCV`` and
        ``cross_val_score`` rank models by it (higher is better); pass
        ``scoring="neg_root_mean_squared_error"`` to rank by RMSE instead
        (the same order on one validation set).

        Parameters
        ----------
        X : (n, 2) array or DataFrame of (user, item) pairs
        y : array-like of float, shape (n,)
            The true ratings.
        sample_weight : array-like of float, shape (n,), optional

        Returns
        -------
        float
            ``1 - sum w (y - y_hat)^2 / sum w (y - mean_w(y))^2``.
        """
        y = np.asarray(y, dtype=np.float64)
        predicted = self.predict(X)
        if y.shape != predicted.shape:
            raise ValueError(f"y must hold one rating per pair; got {y.shape[0] if y.ndim else 1} "
                             f"ratings for {predicted.size} pairs.")
        weights = np.ones_like(y) if sample_weight is None else np.asarray(sample_weight, np.float64)
        residual = np.sum(weights * (y - predicted) ** 2)
        total = np.sum(weights * (y - np.average(y, weights=weights)) ** 2)
        return float(1.0 - residual / total) if total > 0 else float(residual == 0)

    def recommend(self, user, k=10, *, exclude_observed=True):
        """Top-``k`` items for one user or a batch of users.

        Ranked by predicted rating.  For top-N recommendation from who
        interacted with what, :class:`dmc.InteractionsCompleter` ranks far
        better (benchmarks/README.md, section "topn").

        Parameters
        ----------
        user : id or array-like of ids
            Known user ids (unknown ones raise ValueError).  An array gives
            one row per user; scores are computed in batches, so all users
            at once is fine.
        k : int, default=10
            Capped at the number of items.
        exclude_observed : bool, default=True
            Leave out the items the user rated in the training data
            (validation part included).

        Returns
        -------
        items : ndarray of item ids, shape (k,) for one user, (n_users, k) for a batch
        scores : ndarray of float, same shape
            Predicted ratings, item-kNN correction included (not clipped, so that ties at the top of the
            scale keep their order), best first.  When a user has fewer than
            ``k`` unrated items the remaining slots hold score ``-inf``.
        """
        self._check_fitted()

        residuals = self._residual_matrix() if self._corrected() else None
        by_item = self._residual_matrix(by_item=True) if self._user_corrected() else None

        def scores(rows):
            out = (self.row_factors_[rows] @ self.column_factors_.T + self.user_bias_[rows, None]
                   + self.item_bias_[None, :] + self.global_mean_)
            if residuals is not None:
                out += _neighbours.row_corrections(self.item_similarities_, residuals, rows,
                                                   self.n_neighbours_, self.neighbour_damping)
            if by_item is not None:  # every (user, item) pair, grouped by item
                n = out.shape[1]
                out += _neighbours.pair_corrections(
                    self.user_similarities_, by_item, np.tile(np.arange(n), len(rows)),
                    np.repeat(rows, n), self.n_user_neighbours_,
                    self.neighbour_damping).reshape(out.shape)
            return out

        return recommend_top_k(scores, user, k, user_ids=self.user_ids_, item_ids=self.item_ids_,
                               observed=self._observed, exclude_observed=exclude_observed)

    # -- new users without a refit --------------------------------------------
    def fold_in(self, items, ratings, *, penalty=1.0):
        """Factor and bias of a new user from a few ratings, the items held fixed.

        Solves the ridge least-squares problem of the model with every item
        quantity fixed::

            min over x, b   sum_j (r_j - mu - b_j - b - (x + z) . v_j)^2
                            + penalty * ||x||^2 + bias_penalty * b^2

        over the rated items ``j`` (``v_j`` their rows of
        ``column_factors_``, ``b_j`` their biases; ``z`` the implicit-feedback
        part ``|I|^(-1/2) sum_j implicit_factors_[j]`` of a user who rated the
        items ``I``, zero without ``implicit_feedback``).  A few ratings
        determine a k-dimensional ``x`` poorly: ``penalty`` shrinks it
        toward zero (the scores toward the biases).

        Parameters
        ----------
        items : array-like of item ids
            Items seen in ``fit``, each at most once (unknown ids raise
            ValueError: nothing is known about them).
        ratings : array-like of float, same length
        penalty : float, default=1.0
            Ridge penalty on ``x`` (in rating units); > 0.

        Returns
        -------
        row_factor : ndarray of shape (k,)
            The user's row of ``row_factors_`` (``x + z``).
        bias : float
            The user's ``user_bias_``; 0 when ``biases=False``.
        """
        self._check_fitted()
        c, ratings = self._rated_items(items, ratings)
        if not is_real(penalty) or not penalty > 0 or not np.isfinite(penalty):
            raise ValueError(f"penalty must be a positive finite number; got {penalty!r}.")
        V = self.column_factors_[c]
        implicit = getattr(self, "implicit_factors_", None)  # None: a model saved before it existed
        z = (np.zeros(V.shape[1]) if implicit is None
             else implicit[c].sum(axis=0) / math.sqrt(c.size))
        target = ratings - self.global_mean_ - self.item_bias_[c] - V @ z
        k = V.shape[1]
        design = np.hstack([V, np.ones((c.size, 1))]) if self.biases else V
        ridge = np.full(design.shape[1], float(penalty))
        if self.biases:
            ridge[k] = self.bias_penalty
        gram = design.T @ design + np.diag(ridge)
        solution = np.linalg.solve(gram, design.T @ target)
        return solution[:k] + z, (float(solution[k]) if self.biases else 0.0)

    def recommend_for_ratings(self, items, ratings, k=10, *, exclude_rated=True, penalty=1.0):
        """Top-``k`` items for a new user given a few ratings, without a refit.

        The user is folded in (:meth:`fold_in`) and every item scored as
        :meth:`predict` would score a known user, the item-kNN correction
        taken from the new user's residuals on the given ratings.

        Parameters
        ----------
        items, ratings : array-like
            The new user's ratings (item ids seen in ``fit``).
        k : int, default=10
            Capped at the number of items.
        exclude_rated : bool, default=True
            Leave out the items in ``items``.
        penalty : float, default=1.0
            See :meth:`fold_in`.

        Returns
        -------
        items : ndarray of item ids, shape (k,)
        scores : ndarray of float, shape (k,)
            Predicted ratings (not clipped), best first; ``-inf`` fills slots
            beyond the unrated items.
        """
        if not is_int(k) or k < 1:
            raise ValueError(f"k must be a positive integer; got {k!r}.")
        row, bias = self.fold_in(items, ratings, penalty=penalty)
        scores = self.column_factors_ @ row + self.item_bias_ + bias + self.global_mean_
        rated, given = self._rated_items(items, ratings)
        residuals = given - scores[rated]  # the new user's residuals on the given ratings
        correction = np.zeros(scores.size)
        if self._corrected():
            correction += _neighbours.user_corrections(
                self.item_similarities_, np.arange(scores.size), rated, residuals,
                self.n_neighbours_, self.neighbour_damping)
        if self._user_corrected():
            similarities = _neighbours.new_row_similarities(
                self._residual_matrix(), rated, residuals, self.neighbour_shrinkage)
            correction += _neighbours.vector_corrections(
                similarities, self._residual_matrix(by_item=True), self.n_user_neighbours_,
                self.neighbour_damping)
        scores += correction
        if exclude_rated:
            scores[rated] = -np.inf
        top = np.argsort(-scores, kind="stable")[:min(k, scores.size)]
        return self.item_ids_[top], scores[top]

    def _rated_items(self, items, ratings):
        """Positions of a new user's rated ``items`` and the ratings, checked."""
        items = _as_1d("items", items)
        ratings = np.asarray(ratings, dtype=np.float64).reshape(-1)
        if items.size == 0 or items.shape != ratings.shape:
            raise ValueError(f"items and ratings must be equally long and not empty; got "
                             f"{items.size} and {ratings.size}.")
        if not np.all(np.isfinite(ratings)):
            raise ValueError("ratings must be finite.")
        c, known = self._lookup(self.item_ids_, items)
        if not known.all():
            raise ValueError(f"unknown item id(s) {items[~known][:5].tolist()}: fold-in needs items "
                             "seen in fit.")
        if np.unique(c).size != c.size:
            raise ValueError("an item is rated more than once; keep one rating per item.")
        return c, ratings
