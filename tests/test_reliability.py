"""Reliability (issue 13): scikit-learn's NotFittedError and scale-safe initialization."""

import re
import runpy
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import dmc
from dmc import DeepMatrixCompleter, NotFittedError, RatingsCompleter
from dmc.solver import ConvergenceWarning


# -- NotFittedError ----------------------------------------------------------
def _unfitted_calls(tmp_path):
    M = np.ones((4, 3))
    pairs = np.array([[0, 0], [1, 1]])
    return {
        "DeepMatrixCompleter.predict": lambda: DeepMatrixCompleter().predict([0], [0]),
        "DeepMatrixCompleter.transform": lambda: DeepMatrixCompleter().transform(),
        "DeepMatrixCompleter.get_low_rank_factors": lambda: DeepMatrixCompleter().get_low_rank_factors(),
        "DeepMatrixCompleter.score": lambda: DeepMatrixCompleter().score(M),
        "DeepMatrixCompleter.save": lambda: DeepMatrixCompleter().save(tmp_path / "d.npz"),
        "RatingsCompleter.predict": lambda: RatingsCompleter().predict([0], [0]),
        "RatingsCompleter.predict(X)": lambda: RatingsCompleter().predict(pairs),
        "RatingsCompleter.score": lambda: RatingsCompleter().score(pairs, [1.0, 2.0]),
        "RatingsCompleter.recommend": lambda: RatingsCompleter().recommend(0),
        "RatingsCompleter.save": lambda: RatingsCompleter().save(tmp_path / "r.npz"),
    }


def test_every_method_needing_a_fit_raises_not_fitted_error(tmp_path):
    for name, call in _unfitted_calls(tmp_path).items():
        with pytest.raises(NotFittedError, match="not fitted yet; call fit") as info:
            call()
        assert isinstance(info.value, ValueError) and isinstance(info.value, AttributeError), name
    assert not list(tmp_path.iterdir())  # an unfitted save writes nothing


def test_not_fitted_error_is_scikit_learns_when_installed():
    sklearn_exceptions = pytest.importorskip("sklearn.exceptions")
    assert dmc.NotFittedError is sklearn_exceptions.NotFittedError
    assert "NotFittedError" in dmc.__all__ and "NotFittedError" in dir(dmc)


def test_not_fitted_error_without_scikit_learn(monkeypatch):
    # run dmc/exceptions.py as if scikit-learn were not installed (None in sys.modules: ImportError)
    monkeypatch.setitem(sys.modules, "sklearn.exceptions", None)
    namespace = runpy.run_path(str(Path(dmc.__file__).with_name("exceptions.py")))
    cls = namespace["NotFittedError"]
    assert cls.__module__ == "dmc" and issubclass(cls, ValueError) and issubclass(cls, AttributeError)
    assert "sklearn" not in repr(cls.__mro__)
    error = namespace["not_fitted"](DeepMatrixCompleter(), "fit(M, mask)")
    assert isinstance(error, cls) and "DeepMatrixCompleter is not fitted yet" in str(error)


# -- any magnitude float64 holds ----------------------------------------------
def _low_rank(seed=0, shape=(24, 18), rank=2, fraction=0.6):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((shape[0], rank)) @ rng.standard_normal((rank, shape[1]))
    return M, rng.random(shape) < fraction


def _fit(M, mask, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return DeepMatrixCompleter(**{"rank": 2, "max_iter": 400, "random_state": 0, **params}).fit(M, mask)


def _assert_silent(capfd):
    out, err = capfd.readouterr()
    assert err == "" and out == "", f"printed to the terminal: {out!r} {err!r}"


@pytest.fixture(scope="module")
def reference_fit():
    M, mask = _low_rank()
    model = _fit(M, mask)
    return M, mask, model.transform(as_numpy=True)


@pytest.mark.parametrize("magnitude", [1e300, 1e-300, 1e150, 1e-150, 1e306, 1e-306])
def test_normalized_fit_of_any_float64_magnitude(reference_fit, magnitude, capfd):
    # was: ArpackError and LAPACK's "DLASCL parameter number 4" on stderr (1e300),
    # ZeroDivisionError (1e-300), a subspace of E0 rather than of M (1e-150)
    M, mask, reference = reference_fit
    model = _fit(M * magnitude, mask)
    X = model.transform(as_numpy=True) / magnitude
    assert np.all(np.isfinite(X))
    # the normalized problem is the same one: the fit scales with the data
    np.testing.assert_allclose(X, reference, rtol=1e-6, atol=1e-6 * np.abs(reference).max())
    assert np.linalg.norm(X - M) < 0.5 * np.linalg.norm(M)  # and it recovers M
    assert np.isclose(model.scale_ / magnitude, _fit(M, mask, max_iter=1).scale_, rtol=1e-9)
    _assert_silent(capfd)


@pytest.mark.parametrize("method", ["narrow", "original"])
def test_other_models_at_extreme_magnitudes(method, capfd):
    M, mask = _low_rank(shape=(12, 10))
    for magnitude in (1e300, 1e-300):
        X = _fit(M * magnitude, mask, method=method, max_iter=50).transform(as_numpy=True)
        assert np.all(np.isfinite(X)) and np.abs(X).max() > 0
    _assert_silent(capfd)


@pytest.mark.parametrize("magnitude", [1e300, 1e-300, 1e150, 1e-150, 1e30, 1e-30])
def test_unnormalized_fit_outside_its_range_says_so(magnitude, capfd):
    M, mask = _low_rank()
    with pytest.raises(ValueError, match=r"outside the range normalize=False supports.*normalize=True"):
        _fit(M * magnitude, mask, normalize=False)
    _assert_silent(capfd)


def test_unnormalized_fit_inside_its_range():
    M, mask = _low_rank()
    for magnitude in (1e-15, 1e15):
        assert np.all(np.isfinite(_fit(M * magnitude, mask, normalize=False, max_iter=20).transform()))


def test_magnitudes_the_model_dtype_cannot_hold(capfd):
    M, mask = _low_rank()
    with pytest.raises(ValueError, match=r"do not fit the model's dtype float64.*2.23e-308"):
        _fit(M * 1e-310, mask)  # subnormal: no precision left
    with pytest.raises(ValueError, match=r"dtype float32.*fit in float64"):
        _fit(M * 1e100, mask, dtype="float32")
    with pytest.raises(ValueError, match=r"dtype float32"):
        _fit(M * 1e-60, mask, dtype="float32")
    _assert_silent(capfd)


def _ratings(seed=0, n_users=40, n_items=30):
    rng = np.random.default_rng(seed)
    R = 3.0 + rng.standard_normal((n_users, 2)) @ rng.standard_normal((2, n_items))
    users, items = np.nonzero(rng.random(R.shape) < 0.5)
    return users, items, R[users, items]


@pytest.mark.parametrize("magnitude", [1e300, 1e-300, 1e150, 1e-150, 1e-310])
def test_ratings_of_any_float64_magnitude(magnitude, capfd):
    users, items, ratings = _ratings()
    params = dict(rank=2, max_iter=400, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = RatingsCompleter(**params).fit(users, items, ratings)
        model = RatingsCompleter(**params).fit(users, items, ratings * magnitude)
    predicted = model.predict(users, items)
    assert np.all(np.isfinite(predicted))
    # the ratings are fitted divided by a power of two near their largest magnitude, where
    # E0 = init_scale**depth is relatively larger than at magnitude 1: the same fit to ~1%
    error = np.sqrt(np.mean((predicted / magnitude - ratings) ** 2))
    assert error < 0.1 and error < 2 * np.sqrt(np.mean((reference.predict(users, items) - ratings) ** 2))
    np.testing.assert_allclose(predicted / magnitude, reference.predict(users, items), rtol=0.05)
    np.testing.assert_allclose(np.array(model.rating_range_) / magnitude, reference.rating_range_,
                               rtol=1e-12)
    np.testing.assert_allclose(model.history_["validation_rmse"] / magnitude,
                               reference.history_["validation_rmse"], rtol=0.1)
    assert np.all(np.isfinite(model.recommend(users[0], k=3)[1]))
    _assert_silent(capfd)


def test_ratings_whose_fit_overflows_say_so(capfd):
    users, items, ratings = _ratings()
    with pytest.raises(ValueError, match="too large: the fitted factors"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        RatingsCompleter(rank=2, max_iter=5, random_state=0).fit(users, items, ratings * 1e307)
    _assert_silent(capfd)


def test_error_measures_at_extreme_magnitudes():
    # found by tests/test_fuzz.py: score() of a 1e298-sized fit overflowed in rmse's squares
    from dmc.metrics import recovery_error, rmse

    assert rmse([3e300, -4e300], [0.0, 0.0]) == pytest.approx(np.sqrt(12.5) * 1e300)
    assert rmse([3e-300, 4e-300], [0.0, 0.0]) == pytest.approx(np.sqrt(12.5) * 1e-300)
    assert rmse([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert recovery_error(np.array([[1e300, 2e300]]), np.array([[1e300, 1e300]])) == pytest.approx(
        np.sqrt(0.5))
    assert recovery_error(np.array([[1e-300, 2e-300]]), np.array([[1e-300, 1e-300]])) == pytest.approx(
        np.sqrt(0.5))


def test_score_and_recovery_error_of_a_huge_fit(reference_fit):
    M, mask, _ = reference_fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = DeepMatrixCompleter(rank=2, max_iter=50, random_state=0).fit(
            M * 1e300, mask, ground_truth=M * 1e300)
    assert np.all(np.isfinite(model.history_["recovery_error"]))
    assert np.isfinite(model.score(M * 1e300, mask)) and model.score(M * 1e300, mask) < 0


# -- damaged model files --------------------------------------------------------
@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    M, mask = _low_rank(shape=(12, 10))
    _fit(M, mask, max_iter=10).save(folder / "dmc.npz")
    users, items, ratings = _ratings()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        RatingsCompleter(rank=2, max_iter=10, random_state=0).fit(users, items, ratings).save(
            folder / "ratings.npz")
    return folder


def _members(path):
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _rewrite(path, members, header=None):
    import json

    members = dict(members)
    if header is not None:
        members["__dmc__"] = np.array(json.dumps(header))
    with open(path, "wb") as file:
        np.savez(file, **members)
    return path


def _loads_or_says_damaged(cls, path):
    """Loading either works (then the model predicts) or raises one clear ValueError."""
    try:
        model = cls.load(path)
    except ValueError as error:
        assert str(path) in str(error) or "backend" in str(error), error
        return False
    model.predict([0], [0])
    return True


def test_truncated_and_bit_flipped_model_files(saved_models, tmp_path):
    # were: BadZipFile, EOFError, KeyError, tokenize.TokenError escaping load()
    for cls, name in ((DeepMatrixCompleter, "dmc.npz"), (RatingsCompleter, "ratings.npz")):
        data = (saved_models / name).read_bytes()
        bad = tmp_path / "bad.npz"
        for cut in np.linspace(0, len(data) - 1, 40).astype(int):
            bad.write_bytes(data[:cut])
            assert not _loads_or_says_damaged(cls, bad)
        rng = np.random.default_rng(0)
        for position in rng.integers(0, len(data), 60):
            flipped = bytearray(data)
            flipped[position] ^= 1 << int(rng.integers(8))
            bad.write_bytes(bytes(flipped))
            _loads_or_says_damaged(cls, bad)


def test_tampered_model_files_say_what_is_wrong(saved_models, tmp_path):
    import json

    members = _members(saved_models / "dmc.npz")
    header = json.loads(str(members["__dmc__"]))
    array_name = next(k for k in members if k != "__dmc__")

    def edited(**changes):
        return {**header, **changes}

    cases = {
        "not valid JSON": {**members, "__dmc__": np.array("{not json")},
        "not an object": {**members, "__dmc__": np.array("[1, 2]")},
        "int64 array of shape": {**members, "__dmc__": np.array(5)},
        "format_version is '2'": edited(format_version="2"),
        "no 'params' dict": edited(params=[1]),
        "no 'state' dict": edited(state=[1]),
        "no 'class' str": edited(**{"class": 5}),
        "parameters ['bogus']": edited(params={**header["params"], "bogus": 1}),
        "missing array 'nope'": edited(state={**header["state"], "left_factor_": {"__array__": "nope"}}),
        "do not multiply to shape_": edited(state={**header["state"], "shape_": {"__tuple__": [3, 3]}}),
        "inner_factors_ is not a list": edited(state={**header["state"], "inner_factors_": 5}),
        "unfitted": edited(state={k: v for k, v in header["state"].items() if k != "left_factor_"}),
        "cannot be read without pickle": {**members, array_name: np.array([None, 1], dtype=object)},
        "Upgrade dmc": edited(format_version=99),
    }
    for expected, change in cases.items():
        path = tmp_path / "tampered.npz"
        if "__dmc__" in change:
            _rewrite(path, change)
        else:
            _rewrite(path, members, change)
        with pytest.raises(ValueError, match=re.escape(expected)) as info:
            DeepMatrixCompleter.load(path)
        assert str(path) in str(info.value)

    ratings = _members(saved_models / "ratings.npz")
    header = json.loads(str(ratings["__dmc__"]))
    for expected, state in {
        "do not fit together": {**header["state"], "user_bias_": header["state"]["item_bias_"]},
        "rating_range_ is 5": {**header["state"], "rating_range_": 5},
    }.items():
        path = _rewrite(tmp_path / "tampered.npz", ratings, {**header, "state": state})
        with pytest.raises(ValueError, match=expected):
            RatingsCompleter.load(path)


def test_loading_never_unpickles(saved_models, tmp_path, monkeypatch):
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("load() unpickled something")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    members = _members(saved_models / "dmc.npz")
    path = tmp_path / "pickled.npz"
    with open(path, "wb") as file:  # a member that only pickle could read
        np.savez(file, **{**members, "left_factor_": np.array([{"x": 1}], dtype=object)})
    with pytest.raises(ValueError, match="without pickle"):
        DeepMatrixCompleter.load(path)
    assert DeepMatrixCompleter.load(saved_models / "dmc.npz").shape_ == (12, 10)
