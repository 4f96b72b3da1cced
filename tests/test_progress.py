"""Progress reporting, callbacks and clean interruption (Ctrl-C) of fits."""

import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from dmc import ConvergenceWarning, DeepMatrixCompleter, FitInterruptedWarning, RatingsCompleter
from dmc.datasets import make_low_rank

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def problem():
    return make_low_rank((40, 30), 2, 0.5, random_state=1)


def _quiet_fit(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(*args, **kwargs)


def test_callbacks_see_every_record_in_units_of_M(problem):
    M, mask = problem
    seen_a, seen_b = [], []
    model = _quiet_fit(DeepMatrixCompleter(rank=3, max_iter=200, record_every=20, random_state=0,
                                           callbacks=[seen_a.append, seen_b.append]),
                       100 * M, mask, ground_truth=100 * M)
    assert len(seen_a) == len(seen_b) == len(model.history_["iteration"])
    for key, values in model.history_.items():
        np.testing.assert_array_equal([record[key] for record in seen_a], values)
    # train_loss is in the units of the data given (100 M), not the normalized ones
    assert seen_a[0]["train_loss"] == pytest.approx(0.5 * np.sum((100 * M)[mask] ** 2), rel=1e-3)


def test_any_callback_stops_and_all_are_called(problem):
    M, mask = problem
    calls = []

    def stop_at_60(record):
        calls.append(("stop", record["iteration"]))
        return record["iteration"] >= 60

    def watch(record):
        calls.append(("watch", record["iteration"]))

    model = DeepMatrixCompleter(rank=3, callbacks=(stop_at_60, watch), random_state=0).fit(M, mask)
    assert model.n_iter_ == 60 and model.stop_reason_ == "callback" and not model.converged_
    assert calls[-2:] == [("stop", 60), ("watch", 60)]


def test_stop_reasons(problem):
    M, mask = problem
    assert DeepMatrixCompleter(rank=3, tol=1e-3, random_state=0).fit(M, mask).stop_reason_ == "tol"
    with pytest.warns(ConvergenceWarning):
        model = DeepMatrixCompleter(rank=3, max_iter=15, random_state=0).fit(M, mask)
    assert model.stop_reason_ == "max_iter" and model.n_iter_ == 15


def test_verbose_2_prints_every_record(problem, capsys):
    M, mask = problem
    model = _quiet_fit(DeepMatrixCompleter(rank=3, max_iter=50, record_every=10, verbose=2,
                                           random_state=0), M, mask, ground_truth=M)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(model.history_["iteration"]) == 6
    assert lines[-1].startswith("iteration=50 ") and "recovery_error=" in lines[-1]


def test_verbose_1_shows_a_progress_bar(problem, capsys):
    pytest.importorskip("tqdm", reason="tqdm not installed: the bar falls back to lines")
    M, mask = problem
    _quiet_fit(DeepMatrixCompleter(rank=3, max_iter=40, verbose=True, random_state=0),
               M, mask, ground_truth=M)
    err = capsys.readouterr().err
    assert "40/40" in err and "train_loss=" in err and "recovery_error=" in err


def test_verbose_1_without_tqdm_prints_lines(problem, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # import fails as if not installed
    M, mask = problem
    _quiet_fit(DeepMatrixCompleter(rank=3, max_iter=40, verbose=1, random_state=0), M, mask)
    lines = capsys.readouterr().out.strip().splitlines()
    # the first record and the final one; records in between are throttled to one per 5 s
    assert lines[0].startswith("iteration=0 ") and lines[-1].startswith("iteration=40 ")


@pytest.mark.parametrize("verbose", [3, -1, "yes", 1.0])
def test_bad_verbose(problem, verbose):
    M, mask = problem
    with pytest.raises(ValueError, match="verbose must be"):
        DeepMatrixCompleter(verbose=verbose).fit(M, mask)


def test_bad_callbacks(problem):
    M, mask = problem
    with pytest.raises(TypeError, match="callbacks must be"):
        DeepMatrixCompleter(callbacks=[print, 3]).fit(M, mask)


def _interrupt_at(iteration, times=1):
    def callback(record):
        if record["iteration"] == iteration:
            for _ in range(times):
                signal.raise_signal(signal.SIGINT)
    return callback


def test_ctrl_c_stops_cleanly_with_the_state_reached(problem):
    M, mask = problem
    with pytest.warns(FitInterruptedWarning, match="interrupted at step 31"):
        model = DeepMatrixCompleter(rank=3, record_every=10, callbacks=_interrupt_at(30),
                                    random_state=0).fit(M, mask, ground_truth=M)
    assert model.stop_reason_ == "interrupted" and not model.converged_
    assert model.n_iter_ == 31 and model.history_["iteration"][-1] == 31
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    # the state returned is the state after exactly 31 steps
    reference = _quiet_fit(DeepMatrixCompleter(rank=3, max_iter=31, random_state=0), M, mask)
    np.testing.assert_array_equal(model.transform(), reference.transform())


def test_second_ctrl_c_raises_at_once(problem):
    M, mask = problem
    with pytest.raises(KeyboardInterrupt):
        DeepMatrixCompleter(rank=3, callbacks=_interrupt_at(20, times=2), random_state=0).fit(M, mask)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ratings_fit_interrupted_keeps_best_state_and_skips_refit():
    rng = np.random.default_rng(0)
    users, items = np.divmod(rng.choice(40 * 30, 500, replace=False), 30)
    ratings = rng.integers(1, 6, users.size).astype(float)
    # interrupted at step 200, after the validation RMSE turned up (best at step 140)
    with pytest.warns(FitInterruptedWarning):
        model = RatingsCompleter(rank=4, max_iter=500, callbacks=_interrupt_at(200),
                                 random_state=0).fit(users, items, ratings)
    assert model.stop_reason_ == "interrupted" and model.n_iter_ == 201
    val = model.history_["validation_rmse"]
    assert model.best_iter_ < 200 and val[-1] > val.min()
    # the state kept is the best one of the first run, not refitted: the same as an
    # uninterrupted run without refit that stops at the best step
    reference = _quiet_fit(RatingsCompleter(rank=4, max_iter=model.best_iter_, n_iter_no_change=10**6,
                                            refit=False, random_state=0), users, items, ratings)
    np.testing.assert_allclose(model.predict(users, items), reference.predict(users, items),
                               rtol=0, atol=1e-10)
    np.testing.assert_allclose(model.row_factors_, reference.row_factors_, rtol=0, atol=1e-10)


def test_real_ctrl_c_in_a_subprocess():
    """SIGINT from outside (as a terminal sends it) ends the fit; the script carries on."""
    script = textwrap.dedent("""
        import sys, warnings
        from dmc import DeepMatrixCompleter
        from dmc.datasets import make_low_rank
        M, mask = make_low_rank((60, 60), 3, 0.3, random_state=0)
        started = lambda record: print("started", flush=True) if record["iteration"] == 50 else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = DeepMatrixCompleter(rank=4, max_iter=10**7, tol=0, callbacks=started,
                                        random_state=0).fit(M, mask)
        print("stopped", model.stop_reason_, model.n_iter_ > 50, [w.category.__name__ for w in caught])
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT,
                               env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    try:
        assert process.stdout.readline().strip() == "started"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert out.strip() == "stopped interrupted True ['FitInterruptedWarning']"
