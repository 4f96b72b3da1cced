"""Early stopping in DeepMatrixCompleter: best state, no leakage, history, parameters, advice."""

import warnings

import numpy as np
import pytest

from dmc import DeepMatrixCompleter
from dmc._early_stopping import validation_split
from dmc.datasets import make_low_rank
from dmc.observations import as_observations
from dmc.solver import ConvergenceWarning

# a rank-2 signal plus noise, fitted with a generous rank budget: the fit first
# learns the signal, then the noise, so the validation RMSE has a minimum
SHAPE, TRUE_RANK, FRACTION, NOISE = (40, 36), 2, 0.5, 0.3
KW = dict(rank=8, record_every=5, n_iter_no_change=8, max_iter=3000)


def _noisy(seed=0):
    M, mask = make_low_rank(SHAPE, TRUE_RANK, FRACTION, random_state=seed)
    noisy = M + NOISE * np.random.default_rng(seed + 1).standard_normal(SHAPE)
    return noisy, mask


def _split(mask, seed):
    """The entries the estimator holds out: its split, redone independently from the seed."""
    obs = as_observations(np.where(mask, 1.0, 0.0), mask)  # the order fit sees the entries in
    rng = np.random.default_rng(seed)
    keep = validation_split(obs.values.size, 0.1, rng)
    train, held = np.zeros(SHAPE, bool), np.zeros(SHAPE, bool)
    train[obs.observed_rows[keep], obs.observed_cols[keep]] = True
    held[obs.observed_rows[~keep], obs.observed_cols[~keep]] = True
    return train, held, rng  # rng: advanced past the split, as in fit


def _fit(M, mask, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return DeepMatrixCompleter(**{**KW, **kw}).fit(M, mask)


def test_restores_the_best_state_of_a_manual_run_stopped_there():
    M, mask = _noisy()
    model = _fit(M, mask, early_stopping=True, random_state=np.random.default_rng(0))
    assert model.stop_reason_ == "early_stopping"
    assert 0 < model.best_iter_ < model.n_iter_  # it went past the best and came back
    train, held, rng = _split(mask, 0)
    # the manual run: early stopping off, the training entries only, the same
    # initialization draws, stopped at best_iter_
    manual = _fit(M, train, early_stopping=False, random_state=rng, max_iter=model.best_iter_)
    np.testing.assert_allclose(model.transform(), manual.transform(), rtol=1e-10, atol=1e-12)
    # the recorded curve: its minimum is at best_iter_ and equals the manual
    # run's RMSE on the held-out entries, computed here
    history = model.history_
    best = int(np.argmin(history["validation_rmse"]))
    assert history["iteration"][best] == model.best_iter_
    expected = np.sqrt(np.mean((manual.transform()[held] - M[held]) ** 2))
    assert history["validation_rmse"][best] == pytest.approx(expected, rel=1e-10)
    # ... and it beats the fit that runs on: the noise is fitted late
    assert history["validation_rmse"][-1] > history["validation_rmse"][best]


def test_validation_entries_never_reach_the_training():
    M, mask = _noisy()
    _, held, _ = _split(mask, 0)
    changed = M.copy()
    changed[held] += 50.0 * np.random.default_rng(7).standard_normal(held.sum())
    kw = dict(early_stopping=True, random_state=0, n_iter_no_change=10**6, max_iter=200)
    a, b = _fit(M, mask, **kw), _fit(changed, mask, **kw)
    # the same split, scale and training trajectory; only the validation curve differs
    assert a.scale_ == b.scale_
    np.testing.assert_array_equal(a.history_["train_loss"], b.history_["train_loss"])
    assert not np.allclose(a.history_["validation_rmse"], b.history_["validation_rmse"])


def test_history_has_the_validation_curve_only_with_early_stopping():
    M, mask = _noisy()
    on = _fit(M, mask, early_stopping=True, random_state=0)
    off = _fit(M, mask, random_state=0, max_iter=100)
    assert on.history_["validation_rmse"].shape == on.history_["iteration"].shape
    assert np.all(np.isfinite(on.history_["validation_rmse"]))
    assert "validation_rmse" not in off.history_
    assert off.best_iter_ == off.n_iter_ == 100


@pytest.mark.parametrize("params, error", [
    ({"early_stopping": "yes"}, TypeError),
    ({"early_stopping": 1}, TypeError),
    ({"validation_fraction": 0.0}, ValueError),
    ({"validation_fraction": 1.0}, ValueError),
    ({"validation_fraction": -0.1}, ValueError),
    ({"validation_fraction": "0.1"}, ValueError),
    ({"n_iter_no_change": 0}, ValueError),
    ({"n_iter_no_change": 2.5}, ValueError),
    ({"n_iter_no_change": True}, ValueError),
])
def test_bad_parameters_raise(params, error):
    M, mask = _noisy()
    with pytest.raises(error, match=next(iter(params))):
        DeepMatrixCompleter(rank=2, early_stopping=True, **{**params}).fit(M, mask)


def test_a_split_without_validation_entries_raises():
    M = np.arange(1.0, 17.0).reshape(4, 4)
    with pytest.raises(ValueError, match="validation_fraction"):
        DeepMatrixCompleter(rank=1, early_stopping=True, validation_fraction=0.01).fit(M)


def test_max_iter_on_noisy_data_suggests_early_stopping():
    M, mask = _noisy()
    with pytest.warns(ConvergenceWarning, match="early_stopping=True") as caught:
        DeepMatrixCompleter(rank=8, step_rule="adaptive", max_iter=1500, random_state=0).fit(M, mask)
    assert "RatingsCompleter" in str(caught[0].message)


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
def test_max_iter_on_an_ill_conditioned_matrix_suggests_the_preconditioned_rule():
    # exact rank 4, singular values over a factor 30: the adaptive rule (not
    # what "auto" picks on data this well sampled) stalls
    # (measured recovery error 0.32 after 4,000 steps) and the residual looks
    # like noise; the warning names both causes, and the advice works
    M, mask = make_low_rank((300, 250), 4, 0.3, condition_number=30, random_state=0)
    with pytest.warns(ConvergenceWarning, match="early_stopping=True") as caught:
        DeepMatrixCompleter(rank=8, step_rule="adaptive", max_iter=1500, random_state=0).fit(M, mask)
    assert 'step_rule="preconditioned"' in str(caught[0].message)
    fit = DeepMatrixCompleter(rank=8, step_rule="preconditioned", max_iter=1500,
                              random_state=0).fit(M, mask)
    assert np.linalg.norm(fit.transform() - M) / np.linalg.norm(M) < 1e-5


@pytest.mark.parametrize("preconditioned", [False, True])
def test_stalled_message_suggests_the_preconditioned_rule_only_when_not_in_use(preconditioned):
    from dmc.estimator import _max_iter_message

    stalled = np.array([100.0, 10.0, 1.0, 0.5, 0.5, 0.5])  # halved, then flat
    message = _max_iter_message(100, 1e-7, 0.3, False, stalled, preconditioned)
    assert "early_stopping=True" in message
    assert ('step_rule="preconditioned"' in message) is not preconditioned
    descending = np.array([100.0, 10.0, 1.0, 0.1, 0.01, 0.001])
    assert "step_rule" not in _max_iter_message(100, 1e-7, 0.3, False, descending)


def test_max_iter_on_exact_data_still_descending_gives_no_noise_advice():
    M, mask = make_low_rank((40, 36), 2, 0.5, random_state=0)
    with pytest.warns(ConvergenceWarning, match="max_iter=60") as caught:
        DeepMatrixCompleter(rank=4, max_iter=60, random_state=0,
                            step_rule="constant").fit(M, mask)
    assert "early_stopping" not in str(caught[0].message)


def test_max_iter_with_early_stopping_says_the_validation_still_improved():
    M, mask = _noisy()
    with pytest.warns(ConvergenceWarning, match="still improved") as caught:
        DeepMatrixCompleter(rank=8, max_iter=30, early_stopping=True, random_state=0).fit(M, mask)
    assert "early_stopping=True" not in str(caught[0].message)


def test_early_stopping_parameters_persist(tmp_path):
    M, mask = _noisy()
    model = _fit(M, mask, early_stopping=True, validation_fraction=0.2, n_iter_no_change=7,
                 random_state=0)
    loaded = DeepMatrixCompleter.load(model.save(tmp_path / "m.npz"))
    assert (loaded.early_stopping, loaded.validation_fraction, loaded.n_iter_no_change) == (True, 0.2, 7)
    assert loaded.best_iter_ == model.best_iter_
    np.testing.assert_array_equal(loaded.history_["validation_rmse"], model.history_["validation_rmse"])
    np.testing.assert_array_equal(loaded.transform(), model.transform())


def test_the_initial_plateau_does_not_trigger_early_stopping():
    """The wide model with constant steps from a small start spends many records on a
    plateau where the validation error does not improve; early stopping waits until the
    fit has left it."""
    M, mask = _noisy()
    model = _fit(M, mask, early_stopping=True, random_state=0, method="original",
                 n_iter_no_change=20, max_iter=6000)
    curve, loss = model.history_["validation_rmse"], model.history_["train_loss"]
    assert model.stop_reason_ == "early_stopping"
    assert loss[-1] < 0.9 * loss[0]  # it stopped after leaving the plateau ...
    assert model.best_iter_ > 0 and curve.min() < curve[0]  # ... at a better state than the start
