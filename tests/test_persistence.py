"""save(path) / load(path): a portable npz + JSON format, round-trip exact, across backends."""

import json
import re
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
    for name in ("shape_", "scale_", "lr_", "step_rule_", "n_iter_", "converged_", "stop_reason_"):
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


def test_a_step_rule_object_fit_saves_its_rule_by_name(problem, tmp_path):
    from dmc import steps

    M, mask = problem
    model = _fit(DeepMatrixCompleter(rank=3, max_iter=20, step_rule=steps.RelativeStep(),
                                     random_state=0), M, mask)
    assert model.step_rule_ == "RelativeStep"
    with pytest.warns(UserWarning, match="step_rule cannot be saved"):
        path = model.save(tmp_path / "m.npz")
    assert DeepMatrixCompleter.load(path).step_rule_ == "RelativeStep"


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


# -- the JSON conversions and checks on their own (found by mutation testing, tools/mutation.py)
from dmc import persistence  # noqa: E402


def test_params_to_json_and_back():
    lost = []
    assert persistence._param_to_json("a", None, lost) is None
    assert persistence._param_to_json("a", True, lost) is True
    assert persistence._param_to_json("a", "x", lost) == "x"
    for value, expected in ((np.int64(3), 3), (np.float32(0.5), 0.5), (np.bool_(True), True), (7, 7),
                            (2.5, 2.5)):
        out = persistence._param_to_json("a", value, lost)
        assert out == expected and type(out) is type(expected)
    nested = persistence._param_to_json("a", (1, (2.0, "b"), [np.int64(4)]), lost)
    assert nested == {"__tuple__": [1, {"__tuple__": [2.0, "b"]}, [4]]}
    assert persistence._param_from_json(json.loads(json.dumps(nested))) == (1, (2.0, "b"), [4])
    assert persistence._param_from_json([{"__tuple__": [1]}, 2]) == [(1,), 2]
    assert persistence._param_to_json("a", np.dtype("float32"), lost) == "float32"
    assert persistence._param_to_json("a", np.float64, lost) == "float64"
    assert lost == []
    assert persistence._param_to_json("cb", [lambda r: False], lost) is None
    assert persistence._param_to_json("rs", np.random.default_rng(0), lost) is None
    assert lost == ["cb", "rs"]


def test_params_torch_device_and_dtype():
    torch = pytest.importorskip("torch")
    lost = []
    assert persistence._param_to_json("d", torch.device("cpu"), lost) == "cpu"
    assert persistence._param_to_json("t", torch.float32, lost) == "float32"
    assert lost == []


def test_state_to_json_layout():
    arrays = {}
    state = {"a": np.arange(3.0), "d": {1: np.zeros(2), "k": 5}, "l": [np.ones(1), "s"],
             "t": (2, None), "g": 1.5, "ids": np.array(["x", 3], dtype=object)}
    out = {k: persistence._state_to_json(k, v, arrays, k == "a") for k, v in state.items()}
    assert out["a"] == {"__array__": "a", "on_backend": True}
    assert out["d"] == {"__dict__": {"1": {"__array__": "d.1", "on_backend": False}, "k": 5}}
    assert out["l"] == {"__list__": [{"__array__": "l.0", "on_backend": False}, "s"]}
    assert out["t"] == {"__tuple__": [2, None]}
    assert out["g"] == 1.5 and type(out["g"]) is float
    assert out["ids"] == {"__array__": "ids", "on_backend": False}
    assert sorted(arrays) == ["a", "d.1", "ids", "l.0"]
    np.testing.assert_array_equal(arrays["ids"], ["x", "3"])
    assert arrays["ids"].dtype.kind == "U"
    with pytest.raises(TypeError, match="cannot save attribute x of type set"):
        persistence._state_to_json("x", {1}, arrays, False)
    with pytest.raises(TypeError, match="x holds objects that cannot be saved without pickle"):
        persistence._state_to_json("x", np.array([b"\xff"], dtype=object), {}, False)


def test_fitted_state_lists_public_fitted_and_persisted_private(fitted):
    state = persistence._fitted_state(fitted)
    expected = {n for n in vars(fitted) if n.endswith("_") and not n.startswith("_")}
    expected |= {n for n in fitted._persisted_private if hasattr(fitted, n)}
    assert set(state) == expected and "left_factor_" in state
    assert all(state[n] is getattr(fitted, n) for n in state)


def test_saved_header_names_format_class_and_version(fitted, tmp_path):
    import dmc

    path = fitted.save(tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as archive:
        header = json.loads(str(archive["__dmc__"]))
    assert header["format"] == "dmc.estimator" and header["format_version"] == 1
    assert header["dmc_version"] == dmc.__version__ and header["class"] == "DeepMatrixCompleter"
    assert header["state"]["backend_"] == {"__backend__": "numpy", "device": "cpu"}
    assert header["state"]["left_factor_"] == {"__array__": "left_factor_", "on_backend": True}
    assert header["state"]["history_"]["__dict__"]["train_loss"]["on_backend"] is False


def test_header_checks_one_at_a_time(fitted, tmp_path):
    path = fitted.save(tmp_path / "m.npz")
    with np.load(path) as archive:
        members = {name: archive[name] for name in archive.files}
    header = json.loads(str(members["__dmc__"]))

    def load_with(**changes):
        out = tmp_path / "edited.npz"
        edited = {k: v for k, v in {**header, **changes}.items() if v is not None}
        with open(out, "wb") as file:
            np.savez(file, **{**members, "__dmc__": np.array(json.dumps(edited))})
        return DeepMatrixCompleter.load(out)

    assert load_with(format_version=0).shape_ == fitted.shape_  # older versions load
    assert load_with(format_version=FORMAT_VERSION).shape_ == fitted.shape_
    for changes, message in (({"format": "other"}, "format 'other'"),
                             ({"format_version": True}, "format_version is True"),
                             ({"format_version": 1.0}, "format_version is 1.0"),
                             ({"class": "Other"}, "unknown estimator class 'Other'"),
                             ({"params": None}, "no 'params' dict")):
        with pytest.raises(ValueError, match=re.escape(message)):
            load_with(**changes)
    no_version = {k: v for k, v in header.items() if k != "format_version"}
    out = tmp_path / "noversion.npz"
    with open(out, "wb") as file:
        np.savez(file, **{**members, "__dmc__": np.array(json.dumps(no_version))})
    assert DeepMatrixCompleter.load(out).shape_ == fitted.shape_  # read as version 0
    with pytest.raises(ValueError, match="runs on NumPy only"):
        RatingsCompleter.load(_ratings_file(tmp_path), backend="numpy")
    with pytest.raises(ValueError, match="runs on NumPy only"):
        RatingsCompleter.load(_ratings_file(tmp_path), device="cpu")
    bad_backend = {**header["state"], "backend_": "numpy"}
    with pytest.raises(ValueError, match="its backend_ entry is 'numpy'"):
        load_with(state=bad_backend)


def _ratings_file(tmp_path):
    rng = np.random.default_rng(1)
    users, items = np.divmod(rng.permutation(120)[:80], 10)
    model = _fit(RatingsCompleter(rank=2, max_iter=5, random_state=0), users, items,
                 rng.integers(1, 6, 80).astype(float))
    return model.save(tmp_path / "r.npz")


def test_load_on_the_saved_backend_keeps_params(fitted, tmp_path):
    loaded = DeepMatrixCompleter.load(fitted.save(tmp_path / "m.npz"))
    assert loaded.backend == fitted.backend and loaded.device == fitted.device
    assert loaded.backend_.name == "numpy"
    moved = DeepMatrixCompleter.load(tmp_path / "m.npz", backend="numpy")
    assert moved.backend == "numpy" and moved.device is None
    assert isinstance(moved.left_factor_, np.ndarray)


def test_damaged_shapes_are_reported(fitted, tmp_path):
    path = fitted.save(tmp_path / "m.npz")
    with np.load(path) as archive:
        members = {name: archive[name] for name in archive.files}

    def load_with(**arrays):
        out = tmp_path / "edited.npz"
        with open(out, "wb") as file:
            np.savez(file, **{**members, **arrays})
        return DeepMatrixCompleter.load(out)

    left, right = members["left_factor_"], members["right_factor_"]
    inner = members["inner_factors_.0"]
    for arrays, message in (({"left_factor_": left[:, :-1]}, "do not multiply"),
                            ({"right_factor_": right[:, :-1]}, "do not multiply"),
                            ({"right_factor_": right[:-1]}, "do not multiply"),
                            ({"left_factor_": left[:-1]}, "do not multiply"),
                            ({"inner_factors_.0": inner[:, :-1]}, "do not multiply"),
                            ({"inner_factors_.1": inner[:-1]}, "do not multiply"),
                            ({"left_factor_": left[0]}, "not matrices"),
                            ({"left_factor_": left.astype(np.int64)}, "left_factor_ does not hold floating")):
        with pytest.raises(ValueError, match=message):
            load_with(**arrays)


def test_nested_unsaveable_params_are_named():
    lost = []
    assert persistence._param_to_json("cbs", (print,), lost) == {"__tuple__": [None]}
    assert persistence._param_to_json("rngs", [np.random.default_rng(0)], lost) == [None]
    assert lost == ["cbs", "rngs"]


def test_save_checks_the_fit_and_skips_private_attributes(fitted, tmp_path):
    half = DeepMatrixCompleter()
    half.shape_ = (2, 2)  # a fitted-looking attribute without the factors
    with pytest.raises(NotFittedError):
        half.save(tmp_path / "half.npz")
    fitted._scratch_ = np.ones(2)
    try:
        path = fitted.save(tmp_path / "m.npz")
    finally:
        del fitted._scratch_
    with np.load(path) as archive:
        header = json.loads(str(archive["__dmc__"]))
    assert "_scratch_" not in header["state"]


def _edited_load(cls, path, tmp_path, state_changes=(), arrays=()):
    with np.load(path) as archive:
        members = {name: archive[name] for name in archive.files}
    header = json.loads(str(members["__dmc__"]))
    header["state"].update(dict(state_changes))
    members.update(dict(arrays))
    members["__dmc__"] = np.array(json.dumps(header))
    out = tmp_path / "edited.npz"
    with open(out, "wb") as file:
        np.savez(file, **members)
    return cls.load(out)


def test_depth_two_and_inner_shape_checks(problem, fitted, tmp_path):
    M, mask = problem
    narrow = _fit(DeepMatrixCompleter(rank=2, depth=2, method="narrow", max_iter=5, random_state=0),
                  M, mask)
    path = narrow.save(tmp_path / "narrow.npz")
    np.testing.assert_array_equal(DeepMatrixCompleter.load(path).transform(), narrow.transform())
    with pytest.raises(ValueError, match="do not multiply"):
        _edited_load(DeepMatrixCompleter, path, tmp_path,
                     arrays={"right_factor_": narrow.right_factor_[:, :-1]})
    deep = fitted.save(tmp_path / "deep.npz")
    k = fitted.left_factor_.shape[1]
    for name in ("inner_factors_.0", "inner_factors_.2"):
        with pytest.raises(ValueError, match="do not multiply"):
            _edited_load(DeepMatrixCompleter, deep, tmp_path, arrays={name: np.ones((k + 1, k))})
    with pytest.raises(ValueError, match="not matrices"):
        _edited_load(DeepMatrixCompleter, deep, tmp_path, state_changes={"left_factor_": 5})


@pytest.fixture(scope="module")
def ratings_file(tmp_path_factory):
    rng = np.random.default_rng(1)
    users, items = np.divmod(rng.permutation(120)[:80], 10)  # 12 users, 10 items
    model = _fit(RatingsCompleter(rank=2, max_iter=5, random_state=0), users, items,
                 rng.integers(1, 6, 80).astype(float))
    return model, model.save(tmp_path_factory.mktemp("r") / "r.npz")


def test_ratings_state_checks_one_at_a_time(ratings_file, tmp_path):
    model, path = ratings_file
    assert RatingsCompleter.load(path).user_ids_.shape == model.user_ids_.shape
    rows, cols = model.row_factors_, model.column_factors_
    observed = model._observed
    bad_arrays = {
        "user_ids_": np.tile(model.user_ids_, (2, 1)),
        "item_ids_": np.tile(model.item_ids_, (2, 1)),
        "row_factors_": rows[:, 0],
        "column_factors_": cols[:, 0],
        "row_factors_ ": rows[:-1],
        "column_factors_ ": cols[:-1],
        "column_factors_  ": cols[:, :-1],
        "user_bias_": model.user_bias_[:-1],
        "item_bias_": model.item_bias_[:-1],
        "_observed.0": observed[0][:-1],
        "_observed.1": observed[1].astype(np.float64),
        "_observed.0 ": observed[0] - observed[0].min() - 1,
        "_observed.1 ": observed[1] - observed[1].min() - 1,
        "_observed.0  ": observed[0] + (12 - observed[0].max()),
        "_observed.1  ": observed[1] + (10 - observed[1].max()),
    }
    with pytest.raises(ValueError, match="training residuals"):
        _edited_load(RatingsCompleter, path, tmp_path, arrays={"_residuals": model._residuals[:-1]})
    for name, value in bad_arrays.items():
        with pytest.raises(ValueError, match="do not fit together|observed pairs"):
            _edited_load(RatingsCompleter, path, tmp_path, arrays={name.strip(): value})
    for attribute in ("row_factors_", "column_factors_", "user_bias_", "item_bias_"):
        value = getattr(model, attribute)
        with pytest.raises(ValueError, match=f"{attribute} does not hold floating-point numbers"):
            _edited_load(RatingsCompleter, path, tmp_path, arrays={attribute: value.astype(np.int64)})
    for state, message in (({"_observed": 5}, "observed pairs"),
                           ({"_observed": {"__tuple__": [{"__array__": "_observed.0"}]}}, "observed pairs"),
                           ({"_observed": {"__list__": [{"__array__": "_observed.0"},
                                                        {"__array__": "_observed.1"}]}}, "observed pairs"),
                           ({"rating_range_": {"__tuple__": [1.0]}}, "rating_range_"),
                           ({"rating_range_": {"__tuple__": [1, 5]}}, "rating_range_")):
        with pytest.raises(ValueError, match=message):
            _edited_load(RatingsCompleter, path, tmp_path, state_changes=state)
    empty = _edited_load(RatingsCompleter, path, tmp_path,
                         arrays={"_observed.0": observed[0][:0], "_observed.1": observed[1][:0],
                                 "_residuals": model._residuals[:0]})
    assert empty._observed[0].size == 0


def test_missing_state_entries_are_damage(fitted, ratings_file, tmp_path):
    def without(path, cls, name):
        with np.load(path) as archive:
            members = {n: archive[n] for n in archive.files}
        header = json.loads(str(members["__dmc__"]))
        del header["state"][name]
        members["__dmc__"] = np.array(json.dumps(header))
        out = tmp_path / "without.npz"
        with open(out, "wb") as file:
            np.savez(file, **members)
        return cls.load(out)

    deep = fitted.save(tmp_path / "deep.npz")
    with pytest.raises(ValueError, match="do not multiply to shape_ None"):
        without(deep, DeepMatrixCompleter, "shape_")
    _, path = ratings_file
    with pytest.raises(ValueError, match="observed pairs"):
        without(path, RatingsCompleter, "_observed")
    with pytest.raises(ValueError, match="rating_range_ is None"):
        without(path, RatingsCompleter, "rating_range_")
    with pytest.raises(ValueError, match="right_factor_ does not hold floating-point numbers"):
        _edited_load(DeepMatrixCompleter, deep, tmp_path,
                     arrays={"right_factor_": fitted.right_factor_.astype(np.int64)})
    with pytest.raises(ValueError, match="its backend_ entry is"):
        _edited_load(DeepMatrixCompleter, deep, tmp_path, state_changes={"backend_": {"device": "cpu"}})


def test_ids_must_be_one_dimensional(ratings_file, tmp_path):
    model, path = ratings_file
    for name in ("user_ids_", "item_ids_"):
        column = getattr(model, name).reshape(-1, 1)  # right length, wrong number of dimensions
        with pytest.raises(ValueError, match="do not fit together"):
            _edited_load(RatingsCompleter, path, tmp_path, arrays={name: column})


def test_only_the_factors_move_to_the_backend(fitted, tmp_path):
    torch = pytest.importorskip("torch")
    on_torch = DeepMatrixCompleter.load(fitted.save(tmp_path / "m.npz"), backend="torch", device="cpu")
    assert isinstance(on_torch.right_factor_, torch.Tensor)
    assert all(isinstance(v, np.ndarray) for v in on_torch.history_.values())
    assert isinstance(on_torch.initial_singular_values_, np.ndarray)
