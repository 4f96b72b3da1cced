"""dmc.solver.gradient_descent on problems whose iterates are known in closed form.

A quadratic ``1/2 ||x - t||^2`` with constant step ``s`` has the iterates
``x_k = t + (1 - s)^k (x_0 - t)``, so records, stopping steps and returned
state can be computed by hand.  Times come from a fake clock (one tick per
call to ``time.perf_counter``), so the time bookkeeping is checked exactly,
without timing anything.  Found by mutation testing (tools/mutation.py).
"""

import math
import re
import signal
import sys
import types
import warnings

import numpy as np
import pytest

from dmc import solver
from dmc.solver import (ConvergenceWarning, DivergenceError, FitInterruptedWarning, SolverResult,
                        gradient_descent)


class Factors:
    def __init__(self, *arrays):
        self._arrays = [np.array(a, dtype=float) for a in arrays]  # copies

    def arrays(self):
        return self._arrays


def quadratic(targets):
    """``1/2 sum ||x_i - t_i||^2``; the gradients are fresh arrays each call."""
    def loss_and_gradients(factors):
        diffs = [a - t for a, t in zip(factors.arrays(), targets)]
        return 0.5 * sum(float(np.sum(d * d)) for d in diffs), Factors(*diffs)
    return loss_and_gradients


def scripted(losses):
    """Returns the given losses in turn, with zero gradients."""
    it = iter(losses)

    def loss_and_gradients(factors):
        return next(it), Factors(*[np.zeros_like(a) for a in factors.arrays()])
    return loss_and_gradients


@pytest.fixture
def clock(monkeypatch):
    """``time.perf_counter`` in dmc.solver replaced by a counter (+1 per call)."""
    state = {"now": 0.0}

    def perf_counter():
        state["now"] += 1.0
        return state["now"]
    monkeypatch.setattr(solver, "time", types.SimpleNamespace(perf_counter=perf_counter))
    return state


def run(factors, loss_and_gradients, steps, **kwargs):
    kwargs.setdefault("tol", 0.0)
    kwargs.setdefault("observed_norm", 1.0)
    kwargs.setdefault("max_iter", 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gradient_descent(factors, loss_and_gradients, steps, **kwargs)


def test_constant_steps_give_the_closed_form_iterates():
    x0, t = np.array([3.0, -1.0]), np.array([1.0, 1.0])
    y0, u = np.array([[2.0]]), np.array([[0.0]])
    factors = Factors(x0, y0)
    result = run(factors, quadratic([t, u]), [0.25, 0.5], max_iter=7, record_every=3)
    assert isinstance(result, SolverResult) and result.factors is factors
    assert result.n_iter == 7 and result.stop_reason == "max_iter" and not result.converged
    np.testing.assert_allclose(factors.arrays()[0], t + 0.75**7 * (x0 - t), rtol=1e-13)
    np.testing.assert_allclose(factors.arrays()[1], u + 0.5**7 * (y0 - u), rtol=1e-13)
    h = result.history
    np.testing.assert_array_equal(h["iteration"], [0, 3, 6, 7])
    assert h["iteration"].dtype == np.int64 and h["train_loss"].dtype == np.float64
    expected = [0.5 * (0.75 ** (2 * k) * 8.0 + 0.5 ** (2 * k) * 4.0) for k in (0, 3, 6, 7)]
    np.testing.assert_allclose(h["train_loss"], expected, rtol=1e-13)
    np.testing.assert_array_equal(h["step_size"], [0.25] * 4)  # first factor: no inner one
    assert set(h) == {"iteration", "time", "train_loss", "step_size"}


def test_step_size_recorded_is_the_inner_factors():
    result = run(Factors([1.0], [1.0], [1.0]), quadratic([[0.0]] * 3), [0.1, 0.2, 0.3], max_iter=1)
    np.testing.assert_array_equal(result.history["step_size"], [0.2, 0.2])


def test_zero_step_leaves_a_factor_untouched():
    factors = Factors([5.0], [5.0])
    run(factors, quadratic([[0.0], [0.0]]), [0.0, 0.5], max_iter=3)
    np.testing.assert_array_equal(factors.arrays()[0], [5.0])
    np.testing.assert_allclose(factors.arrays()[1], [5.0 * 0.5**3])


def test_stops_at_the_first_record_meeting_tol():
    # x_k = 0.5^k; residual sqrt(2 loss) = 0.5^k <= tol * norm = 0.1 * 0.5 first at k = 5
    result = run(Factors([1.0]), quadratic([[0.0]]), [0.5], tol=0.1, observed_norm=0.5,
                 max_iter=100, record_every=1)
    assert result.stop_reason == "tol" and result.converged and result.n_iter == 5
    np.testing.assert_allclose(result.factors.arrays()[0], [0.5**5])
    # recorded every 2 steps: first record below is k = 6
    result = run(Factors([1.0]), quadratic([[0.0]]), [0.5], tol=0.1, observed_norm=0.5,
                 max_iter=100, record_every=2)
    assert result.n_iter == 6
    np.testing.assert_array_equal(result.history["iteration"], [0, 2, 4, 6])


def test_tol_boundary_is_inclusive():
    # loss 2 -> sqrt(2 * 2) = 2 = tol * norm exactly: stops at step 0
    result = run(Factors([0.0]), scripted([2.0, 2.0]), [0.0], tol=0.5, observed_norm=4.0)
    assert result.stop_reason == "tol" and result.n_iter == 0


def test_loss_unit_scales_the_record_not_the_stopping_rule():
    result = run(Factors([1.0]), quadratic([[0.0]]), [0.5], tol=0.1, observed_norm=0.5,
                 max_iter=100, record_every=1, loss_unit=4.0)
    assert result.n_iter == 5
    np.testing.assert_allclose(result.history["train_loss"], [4.0 * 0.5 * 0.25**k for k in range(6)])


def test_max_iter_warns_with_the_residual():
    # x_4 = 4 / 16, residual sqrt(2 * loss) / norm = 0.25 / 4, whatever loss_unit
    with pytest.warns(ConvergenceWarning, match=r"max_iter=4 .* \(it is 0\.0625\)"):
        result = gradient_descent(Factors([4.0]), quadratic([[0.0]]), [0.5], max_iter=4, tol=1e-9,
                                  observed_norm=4.0, record_every=10, loss_unit=9.0)
    assert result.stop_reason == "max_iter" and result.n_iter == 4
    np.testing.assert_array_equal(result.history["iteration"], [0, 4])


def test_max_iter_zero_records_once():
    result = run(Factors([1.0]), quadratic([[0.0]]), [0.5], max_iter=0)
    assert result.n_iter == 0
    np.testing.assert_array_equal(result.history["iteration"], [0])
    np.testing.assert_array_equal(result.factors.arrays()[0], [1.0])


def test_metrics_and_callbacks_see_every_record():
    seen_a, seen_b = [], []

    def a(record, factors):
        seen_a.append(record)
        record["iteration"] = -1  # a copy: must not reach the history
        return False

    def b(record, factors):
        seen_b.append((record["iteration"], float(factors.arrays()[0][0])))
        return record["iteration"] >= 4

    result = run(Factors([1.0]), quadratic([[0.0]]), [0.5], max_iter=50, record_every=2,
                 metrics={"x": lambda f: f.arrays()[0][0] * 10}, callbacks=[a, b])
    assert result.stop_reason == "callback" and result.n_iter == 4
    np.testing.assert_array_equal(result.history["iteration"], [0, 2, 4])
    np.testing.assert_allclose(result.history["x"], [10.0, 2.5, 0.625])
    assert [r["iteration"] for r in seen_a] == [-1, -1, -1]
    assert seen_b == [(0, 1.0), (2, 0.25), (4, 0.0625)]
    assert all(set(r) == {"iteration", "time", "train_loss", "step_size", "x"} for r in seen_a)


def test_tol_wins_over_a_callback_and_callback_over_max_iter():
    result = run(Factors([0.0]), quadratic([[0.0]]), [0.5], tol=0.1, callbacks=[lambda r, f: True])
    assert result.stop_reason == "tol"
    result = run(Factors([1.0]), quadratic([[0.0]]), [0.5], max_iter=0, callbacks=[lambda r, f: True])
    assert result.stop_reason == "callback"


def test_times_count_from_start_time_and_exclude_metrics(clock):
    def slow_metric(factors):
        clock["now"] += 100.0
        return 0.0

    result = run(Factors([1.0]), quadratic([[0.0]]), [0.5], max_iter=2, record_every=1,
                 metrics={"m": slow_metric}, start_time=-5.0)
    # each record reads the clock once for its time and twice around the metrics
    # (which add 100 each); the metric time is subtracted again
    times = result.history["time"]
    assert times[0] == 1.0 + 5.0
    np.testing.assert_array_equal(np.diff(times), [2.0, 2.0])


def test_default_start_time_is_now(clock):
    result = run(Factors([1.0]), quadratic([[0.0]]), [0.5], max_iter=0)
    assert result.history["time"][0] == 1.0  # start at tick 1, first record at tick 2


@pytest.mark.parametrize("losses", [[1.0, 1.0, math.inf], [1.0, 1.0, math.nan], [2.0, 2.0, 2.0e8 + 1.0]])
def test_divergence_is_an_error(losses):
    with pytest.raises(DivergenceError, match="training diverged at step 2"):
        run(Factors([0.0]), scripted(losses), [0.1], record_every=2)


def test_divergence_threshold_is_1e8_times_the_first_loss():
    result = run(Factors([0.0]), scripted([2.0, 2.0e8, 2.0e8]), [0.1], max_iter=2, record_every=1)
    assert result.stop_reason == "max_iter"
    with pytest.raises(DivergenceError):
        run(Factors([0.0]), scripted([2.0, 2.0e8 * (1 + 1e-12)]), [0.1], max_iter=2, record_every=1)
    # the threshold follows the first recorded loss, not the latest
    result = run(Factors([0.0]), scripted([1.0, 1.0e7, 1.0e8]), [0.1], max_iter=2, record_every=1)
    assert result.stop_reason == "max_iter"


def test_divergence_advice_depends_on_the_rule():
    from dmc.steps import ConstantStep, Momentum

    with pytest.raises(DivergenceError, match=r"use a smaller lr\. The step size used was 0\.1"):
        run(Factors([0.0]), scripted([1.0, math.inf]), ConstantStep([0.1]), record_every=1)

    class Rule:
        def init(self, factors, context):
            return 0

        def update(self, factors, grads, state):
            return [None], state

        def step_size(self, state):
            return 0.5

    advice = ('use step_rule="constant" or a smaller lr (adaptive steps can overshoot where a few '
              "observed entries per row or column make the loss much sharper than lr assumes). "
              "The step size used was 0.5.")
    with pytest.raises(DivergenceError, match=re.escape(advice) + "$"):
        run(Factors([0.0]), scripted([1.0, math.inf]), Rule(), record_every=1)
    assert Momentum  # imported for the rule types the advice distinguishes


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
def test_a_diverging_preconditioned_fit_points_to_the_adaptive_rule():
    # measured: the preconditioned rule diverges at depth 2 (100 x 100, rank 5,
    # 50% observed, step 600); lr does not size its steps, so the advice names
    # the adaptive rule instead, and the advice works
    from dmc import DeepMatrixCompleter
    from dmc.datasets import make_low_rank

    M, mask = make_low_rank((100, 100), 5, 0.5, random_state=0)
    with pytest.raises(DivergenceError, match=r'use step_rule="adaptive" \(the preconditioned'):
        DeepMatrixCompleter(rank=10, depth=2, step_rule="preconditioned", max_iter=3000,
                            random_state=0).fit(M, mask)
    fit = DeepMatrixCompleter(rank=10, depth=2, step_rule="adaptive", max_iter=3000,
                              random_state=0).fit(M, mask)
    assert np.linalg.norm(fit.transform() - M) / np.linalg.norm(M) < 1e-3


def test_step_rule_receives_the_context():
    seen = {}

    class Rule:
        def init(self, factors, context):
            seen["context"] = context
            return {"n": 0}

        def update(self, factors, grads, state):
            state["n"] += 1
            return [g * 0.5 for g in grads.arrays()], state

        def step_size(self, state):
            return float(state["n"])

    result = run(Factors([1.0]), quadratic([[0.0]]), Rule(), context="ctx", max_iter=3, record_every=1)
    assert seen["context"] == "ctx"
    np.testing.assert_array_equal(result.history["step_size"], [1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(result.factors.arrays()[0], [0.125])


def _interrupting(at, times=1):
    """Sends ``times`` SIGINTs during step ``at``."""
    inner = quadratic([[0.0]])
    calls = {"n": 0}

    def loss_and_gradients(factors):
        if calls["n"] == at:
            for _ in range(times):
                signal.raise_signal(signal.SIGINT)
        calls["n"] += 1
        return inner(factors)
    return loss_and_gradients


@pytest.fixture
def sigint_default():
    """SIGINT at Python's default handler, as in a terminal (a runner started in
    the background ignores SIGINT, and the solver then leaves it alone)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_finishes_the_step_and_records_it(sigint_default):
    with pytest.warns(FitInterruptedWarning, match="fit interrupted at step 3"):
        result = gradient_descent(Factors([1.0]), _interrupting(3), [0.5], max_iter=100, tol=0.0,
                                  observed_norm=1.0, record_every=50)
    assert result.stop_reason == "interrupted" and result.n_iter == 3
    np.testing.assert_array_equal(result.history["iteration"], [0, 3])
    np.testing.assert_allclose(result.factors.arrays()[0], [0.125])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_ignored_sigint_is_left_alone():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        seen = []

        def loss_and_gradients(factors):
            seen.append(signal.getsignal(signal.SIGINT))
            return quadratic([[0.0]])(factors)
        run(Factors([1.0]), loss_and_gradients, [0.5], max_iter=1)
        assert seen == [signal.SIG_IGN, signal.SIG_IGN]
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigint_deferred_only_in_the_main_thread(sigint_default):
    import threading

    seen = []

    def loss_and_gradients(factors):
        seen.append(signal.getsignal(signal.SIGINT))
        return quadratic([[0.0]])(factors)
    run(Factors([1.0]), loss_and_gradients, [0.5], max_iter=0)
    assert seen[0] is not signal.default_int_handler  # the solver's handler
    out = []
    thread = threading.Thread(target=lambda: out.append(
        run(Factors([1.0]), quadratic([[0.0]]), [0.5], max_iter=2).n_iter))
    thread.start()
    thread.join()
    assert out == [2]


def test_second_ctrl_c_raises(sigint_default):
    with pytest.raises(KeyboardInterrupt):
        gradient_descent(Factors([1.0]), _interrupting(2, times=2), [0.5], max_iter=100, tol=0.0,
                         observed_norm=1.0, record_every=1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_verbose_2_prints_every_record(capsys, clock):
    run(Factors([1.0]), quadratic([[0.0]]), [0.5], max_iter=2, record_every=1, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split() for line in lines] == [
        ["iteration=0", "time=1", "train_loss=0.5", "step_size=0.5"],
        ["iteration=1", "time=4", "train_loss=0.125", "step_size=0.5"],  # 3 ticks a record
        ["iteration=2", "time=7", "train_loss=0.03125", "step_size=0.5"]]


def test_line_progress_prints_at_most_every_interval(capsys, clock):
    progress = solver._LineProgress(3.0)
    for i in range(6):  # clock reads 1, 2, ... on each update; 3 s apart is enough
        progress.update({"iteration": i})
    progress.update({"iteration": 99}, final=True)
    assert capsys.readouterr().out.split() == ["iteration=0", "iteration=3", "iteration=99"]


def test_line_progress_flushes_each_line(monkeypatch):
    """Lines must reach a pipe or log file as they are printed, not at exit."""
    class Stream:
        def __init__(self):
            self.events = []

        def write(self, text):
            self.events.append("write")

        def flush(self):
            self.events.append("flush")
    stream = Stream()
    monkeypatch.setattr(sys, "stdout", stream)
    solver._LineProgress(0.0).update({"iteration": 1})
    assert stream.events[-1] == "flush"


def test_record_format():
    assert solver._format_record({"iteration": 1234567, "loss": 0.1234567891, "name": "a"}) == \
        "iteration=1234567 loss=0.123457 name=a"


class FakeTqdm:
    """Records what _BarProgress asks of tqdm (the real one needs a terminal thread)."""
    instances = []

    def __init__(self, **kwargs):
        self.kwargs, self.n, self.postfixes, self.closed = kwargs, 0, [], False
        FakeTqdm.instances.append(self)

    def update(self, n):
        self.n += n

    def set_postfix(self, postfix, refresh):
        self.postfixes.append((postfix, refresh))

    def close(self):
        self.closed = True


def test_verbose_1_uses_the_tqdm_bar(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", types.SimpleNamespace(tqdm=FakeTqdm))
    progress = solver._progress(1, 40)
    assert type(progress) is solver._BarProgress and progress.bar is FakeTqdm.instances[-1]
    assert progress.bar.kwargs["total"] == 40


def test_bar_progress_drives_tqdm():
    bar = solver._BarProgress(FakeTqdm, 50)
    fake = FakeTqdm.instances[-1]
    assert fake.kwargs == {"total": 50, "unit": "step", "dynamic_ncols": True, "leave": True}
    bar.update({"iteration": 10, "time": 1.0, "train_loss": 0.5, "x": 2.0})
    bar.update({"iteration": 30, "time": 2.0, "train_loss": 0.25, "x": 1.0}, final=True)
    assert fake.n == 30
    assert fake.postfixes == [({"train_loss": "5.000e-01", "x": "2.000e+00"}, False),
                              ({"train_loss": "2.500e-01", "x": "1.000e+00"}, True)]
    with bar:
        pass
    assert fake.closed


def test_verbose_1_without_tqdm_is_lines_every_5_seconds(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    progress = solver._progress(1, 10)
    assert type(progress) is solver._LineProgress and progress.interval == 5.0
    assert type(solver._progress(2, 10)) is solver._LineProgress
    assert solver._progress(2, 10).interval == 0.0
    assert type(solver._progress(0, 10)) is solver._NoProgress


def test_verbose_1_bar_counts_steps(capsys):
    pytest.importorskip("tqdm")
    run(Factors([1.0]), quadratic([[0.0]]), [0.5], max_iter=20, record_every=10, verbose=1)
    err = capsys.readouterr().err
    assert "20/20" in err and "train_loss=" in err and "iteration=" not in err


def test_defaults_record_every_10_and_silent(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = gradient_descent(Factors([1.0]), quadratic([[0.0]]), [0.5], max_iter=25, tol=0.0,
                                  observed_norm=1.0)
    np.testing.assert_array_equal(result.history["iteration"], [0, 10, 20, 25])
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_progress_bar_gets_max_iter_and_final_only_at_the_end(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", types.SimpleNamespace(tqdm=FakeTqdm))
    run(Factors([1.0]), quadratic([[0.0]]), [0.5], max_iter=6, record_every=2, verbose=1)
    bar = FakeTqdm.instances[-1]
    assert bar.kwargs["total"] == 6 and bar.n == 6 and bar.closed
    assert [refresh for _, refresh in bar.postfixes] == [False, False, False, True]


def test_step_rule_sees_the_factors_being_trained():
    factors = Factors([1.0])
    seen = []

    class Rule:
        def init(self, f, context):
            return None

        def update(self, f, grads, state):
            seen.append(f)
            return [g * 0.5 for g in grads.arrays()], state

        def step_size(self, state):
            return 0.5
    run(factors, quadratic([[0.0]]), Rule(), max_iter=2)
    assert len(seen) == 3 and all(f is factors for f in seen)


def test_divergence_relative_to_a_small_first_loss():
    # first loss 1e-10: 0.1 is a blow-up by 1e9 (threshold 1e8 times the first loss)
    with pytest.raises(DivergenceError, match="training diverged at step 1"):
        run(Factors([0.0]), scripted([1e-10, 0.1]), [0.1], max_iter=2, record_every=1)
