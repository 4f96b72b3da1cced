"""Reliability (issue 13): scikit-learn's NotFittedError and scale-safe initialization."""

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
