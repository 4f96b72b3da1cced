"""dmc: deep low-rank matrix completion with compressed deep factorizations."""

from .estimator import DeepMatrixCompleter
from .ratings import RatingsCompleter
from .solver import ConvergenceWarning, DivergenceError

__version__ = "0.1.0"

__all__ = ["DeepMatrixCompleter", "RatingsCompleter", "ConvergenceWarning", "DivergenceError", "__version__"]
