"""dmc: deep low-rank matrix completion with compressed deep factorizations.

The estimators are imported on first use (PEP 562), so that ``import dmc``
and the ``dmc`` command start quickly: with scikit-learn installed the
estimators inherit its ``BaseEstimator``, whose import takes seconds.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and documentation tools, which do not run __getattr__
    from .estimator import DeepMatrixCompleter
    from .exceptions import NotFittedError
    from .interactions import InteractionsCompleter
    from .ratings import RatingsCompleter
    from .solver import ConvergenceWarning, DivergenceError, FitInterruptedWarning

__version__ = "0.1.0"

_LAZY = {
    "DeepMatrixCompleter": "dmc.estimator",
    "RatingsCompleter": "dmc.ratings",
    "InteractionsCompleter": "dmc.interactions",
    "ConvergenceWarning": "dmc.solver",
    "DivergenceError": "dmc.solver",
    "FitInterruptedWarning": "dmc.solver",
    "NotFittedError": "dmc.exceptions",
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dmc' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
