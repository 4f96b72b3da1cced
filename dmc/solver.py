"""Gradient descent with discrepant step sizes, stopping rules and history.

The solver owns the loop and nothing else: it receives the factors, a
function returning ``(loss, gradients)`` and the per-factor step sizes, and
returns the trained factors with a history.  Models, data handling and
backends live elsewhere.

Stopping
--------
The fit stops at the first recorded step where the relative residual on the
observed entries,

    sqrt(sum over Omega (X_ij - M_ij)^2) / sqrt(sum over Omega M_ij^2),

is at most ``tol`` (``stop_reason`` ``"tol"``), when a callback returns a
true value (``"callback"``), after ``max_iter`` steps (``"max_iter"``, with a
:class:`ConvergenceWarning`), or on Ctrl-C (``"interrupted"``, with a
:class:`FitInterruptedWarning`).  Stopping
is checked only at recorded steps (every ``record_every`` steps), which keeps
GPU backends free of per-step host synchronisation.  A relative-change
criterion is deliberately not used: deep factorizations started near zero
spend long plateaus with almost constant loss before each singular value is
learned, and such a rule would stop them on the first plateau.

Interruption
------------
While the loop runs in the main thread, the first Ctrl-C (SIGINT) only sets
a flag: the step under way completes, the state reached is recorded and
returned, and a :class:`FitInterruptedWarning` says so.  A second Ctrl-C
raises ``KeyboardInterrupt`` at once, as usual.  Deferring the signal keeps
the factors consistent: an interrupt between two factor updates would leave
a half-applied step.

Progress
--------
``verbose=1`` shows a progress bar (tqdm, from ``dmc[progress]``) with the
loss and, when tracked, the recovery error; without tqdm it prints a record
line at most every 5 seconds.  ``verbose=2`` prints every record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from .steps import ConstantStep, is_preconditioned

__all__ = ["ConvergenceWarning", "DivergenceError", "FitInterruptedWarning", "SolverResult",
           "gradient_descent"]


class ConvergenceWarning(UserWarning):
    """The fit reached ``max_iter`` before meeting ``tol``."""


class FitInterruptedWarning(UserWarning):
    """The fit was interrupted (Ctrl-C); the state reached so far was kept."""


class DivergenceError(FloatingPointError):
    """The loss became non-finite or blew up: the step size is too large."""


@dataclass
class SolverResult:
    """What :func:`gradient_descent` returns.

    Attributes
    ----------
    factors : object
        The trained factors (the object passed in, updated in place).
    history : dict of 1-D ndarrays
        One entry per record: ``iteration``, ``time``, ``train_loss``,
        ``step_size`` (the inner factors' step taken from that record on)
        and one per metric.
    n_iter : int
        Gradient steps taken.
    stop_reason : {"tol", "callback", "max_iter", "interrupted"}
        Why the loop ended.
    residual : float
        Relative residual ``||P_Omega(X - M)|| / ||P_Omega(M)||`` at the last
        record (from the loss in the fitted units, so it stays finite where
        ``train_loss`` in the data's units overflows).
    """

    factors: object
    history: dict
    n_iter: int
    stop_reason: str
    residual: float = math.nan
    extra: dict = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        """Whether ``tol`` was met."""
        return self.stop_reason == "tol"


def _as_float(x) -> float:
    return float(x.item() if hasattr(x, "item") else x)


@contextlib.contextmanager
def _deferred_interrupt():
    """Turn the first SIGINT into a flag (``flag["set"]``) for the duration.

    Only possible in the main thread and when SIGINT has Python's default
    handler (as in a terminal or a Jupyter cell); elsewhere the flag never
    sets and Ctrl-C raises KeyboardInterrupt as usual.
    """
    flag = {"set": False}
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield flag
        return

    def handler(signum, frame):
        if flag["set"]:  # a second Ctrl-C means now
            raise KeyboardInterrupt
        flag["set"] = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _format_record(record) -> str:
    return " ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in record.items())


class _NoProgress:
    """Silent reporter; the others override ``update`` and ``close``."""

    def update(self, record, final=False):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


class _LineProgress(_NoProgress):
    """One printed line per record, at most one every ``interval`` seconds."""

    def __init__(self, interval):
        self.interval = interval
        self.last = -math.inf

    def update(self, record, final=False):
        now = time.perf_counter()
        if final or now - self.last >= self.interval:
            print(_format_record(record), flush=True)
            self.last = now


class _BarProgress(_NoProgress):
    """A tqdm bar over ``max_iter`` steps with the latest record as postfix."""

    def __init__(self, tqdm, max_iter):
        self.bar = tqdm(total=max_iter, unit="step", dynamic_ncols=True, leave=True)

    def update(self, record, final=False):
        self.bar.update(record["iteration"] - self.bar.n)
        self.bar.set_postfix({k: f"{v:.3e}" for k, v in record.items()
                              if k not in ("iteration", "time")}, refresh=final)

    def close(self):
        self.bar.close()


def _progress(verbose, max_iter):
    """The progress reporter for ``verbose`` (0: none, 1: bar, 2: every record)."""
    if not verbose:
        return _NoProgress()
    if verbose >= 2:
        return _LineProgress(0.0)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the bar is an extra (dmc[progress]); lines still inform
        return _LineProgress(5.0)
    return _BarProgress(tqdm, max_iter)


def _divergence_advice(step_rule):
    """What to try after a divergence, for the rule that diverged."""
    if isinstance(getattr(step_rule, "current", step_rule), ConstantStep):  # SwitchOnStall: in use
        return "use a smaller lr"
    if is_preconditioned(step_rule):
        # lr does not size this rule's steps (DeepMatrixCompleter rejects it there)
        return ('use step_rule="adaptive" (the preconditioned rule\'s Newton-like steps can '
                "overshoot where rows or columns hold few observed entries, or at depths other "
                "than 3)")
    return ('use step_rule="constant" or a smaller lr (adaptive steps can '
            "overshoot where a few observed entries per row or column make "
            "the loss much sharper than lr assumes)")


# Overflow between records is reported as a DivergenceError with advice at the
# next record, not as NumPy RuntimeWarnings from deep inside a step.
@np.errstate(over="ignore", invalid="ignore")
def gradient_descent(
    factors,
    loss_and_gradients,
    step_rule,
    *,
    context=None,
    max_iter,
    tol,
    observed_norm,
    record_every=10,
    metrics=None,
    callbacks=(),
    loss_unit=1.0,
    start_time=None,
    verbose=0,
    refresh=None,
):
    """Run gradient descent ``f <- f - step * grad f`` factor by factor.

    Parameters
    ----------
    factors : DeepFactors
        Updated in place; any object whose ``arrays()`` lists the arrays to
        train in the order of ``step_sizes``.
    loss_and_gradients : callable
        ``factors -> (loss, gradients)``, ``gradients`` with ``arrays()``.
    step_rule : step rule or sequence of float
        How gradients become updates (:mod:`dmc.steps`): an object with
        ``init``, ``update`` and ``step_size``, or one constant step size per
        factor in the order of ``factors.arrays()`` (plain gradient descent).
    context : dmc.steps.StepContext, optional
        Passed to ``step_rule.init``; rules other than constant steps need it.
    max_iter : int
        Maximum number of steps.
    tol : float
        Relative-residual tolerance (module docstring).
    observed_norm : float
        ``sqrt(sum over Omega M_ij^2)``, the denominator of the residual.
    record_every : int
        Steps between history records and stopping checks.
    metrics : dict of callables, optional
        ``name -> (factors -> float)``, evaluated and recorded under
        ``name`` at every record (e.g. ``recovery_error`` against a known
        matrix, a validation RMSE).  Their time is excluded from the
        recorded times.
    callbacks : sequence of callables
        Each called as ``callback(record, factors)`` at every record, with
        the record (a dict) and the current factors (read-only); a true
        return value stops the fit.  Early stopping on held-out data and
        keeping the best state are built on this hook.
    loss_unit : float
        Factor from the loss returned by ``loss_and_gradients`` to the
        ``train_loss`` recorded (an estimator that fits ``M / s`` passes
        ``s**2``); the stopping rule does not depend on it.
    start_time : float, optional
        ``time.perf_counter()`` value that history times count from (so that
        initialization time is included); default now.
    verbose : int
        0: silent; 1: progress bar; 2: a line per record (module docstring).
    refresh : callable, optional
        ``factors -> int`` with an ``every`` attribute: called before every
        ``every``-th step, it may rewrite the factors in place and returns
        how many directions it changed; the step rule then starts afresh
        (its state, such as momentum, belongs to the old factors).  One with
        a ``schedule`` (:class:`dmc.refresh.SubspaceRefresh` and its
        :class:`dmc.refresh.RefreshSchedule`) is called when the schedule
        says so instead, as ``refresh(factors, residual)`` with the last
        recorded relative residual, and the schedule sees every record.

    Returns
    -------
    SolverResult
    """
    start_time = time.perf_counter() if start_time is None else start_time
    if not hasattr(step_rule, "update"):
        step_rule = ConstantStep(step_rule)
    metrics = dict(metrics or {})
    records = {key: [] for key in ("iteration", "time", "train_loss", "step_size", *metrics)}
    first_loss = None
    residual = math.nan
    evaluation_seconds = 0.0
    reason = None
    arrays = factors.arrays()
    rule_state = step_rule.init(factors, context)
    schedule = getattr(refresh, "schedule", None)  # a RefreshSchedule; else every refresh.every
    observe_rule = getattr(step_rule, "observe", None)
    iteration = 0
    with _deferred_interrupt() as interrupt, _progress(verbose, max_iter) as progress:
        while True:
            due = refresh is not None and iteration and (
                schedule.due(iteration) if schedule is not None else iteration % refresh.every == 0)
            if due:
                replaced = refresh(factors, residual) if schedule is not None else refresh(factors)
                resolved = getattr(refresh, "resolved_scale", None)
                if context is not None and resolved != context.resolved_scale:
                    context = dataclasses.replace(context, resolved_scale=resolved)
                    replaced = True
                if replaced:
                    rule_state = step_rule.init(factors, context)
            loss, grads = loss_and_gradients(factors)
            updates, rule_state = step_rule.update(factors, grads, rule_state)
            if (iteration % record_every == 0 or iteration == max_iter or interrupt["set"]):
                loss_value = _as_float(loss)  # the only host synchronisation
                first_loss = loss_value if first_loss is None else first_loss
                if not math.isfinite(loss_value) or loss_value > 1e8 * max(first_loss, 1e-300):
                    advice = _divergence_advice(step_rule)
                    raise DivergenceError(
                        f"training diverged at step {iteration} (loss {loss_value:.3g}, "
                        f"initially {first_loss:.3g}); {advice}. The step size used was "
                        f"{_as_float(step_rule.step_size(rule_state)):.3g}."
                    )
                record = {"iteration": iteration,
                          "time": time.perf_counter() - start_time - evaluation_seconds,
                          "train_loss": loss_value * loss_unit,
                          "step_size": _as_float(step_rule.step_size(rule_state))}
                evaluation_start = time.perf_counter()
                for name, metric in metrics.items():
                    record[name] = float(metric(factors))
                # e.g. the dense product behind a recovery error: monitoring, not training
                evaluation_seconds += time.perf_counter() - evaluation_start
                for key, value in record.items():
                    records[key].append(value)
                residual = math.sqrt(2.0 * loss_value) / observed_norm
                if observe_rule is not None:  # a rule that switches on stalls (steps.SwitchOnStall)
                    observe_rule(iteration, residual)
                if schedule is not None:
                    schedule.observe(iteration, residual)
                if math.sqrt(2.0 * loss_value) <= tol * observed_norm:
                    reason = "tol"
                elif interrupt["set"]:
                    reason = "interrupted"
                elif any([callback(dict(record), factors) for callback in callbacks]):
                    reason = "callback"  # every callback sees every record
                elif iteration == max_iter:
                    reason = "max_iter"
                progress.update(record, final=reason is not None)
                if reason is not None:
                    break
            for array, update in zip(arrays, updates):
                if update is not None:
                    array -= update
            iteration += 1
    history = {key: np.asarray(values, dtype=np.int64 if key == "iteration" else np.float64)
               for key, values in records.items()}
    if reason == "max_iter":
        warnings.warn(
            f"gradient descent stopped at max_iter={max_iter} before the relative "
            f"residual on the observed entries reached tol={tol:g} (it is {residual:.3g}); "
            "raise max_iter or tol, or check lr.",
            ConvergenceWarning,
            stacklevel=3,
        )
    elif reason == "interrupted":
        warnings.warn(
            f"fit interrupted at step {iteration} (Ctrl-C); the state reached so far was "
            "kept. Call fit again to start over.",
            FitInterruptedWarning,
            stacklevel=3,
        )
    return SolverResult(factors, history, iteration, reason, residual)
