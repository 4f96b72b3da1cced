"""What every dmc estimator shares: scikit-learn's parameter protocol, checks, persistence.

The estimators inherit :class:`sklearn.base.BaseEstimator` when scikit-learn
is installed, so ``get_params``, ``set_params``, ``clone``, the ``repr`` and
the estimator tags are scikit-learn's own.  Without it, :class:`ParamsMixin`
provides the same parameter protocol so that dmc needs no scikit-learn.
"""

from __future__ import annotations

import inspect
import numbers

import numpy as np

__all__ = ["BaseCompleter", "ParamsMixin", "check_bools", "check_callbacks", "check_integers",
           "check_lr", "check_reals", "check_validation_fraction", "check_verbose", "is_int",
           "is_real", "solver_callbacks"]


def is_int(x) -> bool:
    """An integer that is not a bool."""
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def is_real(x) -> bool:
    """A real number that is not a bool."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def check_integers(estimator, minimums) -> None:
    """Each parameter ``name`` of ``minimums`` (name -> least) an integer >= its least."""
    for name, least in minimums.items():
        value = getattr(estimator, name)
        if not is_int(value) or value < least:
            raise ValueError(f"{name} must be an integer >= {least}; got {value!r}.")


def check_reals(estimator, names, *, positive) -> None:
    """Each parameter in ``names`` a finite real number, > 0 (``positive``) or >= 0."""
    for name in names:
        value = getattr(estimator, name)
        in_range = is_real(value) and (value > 0 if positive else value >= 0)
        if not in_range or not np.isfinite(value):
            raise ValueError(f"{name} must be a positive finite number; got {value!r}." if positive
                             else f"{name} must be a finite number >= 0; got {value!r}.")


def check_bools(estimator, names) -> None:
    """Each parameter in ``names`` True or False (a NumPy bool too)."""
    for name in names:
        if not isinstance(getattr(estimator, name), (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False; got {getattr(estimator, name)!r}.")


def check_lr(lr) -> None:
    """``lr`` is ``"auto"`` or a positive number."""
    if isinstance(lr, str) and lr != "auto" or (
            not isinstance(lr, str) and (not is_real(lr) or not lr > 0)):
        raise ValueError(f'lr must be "auto" or a positive number; got {lr!r}.')


def check_validation_fraction(fraction) -> None:
    """A held-out share in [0, 1) (0: no validation split)."""
    if not is_real(fraction) or not 0 <= fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1); got {fraction!r}.")


def check_callbacks(callbacks) -> list:
    """``callbacks`` (None, a callable or a sequence of callables) as a list."""
    if callbacks is None:
        return []
    if callable(callbacks):
        return [callbacks]
    if isinstance(callbacks, (list, tuple)) and all(callable(c) for c in callbacks):
        return list(callbacks)
    raise TypeError(
        "callbacks must be None, a callable or a list of callables (each called as "
        f"callback(record) -> bool); got {callbacks!r}.")


def solver_callbacks(callbacks) -> list:
    """The estimator's ``callbacks`` (each ``record -> bool``) in the solver's
    protocol ``(record, factors) -> bool``: users see records, not factors."""
    return [lambda record, _, user=user: user(record) for user in check_callbacks(callbacks)]


def check_verbose(verbose) -> None:
    """``verbose`` must be 0, 1, 2 or a bool."""
    if not (isinstance(verbose, bool) or (is_int(verbose) and 0 <= verbose <= 2)):
        raise ValueError(f"verbose must be 0 (silent), 1 (progress bar) or 2 (a line per "
                         f"record), or a bool; got {verbose!r}.")


class ParamsMixin:
    """``get_params`` / ``set_params`` / ``__repr__`` from the ``__init__`` signature.

    The fallback for :class:`sklearn.base.BaseEstimator` when scikit-learn
    is not installed, with the same rules: ``__init__`` stores each keyword
    argument under its own name and does nothing else.
    """

    @classmethod
    def _get_param_names(cls):
        return sorted(p for p in inspect.signature(cls.__init__).parameters if p != "self")

    def get_params(self, deep=True):
        """Parameters of this estimator, as a dict."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params):
        """Set parameters; returns self."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"Invalid parameter {name!r} for estimator {type(self).__name__}; "
                                 f"valid parameters are {valid}.")
            setattr(self, name, value)
        return self

    def __repr__(self):
        defaults = {p.name: p.default
                    for p in inspect.signature(type(self).__init__).parameters.values()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items()
                   if not (v is defaults[k] or (isinstance(v, (int, float, str)) and v == defaults[k]))]
        return f"{type(self).__name__}({', '.join(changed)})"


try:
    from sklearn.base import BaseEstimator as _ParamsBase
except ImportError:  # scikit-learn is optional (dmc[sklearn])
    _ParamsBase = ParamsMixin


class BaseCompleter(_ParamsBase):
    """Parameter protocol plus ``save`` / ``load`` (see :mod:`dmc.persistence`)."""

    # private fitted state that persistence must keep besides the ``name_`` attributes
    _persisted_private = ()
    # fitted attributes held in the fit's backend (moved by ``load(backend=...)``)
    _backend_state = ()

    def save(self, path):
        """Write the parameters and fitted state to one ``.npz`` file (no pickle).

        The file is an ordinary NumPy archive readable with
        ``numpy.load(path, allow_pickle=False)``: the arrays, plus a JSON
        header with the parameters (format in :mod:`dmc.persistence`).
        Callbacks and random Generators are not saved (a warning says so).

        Parameters
        ----------
        path : str or os.PathLike
            Written exactly as given (no suffix is added).

        Returns
        -------
        path : pathlib.Path
        """
        from .persistence import save_estimator

        return save_estimator(self, path)

    @classmethod
    def load(cls, path, *, backend=None, device=None):
        """An estimator saved by :meth:`save`, ready to predict.

        Parameters
        ----------
        path : str or os.PathLike
        backend : {"numpy", "torch", "cupy"}, optional
            Put the fitted factors on this backend instead of the one they
            were fitted on (``DeepMatrixCompleter`` only; the ``backend``
            parameter is updated to match).
        device : str, optional
            Device on that backend (default: the saved one when the backend
            is unchanged, else the backend's default).

        Returns
        -------
        estimator : instance of this class
        """
        from .persistence import load_estimator

        return load_estimator(path, backend=backend, device=device, expected=cls)
