"""RatingsCompleter's item features (``fit(..., item_features=...)``) and the genre loader."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmc.datasets import MOVIELENS_100K_GENRES, ItemFeatures, load_movielens_100k_genres
from dmc.ratings import RatingsCompleter, item_feature_matrix, unit_columns
from dmc.solver import ConvergenceWarning

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"
FAST = dict(rank=2, max_iter=40, validation_fraction=0.0, random_state=0, neighbours=0,
            user_neighbours=0)
N_USERS, N_ITEMS = 16, 12


def _toy(seed=0):
    """Ratings driven by two item groups (a 'genre'), item ids 100, 102, ..."""
    rng = np.random.default_rng(seed)
    genre = np.arange(N_ITEMS) % 2
    taste = rng.standard_normal((N_USERS, 2))
    R = 3 + taste[:, genre] + 0.3 * rng.standard_normal((N_USERS, N_ITEMS))
    users, items = np.nonzero(rng.random(R.shape) < 0.6)
    flags = np.column_stack([genre == 0, genre == 1, rng.random(N_ITEMS) < 0.3]).astype(float)
    return (users, 100 + 2 * items, R[users, items]), ItemFeatures(100 + 2 * np.arange(N_ITEMS), flags,
                                                                   ("a", "b", "c"))


def _fit(data, features=None, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return RatingsCompleter(**{**FAST, **params}).fit(*data, item_features=features)


def test_features_change_predictions_and_enter_the_column_factors():
    data, features = _toy()
    plain, with_features = _fit(data), _fit(data, features)
    assert plain.feature_factors_ is None
    assert with_features.feature_factors_.shape == (3, 4)
    assert np.abs(with_features.feature_factors_).max() > 0
    assert not np.allclose(plain.predict(*data[:2]), with_features.predict(*data[:2]))
    # column factor of item i = V[i] + F_unit[i] E (F's columns scaled to unit norm)
    F = unit_columns(features.values)
    np.testing.assert_allclose(with_features.column_factors_,
                               with_features._state["right"] + F @ with_features.feature_factors_,
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.linalg.norm(F, axis=0), 1.0)


def test_zero_features_equal_no_features():
    data, features = _toy()
    zeros = ItemFeatures(features.ids, np.zeros_like(features.values), features.names)
    plain, with_zeros = _fit(data, validation_fraction=0.2), _fit(data, zeros, validation_fraction=0.2)
    np.testing.assert_array_equal(with_zeros.feature_factors_, 0.0)
    for name in ("row_factors_", "column_factors_", "user_bias_", "item_bias_"):
        np.testing.assert_array_equal(getattr(with_zeros, name), getattr(plain, name))
    assert with_zeros.best_iter_ == plain.best_iter_


def test_order_and_form_of_the_features_do_not_matter():
    pd = pytest.importorskip("pandas")
    data, features = _toy()
    reference = _fit(data, features)
    perm = np.random.default_rng(1).permutation(N_ITEMS)
    extra_ids = np.r_[features.ids[perm], 7, 9]  # rows of items never rated are ignored
    extra_values = np.vstack([features.values[perm], np.ones((2, 3))])
    shuffled = _fit(data, (extra_ids, extra_values))
    frame = _fit(data, pd.DataFrame(features.values, index=features.ids, columns=features.names))
    for model in (shuffled, frame):
        np.testing.assert_allclose(model.predict(*data[:2]), reference.predict(*data[:2]), rtol=1e-12)


def test_the_features_improve_a_fit_they_explain():
    """Ratings set by the genre: with the flags, a rank-1 fit reaches lower training error."""
    data, features = _toy()
    plain, with_features = _fit(data, rank=1), _fit(data, features, rank=1)
    error = [np.sqrt(np.mean((m.predict(*data[:2]) - data[2]) ** 2)) for m in (plain, with_features)]
    assert error[1] < error[0]


@pytest.mark.parametrize("bad, error, match", [
    (np.ones((12, 3)), TypeError, "pair \\(ids, values\\)"),
    ([1, 2], TypeError, "item_features must be"),
    ((np.arange(12), np.ones(12)), ValueError, "shape \\(len\\(ids\\), n_features\\)"),
    ((np.arange(12), np.ones((11, 3))), ValueError, "got \\(11, 3\\) for 12 ids"),
    ((np.arange(12), np.ones((12, 0))), ValueError, "n_features >= 1"),
    ((np.arange(12), np.full((12, 2), np.nan)), ValueError, "NaN or inf"),
    ((np.arange(12), np.full((12, 2), "x")), ValueError, "finite numbers"),
    ((100 + 2 * np.arange(11), np.ones((11, 2))), ValueError, r"no row for item id\(s\) \[122\]"),
    ((np.r_[100 + 2 * np.arange(12), 100], np.ones((13, 2))), ValueError, "more than once"),
    ((np.array(["a"] * 12), np.ones((12, 2))), TypeError, "both be integers or both strings"),
    ((np.arange(24.0), np.ones((24, 2))), TypeError, "integer or string ids"),
])
def test_format_is_validated(bad, error, match):
    data, _ = _toy()
    with pytest.raises(error, match=match):
        _fit(data, bad)


def test_bad_feature_lr():
    data, features = _toy()
    for bad in (0.0, -1.0, np.inf, "2"):
        with pytest.raises(ValueError, match="feature_lr"):
            _fit(data, features, feature_lr=bad)


@given(st.integers(1, 8), st.integers(1, 4), st.integers(0, 5), st.integers(0, 2**31 - 1))
def test_rows_follow_the_item_ids(n_items, n_features, n_extra, seed):
    rng = np.random.default_rng(seed)
    item_ids = np.sort(rng.choice(1000, n_items, replace=False))
    ids = np.r_[item_ids, 1000 + np.arange(n_extra)]
    values = rng.standard_normal((ids.size, n_features))
    perm = rng.permutation(ids.size)
    got = item_feature_matrix((ids[perm], values[perm]), item_ids)
    np.testing.assert_array_equal(got, values[:n_items])
    strings = item_feature_matrix((ids[perm].astype(str), values[perm]), item_ids.astype(str))
    np.testing.assert_array_equal(strings, values[:n_items])


# -- warm start and persistence --------------------------------------------------------------
def test_warm_start_continues_with_the_features():
    data, features = _toy()
    longer = _fit(data, features, max_iter=60)
    model = _fit(data, features, max_iter=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.set_params(warm_start=True).fit(*data, item_features=features)
    np.testing.assert_allclose(model.feature_factors_, longer.feature_factors_, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(model.column_factors_, longer.column_factors_, rtol=1e-10, atol=1e-13)
    with pytest.raises(ValueError, match="previous fit, which had 3 item features"):
        model.fit(*data)
    with pytest.raises(ValueError, match="previous fit, which had 3 item features"):
        model.fit(*data, item_features=(features.ids, features.values[:, :2]))
    plain = _fit(data)
    with pytest.raises(ValueError, match="which had no item_features"):
        plain.set_params(warm_start=True).fit(*data, item_features=features)


def test_save_and_load_keep_the_features(tmp_path):
    data, features = _toy()
    model = _fit(data, features, max_iter=30, neighbours="auto")
    loaded = RatingsCompleter.load(model.save(tmp_path / "f.npz"))
    np.testing.assert_array_equal(loaded.feature_factors_, model.feature_factors_)
    np.testing.assert_array_equal(loaded.predict(*data[:2]), model.predict(*data[:2]))
    longer = _fit(data, features, max_iter=60, neighbours="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        loaded.set_params(warm_start=True).fit(*data, item_features=features)
    np.testing.assert_allclose(loaded.predict(*data[:2]), longer.predict(*data[:2]), rtol=1e-9)


# -- the loader --------------------------------------------------------------------------------
def test_loader_on_the_real_u_item():
    if not (DATA / "u.item").is_file():
        pytest.skip(f"MovieLens 100K not found at {DATA}: the real u.item is not checked")
    genres = load_movielens_100k_genres(DATA)
    assert genres.values.shape == (1682, 19) and genres.names == MOVIELENS_100K_GENRES
    np.testing.assert_array_equal(genres.ids, np.arange(1, 1683))
    assert set(np.unique(genres.values)) == {0.0, 1.0}
    # Toy Story: Animation, Children's, Comedy; GoldenEye: Action, Adventure, Thriller
    assert [genres.names[g] for g in np.flatnonzero(genres.values[0])] == ["Animation", "Children's", "Comedy"]
    assert [genres.names[g] for g in np.flatnonzero(genres.values[1])] == ["Action", "Adventure", "Thriller"]
    assert genres.values[:, MOVIELENS_100K_GENRES.index("Drama")].sum() == 725


def test_loader_on_written_files(tmp_path):
    flags = "|".join(["0"] * 18)
    (tmp_path / "u.item").write_bytes(
        f"1|Caf\xe9 (1990)|01-Jan-1990||http://x|{flags}|1\n\n7|B (1991)|||http://y|1|{flags}\n"
        .encode("latin-1"))
    genres = load_movielens_100k_genres(tmp_path)
    np.testing.assert_array_equal(genres.ids, [1, 7])
    assert genres.values[0, 18] == 1 and genres.values[1, 0] == 1 and genres.values.sum() == 2
    (tmp_path / "u.item").write_text(f"1|A|||x|{flags}|2\n")
    with pytest.raises(ValueError, match="line 1: expected"):
        load_movielens_100k_genres(tmp_path)
    (tmp_path / "u.item").write_text("\n")
    with pytest.raises(ValueError, match="holds no movies"):
        load_movielens_100k_genres(tmp_path)
    with pytest.raises(FileNotFoundError, match="lacks u.item"):
        load_movielens_100k_genres(tmp_path / "nowhere")


def test_feature_lr_scales_the_embedding_step():
    """From E = 0, one step moves E by feature_lr times the step of V along -dL/dE."""
    data, features = _toy()
    one, three = (_fit(data, features, max_iter=1, feature_lr=lr) for lr in (1.0, 3.0))
    assert np.abs(one.feature_factors_).max() > 0
    np.testing.assert_allclose(three.feature_factors_, 3.0 * one.feature_factors_, rtol=1e-12)
