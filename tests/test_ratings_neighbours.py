"""RatingsCompleter's item- and user-kNN corrections of the residuals (dmc/_neighbours.py).

The reference is written with plain loops over users and items, from the
definitions in the module docstring, independently of the vectorized code.
"""

import math
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

from dmc import _neighbours
from _toy_ratings import toy_ratings
from dmc.ratings import RatingsCompleter
from dmc.solver import ConvergenceWarning

FAST = dict(rank=2, max_iter=30, record_every=5, n_iter_no_change=3, random_state=0)


def _toy(n_users=14, n_items=11, seed=0):
    return toy_ratings(n_users, n_items, seed)


def _fit(data=None, **params):
    data = _toy() if data is None else data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return RatingsCompleter(**{**FAST, **params}).fit(*data)


# -- the reference, with loops ---------------------------------------------------------------
def _similarities_by_hand(residual, rated, shrinkage):
    """``residual``, ``rated``: dense users x items (residual 0 where not rated)."""
    n_users, n_items = rated.shape
    S = np.zeros((n_items, n_items))
    for i in range(n_items):
        for j in range(n_items):
            if i == j:
                continue
            dot = sum(residual[u, i] * residual[u, j] for u in range(n_users))
            norm_i = math.sqrt(sum(residual[u, i] ** 2 for u in range(n_users)))
            norm_j = math.sqrt(sum(residual[u, j] ** 2 for u in range(n_users)))
            common = sum(1 for u in range(n_users) if rated[u, i] and rated[u, j])
            if common and norm_i > 0 and norm_j > 0:
                S[i, j] = dot / (norm_i * norm_j) * common / (common + shrinkage)
    return S


def _correction_by_hand(S, rated_items, residuals, item, k, damping):
    candidates = [(S[item, j], r) for j, r in zip(rated_items, residuals) if j != item]
    candidates.sort(key=lambda t: -t[0])
    top = candidates[:k]
    numerator = sum(s * r for s, r in top)
    denominator = sum(abs(s) for s, _ in top) + damping
    return numerator / denominator if denominator > 0 else 0.0


def _dense(model):
    users, items = model._observed
    residual = np.zeros((model.user_ids_.size, model.item_ids_.size))
    rated = np.zeros(residual.shape, bool)
    residual[users, items] = model._residuals
    rated[users, items] = True
    return residual, rated


def _deep_by_hand(model, r, c):
    return (model.global_mean_ + model.user_bias_[r] + model.item_bias_[c]
            + np.sum(model.row_factors_[r] * model.column_factors_[c], axis=1))


@pytest.fixture(scope="module")
def fitted():
    data = _toy()
    return _fit(data, neighbours=3, user_neighbours=2, neighbour_shrinkage=2.0,
                neighbour_damping=0.5), data


def _both_by_hand(model, residual, rated, u, i):
    """Item correction (3 neighbours) plus user correction (2) of the fixture, by loops."""
    S = _similarities_by_hand(residual, rated, 2.0)
    S_users = _similarities_by_hand(residual.T, rated.T, 2.0)
    js = np.flatnonzero(rated[u])
    vs = np.flatnonzero(rated[:, i])
    return (_correction_by_hand(S, js, residual[u, js], i, 3, 0.5)
            + _correction_by_hand(S_users, vs, residual[vs, i], u, 2, 0.5))


# -- the fitted state ------------------------------------------------------------------------
def test_residuals_are_ratings_minus_the_deep_prediction(fitted):
    model, (users, items, ratings) = fitted
    rows, cols = model._observed
    lookup = {(u, i): r for u, i, r in zip(users, items, ratings)}
    expected = np.array([lookup[u, i] for u, i in zip(rows, cols)]) - _deep_by_hand(model, rows, cols)
    np.testing.assert_allclose(model._residuals, expected, rtol=1e-12, atol=1e-12)


def test_similarities_against_loops(fitted):
    model, _ = fitted
    residual, rated = _dense(model)
    S = _similarities_by_hand(residual, rated, 2.0)
    assert isinstance(model.item_similarities_, np.ndarray)
    assert model.item_similarities_.shape == (11, 11) and model.n_neighbours_ == 3
    np.testing.assert_allclose(model.item_similarities_, S, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(S, S.T)
    assert model.user_similarities_.shape == (14, 14) and model.n_user_neighbours_ == 2
    np.testing.assert_allclose(model.user_similarities_, _similarities_by_hand(residual.T, rated.T, 2.0),
                               rtol=1e-10, atol=1e-12)


def test_predict_adds_the_correction_against_loops(fitted):
    model, _ = fitted
    residual, rated = _dense(model)
    S = _similarities_by_hand(residual, rated, 2.0)
    r, c = np.meshgrid(np.arange(14), np.arange(11), indexing="ij")
    r, c = r.ravel(), c.ravel()
    expected = _deep_by_hand(model, r, c)
    for p, (u, i) in enumerate(zip(r, c)):
        expected[p] += _both_by_hand(model, residual, rated, u, i)
    np.testing.assert_allclose(model.predict(r, c), np.clip(expected, 1, 5), rtol=1e-10)
    # an item (user) is not its own neighbour: on a training pair its own residual stays out
    assert np.all(np.diag(model.item_similarities_) == 0)
    assert np.all(np.diag(model.user_similarities_) == 0)


def test_recommend_and_score_use_the_correction(fitted):
    model, (users, items, ratings) = fitted
    r, c = np.meshgrid(np.arange(14), np.arange(11), indexing="ij")
    unclipped = model.set_params(clip=False).predict(r.ravel(), c.ravel()).reshape(14, 11)
    model.set_params(clip=True)
    for user in (0, 5):
        got_items, got_scores = model.recommend(user, k=11, exclude_observed=False)
        np.testing.assert_allclose(got_scores, unclipped[user][got_items], rtol=1e-12)
        np.testing.assert_array_equal(got_items, np.argsort(-unclipped[user], kind="stable"))
    batch_items, batch_scores = model.recommend(np.arange(14), k=4)
    for user in range(14):
        free = unclipped[user].copy()
        free[items[users == user]] = -np.inf
        n = min(4, int(np.isfinite(free).sum()))
        np.testing.assert_allclose(batch_scores[user][:n], np.sort(free)[::-1][:n], rtol=1e-12)
    X = np.column_stack([users, items])
    predicted = model.predict(X)
    expected = 1 - np.sum((ratings - predicted) ** 2) / np.sum((ratings - ratings.mean()) ** 2)
    assert model.score(X, ratings) == pytest.approx(expected, rel=1e-12)


def test_recommend_for_ratings_corrects_with_the_new_users_residuals(fitted):
    model, _ = fitted
    residual, rated = _dense(model)
    S = _similarities_by_hand(residual, rated, 2.0)
    items, ratings = np.array([1, 4, 6, 9]), np.array([5.0, 2.0, 4.0, 1.0])
    row, bias = model.fold_in(items, ratings)
    deep = model.column_factors_ @ row + model.item_bias_ + bias + model.global_mean_
    given = ratings - deep[items]
    # the new user's similarity to each user: cosine of residual rows, shrunk by the common items
    new_similarity = np.zeros(14)
    for v in range(14):
        dot = sum(g * residual[v, j] for g, j in zip(given, items))
        norms = math.sqrt(sum(g * g for g in given)) * math.sqrt(sum(residual[v] ** 2))
        common = sum(1 for j in items if rated[v, j])
        if common and norms > 0:
            new_similarity[v] = dot / norms * common / (common + 2.0)
    expected = deep.copy()
    for i in range(11):
        vs = np.flatnonzero(rated[:, i])
        top = sorted(((new_similarity[v], residual[v, i]) for v in vs), key=lambda t: -t[0])[:2]
        expected[i] += (_correction_by_hand(S, items, given, i, 3, 0.5)
                        + sum(s * r for s, r in top) / (sum(abs(s) for s, _ in top) + 0.5))
    got_items, got_scores = model.recommend_for_ratings(items, ratings, k=11, exclude_rated=False)
    np.testing.assert_allclose(got_scores, expected[got_items], rtol=1e-12)
    assert not np.allclose(got_scores, deep[got_items])
    # a new user who rated what a known user rated is corrected like that user, up to the factors
    free_items, free_scores = model.recommend_for_ratings(items, ratings, k=11)
    assert set(free_items[np.isfinite(free_scores)]).isdisjoint(items)


# -- parameters ------------------------------------------------------------------------------
def test_neighbours_zero_equals_the_uncorrected_model():
    data = _toy()
    plain = _fit(data, neighbours=0, user_neighbours=0)
    corrected = _fit(data)
    assert plain.n_neighbours_ == 0 and plain.item_similarities_ is None
    assert plain.n_user_neighbours_ == 0 and plain.user_similarities_ is None
    assert corrected.n_neighbours_ == 40 and corrected.n_user_neighbours_ == 40
    for name in ("row_factors_", "column_factors_", "user_bias_", "item_bias_"):
        np.testing.assert_array_equal(getattr(plain, name), getattr(corrected, name))
    r, c = np.meshgrid(np.arange(14), np.arange(11), indexing="ij")
    r, c = r.ravel(), c.ravel()
    np.testing.assert_allclose(plain.predict(r, c), np.clip(_deep_by_hand(plain, r, c), 1, 5),
                               rtol=1e-12)
    assert not np.allclose(plain.predict(r, c), corrected.predict(r, c))
    items, scores = plain.recommend(3, k=11, exclude_observed=False)
    np.testing.assert_allclose(scores, _deep_by_hand(plain, np.full(11, 3), items), rtol=1e-12)


def test_shrinkage_and_damping_shrink_the_correction():
    data = _toy()
    r, c = np.meshgrid(np.arange(14), np.arange(11), indexing="ij")
    r, c = r.ravel(), c.ravel()
    free = {"clip": False, "user_neighbours": 0}  # the user correction: the same formula
    size = {}
    for shrinkage, damping in ((0.0, 0.0), (0.0, 1.0), (0.0, 10.0), (5.0, 0.0), (50.0, 0.0),
                               (50.0, 1.0)):
        model = _fit(data, neighbour_shrinkage=shrinkage, neighbour_damping=damping, **free)
        size[shrinkage, damping] = np.abs(model.predict(r, c) - _deep_by_hand(model, r, c)).mean()
    # damping shrinks every correction toward zero
    assert size[0.0, 0.0] > size[0.0, 1.0] > size[0.0, 10.0] > 0
    # shrinkage lowers every similarity; with no damping the ratio sum s r / sum |s| stays
    # unchanged when all pairs share a count, so compare shrinkage under damping
    assert size[50.0, 0.0] > size[50.0, 1.0]
    shrunk = _fit(data, neighbour_shrinkage=50.0)
    unshrunk = _fit(data, neighbour_shrinkage=0.0)
    assert np.all(np.abs(shrunk.item_similarities_) <= np.abs(unshrunk.item_similarities_) + 1e-15)
    assert np.abs(shrunk.item_similarities_).max() < np.abs(unshrunk.item_similarities_).max()
    # with damping 0 and one neighbour the correction is sign(s) times the neighbour's residual
    one = _fit(data, neighbours=1, neighbour_damping=0.0, **free)
    residual, rated = _dense(one)
    S = one.item_similarities_
    u, i = 2, int(np.flatnonzero(~rated[2])[0])
    js = np.flatnonzero(rated[u])
    best = js[np.argmax(S[i, js])]
    expected = np.sign(S[i, best]) * residual[u, best]
    assert one.predict(u, i)[0] - _deep_by_hand(one, [u], [i])[0] == pytest.approx(expected, abs=1e-12)


def test_more_neighbours_than_rated_items_uses_all():
    data = _toy()
    everything = _fit(data, neighbours=1000, clip=False)
    ten = _fit(data, neighbours=10, clip=False)  # every user rated <= 11 items, 10 others at most
    np.testing.assert_allclose(everything.predict(*data[:2]), ten.predict(*data[:2]), rtol=1e-12)


def test_bad_parameters_name_themselves():
    data = _toy()
    for name, bad in (("neighbours", -1), ("neighbours", 2.5), ("neighbours", "many"),
                      ("user_neighbours", -1), ("user_neighbours", "auto "),
                      ("neighbours", True), ("neighbour_shrinkage", -1.0),
                      ("neighbour_shrinkage", np.inf), ("neighbour_damping", -0.1),
                      ("neighbour_damping", np.nan), ("neighbour_damping", "1")):
        with pytest.raises(ValueError, match=name):
            RatingsCompleter(**{**FAST, name: bad}).fit(*data)


def test_more_than_max_items_skips_the_correction(monkeypatch):
    """A sparse synthetic catalogue just past the bound (cheap: 3 users, few ratings each)."""
    rng = np.random.default_rng(0)
    n_items = _neighbours.MAX_ITEMS + 1
    users, items = np.arange(n_items) % 3, np.arange(n_items)
    ratings = rng.integers(1, 6, users.size).astype(float)
    params = dict(rank=1, max_iter=3, validation_fraction=0.0, random_state=0)
    called = []
    # the item-item matrix is never built (the 3 x 3 user-user one is)
    monkeypatch.setattr(_neighbours, "item_similarities",
                        lambda rows, cols, res, n, shrink: called.append(n) or np.zeros((n, n)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "auto": documented, no warning
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = RatingsCompleter(**params).fit(users, items, ratings)
    assert model.item_ids_.size == n_items
    assert model.n_neighbours_ == 0 and model.item_similarities_ is None and n_items not in called
    r, c = np.array([0, 1]), np.array([5, 7])
    np.testing.assert_allclose(model.predict(r, c), np.clip(_deep_by_hand(model, r, c), 1, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(UserWarning, match=r"neighbours=40 is ignored: with 10001 items"):
            explicit = RatingsCompleter(neighbours=40, **params).fit(users, items, ratings)
    assert explicit.n_neighbours_ == 0 and n_items not in called and called == [3, 3]


def test_more_than_max_users_skips_the_user_correction():
    n_users = _neighbours.MAX_ITEMS + 1
    users, items = np.arange(n_users), np.arange(n_users) % 2
    ratings = np.random.default_rng(0).integers(1, 6, n_users).astype(float)
    params = dict(rank=1, max_iter=3, validation_fraction=0.0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = RatingsCompleter(**params).fit(users, items, ratings)
    assert model.n_user_neighbours_ == 0 and model.user_similarities_ is None
    assert model.n_neighbours_ == 40 and model.item_similarities_.shape == (2, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.warns(UserWarning, match=r"user_neighbours=5 is ignored: with 10001 users"):
            RatingsCompleter(user_neighbours=5, **params).fit(users, items, ratings)


# -- persistence and warm start --------------------------------------------------------------
def test_save_and_load_round_trip(fitted, tmp_path):
    model, (users, items, _) = fitted
    loaded = RatingsCompleter.load(model.save(tmp_path / "knn.npz"))
    assert loaded.n_neighbours_ == 3 and loaded.get_params()["neighbour_damping"] == 0.5
    assert loaded.n_user_neighbours_ == 2
    np.testing.assert_array_equal(loaded.item_similarities_, model.item_similarities_)
    np.testing.assert_array_equal(loaded.user_similarities_, model.user_similarities_)
    np.testing.assert_array_equal(loaded._residuals, model._residuals)
    r, c = np.meshgrid(np.arange(14), np.arange(11), indexing="ij")
    np.testing.assert_array_equal(loaded.predict(r.ravel(), c.ravel()), model.predict(r.ravel(), c.ravel()))
    np.testing.assert_array_equal(loaded.recommend(np.arange(14), k=3)[1], model.recommend(np.arange(14), k=3)[1])
    np.testing.assert_array_equal(loaded.recommend_for_ratings([1, 2], [5.0, 1.0])[1],
                                  model.recommend_for_ratings([1, 2], [5.0, 1.0])[1])
    plain = _fit(neighbours=0, user_neighbours=0)
    again = RatingsCompleter.load(plain.save(tmp_path / "plain.npz"))
    assert again.item_similarities_ is None and again.n_neighbours_ == 0
    assert again.user_similarities_ is None and again.n_user_neighbours_ == 0
    np.testing.assert_array_equal(again.predict(r.ravel(), c.ravel()), plain.predict(r.ravel(), c.ravel()))


def test_a_damaged_file_with_mismatched_similarities_is_refused(fitted, tmp_path):
    model, _ = fitted
    model_copy = RatingsCompleter.load(model.save(tmp_path / "a.npz"))
    model_copy.item_similarities_ = model_copy.item_similarities_[:5, :5]
    path = model_copy.save(tmp_path / "b.npz")
    with pytest.raises(ValueError, match="item_similarities_"):
        RatingsCompleter.load(path)
    model_copy = RatingsCompleter.load(model.save(tmp_path / "e.npz"))
    model_copy.user_similarities_ = model_copy.user_similarities_[:, :5]
    with pytest.raises(ValueError, match="user_similarities_"):
        RatingsCompleter.load(model_copy.save(tmp_path / "f.npz"))
    model_copy = RatingsCompleter.load(model.save(tmp_path / "c.npz"))
    model_copy._residuals = model_copy._residuals[:3]
    with pytest.raises(ValueError, match="residuals"):
        RatingsCompleter.load(model_copy.save(tmp_path / "d.npz"))


def test_warm_start_recomputes_the_correction_for_the_continued_fit():
    data = _toy()
    longer = _fit(data, max_iter=60, validation_fraction=0.0)
    model = _fit(data, max_iter=30, validation_fraction=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.set_params(warm_start=True).fit(*data)
    np.testing.assert_allclose(model.item_similarities_, longer.item_similarities_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.user_similarities_, longer.user_similarities_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.predict(*data[:2]), longer.predict(*data[:2]), rtol=1e-9)
    # new ratings (a new user): the residuals and similarities follow the new data
    users, items, ratings = data
    more = (np.r_[users, 20, 20, 20], np.r_[items, 0, 1, 2], np.r_[ratings, 5.0, 1.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(*more)
    assert model._residuals.size == ratings.size + 3
    np.testing.assert_allclose(model._residuals, np.r_[ratings, 5.0, 1.0, 3.0][np.lexsort((more[1], more[0]))]
                               - _deep_by_hand(model, *model._observed), rtol=1e-12, atol=1e-12)


# -- the pure functions, over shapes ---------------------------------------------------------
@given(st.integers(2, 7), st.integers(2, 7), st.integers(1, 8), st.floats(0.0, 5.0),
       st.floats(0.0, 2.0), st.integers(0, 2**31 - 1))
def test_pure_functions_match_the_loops(n_users, n_items, k, shrinkage, damping, seed):
    rng = np.random.default_rng(seed)
    rated = rng.random((n_users, n_items)) < 0.7
    rows, cols = np.nonzero(rated)
    residuals = rng.standard_normal(rows.size)
    dense = np.zeros(rated.shape)
    dense[rows, cols] = residuals
    S = _neighbours.item_similarities(rows, cols, residuals, n_items, shrinkage)
    np.testing.assert_allclose(S, _similarities_by_hand(dense, rated, shrinkage), rtol=1e-9, atol=1e-12)
    observed = sp.csr_matrix((residuals, (rows, cols)), shape=rated.shape)
    every = _neighbours.row_corrections(S, observed, np.arange(n_users), k, damping)
    pairs = _neighbours.pair_corrections(S, observed, rows[::-1].copy(), cols[::-1].copy(), k, damping)
    for u in range(n_users):
        js = np.flatnonzero(rated[u])
        for i in range(n_items):
            expected = _correction_by_hand(S, js, dense[u, js], i, k, damping)
            assert every[u, i] == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(pairs, every[rows[::-1], cols[::-1]], atol=1e-12)
    # a new row: similarities to the fitted rows, then corrections at every column
    new_cols = np.flatnonzero(rng.random(n_items) < 0.6)
    new_res = rng.standard_normal(new_cols.size)
    new_sims = _neighbours.new_row_similarities(observed, new_cols, new_res, shrinkage)
    augmented = np.vstack([dense, np.zeros(n_items)])
    augmented[n_users, new_cols] = new_res
    flags = np.vstack([rated, np.zeros(n_items, bool)])
    flags[n_users, new_cols] = True
    by_hand = _similarities_by_hand(augmented.T, flags.T, shrinkage)  # users as columns
    np.testing.assert_allclose(new_sims, by_hand[n_users, :n_users], rtol=1e-9, atol=1e-12)
    by_column = sp.csr_matrix((residuals, (cols, rows)), shape=(n_items, n_users))
    got = _neighbours.vector_corrections(new_sims, by_column, k, damping)
    for i in range(n_items):
        vs = np.flatnonzero(rated[:, i])
        top = sorted(((new_sims[v], dense[v, i]) for v in vs), key=lambda t: -t[0])[:k]
        denominator = sum(abs(t[0]) for t in top) + damping
        expected = sum(t[0] * t[1] for t in top) / denominator if denominator > 0 else 0.0
        assert got[i] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("magnitude", [1e300, 1e-300, 1e-310])
def test_similarities_do_not_see_the_residuals_scale(magnitude):
    """Residuals of extreme magnitude (ratings fitted at any float64 scale) neither overflow
    nor underflow in the cosine's products."""
    rng = np.random.default_rng(0)
    rated = rng.random((9, 7)) < 0.7
    rows, cols = np.nonzero(rated)
    residuals = rng.standard_normal(rows.size)
    reference = _neighbours.item_similarities(rows, cols, residuals, 7, 3.0)
    np.testing.assert_allclose(_neighbours.item_similarities(rows, cols, residuals * magnitude, 7, 3.0),
                               reference, rtol=1e-9, atol=1e-12)
    observed = sp.csr_matrix((residuals * magnitude, (rows, cols)), shape=rated.shape)
    plain = sp.csr_matrix((residuals, (rows, cols)), shape=rated.shape)
    new = (np.array([0, 3, 5]), np.array([1.0, -2.0, 0.5]))
    np.testing.assert_allclose(
        _neighbours.new_row_similarities(observed, new[0], new[1] * magnitude, 3.0),
        _neighbours.new_row_similarities(plain, *new, 3.0), rtol=1e-9, atol=1e-12)
