"""``InteractionsCompleter``: top-N recommendation from implicit feedback.

Where :class:`dmc.RatingsCompleter` fits the observed ratings (and ranks by
predicted rating, which ranks poorly: Cremonesi, Koren and Turrin 2010),
this estimator fits the FULL user x item matrix: ``t_ij = 1`` where user i
interacted with item j (or, with ``target="weights"``, the interaction's
weight over the largest weight, for graded feedback such as ratings) and 0
everywhere else, every entry observed, with a weight
``w_ij = 1 + alpha * weight_ij`` on the interactions (1 elsewhere).
With ``alpha=0`` that is the fully observed factorization the paper's
theorem covers exactly.  The model is the compressed deep factorization of
Yaras et al. (DESIGN.md section 3),

    X = U Wt_L ... Wt_1 V^T,

started from the invariant subspace of the initial gradient and trained by
gradient descent (:func:`dmc.solver.gradient_descent`, step rules of
:mod:`dmc.steps`).  The loss over all ``m * n`` entries is computed with the
Gram identity ``||A B^T||_F^2 = tr(A^T A B^T B)`` plus a sparse correction on
the interactions (:func:`dmc.models.gram_loss_and_gradients`), so a step
costs O(|Omega| k + (m + n) k^2) and nothing of size m x n is formed; the
initial gradient's truncated SVD is matrix-free as well
(:func:`dmc.subspace.full_initial_gradient`).  Small-initialized deep
factorizations learn singular directions one after another, so early
stopping on held-out interactions (validation NDCG@k) chooses the spectral
filter; the best state is restored.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from . import models, steps, subspace
from ._base import (BaseCompleter, check_bools, check_callbacks, check_integers, check_lr, check_reals,
                    check_validation_fraction, check_verbose, is_int, solver_callbacks)
from ._early_stopping import EarlyStopping, validation_split
from ._recommend import as_ids, encode_ids, lookup, recommend_top_k, sorted_pairs
from .backend import compute_threads, dtype_name, make_pattern, resolve_backend, to_namespace, to_numpy
from .datasets import _rng
from .exceptions import not_fitted
from .metrics import ndcg_at_k
from .observations import Observations
from .solver import ConvergenceWarning, gradient_descent

__all__ = ["InteractionsCompleter"]

# validation NDCG is computed on at most this many users with held-out interactions
_MAX_VALIDATION_USERS = 2000
# svd_solver="auto" uses the randomized range finder above this many entries
# (m * n).  None measured yet: on one CPU thread ARPACK was faster and more
# accurate at every size tried (2e5 x 2e4: 1.6 s against 2.7 s; 1e6 x 1e5 with
# 2e7 interactions: 25 s against 41 s, benchmarks/README.md "topn"), so
# "auto" is ARPACK until a measurement (many threads, a GPU) says otherwise.
_RANDOMIZED_SVD_ENTRIES = float("inf")
_SVD_SOLVERS = ("auto", "arpack", "randomized")
_TARGETS = ("binary", "weights")


def _interactions(X, items):
    """``(users, items)`` from a pair of arrays, an (n, 2) array or a DataFrame."""
    if items is not None:
        return X, items
    if hasattr(X, "columns"):
        from .ratings import _columns

        return tuple(_columns(X, ("user", "item")))
    pairs = np.asarray(X)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise TypeError("fit takes fit(users, items) with two equally long arrays, an (n, 2) "
                        "array of (user, item) pairs or a DataFrame with user and item columns; "
                        f"got a single array of shape {pairs.shape}.")
    return pairs[:, 0], pairs[:, 1]


class InteractionsCompleter(BaseCompleter):
    """Deep matrix completion for top-N recommendation from (user, item) interactions.

    Fits the fully observed user x item matrix (1 on interactions, 0
    elsewhere; module docstring) with the compressed deep factorization and
    ranks items by the fitted scores.  Use this estimator for top-N
    recommendation; use :class:`dmc.RatingsCompleter` to predict ratings.

    Parameters
    ----------
    rank : int, default=64
        Rank budget; the model width is ``2 * rank``.  Early stopping picks
        how much of it is used (on MovieLens 100K validation data 64 ranked
        better than 32 and 48; benchmarks/README.md, section "topn").
    depth : int, default=3
        Number of inner factors ``L`` (>= 2).
    init_scale : float, default=0.1
        ``eps``: the inner factors start at ``eps * I``.
    lr : "auto" or float, default="auto"
        Step of the inner factors on the normalized target (top singular
        value 1): ``"auto"`` is ``1.5 / ((depth + 2 * gamma) * w_max)``, 3/4
        of the stability limit of the fully observed loss when ``U, V`` move
        too (``w_max`` the largest interaction weight), times
        ``lr_multiplier``.
    lr_multiplier : float, default=1.0
    gamma : float, default=1.0
        Step size ratio of ``U, V`` to the inner factors.
    step_rule : {"adaptive", "constant", "preconditioned"} or step rule, default="adaptive"
        See :mod:`dmc.steps`.  On MovieLens 100K "adaptive" reached the same
        validation NDCG as "constant" in about a quarter of the steps.
    target : {"binary", "weights"}, default="binary"
        What an interaction is fitted to.  ``"binary"``: 1, whatever its
        weight.  ``"weights"``: ``weight_ij / max(weights)`` (``weights`` of
        :meth:`fit` required), for graded feedback on a bounded scale such
        as ratings: a 2-star rating then counts less than a 5-star one.  On
        MovieLens 100K (ratings as weights) it raised validation NDCG@10
        from 0.218 to 0.228 on u1 and test NDCG@10 from 0.443 to 0.475
        (benchmarks/README.md, section "topn").  Heavy-tailed weights (play
        counts) put every other interaction near 0: pass a bounded
        transform such as ``log1p`` or use them as confidence (``alpha``).
    alpha : float, default=0.0
        Confidence of the interactions: weight ``1 + alpha * weight_ij`` in
        the loss (``weights`` of :meth:`fit`, 1 by default), 1 elsewhere.
    popularity_exponent : float, default=0.0
        ``beta``: the target of item j is ``count_j ** -beta`` instead of 1
        (``count_j`` its number of training interactions), so that popular
        items do not take all the rank; scores are multiplied back by
        ``count_j ** beta``.
    validation_fraction : float, default=0.1
        Fraction of the interactions held out for early stopping on
        validation NDCG@``validation_k``; 0 turns early stopping off.
    validation_k : int, default=10
    n_iter_no_change : int, default=20
        Records without a better validation NDCG before stopping.
    refit : bool, default=True
        After early stopping, train again on all interactions for the
        number of steps the best state took.
    max_iter : int, default=1000
    record_every : int, default=5
    svd_solver : {"auto", "arpack", "randomized"}, default="auto"
        Truncated SVD of the initial gradient (matrix-free either way):
        ``"arpack"`` is Lanczos, one operator product at a time, accurate to
        rounding; ``"randomized"`` is the range finder of
        :func:`dmc.subspace.randomized_singular_triplets`, ``2 * svd_n_iter
        + 2`` passes over the data with blocks of ``rank + 10`` columns,
        accurate in the top directions and less so where singular values
        are close together.  ``"auto"`` is ``"arpack"``: on one CPU thread
        ARPACK was the faster and more accurate of the two at every size
        measured, up to 1e6 x 1e5 with 2e7 interactions (25 s against 41 s;
        benchmarks/README.md, section "topn").
    svd_n_iter : int, default=4
        Power iterations of the randomized solver (>= 0).
    backend : {"numpy", "torch", "cupy"}, default="numpy"
        Where training runs; the fitted factors are NumPy arrays (ranking
        runs on the CPU).
    device : str, optional
    dtype : {"float64", "float32"}, default="float64"
    callbacks : callable or list of callables, optional
        Each called at every record with the record; a true return stops.
    verbose : int or bool, default=0
    random_state : int, numpy Generator or None

    Attributes
    ----------
    user_ids_, item_ids_ : ndarray
        The known ids, sorted.
    user_factors_, item_factors_ : ndarray
        ``scores = user_factors_ @ item_factors_.T`` (in the units of the
        target; the popularity rescaling is folded into ``item_factors_``),
        balanced: both are the singular vectors of the product times the
        square roots of its singular values, so that item rows are
        embeddings (:meth:`similar_items`).
    item_counts_ : ndarray of int
        Training interactions per item.
    scale_, lr_ : float
    best_iter_, n_iter_ : int
    history_ : dict of 1-D ndarrays
        ``iteration``, ``time``, ``train_loss``, ``step_size`` and, with
        early stopping, ``validation_ndcg``.
    stop_reason_ : str
    fit_time_ : float
    """

    _persisted_private = ("_observed",)

    def __init__(self, rank=64, *, depth=3, init_scale=0.1, lr="auto", lr_multiplier=1.0,
                 gamma=1.0, step_rule="adaptive", target="binary", alpha=0.0,
                 popularity_exponent=0.0,
                 validation_fraction=0.1, validation_k=10, n_iter_no_change=20, refit=True,
                 max_iter=1000, record_every=5, svd_solver="auto", svd_n_iter=4, backend="numpy",
                 device=None, dtype="float64", callbacks=None, verbose=0, random_state=None):
        self.rank = rank
        self.depth = depth
        self.init_scale = init_scale
        self.lr = lr
        self.lr_multiplier = lr_multiplier
        self.gamma = gamma
        self.step_rule = step_rule
        self.target = target
        self.alpha = alpha
        self.popularity_exponent = popularity_exponent
        self.validation_fraction = validation_fraction
        self.validation_k = validation_k
        self.n_iter_no_change = n_iter_no_change
        self.refit = refit
        self.max_iter = max_iter
        self.record_every = record_every
        self.svd_solver = svd_solver
        self.svd_n_iter = svd_n_iter
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.callbacks = callbacks
        self.verbose = verbose
        self.random_state = random_state

    # -- checks --------------------------------------------------------------
    def _check_params(self):
        check_integers(self, {"rank": 1, "depth": 2, "max_iter": 1, "record_every": 1,
                              "n_iter_no_change": 1, "validation_k": 1, "svd_n_iter": 0})
        check_reals(self, ("init_scale", "lr_multiplier"), positive=True)
        check_reals(self, ("gamma", "alpha", "popularity_exponent"), positive=False)
        check_lr(self.lr)
        check_validation_fraction(self.validation_fraction)
        check_bools(self, ("refit",))
        if not isinstance(self.target, str) or self.target not in _TARGETS:
            raise ValueError(f'target must be "binary" or "weights"; got {self.target!r}.')
        if self.backend not in ("numpy", "torch", "cupy"):
            raise ValueError(f'backend must be "numpy", "torch" or "cupy"; got {self.backend!r}.')
        if not isinstance(self.svd_solver, str) or self.svd_solver not in _SVD_SOLVERS:
            raise ValueError('svd_solver must be "auto", "arpack" or "randomized"; '
                             f"got {self.svd_solver!r}.")
        if dtype_name(self.dtype) not in ("float32", "float64"):
            raise ValueError(f'dtype must be "float32" or "float64"; got {self.dtype!r}.')
        steps.make_step_rule(self.step_rule)
        check_callbacks(self.callbacks)
        check_verbose(self.verbose)

    # -- fitting -------------------------------------------------------------
    def fit(self, X, items=None, weights=None):
        """Fit the model to (user, item) interactions.

        Parameters
        ----------
        X : array-like of ids, array of shape (n, 2), or pandas.DataFrame
            The users (integers or strings) with ``items``; or (user, item)
            pairs as an (n, 2) array or a DataFrame with user and item
            columns (then ``items`` stays None).
        items : array-like of ids, optional
            Same length as the users.
        weights : array-like of float, optional
            Interaction strengths >= 0 (e.g. ratings, play counts), used as
            confidence ``1 + alpha * weight`` (only when ``alpha > 0``) and,
            with ``target="weights"``, as the fitted value (required then).
            Default 1.

        Returns
        -------
        self
        """
        start = time.perf_counter()
        self._check_params()
        users, items = _interactions(X, items)
        if np.size(users) == 0 and np.size(items) == 0:
            raise ValueError("no interactions: there is nothing to fit.")
        users, items = as_ids("users", users), as_ids("items", items)
        if users.shape != items.shape:
            raise ValueError(f"users and items must be equally long; got {users.size} and {items.size}.")
        if users.size == 0:
            raise ValueError("no interactions: there is nothing to fit.")
        if weights is None:
            if self.target == "weights":
                raise ValueError('target="weights" fits each interaction to its weight: pass '
                                 'fit(users, items, weights), or use target="binary".')
            weights = np.ones(users.size)
        else:
            weights = np.asarray(weights)
            if weights.ndim != 1 or weights.dtype.kind not in "iuf":
                raise TypeError(f"weights must be a 1-D array of numbers; got dtype {weights.dtype} "
                                f"and shape {weights.shape}.")
            if weights.shape != users.shape:
                raise ValueError(f"weights must hold one number per interaction; got "
                                 f"{weights.size} for {users.size}.")
            weights = weights.astype(np.float64)
            if not np.all(np.isfinite(weights)) or np.any(weights < 0):
                raise ValueError("weights must be finite and >= 0.")
            if self.target == "weights" and not np.any(weights > 0):
                raise ValueError('target="weights" needs at least one positive weight; '
                                 "all are 0.")
        self.user_ids_, rows = encode_ids(users)
        self.item_ids_, cols = encode_ids(items)
        order, repeated = sorted_pairs(rows, cols)
        rows, cols, weights = rows[order], cols[order], weights[order]
        if repeated is not None:
            user, item = self.user_ids_[rows[repeated]].item(), self.item_ids_[cols[repeated]].item()
            raise ValueError(f"user {user!r} interacted with item {item!r} more than once; "
                             "aggregate repeated interactions first (e.g. sum them as weights).")
        shape = (self.user_ids_.size, self.item_ids_.size)
        if 2 * self.rank > min(shape):
            raise ValueError(f"rank={self.rank} is too large for {shape[0]} users and {shape[1]} "
                             f"items: 2 * rank must be <= {min(shape)}.")
        self._observed = (rows, cols)
        self.item_counts_ = np.bincount(cols, minlength=shape[1])

        rng = _rng(self.random_state)
        train = validation_split(rows.size, self.validation_fraction, rng, what="interactions")
        initial_state = rng.bit_generator.state
        fitted, result, best_iter = self._train(
            shape, rows, cols, weights, train, rng, start, max_iter=self.max_iter,
            callbacks=solver_callbacks(self.callbacks))
        if self.refit and self.validation_fraction > 0 and result.stop_reason != "interrupted":
            rng.bit_generator.state = initial_state
            refitted, refit_result, _ = self._train(
                shape, rows, cols, weights, np.ones_like(train), rng, start,
                max_iter=max(best_iter, 1), callbacks=[])
            if refit_result.stop_reason != "interrupted":
                fitted = refitted
        for name, value in fitted.items():
            setattr(self, name, value)
        self.n_iter_, self.best_iter_, self.history_ = result.n_iter, best_iter, result.history
        self.stop_reason_ = result.stop_reason
        self.fit_time_ = time.perf_counter() - start
        return self

    def _train(self, shape, rows, cols, weights, train, rng, start, *, max_iter, callbacks):
        """Gradient descent on the ``train`` interactions (all other entries are 0).

        Returns the fitted attributes of the state kept, the solver's result
        and the step of that state.
        """
        L, eps = self.depth, self.init_scale
        backend = resolve_backend(None, self.backend, self.device)
        dtype = backend.float_dtype(dtype_name(self.dtype))
        obs_rows, obs_cols = rows[train], cols[train]
        counts = np.bincount(obs_cols, minlength=shape[1]).astype(np.float64)
        item_scale = np.maximum(counts, 1.0) ** -self.popularity_exponent
        targets = item_scale[obs_cols] * self._graded(weights)[train]
        confidence = None if self.alpha == 0 else 1.0 + self.alpha * weights[train]
        # initial gradient G0 = E0 + S0, S0 = w (e0 - t) - e0 on the interactions
        q = subspace.RandomOrthogonal(shape, rng)
        e0 = eps**L * q.entries(obs_rows, obs_cols)
        s0 = -targets if confidence is None else confidence * (e0 - targets) - e0
        obs = Observations(shape, obs_rows, obs_cols, s0)
        G0 = subspace.full_initial_gradient(obs.to_csr(), q, eps**L)
        spectrum = subspace.top_singular_triplets(G0, self.rank, rng, solver=self._svd_solver(shape),
                                                  n_iter=self.svd_n_iter)
        U, V = subspace.invariant_subspace(spectrum, q, rng)
        scale = float(spectrum.singular_values[0])
        lr = (self._auto_lr(L, 1.0 if confidence is None else float(confidence.max()))
              if self.lr == "auto" else float(self.lr)) * self.lr_multiplier
        factors = models.init_compressed(np.ascontiguousarray(U), np.ascontiguousarray(V), L, eps)
        float_name = dtype_name(self.dtype)
        factors = models.DeepFactors.from_arrays(
            [to_namespace(np.ascontiguousarray(a, dtype=float_name), backend) for a in factors.arrays()])
        pattern = make_pattern(obs, dtype, backend)
        t = to_namespace((targets / scale).astype(float_name), backend)
        w = None if confidence is None else to_namespace(confidence.astype(float_name), backend)

        def loss_and_gradients(f):
            return models.gram_loss_and_gradients(f, pattern, t, w)

        validation = ~train
        metrics, callbacks = {}, list(callbacks)
        stopper = EarlyStopping("validation_ndcg", self.n_iter_no_change, mode="max")
        if validation.any():
            metrics["validation_ndcg"] = self._validation_metric(
                shape, obs_rows, obs_cols, rows[validation], cols[validation], item_scale, rng)
            callbacks.insert(0, stopper)
        rule = steps.make_step_rule(self.step_rule)
        context = steps.StepContext(lr=lr, outer_ratio=float(self.gamma), target_scale=1.0,
                                    observed_fraction=1.0, xp=backend.xp)
        with warnings.catch_warnings(), compute_threads(backend):
            warnings.simplefilter("ignore", ConvergenceWarning)  # its tol message does not apply
            result = gradient_descent(
                factors, loss_and_gradients, rule, context=context, max_iter=max_iter, tol=0.0,
                observed_norm=1.0, record_every=self.record_every, metrics=metrics,
                callbacks=callbacks, loss_unit=scale**2, start_time=start,
                verbose=int(self.verbose))
        if stopper.best_state is not None:
            factors, best_iter = stopper.best_state, stopper.best_iter
            if result.stop_reason == "max_iter":
                warnings.warn(
                    f"validation NDCG still improved within the last {self.n_iter_no_change} "
                    f"records at max_iter={max_iter}; raise max_iter or lr_multiplier.",
                    ConvergenceWarning, stacklevel=3)
        else:
            best_iter = result.n_iter
        user_factors, item_factors = models.balanced_factors(*self._numpy_factors(factors))
        fitted = {
            "scale_": scale, "lr_": lr,
            "user_factors_": scale * user_factors,
            "item_factors_": item_factors / item_scale[:, None],
        }
        return fitted, result, best_iter

    def _graded(self, weights):
        """What each interaction is fitted to before the popularity scaling (``target``)."""
        if self.target == "binary":
            return np.ones_like(weights)
        return weights / weights.max()  # the largest weight over all interactions, held out too

    def _svd_solver(self, shape):
        """The truncated SVD solver: ``svd_solver``, with ``"auto"`` decided by ``m * n``."""
        if self.svd_solver != "auto":
            return self.svd_solver
        return "randomized" if shape[0] * shape[1] > _RANDOMIZED_SVD_ENTRIES else "arpack"

    def _auto_lr(self, depth, largest_weight):
        """``lr="auto"``: 3/4 of the stability limit of the normalized fully observed loss.

        :func:`dmc.models.spectral_step_size` counts the ``depth`` inner
        factors, each carrying ``sigma ** (1/L)`` of the top singular value
        (1 after normalization); the outer factors ``U, V`` add ``2 * gamma``
        more of the same size when they move, and the weights multiply the
        curvature in X by at most their largest value.
        """
        inner_only = models.spectral_step_size(1.0, 1.0, depth)  # 1.5 / depth
        return inner_only * depth / ((depth + 2.0 * self.gamma) * largest_weight)

    @staticmethod
    def _numpy_factors(factors):
        product = models.inner_product(factors.inner)
        A = factors.left if product is None else factors.left @ product
        return to_numpy(A).astype(np.float64), to_numpy(factors.right).astype(np.float64)

    def _validation_metric(self, shape, train_rows, train_cols, held_rows, held_cols,
                           item_scale, rng):
        """``factors -> NDCG@k`` of the held-out interactions, training items excluded."""
        users = np.unique(held_rows)
        if users.size > _MAX_VALIDATION_USERS:
            users = np.sort(rng.choice(users, _MAX_VALIDATION_USERS, replace=False))
        order = np.argsort(held_rows, kind="stable")
        held_rows, held_cols = held_rows[order], held_cols[order]
        bounds = np.searchsorted(held_rows, np.stack([users, users + 1]))
        relevant = [held_cols[lo:hi] for lo, hi in bounds.T]
        all_rows, all_items = np.arange(shape[0]), np.arange(shape[1])
        k = min(self.validation_k, shape[1])
        rescale = 1.0 / item_scale

        def validation_ndcg(factors):
            A, B = self._numpy_factors(factors)
            B = B * rescale[:, None]
            top, _ = recommend_top_k(lambda r: A[r] @ B.T, users, k, user_ids=all_rows,
                                     item_ids=all_items, observed=(train_rows, train_cols))
            return ndcg_at_k(top, relevant, k)

        return validation_ndcg

    # -- using the fit -------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "user_factors_"):
            raise not_fitted(self)

    def score_items(self, users, items=None):
        """Scores ``user_factors_[u] @ item_factors_[i]`` of (user, item) pairs.

        Parameters
        ----------
        users : array-like of known user ids, or an (n, 2) array / DataFrame of pairs
        items : array-like of known item ids, optional

        Returns
        -------
        ndarray of float, shape (n,)
        """
        self._check_fitted()
        users, items = _interactions(users, items)
        users, items = as_ids("users", users), as_ids("items", items)
        if users.shape != items.shape:
            raise ValueError(f"users and items must be equally long; got {users.size} and {items.size}.")
        r, known_r = lookup(self.user_ids_, users)
        c, known_c = lookup(self.item_ids_, items)
        if not (known_r.all() and known_c.all()):
            raise ValueError("unknown user or item ids: "
                             f"{users[~known_r][:5].tolist() + items[~known_c][:5].tolist()}.")
        return np.einsum("ij,ij->i", self.user_factors_[r], self.item_factors_[c])

    def recommend(self, user, k=10, *, exclude_observed=True):
        """Top-``k`` items for one user or a batch of users.

        Parameters
        ----------
        user : id or array-like of ids
            Known user ids (unknown ones raise ValueError); an array gives
            one row per user (scored in batches).
        k : int, default=10
            Capped at the number of items.
        exclude_observed : bool, default=True
            Leave out the items the user interacted with in the training
            data (validation part included).

        Returns
        -------
        items : ndarray of item ids, shape (k,) for one user, (n_users, k) for a batch
        scores : ndarray of float, same shape
            Best first; slots beyond the user's candidate items hold ``-inf``.
        """
        self._check_fitted()
        return recommend_top_k(lambda rows: self.user_factors_[rows] @ self.item_factors_.T,
                               user, k, user_ids=self.user_ids_, item_ids=self.item_ids_,
                               observed=self._observed, exclude_observed=exclude_observed)

    def similar_items(self, item, k=10):
        """The ``k`` items most similar to ``item`` (cosine of the balanced item factors).

        Parameters
        ----------
        item : id or array-like of ids
            Known item ids.
        k : int, default=10
            Capped at the number of other items.

        Returns
        -------
        items : ndarray of item ids, shape (k,) or (n_items_asked, k)
        similarities : ndarray of float, same shape
            In [-1, 1], best first; the item itself is left out.
        """
        self._check_fitted()
        norms = np.linalg.norm(self.item_factors_, axis=1)
        unit = self.item_factors_ / np.where(norms > 0, norms, 1.0)[:, None]
        n = self.item_ids_.size
        if is_int(k) and k >= 1:
            k = min(k, n - 1) if n > 1 else 1
        itself = (np.arange(n), np.arange(n))  # exclude each item from its own list
        return recommend_top_k(lambda rows: unit[rows] @ unit.T, item, k,
                               user_ids=self.item_ids_, item_ids=self.item_ids_,
                               observed=itself, exclude_observed=True, what="item")
