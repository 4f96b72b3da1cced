"""InteractionsCompleter: the Gram-identity loss, matrix-free initial gradient, recommend, persistence."""

import warnings

import numpy as np
import pytest

from dmc import InteractionsCompleter, RatingsCompleter, models, subspace
from dmc.backend import Backend, make_pattern, to_namespace, to_numpy
from dmc.observations import Observations


def _problem(m=9, n=7, width=4, depth=3, n_observed=20, seed=0):
    rng = np.random.default_rng(seed)
    flat = np.sort(rng.choice(m * n, n_observed, replace=False))
    obs = Observations((m, n), flat // n, flat % n, np.zeros(n_observed))
    factors = models.DeepFactors(rng.standard_normal((m, width)),
                                 [rng.standard_normal((width, width)) for _ in range(depth)],
                                 rng.standard_normal((n, width)))
    targets = rng.uniform(0.5, 2.0, n_observed)
    weights = rng.uniform(0.5, 3.0, n_observed)
    return obs, factors, targets, weights


def _dense_weighted_loss(factors, obs, targets, weights):
    """1/2 sum over ALL entries of W (X - T)^2 with W = 1, T = 0 off the pattern (dense)."""
    X = models.end_to_end(factors)
    T, W = np.zeros(obs.shape), np.ones(obs.shape)
    T[obs.observed_rows, obs.observed_cols] = targets
    if weights is not None:
        W[obs.observed_rows, obs.observed_cols] = weights
    return 0.5 * float(np.sum(W * (X - T) ** 2))


@pytest.mark.parametrize("kernels", ["scipy", "numba"])
def test_gram_loss_and_gradients_match_dense_least_squares(kernels):
    # unit weights: 1/2 ||X - T||_F^2 over all entries, the dense reference with an all-ones mask
    obs, factors, targets, _ = _problem()
    pattern = make_pattern(obs, np.float64, kernels=kernels)
    loss, grads = models.gram_loss_and_gradients(factors, pattern, targets)
    T = np.zeros(obs.shape)
    T[obs.observed_rows, obs.observed_cols] = targets
    dense_loss, dense_grads = models.dense_loss_and_gradients(factors, np.ones(obs.shape), T)
    assert float(loss) == pytest.approx(float(dense_loss), rel=1e-12)
    for g, d in zip(grads.arrays(), dense_grads.arrays()):
        np.testing.assert_allclose(g, d, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("use_weights", [False, True])
def test_gram_loss_and_gradients_match_finite_differences(use_weights):
    obs, factors, targets, weights = _problem(seed=1)
    weights = weights if use_weights else None
    pattern = make_pattern(obs, np.float64, kernels="scipy")
    loss, grads = models.gram_loss_and_gradients(factors, pattern, targets, weights)
    assert float(loss) == pytest.approx(_dense_weighted_loss(factors, obs, targets, weights),
                                        rel=1e-12)
    rng = np.random.default_rng(2)
    h = 1e-6
    for array, grad in zip(factors.arrays(), grads.arrays()):
        for _ in range(3):
            index = tuple(rng.integers(s) for s in array.shape)
            saved = array[index]
            array[index] = saved + h
            up = _dense_weighted_loss(factors, obs, targets, weights)
            array[index] = saved - h
            down = _dense_weighted_loss(factors, obs, targets, weights)
            array[index] = saved
            assert grad[index] == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-6)


def test_pattern_products_match_dense():
    obs, factors, targets, _ = _problem(seed=3)
    A, B = factors.left, factors.right
    S = np.zeros(obs.shape)
    S[obs.observed_rows, obs.observed_cols] = targets
    for kernels in ("scipy", "numba"):
        SB, StA = make_pattern(obs, np.float64, kernels=kernels).products(targets, A, B)
        np.testing.assert_allclose(SB, S @ B, atol=1e-12)
        np.testing.assert_allclose(StA, S.T @ A, atol=1e-12)
    torch = pytest.importorskip("torch")
    backend = Backend("torch")
    pattern = make_pattern(obs, torch.float64, backend)
    SB, StA = pattern.products(to_namespace(targets, backend), to_namespace(A, backend),
                               to_namespace(B, backend))
    np.testing.assert_allclose(to_numpy(SB), S @ B, atol=1e-12)
    np.testing.assert_allclose(to_numpy(StA), S.T @ A, atol=1e-12)


def test_full_initial_gradient_operator_matches_dense():
    obs, _, targets, _ = _problem(m=11, n=6, seed=4)
    rng = np.random.default_rng(0)
    q = subspace.RandomOrthogonal(obs.shape, rng)
    S = obs.to_csr(targets)
    G = subspace.full_initial_gradient(S, q, 0.3)
    dense = 0.3 * q.dense() + S.toarray()
    x, y = rng.standard_normal(6), rng.standard_normal((11, 2))
    np.testing.assert_allclose(G.matvec(x), dense @ x, atol=1e-12)
    np.testing.assert_allclose(G.rmatmat(y), dense.T @ y, atol=1e-12)
    spectrum = subspace.top_singular_triplets(G, 2, rng)
    np.testing.assert_allclose(spectrum.singular_values, np.linalg.svd(dense)[1][:2], rtol=1e-8)


def _communities(n_groups=3, users_per=20, items_per=15, density=0.6, seed=0):
    """Users of group g interact with a random ``density`` share of group g's items only."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for g in range(n_groups):
        for u in range(users_per):
            liked = rng.choice(items_per, int(density * items_per), replace=False)
            users += [g * users_per + u] * liked.size
            items += list(g * items_per + liked)
    return np.array(users), np.array(items), users_per, items_per


FAST = dict(rank=3, max_iter=400, record_every=10, random_state=0)


def test_planted_communities_are_recovered():
    users, items, users_per, items_per = _communities()
    # early stopping on held-out interactions stops before the within-community noise is fitted
    model = InteractionsCompleter(**FAST).fit(users, items)
    top, scores = model.recommend(np.arange(3 * users_per), k=4)
    assert np.all(np.isfinite(scores))
    # every recommendation is an unseen item of the user's own community
    assert np.array_equal(top // items_per, np.repeat(np.arange(3), users_per)[:, None] * np.ones((1, 4), int))
    similar, _ = model.similar_items(np.arange(3 * items_per), k=5)
    assert np.array_equal(similar // items_per, (np.arange(3 * items_per) // items_per)[:, None]
                          * np.ones((1, 5), int))


def test_recommend_excludes_seen_and_batches_agree():
    users, items, _, _ = _communities(seed=1)
    ids = np.array([f"u{u}" for u in users])
    model = InteractionsCompleter(**FAST, validation_fraction=0.2).fit(ids, items)
    assert model.best_iter_ <= model.n_iter_ and "validation_ndcg" in model.history_
    seen = {u: set(items[ids == u].tolist()) for u in np.unique(ids)}
    batch = np.array(["u3", "u25", "u3", "u59"])
    top, scores = model.recommend(batch, k=6)
    assert top.shape == scores.shape == (4, 6)
    for row, user in enumerate(batch):
        assert not seen[user] & set(top[row].tolist())
        assert np.all(np.diff(scores[row]) <= 0)
        one_top, one_scores = model.recommend(user, k=6)
        assert one_top.tolist() == top[row].tolist()
        np.testing.assert_allclose(one_scores, scores[row])
        np.testing.assert_allclose(one_scores, model.score_items([user] * 6, one_top))
    everything, _ = model.recommend("u3", k=1000, exclude_observed=False)
    assert everything.size == model.item_ids_.size
    # fewer unseen items than k: -inf fills the tail
    n_unseen = model.item_ids_.size - len(seen["u3"])
    _, tail = model.recommend("u3", k=model.item_ids_.size)
    assert np.all(np.isfinite(tail[:n_unseen])) and np.all(np.isneginf(tail[n_unseen:]))


def test_ratings_completer_batches_through_the_shared_code():
    users, items, _, _ = _communities(seed=2)
    ratings = 1.0 + (items % 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = RatingsCompleter(rank=3, max_iter=30, random_state=0).fit(users, items, ratings)
    top, scores = model.recommend(np.arange(10), k=5)
    for row in range(10):
        one, one_scores = model.recommend(row, k=5)
        assert one.tolist() == top[row].tolist()
        assert not set(items[users == row].tolist()) & set(one.tolist())
        np.testing.assert_allclose(scores[row], one_scores)


def test_save_load_round_trip(tmp_path):
    users, items, _, _ = _communities(seed=3)
    model = InteractionsCompleter(**FAST).fit(users, items)
    path = model.save(tmp_path / "model.npz")
    loaded = InteractionsCompleter.load(path)
    assert loaded.get_params() == model.get_params()
    batch = np.arange(0, 60, 7)
    for a, b in zip(loaded.recommend(batch, 5), model.recommend(batch, 5)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.similar_items(4, 3)[0], model.similar_items(4, 3)[0])
    with pytest.raises(ValueError, match="InteractionsCompleter"):
        RatingsCompleter.load(path)


def test_torch_and_numpy_agree():
    pytest.importorskip("torch")
    users, items, _, _ = _communities(seed=4)
    params = dict(FAST, validation_fraction=0, max_iter=60)
    a = InteractionsCompleter(**params).fit(users, items)
    b = InteractionsCompleter(**params, backend="torch").fit(users, items)
    np.testing.assert_allclose(b.user_factors_ @ b.item_factors_.T,
                               a.user_factors_ @ a.item_factors_.T, atol=1e-8)
    np.testing.assert_allclose(b.history_["train_loss"], a.history_["train_loss"], rtol=1e-8)


def test_confidence_weights_change_the_fit():
    users, items, _, _ = _communities(seed=5)
    weights = np.where(items % 2 == 0, 5.0, 1.0)
    params = dict(FAST, validation_fraction=0, max_iter=50)
    plain = InteractionsCompleter(**params).fit(users, items, weights)  # alpha=0 ignores weights
    unit = InteractionsCompleter(**params).fit(users, items)
    np.testing.assert_allclose(plain.user_factors_, unit.user_factors_)
    weighted = InteractionsCompleter(**params, alpha=2.0).fit(users, items, weights)
    assert not np.allclose(weighted.user_factors_ @ weighted.item_factors_.T,
                           unit.user_factors_ @ unit.item_factors_.T)


def test_graded_target_fits_the_weights_over_the_largest():
    # three complete user x item blocks with grades 1, 3 and 5: a rank-3 target, every entry
    # observed, so a long fit at rank 3 reaches it (the best rank-3 approximation is itself);
    # init_scale 1e-2 keeps the start's own directions out of the initial gradient's subspace
    groups, users_per, items_per = 3, 8, 6
    users = np.repeat(np.arange(groups * users_per), items_per)
    items = (users // users_per) * items_per + np.tile(np.arange(items_per), groups * users_per)
    grades = np.array([1.0, 3.0, 5.0])[users // users_per]
    expected = np.zeros((groups * users_per, groups * items_per))
    expected[users, items] = grades / 5.0  # independent of the code: the grade over the top grade
    params = dict(rank=3, init_scale=1e-2, validation_fraction=0, max_iter=1000, record_every=100,
                  random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graded = InteractionsCompleter(**params, target="weights").fit(users, items, grades)
        binary = InteractionsCompleter(**params).fit(users, items, grades)
    np.testing.assert_allclose(graded.user_factors_ @ graded.item_factors_.T, expected, atol=1e-4)
    np.testing.assert_allclose(binary.user_factors_ @ binary.item_factors_.T, expected > 0, atol=1e-4)
    # the graded fit ranks the 5-star block first for a user who has seen nothing of it
    assert graded.score_items([0], [2 * items_per])[0] < 1e-3  # other blocks stay at 0


def test_graded_target_needs_weights():
    users, items, _, _ = _communities()
    with pytest.raises(ValueError, match='target="weights" fits each interaction to its weight'):
        InteractionsCompleter(**FAST, target="weights").fit(users, items)
    with pytest.raises(ValueError, match="at least one positive weight"):
        InteractionsCompleter(**FAST, target="weights").fit(users, items, np.zeros(users.size))
    with pytest.raises(ValueError, match='target must be "binary" or "weights"'):
        InteractionsCompleter(**FAST, target="ratings").fit(users, items)


@pytest.mark.parametrize("params, data, error, match", [
    ({"rank": 40}, None, ValueError, "rank=40 is too large"),
    ({"alpha": -1.0}, None, ValueError, "alpha must be"),
    ({"validation_fraction": 1.0}, None, ValueError, "validation_fraction"),
    ({"backend": "jax"}, None, ValueError, "backend must be"),
    ({"dtype": "float16"}, None, ValueError, "dtype must be"),
    ({"step_rule": "fast"}, None, ValueError, "step_rule must be"),
    ({}, ([1, 1], [2, 2]), ValueError, "more than once"),
    ({}, ([1.5, 2.0], [1, 2]), TypeError, "integer or string ids"),
    ({}, ([1, 2, 3], [1, 2]), ValueError, "equally long"),
    ({}, ([], []), ValueError, "no interactions"),
])
def test_bad_input(params, data, error, match):
    users, items = data if data is not None else _communities()[:2]
    with pytest.raises(error, match=match):
        InteractionsCompleter(**{**FAST, **params}).fit(users, items)


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")  # short fits on purpose
def test_bad_weights_and_queries():
    users, items, _, _ = _communities()
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        InteractionsCompleter(**FAST).fit(users, items, -np.ones(users.size))
    with pytest.raises(ValueError, match="one number per interaction"):
        InteractionsCompleter(**FAST).fit(users, items, np.ones(3))
    with pytest.raises(Exception, match="not fitted"):
        InteractionsCompleter().recommend(0)
    model = InteractionsCompleter(**dict(FAST, max_iter=20)).fit(users, items)
    with pytest.raises(ValueError, match="unknown user"):
        model.recommend(10_000)
    with pytest.raises(ValueError, match="unknown item"):
        model.similar_items(10_000)
    with pytest.raises(ValueError, match="k must be"):
        model.recommend(0, k=0)
    with pytest.raises(TypeError, match="exclude_observed"):
        model.recommend(0, exclude_observed="yes")


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")  # short fits on purpose
def test_sklearn_protocol_and_pair_inputs():
    base = pytest.importorskip("sklearn.base")
    model = InteractionsCompleter(rank=3, depth=4, random_state=1)
    copy = base.clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    assert "depth=4" in repr(model)
    users, items, _, _ = _communities(seed=6)
    params = dict(FAST, max_iter=40)
    a = InteractionsCompleter(**params).fit(users, items)
    b = InteractionsCompleter(**params).fit(np.column_stack([users, items]))
    np.testing.assert_array_equal(a.user_factors_, b.user_factors_)
    assert not hasattr(base.clone(a), "user_factors_")
    pd = pytest.importorskip("pandas")
    c = InteractionsCompleter(**params).fit(pd.DataFrame({"user_id": users, "item_id": items}))
    np.testing.assert_array_equal(a.user_factors_, c.user_factors_)


def _solver_spy(monkeypatch):
    """Record the solver each fit asks top_singular_triplets for."""
    calls = []
    original = subspace.top_singular_triplets

    def spy(G, rank, rng, **kwargs):
        calls.append(kwargs.get("solver", "arpack"))
        return original(G, rank, rng, **kwargs)

    monkeypatch.setattr(subspace, "top_singular_triplets", spy)
    return calls


def test_svd_solver_auto_switches_to_randomized_above_the_threshold(monkeypatch):
    from dmc import interactions

    users, items, _, _ = _communities(seed=6)
    params = dict(FAST, validation_fraction=0, max_iter=5)
    calls = _solver_spy(monkeypatch)
    InteractionsCompleter(**params).fit(users, items)  # "auto" is ARPACK at the default threshold
    monkeypatch.setattr(interactions, "_RANDOMIZED_SVD_ENTRIES", 60 * 45 - 1)
    InteractionsCompleter(**params).fit(users, items)
    monkeypatch.setattr(interactions, "_RANDOMIZED_SVD_ENTRIES", 60 * 45)
    InteractionsCompleter(**params).fit(users, items)
    InteractionsCompleter(**params, svd_solver="arpack").fit(users, items)
    monkeypatch.setattr(interactions, "_RANDOMIZED_SVD_ENTRIES", float("inf"))
    InteractionsCompleter(**params, svd_solver="randomized").fit(users, items)
    assert calls == ["arpack", "randomized", "arpack", "arpack", "randomized"]


def test_randomized_svd_solver_recovers_the_communities():
    users, items, users_per, items_per = _communities()
    arpack = InteractionsCompleter(**FAST, svd_solver="arpack").fit(users, items)
    model = InteractionsCompleter(**FAST, svd_solver="randomized", svd_n_iter=6).fit(users, items)
    np.testing.assert_allclose(model.scale_, arpack.scale_, rtol=1e-8)
    top, _ = model.recommend(np.arange(3 * users_per), k=4)
    assert np.array_equal(top // items_per, np.repeat(np.arange(3), users_per)[:, None] * np.ones((1, 4), int))


@pytest.mark.parametrize("params, match", [
    ({"svd_solver": "lanczos"}, 'svd_solver must be "auto", "arpack" or "randomized"'),
    ({"svd_solver": None}, "svd_solver must be"),
    ({"svd_n_iter": -1}, "svd_n_iter must be an integer >= 0"),
    ({"svd_n_iter": 2.5}, "svd_n_iter must be an integer"),
])
def test_bad_svd_parameters(params, match):
    users, items, _, _ = _communities()
    with pytest.raises(ValueError, match=match):
        InteractionsCompleter(**{**FAST, **params}).fit(users, items)
