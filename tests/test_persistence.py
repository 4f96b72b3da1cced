"""save(path) / load(path): a portable npz + JSON format, round-trip exact, across backends."""

import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmc import ConvergenceWarning, DeepMatrixCompleter, NotFittedError, RatingsCompleter
from dmc.backend import to_numpy
from dmc.datasets import make_low_rank
from dmc.persistence import FORMAT_VERSION


def _fit(estimator, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return estimator.fit(*args, **kwargs)


@pytest.fixture(scope="module")
def problem():
    return make_low_rank((40, 30), 2, 0.5, random_state=1)


@pytest.fixture(scope="module")
def fitted(problem):
    M, mask = problem
    model = DeepMatrixCompleter(rank=3, tol=1e-6, random_state=0).fit(M, mask, ground_truth=M)
    assert model.converged_
    return model


def _assert_same_fit(a, b):
    assert type(a) is type(b)
    assert a.get_params() == b.get_params()
    np.testing.assert_array_equal(a.transform(as_numpy=True), b.transform(as_numpy=True))
    for key in a.history_:
        np.testing.assert_array_equal(a.history_[key], b.history_[key])
    for name in ("shape_", "scale_", "lr_", "n_iter_", "converged_", "stop_reason_"):
        assert getattr(a, name) == getattr(b, name), name
    np.testing.assert_array_equal(a.initial_singular_values_, b.initial_singular_values_)
    assert len(a.inner_factors_) == len(b.inner_factors_)


def test_round_trip_is_exact(fitted, tmp_path):
    path = fitted.save(tmp_path / "model.dmc")
    assert path == tmp_path / "model.dmc" and path.exists()  # no suffix appended
    loaded = DeepMatrixCompleter.load(path)
    _assert_same_fit(fitted, loaded)
    rows, cols = np.array([0, 5, 39]), np.array([0, 29, 7])
    np.testing.assert_array_equal(fitted.predict(rows, cols), loaded.predict(rows, cols))


def test_file_is_plain_npz_without_pickle(fitted, tmp_path):
    path = fitted.save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as archive:
        header = json.loads(str(archive["__dmc__"]))
        assert header["class"] == "DeepMatrixCompleter"
        assert header["format_version"] == FORMAT_VERSION
        assert header["params"]["rank"] == 3
        np.testing.assert_array_equal(archive["left_factor_"], fitted.left_factor_)
        assert all(archive[name].dtype != object for name in archive.files)


def test_loaded_model_refits_to_the_same_result(fitted, problem, tmp_path):
    M, mask = problem
    loaded = DeepMatrixCompleter.load(fitted.save(tmp_path / "m.npz"))
    refit = _fit(loaded, M, mask, ground_truth=M)
    np.testing.assert_array_equal(refit.transform(), fitted.transform())


@settings(max_examples=8, deadline=None)
@given(method=st.sampled_from(["compressed", "narrow", "original"]),
       depth=st.integers(2, 4), dtype=st.sampled_from(["float32", "float64"]),
       normalize=st.booleans())
def test_round_trip_over_models(tmp_path_factory, method, depth, dtype, normalize):
    M, mask = make_low_rank((12, 10), 2, 0.6, random_state=3)
    model = _fit(DeepMatrixCompleter(rank=2, depth=depth, method=method, dtype=dtype,
                                     normalize=normalize, max_iter=20, random_state=0), M, mask)
    path = tmp_path_factory.mktemp("models") / "m.npz"
    loaded = DeepMatrixCompleter.load(model.save(path))
    _assert_same_fit(model, loaded)
    assert loaded.transform().dtype == np.dtype(dtype)


def test_cross_backend_round_trip(fitted, tmp_path):
    torch = pytest.importorskip("torch", reason="torch not installed: cross-backend load untested")
    path = fitted.save(tmp_path / "numpy.npz")
    on_torch = DeepMatrixCompleter.load(path, backend="torch", device="cpu")
    assert isinstance(on_torch.left_factor_, torch.Tensor)
    assert on_torch.backend == "torch" and on_torch.backend_.name == "torch"
    for saved, moved in zip(fitted.inner_factors_, on_torch.inner_factors_):
        np.testing.assert_array_equal(to_numpy(moved), saved)
    # the same factors; torch's matmul may round the product differently in the last bit
    np.testing.assert_allclose(to_numpy(on_torch.transform()), fitted.transform(), rtol=1e-12)
    predicted = on_torch.predict(torch.tensor([1, 2]), torch.tensor([3, 4]))
    assert isinstance(predicted, torch.Tensor)

    back = DeepMatrixCompleter.load(on_torch.save(tmp_path / "torch.npz"))
    assert back.backend_.name == "torch" and str(back.backend_.device) == "cpu"
    to_numpy_again = DeepMatrixCompleter.load(tmp_path / "torch.npz", backend="numpy")
    assert isinstance(to_numpy_again.left_factor_, np.ndarray)
    assert to_numpy_again.device is None
    np.testing.assert_array_equal(to_numpy_again.transform(), fitted.transform())


def test_torch_fit_with_torch_params_saves(problem, tmp_path):
    torch = pytest.importorskip("torch", reason="torch not installed")
    M, mask = problem
    model = _fit(DeepMatrixCompleter(rank=3, max_iter=30, backend="torch", device=torch.device("cpu"),
                                     dtype=torch.float32, random_state=0), M, mask)
    loaded = DeepMatrixCompleter.load(model.save(tmp_path / "t.npz"))
    assert loaded.dtype == "float32" and loaded.device == "cpu"
    assert loaded.transform().dtype == torch.float32
    np.testing.assert_array_equal(to_numpy(loaded.transform()), to_numpy(model.transform()))


def test_unsaveable_parameters_warn(problem, tmp_path):
    M, mask = problem
    model = _fit(DeepMatrixCompleter(rank=3, max_iter=20, callbacks=lambda r: False,
                                     random_state=np.random.default_rng(0)), M, mask)
    with pytest.warns(UserWarning, match="callbacks, random_state cannot be saved"):
        path = model.save(tmp_path / "m.npz")
    loaded = DeepMatrixCompleter.load(path)
    assert loaded.callbacks is None and loaded.random_state is None
    np.testing.assert_array_equal(loaded.transform(), model.transform())


def test_ratings_round_trip_with_string_ids(tmp_path):
    rng = np.random.default_rng(0)
    users = np.array([f"u{i}" for i in rng.integers(0, 30, 600)], dtype=object)
    items = rng.integers(0, 25, 600)
    pairs = np.unique(np.stack([users.astype(str), items.astype(str)]), axis=1)
    users, items = pairs[0].astype(object), pairs[1].astype(int)
    ratings = rng.integers(1, 6, users.size).astype(float)
    model = _fit(RatingsCompleter(rank=4, max_iter=60, n_iter_no_change=3, random_state=0),
                 users, items, ratings)
    loaded = RatingsCompleter.load(model.save(tmp_path / "r.npz"))
    assert loaded.get_params() == model.get_params()
    assert isinstance(loaded.rating_range_, tuple)
    np.testing.assert_array_equal(loaded.predict(users[:50], items[:50]),
                                  model.predict(users[:50], items[:50]))
    np.testing.assert_array_equal(loaded.recommend("u3", 5), model.recommend("u3", 5))
    for key in model.history_:
        np.testing.assert_array_equal(loaded.history_[key], model.history_[key])


def test_load_errors(fitted, tmp_path):
    with pytest.raises(FileNotFoundError, match="no model file"):
        DeepMatrixCompleter.load(tmp_path / "missing.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(ValueError, match="not a dmc model file"):
        DeepMatrixCompleter.load(tmp_path / "text.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="not a dmc model"):
        DeepMatrixCompleter.load(tmp_path / "plain.npz")
    path = fitted.save(tmp_path / "m.npz")
    with pytest.raises(ValueError, match="holds a DeepMatrixCompleter"):
        RatingsCompleter.load(path)
    with pytest.raises(ValueError, match='backend must be "numpy"'):
        DeepMatrixCompleter.load(path, backend="jax")
    with np.load(path) as archive:
        members = {name: archive[name] for name in archive.files}
    header = json.loads(str(members["__dmc__"]))
    header["format_version"] = FORMAT_VERSION + 1
    members["__dmc__"] = np.array(json.dumps(header))
    np.savez(tmp_path / "future.npz", **members)
    with pytest.raises(ValueError, match="Upgrade dmc"):
        DeepMatrixCompleter.load(tmp_path / "future.npz")


def test_save_unfitted_raises(tmp_path):
    with pytest.raises(NotFittedError, match="not fitted"):
        DeepMatrixCompleter().save(tmp_path / "m.npz")
