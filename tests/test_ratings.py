"""RatingsCompleter's pieces against hand-written references (tiny fits).

Input forms, range boundaries, and predict / score / recommend recomputed
by hand from the fitted attributes with the documented formulas.  Found by
mutation testing (tools/mutation.py).
"""

import types
import warnings

import numpy as np
import pytest

from dmc import ConvergenceWarning, RatingsCompleter
from _toy_ratings import toy_ratings
from dmc.ratings import _as_1d, _pairs, _rating_shift, _triplets

# the deep model alone (neighbours=0); the kNN correction: test_ratings_neighbours.py
FAST = dict(rank=2, max_iter=20, record_every=5, n_iter_no_change=3, random_state=0, neighbours=0,
            user_neighbours=0)


def _toy(n_users=12, n_items=10, seed=0):
    return toy_ratings(n_users, n_items, seed)


def _fit(**params):
    users, items, ratings = _toy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return RatingsCompleter(**{**FAST, **params}).fit(users, items, ratings), (users, items, ratings)


@pytest.fixture(scope="module")
def fitted():
    return _fit()


def test_rating_shift_boundaries():
    # frexp exponents -3 .. 33 (max |r| in [2**-4, 2**33)) are fitted as given
    assert _rating_shift(np.array([2.0**-4])) == 0
    assert _rating_shift(np.array([2.0**-5])) == -4
    assert _rating_shift(np.array([2.0**33 - 1.0])) == 0
    assert _rating_shift(np.array([2.0**33])) == 34
    assert _rating_shift(np.array([0.0, -0.0])) == 0
    assert _rating_shift(np.array([1.0, -2.0**40])) == 41


def test_as_1d():
    np.testing.assert_array_equal(_as_1d("u", 5), [5])
    np.testing.assert_array_equal(_as_1d("u", ["a", "b"]), ["a", "b"])
    with pytest.raises(ValueError, match=r"u must be 1-D; got an array of shape \(1, 2\)"):
        _as_1d("u", [[1, 2]])
    with pytest.raises(TypeError, match="u must hold integer or string ids; got dtype float64"):
        _as_1d("u", [1.0])
    assert _as_1d("u", np.array([1], np.uint8)).dtype == np.uint8


def test_pairs_and_triplets_forms():
    users, items = np.array([1, 2]), np.array([3, 4])
    u, i = _pairs(np.column_stack([users, items]))
    np.testing.assert_array_equal(u, users)
    np.testing.assert_array_equal(i, items)
    assert _pairs(users, items) == (users, items)
    with pytest.raises(TypeError, match=r"got shape \(2, 3\)"):
        _pairs(np.ones((2, 3)))
    with pytest.raises(TypeError, match=r"got shape \(2,\)"):
        _pairs(users)
    r = np.array([4.0, 5.0])
    X = np.column_stack([users, items])
    for got in (_triplets(X, None, r, None), _triplets(X, r, None, None),
                _triplets(users, None, items, r), _triplets(users, r, items, None)):
        np.testing.assert_array_equal(got[0], users)
        np.testing.assert_array_equal(got[1], items)
        np.testing.assert_array_equal(got[2], r)
    with pytest.raises(TypeError, match="pass the ratings once"):
        _triplets(X, r, r, None)
    with pytest.raises(TypeError, match="needs the ratings y"):
        _triplets(X, None, None, None)
    with pytest.raises(TypeError, match="fit takes fit"):
        _triplets(users, None, items, None)
    with pytest.raises(TypeError, match="fit takes fit"):
        _triplets(users, None, None, r)


def test_dataframe_forms():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"userId": [1, 2], "movieId": [3, 4], "score": [4.0, 5.0]})
    u, i, r = _triplets(df, None, None, None)
    np.testing.assert_array_equal(u, [1, 2])
    np.testing.assert_array_equal(i, [3, 4])
    np.testing.assert_array_equal(r, [4.0, 5.0])
    u, i, r = _triplets(df[["userId", "movieId"]], np.array([1.0, 2.0]), None, None)
    np.testing.assert_array_equal(r, [1.0, 2.0])
    with pytest.raises(TypeError, match="not both"):
        _triplets(df, np.array([1.0, 2.0]), None, None)
    with pytest.raises(ValueError, match="needs a 'item' column"):
        _triplets(pd.DataFrame({"user": [1], "rating": [1.0]}), None, None, None)


def test_parameter_boundaries():
    users, items, ratings = _toy()
    for ok in ({"depth": 2}, {"bias_warmup": 0}, {"validation_fraction": 0.0}, {"gamma": 0.0},
               {"bias_penalty": 0.0}, {"rating_range": (0, 6)}, {"lr": 0.01}, {"biases": np.bool_(False)}):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            RatingsCompleter(**{**FAST, "max_iter": 2, **ok}).fit(users, items, ratings)
    for name, bad in (("depth", 1), ("rank", 0), ("max_iter", 0), ("record_every", 0),
                      ("n_iter_no_change", 0), ("bias_warmup", -1), ("init_scale", 0.0),
                      ("lr_multiplier", np.inf), ("bias_lr", -1.0), ("gamma", -1.0),
                      ("weight_decay", np.inf), ("lr", 0.0), ("lr", "fast"),
                      ("validation_fraction", 1.0), ("validation_fraction", -0.1),
                      ("rating_range", (5, 5)), ("rating_range", (5, 1)), ("rating_range", "ab")):
        with pytest.raises(ValueError, match=name):
            RatingsCompleter(**{**FAST, name: bad}).fit(users, items, ratings)
    for name in ("biases", "clip", "refit"):
        with pytest.raises(TypeError, match=f"{name} must be True or False"):
            RatingsCompleter(**{**FAST, name: 1}).fit(users, items, ratings)


def test_fit_input_checks():
    users, items, ratings = _toy()
    with pytest.raises(TypeError, match="ratings must be a 1-D array of numbers"):
        RatingsCompleter(**FAST).fit(users, items, ratings.astype(str))
    with pytest.raises(ValueError, match="equally long"):
        RatingsCompleter(**FAST).fit(users, items[:-1], ratings)
    with pytest.raises(ValueError, match="no ratings"):
        RatingsCompleter(**FAST).fit(users[:0], items[:0], ratings[:0])
    with pytest.raises(ValueError, match="finite"):
        RatingsCompleter(**FAST).fit(users, items, np.where(users == 0, np.nan, ratings))
    with pytest.raises(ValueError, match="rank=6 is too large for 12 users and 10 items"):
        RatingsCompleter(**{**FAST, "rank": 6}).fit(users, items, ratings)
    with pytest.raises(ValueError, match="user 3 rated item 4 more than once"):
        RatingsCompleter(**FAST).fit(np.r_[users, 3], np.r_[items, 4], np.r_[ratings, 1.0])


def _by_hand(model, r, c):
    return (model.global_mean_ + model.user_bias_[r] + model.item_bias_[c]
            + np.sum(model.row_factors_[r] * model.column_factors_[c], axis=1))


def test_predict_is_mean_plus_biases_plus_interaction(fitted):
    model, (users, items, ratings) = fitted
    assert model.rating_range_ == (float(ratings.min()), float(ratings.max()))
    np.testing.assert_array_equal(model.user_ids_, np.arange(12))
    r, c = np.array([0, 11, 5, 5]), np.array([9, 0, 3, 4])
    np.testing.assert_allclose(model.predict(r, c), np.clip(_by_hand(model, r, c), 1, 5), rtol=1e-12)
    np.testing.assert_allclose(model.predict(np.column_stack([r, c])), model.predict(r, c))
    free = RatingsCompleter(**{**FAST, "clip": False})
    for name in ("global_mean_", "user_bias_", "item_bias_", "row_factors_", "column_factors_",
                 "user_ids_", "item_ids_", "rating_range_"):
        setattr(free, name, getattr(model, name))
    np.testing.assert_allclose(free.predict(r, c), _by_hand(model, r, c), rtol=1e-12)
    # unknown ids: no interaction, and the known side's bias only
    got = free.predict(np.array([99, 0, 99, -1]), np.array([0, 99, 99, 3]))
    np.testing.assert_allclose(got, [model.global_mean_ + model.item_bias_[0],
                                     model.global_mean_ + model.user_bias_[0],
                                     model.global_mean_, model.global_mean_ + model.item_bias_[3]],
                               rtol=1e-12)
    assert free.predict(5, 3).shape == (1,)
    assert free.predict(np.array([], int), np.array([], int)).shape == (0,)
    with pytest.raises(ValueError, match="users and items must be equally long; got 2 and 1"):
        free.predict([1, 2], [1])


def test_score_is_weighted_r2_by_hand(fitted):
    model, _ = fitted
    X = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
    y = np.array([1.0, 4.0, 2.0, 5.0])
    pred = model.predict(X)
    expected = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert model.score(X, y) == pytest.approx(expected, rel=1e-12)
    w = np.array([1.0, 2.0, 0.5, 3.0])
    mean = np.sum(w * y) / np.sum(w)
    expected = 1 - np.sum(w * (y - pred) ** 2) / np.sum(w * (y - mean) ** 2)
    assert model.score(X, y, sample_weight=w) == pytest.approx(expected, rel=1e-12)
    # constant targets: 1 for a perfect prediction, 0 otherwise
    assert model.score(X, pred[[0, 0, 0, 0]] * 0 + pred[0]) in (0.0, 1.0)
    same = np.full(4, model.predict(X[:1])[0])
    assert model.score(X[[0, 0, 0, 0]], same) == 1.0
    assert model.score(X[[0, 0, 0, 0]], same + 1.0) == 0.0
    with pytest.raises(ValueError, match="got 3 ratings for 4 pairs"):
        model.score(X, y[:3])


def _scores_and_rated_by_hand(model, users, items):
    """Every user's predicted rating of every item, and which pairs were rated."""
    scores = (model.row_factors_ @ model.column_factors_.T + model.user_bias_[:, None]
              + model.item_bias_[None, :] + model.global_mean_)
    rated = np.zeros((12, 10), bool)
    rated[users, items] = True
    return scores, rated


def test_recommend_by_hand(fitted):
    model, (users, items, _) = fitted
    scores, rated = _scores_and_rated_by_hand(model, users, items)
    for user in (0, 7):
        free_scores = np.where(rated[user], -np.inf, scores[user])
        order = np.argsort(-free_scores, kind="stable")[:3]
        got_items, got_scores = model.recommend(user, k=3)
        np.testing.assert_array_equal(got_items, order)
        np.testing.assert_allclose(got_scores, free_scores[order], rtol=1e-12)
        all_items, all_scores = model.recommend(user, k=3, exclude_observed=False)
        np.testing.assert_array_equal(all_items, np.argsort(-scores[user], kind="stable")[:3])
    # batch with a duplicate user; k capped at the number of items
    batch_items, batch_scores = model.recommend([7, 0, 7], k=50)
    assert batch_items.shape == (3, 10)
    np.testing.assert_array_equal(batch_items[0], batch_items[2])
    np.testing.assert_array_equal(batch_items[1], model.recommend(0, k=10)[0])
    n_unrated = 10 - rated[7].sum()
    assert np.all(np.isinf(batch_scores[0][n_unrated:])) and np.all(np.isfinite(batch_scores[0][:n_unrated]))
    assert np.all(np.diff(batch_scores[0][:n_unrated]) <= 0)
    with pytest.raises(ValueError, match=r"unknown user id\(s\) \[99\]"):
        model.recommend([0, 99])
    for bad in (0, 1.5, -2):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            model.recommend(0, k=bad)


def test_without_biases_the_biases_stay_zero():
    model, _ = _fit(biases=False)
    assert np.all(model.user_bias_ == 0) and np.all(model.item_bias_ == 0)


def test_no_validation_no_refit_and_best_iter():
    model, _ = _fit(validation_fraction=0.0)
    assert "validation_rmse" not in model.history_
    assert model.best_iter_ == model.n_iter_ == 20
    model, _ = _fit(refit=False, max_iter=40)
    assert "validation_rmse" in model.history_
    best = model.history_["iteration"][np.argmin(model.history_["validation_rmse"])]
    assert model.best_iter_ == best


def test_global_mean_and_scale_are_in_rating_units():
    users, items, ratings = _toy()
    model, _ = _fit(validation_fraction=0.0, max_iter=1)
    assert model.global_mean_ == pytest.approx(ratings.mean(), rel=1e-12)
    # max 5 * 2**-40 = 0.625 * 2**-37: fitted as ratings / 8 (unshifted range), scaled back by 2**-37
    params = {**FAST, "validation_fraction": 0.0, "max_iter": 3}
    tiny = RatingsCompleter(**params).fit(users, items, ratings * 2.0**-40)
    eighth = RatingsCompleter(**params).fit(users, items, ratings / 8)
    assert tiny.global_mean_ == pytest.approx(ratings.mean() * 2.0**-40, rel=1e-12)
    np.testing.assert_allclose(tiny.predict(users, items), eighth.predict(users, items) * 2.0**-37,
                               rtol=1e-12)
    np.testing.assert_allclose(tiny.user_bias_, eighth.user_bias_ * 2.0**-37, rtol=1e-12)
    np.testing.assert_allclose(tiny.history_["train_loss"], eighth.history_["train_loss"] * 2.0**-74,
                               rtol=1e-12)
    assert tiny.rating_range_ == (ratings.min() * 2.0**-40, ratings.max() * 2.0**-40)


def test_bias_warmup_reaches_the_ridge_solution():
    """Biases after a long warmup and one step: the penalized least-squares biases."""
    users, items, ratings = _toy()
    penalty = 5.0
    model = RatingsCompleter(**{**FAST, "validation_fraction": 0.0, "max_iter": 1, "record_every": 1,
                                "bias_warmup": 3000, "bias_penalty": penalty}).fit(users, items, ratings)
    # dense ridge: min 1/2 |A b - (r - mu)|^2 + penalty/2 |b|^2, A = [one-hot user, one-hot item]
    A = np.hstack([np.eye(12)[users], np.eye(10)[items]])
    target = ratings - ratings.mean()
    b = np.linalg.solve(A.T @ A + penalty * np.eye(22), A.T @ target)
    np.testing.assert_allclose(model.user_bias_, b[:12], atol=2e-2)
    np.testing.assert_allclose(model.item_bias_, b[12:], atol=2e-2)
    assert np.abs(b).max() > 0.1  # the biases are not trivially zero


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
def test_more_items_than_users_and_ids_seen_only_in_validation():
    rng = np.random.default_rng(3)
    users, items = np.meshgrid(np.arange(10), np.arange(14), indexing="ij")
    keep = rng.random(users.shape) < 0.7
    keep[9] = False
    keep[:, 13] = False
    keep[9, 0] = keep[0, 13] = True  # the last user and the last item: one rating each
    users, items = users[keep], items[keep]
    ratings = rng.integers(1, 6, users.size).astype(float)
    for seed in range(6):  # each seed holds out a different half
        model = RatingsCompleter(**{**FAST, "validation_fraction": 0.5, "random_state": seed}).fit(
            users, items, ratings)
        assert np.isfinite(model.predict([9, 0], [0, 13])).all()


def test_dataframe_columns_are_read_by_name(fitted):
    pd = pytest.importorskip("pandas")
    model, _ = fitted
    users, items = np.array([0, 3, 11]), np.array([9, 2, 5])
    frame = pd.DataFrame({"item": items, "user": users})  # not in (user, item) order
    np.testing.assert_array_equal(model.predict(frame), model.predict(users, items))


def test_id_type_errors_name_the_argument(fitted):
    model, _ = fitted
    with pytest.raises(TypeError, match="^users must hold integer or string ids"):
        model.predict([1.0], [1])
    with pytest.raises(TypeError, match="^items must hold integer or string ids"):
        model.predict([1], [1.0])
    with pytest.raises(TypeError, match="^user must hold integer or string ids"):
        model.recommend(1.0)


def test_score_with_a_small_target_variance(fitted):
    model, _ = fitted
    X = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
    y = np.array([3.0, 3.1, 3.0, 3.1])  # total sum of squares 0.01 < 1
    pred = model.predict(X)
    expected = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)
    assert model.score(X, y) == pytest.approx(expected, rel=1e-12)


def test_recommend_every_user_and_k_by_hand(fitted):
    model, (users, items, _) = fitted
    scores, rated = _scores_and_rated_by_hand(model, users, items)
    free = np.where(rated, -np.inf, scores)
    for k in (1, 2, 5):
        got, got_scores = model.recommend(np.arange(12), k=k)
        for user in range(12):
            n = min(k, int(np.sum(~rated[user])))
            expected = np.argsort(-free[user], kind="stable")[:n]
            np.testing.assert_array_equal(got[user][:n], expected)
            np.testing.assert_allclose(got_scores[user][:n], free[user][expected], rtol=1e-12)
    ids, top = model.recommend(np.array([], dtype=int), k=2)
    assert ids.shape == (0, 2) and top.shape == (0, 2)


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
def test_recommend_default_k_is_10():
    users, items, ratings = _toy(n_users=12, n_items=16)
    model = RatingsCompleter(**FAST).fit(users, items, ratings)
    ids, _ = model.recommend(0, exclude_observed=False)
    assert ids.shape == (10,)


def test_documented_defaults():
    assert RatingsCompleter().get_params() == dict(
        rank=32, depth=3, init_scale=0.1, lr="auto", lr_multiplier=0.1, gamma=30.0, biases=True,
        bias_penalty=5.0, bias_lr=0.5, bias_warmup=20, weight_decay=0.0, validation_fraction=0.1,
        n_iter_no_change=20, refit=True, clip=True, rating_range=None, max_iter=3000,
        record_every=10, callbacks=None, verbose=0, random_state=None, implicit_feedback=True,
        warm_start=False, neighbours="auto", user_neighbours="auto", neighbour_shrinkage=100.0,
        neighbour_damping=1.0,
        feature_lr=2.0, day_bias_penalty=5.0)


def test_learning_rate_hand_computed():
    users, items, ratings = _toy()
    p = users.size / 120
    auto, _ = _fit(validation_fraction=0.0, max_iter=1)
    # spectral_step_size(p, p, 3) = 1.5 / (3 p), times lr_multiplier 0.1
    assert auto.lr_ == pytest.approx(0.1 * 1.5 / (3 * p), rel=1e-12)
    fixed, _ = _fit(validation_fraction=0.0, max_iter=1, lr=0.02, lr_multiplier=0.5)
    assert fixed.lr_ == pytest.approx(0.01, rel=1e-12)


def test_solver_options_reach_the_fit(capsys, monkeypatch):
    import time

    import dmc.ratings

    seen = []
    model, _ = _fit(validation_fraction=0.0, max_iter=7, record_every=3, verbose=2,
                    callbacks=lambda record: seen.append(record["iteration"]))
    np.testing.assert_array_equal(model.history_["iteration"], [0, 3, 6, 7])
    assert seen == [0, 3, 6, 7]
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["iteration=0", "iteration=3", "iteration=6", "iteration=7"]
    before = time.perf_counter()
    monkeypatch.setattr(dmc.ratings, "time", types.SimpleNamespace(perf_counter=lambda: 0.0))
    model, _ = _fit(validation_fraction=0.0, max_iter=1)
    assert model.history_["time"][0] >= before  # counted from fit's start (0 here)


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
def test_shifted_fit_with_validation_is_rescaled_everywhere():
    import time

    users, items, ratings = _toy()
    params = {**FAST, "validation_fraction": 0.3, "max_iter": 10, "refit": False}
    start = time.perf_counter()
    tiny = RatingsCompleter(**params).fit(users, items, ratings * 2.0**-40)
    elapsed = time.perf_counter() - start
    eighth = RatingsCompleter(**params).fit(users, items, ratings / 8)
    np.testing.assert_allclose(tiny.history_["validation_rmse"], eighth.history_["validation_rmse"] * 2.0**-37,
                               rtol=1e-12)
    assert type(tiny.global_mean_) is float and type(tiny.scale_) is float
    assert tiny.scale_ == pytest.approx(eighth.scale_ * 2.0**-37, rel=1e-12)
    assert tiny.stop_reason_ == eighth.stop_reason_ == "max_iter"
    assert 0 <= tiny.fit_time_ <= elapsed


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
def test_rank_boundary_is_half_the_smaller_side():
    users, items, ratings = _toy()  # 12 users, 10 items
    model = RatingsCompleter(**{**FAST, "rank": 5, "max_iter": 2}).fit(users, items, ratings)
    assert model.row_factors_.shape == (12, 10)
