"""The shared early-stopping pieces against hand-worked sequences."""

import numpy as np
import pytest

from dmc._early_stopping import EarlyStopping, validation_split


class _State:
    def __init__(self, value):
        self.value = value

    def copy(self):
        return _State(self.value)


def _run(stopper, values):
    """Feed records one by one; return the index at which the stopper asked to stop."""
    state = _State(None)
    for i, v in enumerate(values):
        state.value = v  # mutated in place, as the solver's factors are
        if stopper({"iteration": 10 * (i + 1), "m": v}, state):
            return i
    return None


def test_min_mode_keeps_the_best_snapshot_and_stops_after_patience():
    stopper = EarlyStopping("m", patience=2)
    stopped_at = _run(stopper, [3.0, 2.0, 2.5, 1.5, 1.6, 1.5, 9.0])
    # best 1.5 at record 4 (iteration 40); 1.6 and 1.5 (not < 1.5) are two misses
    assert stopped_at == 5
    assert stopper.best_value == 1.5 and stopper.best_iter == 40
    assert stopper.best_state.value == 1.5  # a copy, not the live (mutated) state


def test_max_mode_for_ranking_scores():
    stopper = EarlyStopping("m", patience=4, mode="max")
    assert _run(stopper, [0.1, 0.3, 0.2, 0.25, 0.3]) is None
    assert stopper.best_iter == 20 and stopper.best_value == 0.3


def test_invalid_arguments():
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping("m", 2, mode="best")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping("m", 0)


def test_validation_split_sizes_and_errors():
    rng = np.random.default_rng(0)
    train = validation_split(1000, 0.1, rng)
    assert train.dtype == bool and (~train).sum() == 100
    assert validation_split(7, 0.0, rng).all()
    with pytest.raises(ValueError, match="no validation ratings"):
        validation_split(3, 0.01, rng, what="ratings")
    with pytest.raises(ValueError, match="no training entries"):
        validation_split(3, 0.99, rng)
