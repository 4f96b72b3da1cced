"""MovieLens loader, fetch caching, and the RatingsCompleter recommender API."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dmc import ConvergenceWarning, NotFittedError, datasets
from dmc.datasets import fetch_movielens_100k, load_movielens_100k
from dmc.ratings import RatingsCompleter

REPO = Path(__file__).resolve().parents[1]
ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
needs_data = pytest.mark.skipif(
    not (ML100K / "u1.base").is_file(),
    reason=f"MovieLens 100K not found at {ML100K} (../shared/data/ml-100k relative to the repo)")

# the deep model alone (neighbours=0); the kNN correction: test_ratings_neighbours.py
FAST = dict(rank=3, init_scale=0.1, max_iter=300, n_iter_no_change=5, random_state=0, neighbours=0,
            user_neighbours=0)


def _toy(n_users=40, n_items=30, rank=2, fraction=0.5, seed=0, noise=0.1):
    """Random low-rank ratings on a 1-5 scale with string user ids and sparse item ids."""
    rng = np.random.default_rng(seed)
    X = 3 + rng.standard_normal((n_users, rank)) @ rng.standard_normal((rank, n_items)) / 2
    X += rng.standard_normal(n_users)[:, None] * 0.3 + rng.standard_normal(n_items)[None, :] * 0.3
    mask = rng.random((n_users, n_items)) < fraction
    r, c = np.nonzero(mask)
    users = np.array([f"u{i:03d}" for i in range(n_users)])[r]
    items = (10 * c + 7)  # non-contiguous integer ids
    ratings = np.clip(X[r, c] + noise * rng.standard_normal(r.size), 1, 5)
    return users, items, ratings, X


def _rmse(predicted, actual):
    return float(np.sqrt(np.mean((predicted - actual) ** 2)))


def _biases_only_rmse(users, items, ratings):
    """Training RMSE of the best biases-only model ``mu + b_u + b_i`` (unpenalized least squares)."""
    _, u = np.unique(users, return_inverse=True)
    _, i = np.unique(items, return_inverse=True)
    design = np.zeros((ratings.size, u.max() + i.max() + 3))
    design[np.arange(ratings.size), u] = 1.0
    design[np.arange(ratings.size), u.max() + 1 + i] = 1.0
    design[:, -1] = 1.0
    coef, *_ = np.linalg.lstsq(design, ratings, rcond=None)
    return _rmse(design @ coef, ratings)


# -- loader --------------------------------------------------------------------

@needs_data
def test_loader_reads_official_split():
    data = load_movielens_100k(ML100K, "u1")
    assert data.shape == (943, 1682)
    assert data.train.ratings.size == 80000 and data.test.ratings.size == 20000
    assert data.train.users.dtype == np.int64 and data.train.ratings.dtype == np.float64
    assert data.train.users.min() == 1 and set(np.unique(data.train.ratings)) == {1, 2, 3, 4, 5}
    users, items, ratings = data.test  # unpacks as a triplet
    assert users.shape == items.shape == ratings.shape


def test_loader_errors(tmp_path):
    with pytest.raises(ValueError, match="split must be one of"):
        load_movielens_100k(tmp_path, "u9")
    with pytest.raises(FileNotFoundError, match="u1.base"):
        load_movielens_100k(tmp_path, "u1")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_movielens_100k(tmp_path / "nope", "u1")
    (tmp_path / "u2.base").write_text("1\t2\t3\n")
    (tmp_path / "u2.test").write_text("1\t2\t3\t4\n")
    with pytest.raises(ValueError, match="4 tab-separated"):
        load_movielens_100k(tmp_path, "u2")


def _fake_archive():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("ml-100k/u1.base", "1\t1\t5\t0\n2\t3\t4\t0\n")
        zf.writestr("ml-100k/u1.test", "1\t3\t2\t0\n")
    return buffer.getvalue()


def test_fetch_checks_checksum_and_caches(tmp_path, monkeypatch):
    payload = _fake_archive()
    calls = []

    def fake_urlopen(url, timeout=None):
        calls.append(url)
        return io.BytesIO(payload)

    monkeypatch.setattr(datasets, "_urlopen", fake_urlopen)
    # wrong checksum: refused, nothing left behind
    with pytest.raises(ValueError, match="SHA-256"):
        fetch_movielens_100k(tmp_path)
    assert not list(tmp_path.glob("*.zip")) and not list(tmp_path.glob("*.part"))
    good = hashlib.sha256(payload).hexdigest()
    monkeypatch.setattr(datasets, "MOVIELENS_100K_SHA256", good)
    path = fetch_movielens_100k(tmp_path, sha256=good)
    assert path == tmp_path / "ml-100k" and len(calls) == 2
    data = load_movielens_100k(path, "u1")
    assert data.shape == (2, 3) and data.test.ratings.tolist() == [2.0]
    assert fetch_movielens_100k(tmp_path, sha256=good) == path and len(calls) == 2  # cached
    # DMC_DATA picks the cache directory
    monkeypatch.setenv("DMC_DATA", str(tmp_path / "env"))
    assert fetch_movielens_100k(sha256=good) == tmp_path / "env" / "ml-100k"


# -- RatingsCompleter ----------------------------------------------------------

def test_id_mapping_round_trip_and_dataframe():
    users, items, ratings, _ = _toy()
    model = RatingsCompleter(**FAST).fit(users, items, ratings)
    assert model.user_ids_.tolist() == sorted(set(users.tolist()))
    assert set(model.item_ids_.tolist()) == set(items.tolist())
    assert model.row_factors_.shape == (model.user_ids_.size, 6)
    pred = model.predict(users, items)
    assert pred.shape == ratings.shape
    # predictions are mu + b_u + b_i + the interaction, looked up through the id mapping
    r = np.searchsorted(model.user_ids_, users)
    c = np.searchsorted(model.item_ids_, items)
    assert model.user_ids_[r].tolist() == users.tolist() and model.item_ids_[c].tolist() == items.tolist()
    expected = (model.global_mean_ + model.user_bias_[r] + model.item_bias_[c]
                + np.sum(model.row_factors_[r] * model.column_factors_[c], axis=1))
    np.testing.assert_allclose(pred, np.clip(expected, *model.rating_range_), rtol=0, atol=1e-12)
    # the training fit beats the best biases-only model (least squares on the same ratings:
    # RMSE 0.61 here, against 0.13 for the model); std(ratings) would be beaten by biases alone
    assert _rmse(pred, ratings) < 0.5 * _biases_only_rmse(users, items, ratings)
    # a shuffled input gives the same mapping and, with the same seed, the same fit
    perm = np.random.default_rng(1).permutation(ratings.size)
    again = RatingsCompleter(**FAST).fit(users[perm], items[perm], ratings[perm])
    np.testing.assert_allclose(again.predict(users, items), pred, atol=1e-10)
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame({"user": users, "item": items, "rating": ratings})
    from_frame = RatingsCompleter(**FAST).fit(frame)
    np.testing.assert_allclose(from_frame.predict(users, items), pred, atol=1e-10)


def test_predict_unknown_ids_fall_back_to_biases():
    users, items, ratings, _ = _toy()
    model = RatingsCompleter(**FAST, clip=False).fit(users, items, ratings)
    u, i = model.user_ids_[0], model.item_ids_[0]
    out = model.predict(["stranger", u, "stranger"], [i, 99999, 99999])
    assert out[0] == pytest.approx(model.global_mean_ + model.item_bias_[0])
    assert out[1] == pytest.approx(model.global_mean_ + model.user_bias_[0])
    assert out[2] == pytest.approx(model.global_mean_)


def test_recommend_semantics():
    users, items, ratings, _ = _toy()
    model = RatingsCompleter(**FAST).fit(users, items, ratings)
    user = users[0]
    rated = set(items[users == user].tolist())
    ids, scores = model.recommend(user, k=5)
    assert ids.shape == scores.shape == (5,)
    assert not rated & set(ids.tolist())
    assert np.all(np.diff(scores) <= 0)
    # scores are the model's predictions (recommend does not clip)
    unclipped = model.set_params(clip=False).predict([user] * 5, ids)
    np.testing.assert_allclose(scores, unclipped, atol=1e-10)
    model.set_params(clip=True)
    ids_all, _ = model.recommend(user, k=5, exclude_observed=False)
    every, every_scores = model.recommend(user, k=1000, exclude_observed=False)
    assert every.size == model.item_ids_.size and ids_all.tolist() == every[:5].tolist()
    # batched: one row per user, same as one at a time
    batch = np.array([users[0], users[5], users[0]])
    b_ids, b_scores = model.recommend(batch, k=4)
    assert b_ids.shape == (3, 4)
    for row, u in enumerate(batch):
        one_ids, one_scores = model.recommend(u, k=4)
        assert b_ids[row].tolist() == one_ids.tolist()
        np.testing.assert_allclose(b_scores[row], one_scores)
    # more than the unrated items: the tail is -inf
    n_unrated = model.item_ids_.size - len(rated)
    _, tail = model.recommend(user, k=model.item_ids_.size)
    assert np.all(np.isfinite(tail[:n_unrated])) and np.all(np.isneginf(tail[n_unrated:]))
    with pytest.raises(ValueError, match="unknown user"):
        model.recommend("stranger")
    with pytest.raises(ValueError, match="k must be"):
        model.recommend(user, k=0)


def test_early_stopping_restores_best_state():
    users, items, ratings, _ = _toy(noise=0.8, fraction=0.4)
    params = dict(rank=6, init_scale=0.1, lr_multiplier=0.5, gamma=1.0, n_iter_no_change=5,
                  max_iter=3000, record_every=5, random_state=0)
    # refit=False, so that the state early stopping kept is the state predicted from
    model = RatingsCompleter(**params, refit=False).fit(users, items, ratings)
    val = model.history_["validation_rmse"]
    assert model.n_iter_ > model.best_iter_  # it stopped after the best record
    assert model.best_iter_ == model.history_["iteration"][int(np.argmin(val))]
    assert val[-1] > val.min()  # the last state is not the best one
    # the kept state is the best one: a run that simply ends at best_iter reproduces it
    short_params = dict(params, max_iter=max(model.best_iter_, 1), n_iter_no_change=10**6)
    with pytest.warns(ConvergenceWarning, match="still improved"):
        short = RatingsCompleter(**short_params, refit=False).fit(users, items, ratings)
    np.testing.assert_allclose(short.predict(users, items), model.predict(users, items),
                               rtol=0, atol=1e-10)
    # with refit=True (the default) the refit trains for exactly best_iter steps
    refitted = RatingsCompleter(**params).fit(users, items, ratings)
    assert refitted.best_iter_ == model.best_iter_
    with pytest.warns(ConvergenceWarning, match="still improved"):
        short = RatingsCompleter(**short_params).fit(users, items, ratings)
    np.testing.assert_allclose(short.predict(users, items), refitted.predict(users, items),
                               rtol=0, atol=1e-10)


def test_clipping_to_rating_scale():
    users, items, ratings, _ = _toy(noise=0.5)
    # no early stopping: clipping would change the validation RMSE and so the stopping step
    params = dict(FAST, validation_fraction=0.0, max_iter=100, rating_range=(2.5, 3.5))
    clipped = RatingsCompleter(**params).fit(users, items, ratings)
    free = RatingsCompleter(**params, clip=False).fit(users, items, ratings)
    a, b = clipped.predict(users, items), free.predict(users, items)
    assert a.min() >= 2.5 and a.max() <= 3.5
    assert b.min() < 2.5 or b.max() > 3.5
    np.testing.assert_allclose(a, np.clip(b, 2.5, 3.5))


def test_bad_input_is_reported():
    users, items, ratings, _ = _toy()
    model = RatingsCompleter(**FAST)
    with pytest.raises(ValueError, match="equally long"):
        model.fit(users, items[:-1], ratings)
    with pytest.raises(TypeError, match="integer or string ids"):
        model.fit(users, items.astype(float), ratings)
    with pytest.raises(TypeError, match="ratings must be"):
        model.fit(users, items, ratings.astype(str))
    with pytest.raises(ValueError, match="finite"):
        model.fit(users, items, np.where(np.arange(ratings.size) == 3, np.nan, ratings))
    with pytest.raises(ValueError, match="more than once"):
        model.fit(np.r_[users, users[:1]], np.r_[items, items[:1]], np.r_[ratings, 3.0])
    with pytest.raises(TypeError, match="fit takes"):
        model.fit(users)
    for bad in (dict(rank=0), dict(validation_fraction=1.0), dict(init_scale=-1.0),
                dict(lr="fast"), dict(rating_range=(5, 1)), dict(bias_warmup=-1)):
        with pytest.raises(ValueError):
            RatingsCompleter(**{**FAST, **bad}).fit(users, items, ratings)
    with pytest.raises(TypeError, match="clip"):
        RatingsCompleter(**FAST, clip="yes").fit(users, items, ratings)
    with pytest.raises(ValueError, match="rank=20 is too large"):
        RatingsCompleter(rank=20).fit(users, items, ratings)
    with pytest.raises(NotFittedError, match="not fitted"):
        RatingsCompleter().predict(users, items)
    fitted = RatingsCompleter(**FAST).fit(users, items, ratings)
    with pytest.raises(ValueError, match="equally long"):
        fitted.predict(users[:3], items[:2])
    pd = pytest.importorskip("pandas")
    with pytest.raises(ValueError, match="'rating' column"):
        model.fit(pd.DataFrame({"user": users, "item": items}))


@needs_data
def test_benchmark_quick_mode_runs():
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "movielens.py"), "--quick", "--no-peers",
         "--data", str(ML100K)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dmc" in result.stdout and "RMSE" in result.stdout
    assert time.perf_counter() - start < 60


def test_readme_section_replacement_keeps_other_sections(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import movielens as bench
    finally:
        sys.path.pop(0)
    readme = tmp_path / "README.md"
    bench.write_section(readme, "first")
    assert readme.read_text().startswith("# dmc benchmarks")
    readme.write_text(readme.read_text() + "\n<!-- BEGIN other -->\nkeep me\n<!-- END other -->\n")
    bench.write_section(readme, "second")
    text = readme.read_text()
    assert "second" in text and "first" not in text and "keep me" in text
    assert text.count("<!-- BEGIN movielens -->") == 1
