"""Early stopping shared by the estimators: a validation split and a callback that keeps the best state.

Both are estimator-agnostic: the split is a boolean mask over observed
entries (or interactions), and :class:`EarlyStopping` is a solver callback
``(record, state) -> bool`` that watches one recorded metric.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["EarlyStopping", "validation_split"]


def validation_split(n_entries, validation_fraction, rng, *, what="entries"):
    """A boolean mask of the entries kept for training; the rest validate.

    Parameters
    ----------
    n_entries : int
        Number of observed entries to split.
    validation_fraction : float
        Share of the entries held out, in [0, 1); 0 holds out nothing.
    rng : numpy.random.Generator
        Chooses the held-out entries (uniformly, without replacement).
    what : str
        Name of the entries in error messages ("ratings", "entries", ...).

    Returns
    -------
    train : ndarray of bool, shape (n_entries,)
    """
    train = np.ones(n_entries, dtype=bool)
    if validation_fraction > 0:
        n_validation = int(round(validation_fraction * n_entries))
        if n_validation < 1 or n_validation >= n_entries:
            raise ValueError(
                f"validation_fraction={validation_fraction} leaves no "
                f"{'validation' if n_validation < 1 else 'training'} {what} out of {n_entries}; "
                "choose a fraction that holds out at least one and keeps at least one.")
        train[rng.choice(n_entries, n_validation, replace=False)] = False
    return train


class EarlyStopping:
    """Solver callback that stops when a validation metric stops improving.

    At every record it reads ``record[metric]``; a better value than any
    before stores a copy of the state and the record's iteration, and
    ``patience`` records in a row without improvement stop the fit.

    Parameters
    ----------
    metric : str
        Name of the recorded metric (a key of the solver's ``metrics``).
    patience : int
        Records without improvement before stopping (scikit-learn's
        ``n_iter_no_change``).
    mode : {"min", "max"}
        Whether smaller (an error) or larger (a ranking score) is better.
    copy : callable, optional
        ``state -> snapshot``; by default ``state.copy()``.

    Attributes
    ----------
    best_value : float
        Best metric seen (inf / -inf before the first record).
    best_iter : int or None
        Iteration of the best state; None before the first record.
    best_state : object or None
        Snapshot of the best state.
    """

    def __init__(self, metric, patience, *, mode="min", copy=None):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}.")
        if patience < 1:
            raise ValueError(f"patience must be >= 1; got {patience!r}.")
        self.metric, self.patience, self.mode = metric, patience, mode
        self._copy = copy if copy is not None else (lambda state: state.copy())
        self.best_value = math.inf if mode == "min" else -math.inf
        self.best_iter, self.best_state, self.records_since_best = None, None, 0

    def _improves(self, value):
        return value < self.best_value if self.mode == "min" else value > self.best_value

    def __call__(self, record, state):
        value = record[self.metric]
        if self._improves(value):
            self.best_value, self.best_iter = value, record["iteration"]
            self.best_state, self.records_since_best = self._copy(state), 0
            return False
        self.records_since_best += 1
        return self.records_since_best >= self.patience
