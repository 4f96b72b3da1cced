"""User-day biases of RatingsCompleter (fit/predict with timestamps) and their helpers."""

import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from dmc import RatingsCompleter, _day_bias
from dmc.datasets import load_movielens_100k, load_movielens_100k_timestamps

DAY = 86_400
FAST = dict(rank=2, max_iter=60, neighbours=0, user_neighbours=0, random_state=0)


def _fit(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return RatingsCompleter(**{**FAST, **kw}).fit(*args[:3], **(args[3] if len(args) > 3 else {}))


def _days_problem(seed=0, n_users=30, n_items=25, effect=1.0):
    """Ratings = a rank-1 signal + a planted offset per (user, day): every user rates on
    three days, each day with its own offset (+effect, 0, -effect)."""
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0.5, 1.5, n_users), rng.uniform(0.5, 1.5, n_items)
    users, items = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
    users, items = users.ravel(), items.ravel()
    day = rng.integers(0, 3, users.size)
    offsets = np.array([effect, 0.0, -effect])[day]
    ratings = 1.0 + 2.0 * a[users] * b[items] + offsets
    timestamps = 1_000 * DAY + day * DAY + rng.integers(0, DAY, users.size)  # any time of that day
    return users, items, ratings, timestamps


def test_day_numbers_of_seconds_datetimes_and_pandas():
    seconds = np.array([0, DAY - 1, DAY, -1, 19_000 * DAY + 5])
    expected = [0, 0, 1, -1, 19_000]  # whole UTC days, floor for times before 1970
    assert _day_bias.day_numbers(seconds, 5).tolist() == expected
    assert _day_bias.day_numbers(seconds.astype(float) + 0.5, 5).tolist() == expected
    stamps = np.array(seconds, dtype="datetime64[s]")
    assert _day_bias.day_numbers(stamps, 5).tolist() == expected
    assert _day_bias.day_numbers(stamps.astype("datetime64[ns]"), 5).tolist() == expected
    pd = pytest.importorskip("pandas")
    assert _day_bias.day_numbers(pd.Series(pd.to_datetime(seconds, unit="s")), 5).tolist() == expected


@pytest.mark.parametrize("value, n, error, match", [
    (np.zeros(3), 4, ValueError, "one value per rating"),
    (np.zeros((2, 2)), 4, ValueError, "one value per rating"),
    (np.array(["2020-01-01"] * 2), 2, TypeError, "Unix seconds"),
    (np.array([0.0, np.nan]), 2, ValueError, "finite"),
    (np.array(["NaT", "2020-01-01"], dtype="datetime64[s]"), 2, ValueError, "NaT"),
    (np.array([1e20, 0.0]), 2, ValueError, "not Unix seconds"),
])
def test_bad_timestamps(value, n, error, match):
    with pytest.raises(error, match=match):
        _day_bias.day_numbers(value, n)


def test_fitted_biases_are_shrunk_means_of_the_residuals_per_user_day():
    rows = np.array([0, 0, 0, 1, 1, 2])
    days = np.array([5, 5, 6, 5, 5, -3])
    residuals = np.array([1.0, 3.0, -2.0, 0.5, 0.5, 4.0])
    keys, biases = _day_bias.fit_day_biases(_day_bias.day_keys(rows, days), residuals, 2.0)
    by_pair = dict(zip(keys.tolist(), biases.tolist()))
    # hand-computed: sum / (count + 2)
    for (r, d), value in {(0, 5): 4 / 4, (0, 6): -2 / 3, (1, 5): 1 / 4, (2, -3): 4 / 3}.items():
        assert by_pair[_day_bias.day_keys([r], [d])[0]] == pytest.approx(value)
    assert np.all(np.diff(keys) > 0)
    asked = _day_bias.day_keys([0, 0, 1, 3, 2], [5, 7, 5, 5, -3])
    np.testing.assert_allclose(_day_bias.day_biases_at(keys, biases, asked), [1.0, 0.0, 0.25, 0.0, 4 / 3])
    assert _day_bias.day_biases_at(keys[:0], biases[:0], asked).tolist() == [0.0] * 5


def test_predict_adds_the_shrunk_mean_residual_of_the_user_day():
    users, items, ratings, timestamps = _days_problem()
    model = _fit(users, items, ratings, {"timestamps": timestamps}, clip=False, day_bias_penalty=3.0)
    # independent reference: the model's residuals without timestamps, grouped by hand
    residuals = ratings - model.predict(users, items)
    sums, counts = defaultdict(float), defaultdict(int)
    for u, t, e in zip(users, timestamps // DAY, residuals):
        sums[u, t] += e
        counts[u, t] += 1
    expected = np.array([sums[u, t] / (counts[u, t] + 3.0) for u, t in zip(users, timestamps // DAY)])
    np.testing.assert_allclose(model.predict(users, items, timestamps=timestamps)
                               - model.predict(users, items), expected, atol=1e-12)
    # a day the user did not rate on in training adds nothing
    later = timestamps + 10 * DAY
    np.testing.assert_allclose(model.predict(users, items, timestamps=later), model.predict(users, items))


def test_a_planted_day_effect_is_learned_and_predicted():
    users, items, ratings, timestamps = _days_problem(effect=1.0, n_items=60)
    held = np.random.default_rng(1).random(users.size) < 0.2
    train = ~held
    args = users[train], items[train], ratings[train]
    # about 16 training ratings per user-day: shrinkage 1 keeps 94% of each offset
    with_days = _fit(*args, {"timestamps": timestamps[train]}, max_iter=300, day_bias_penalty=1.0)
    plain = _fit(*args, max_iter=300)
    truth = ratings[held]
    err_days = np.sqrt(np.mean((with_days.predict(users[held], items[held],
                                                  timestamps=timestamps[held]) - truth) ** 2))
    err_plain = np.sqrt(np.mean((plain.predict(users[held], items[held]) - truth) ** 2))
    # the day offsets (sd 0.82) are most of what the factorization cannot explain
    assert err_days < 0.5 * err_plain


def test_timestamps_errors_and_persistence(tmp_path):
    users, items, ratings, timestamps = _days_problem()
    plain = _fit(users, items, ratings)
    assert plain.day_bias_ is None and plain.day_bias_keys_ is None
    with pytest.raises(ValueError, match="fitted without timestamps"):
        plain.predict(users[:3], items[:3], timestamps=timestamps[:3])
    with pytest.raises(ValueError, match="one value per rating"):
        _fit(users, items, ratings, {"timestamps": timestamps[:-1]})
    with pytest.raises(ValueError, match="day_bias_penalty"):
        _fit(users, items, ratings, {"timestamps": timestamps}, day_bias_penalty=-1.0)
    model = _fit(users, items, ratings, {"timestamps": timestamps})
    with pytest.raises(ValueError, match="one value per rating"):
        model.predict(users[:3], items[:3], timestamps=timestamps[:2])
    loaded = RatingsCompleter.load(model.save(tmp_path / "days.npz"))
    np.testing.assert_array_equal(loaded.predict(users, items, timestamps=timestamps),
                                  model.predict(users, items, timestamps=timestamps))
    # refitting without timestamps drops the biases
    model.set_params(warm_start=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.fit(users, items, ratings)
    assert model.day_bias_ is None


ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


@pytest.mark.skipif(not (ML100K / "u1.base").is_file(), reason=f"MovieLens 100K not found at {ML100K}")
def test_movielens_timestamps_align_with_the_ratings():
    data = load_movielens_100k(ML100K, "u2")
    stamps = load_movielens_100k_timestamps(ML100K, "u2")
    for part, name in ((data.train, "u2.base"), (data.test, "u2.test")):
        rows = [line.split("\t") for line in (ML100K / name).read_text().splitlines()]
        assert getattr(stamps, "train" if name.endswith("base") else "test").tolist() == [
            int(r[3]) for r in rows]
        assert part.users.tolist() == [int(r[0]) for r in rows]


def test_damaged_day_biases_are_reported(tmp_path):
    users, items, ratings, timestamps = _days_problem()
    path = _fit(users, items, ratings, {"timestamps": timestamps}).save(tmp_path / "days.npz")
    with np.load(path) as archive:
        members = {name: archive[name] for name in archive.files}
    keys, biases = members["day_bias_keys_"], members["day_bias_"]
    for arrays, message in (({"day_bias_": biases[:-1]}, "user-day biases"),
                            ({"day_bias_keys_": keys[::-1].copy()}, "user-day biases"),
                            ({"day_bias_keys_": keys.astype(float)}, "user-day biases"),
                            ({"day_bias_": biases.astype(np.int64)}, "day_bias_ does not hold floating")):
        out = tmp_path / "edited.npz"
        with open(out, "wb") as file:
            np.savez(file, **{**members, **arrays})
        with pytest.raises(ValueError, match=message):
            RatingsCompleter.load(out)
