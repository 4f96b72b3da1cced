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

is at most ``tol``, or when ``callback`` returns True, or after
``max_iter`` steps (then a :class:`ConvergenceWarning` is issued).  Stopping
is checked only at recorded steps (every ``record_every`` steps), which keeps
GPU backends free of per-step host synchronisation.  A relative-change
criterion is deliberately not used: deep factorizations started near zero
spend long plateaus with almost constant loss before each singular value is
learned, and such a rule would stop them on the first plateau.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

__all__ = ["ConvergenceWarning", "DivergenceError", "SolverResult", "gradient_descent"]


class ConvergenceWarning(UserWarning):
    """The fit reached ``max_iter`` before meeting ``tol``."""


class DivergenceError(FloatingPointError):
    """The loss became non-finite or blew up: the step size is too large."""


@dataclass
class SolverResult:
    factors: object
    history: dict
    n_iter: int
    converged: bool
    stopped_by_callback: bool = False
    extra: dict = field(default_factory=dict)


def _as_float(x) -> float:
    return float(x.item() if hasattr(x, "item") else x)


# Overflow between records is reported as a DivergenceError with advice at the
# next record, not as NumPy RuntimeWarnings from deep inside a step.
@np.errstate(over="ignore", invalid="ignore")
def gradient_descent(
    factors,
    loss_and_gradients,
    step_sizes,
    *,
    max_iter,
    tol,
    observed_norm,
    record_every=10,
    recovery_error=None,
    callback=None,
    start_time=None,
    verbose=False,
):
    """Run gradient descent ``f <- f - step * grad f`` factor by factor.

    Parameters
    ----------
    factors : DeepFactors
        Updated in place.
    loss_and_gradients : callable
        ``factors -> (loss, DeepFactors of gradients)``.
    step_sizes : sequence of float
        One step size per factor, in the order of ``factors.arrays()``.
    max_iter : int
    tol : float
        Relative-residual tolerance (module docstring).
    observed_norm : float
        ``sqrt(sum over Omega M_ij^2)``, the denominator of the residual.
    record_every : int
        Steps between history records and stopping checks.
    recovery_error : callable, optional
        ``factors -> float``, recorded as ``recovery_error``.
    callback : callable, optional
        ``(record, factors) -> bool``, called at every record with the
        record (a dict) and the current factors (read-only); True stops the
        fit.  Early stopping on held-out data and keeping the best state are
        built on this hook.
    start_time : float, optional
        ``time.perf_counter()`` value that history times count from (so that
        initialization time is included); default now.  Time spent computing
        ``recovery_error`` is excluded from the recorded times.
    verbose : bool

    Returns
    -------
    SolverResult
    """
    start_time = time.perf_counter() if start_time is None else start_time
    records = {"iteration": [], "time": [], "train_loss": []}
    if recovery_error is not None:
        records["recovery_error"] = []
    first_loss = None
    evaluation_seconds = 0.0
    converged = stopped = False
    arrays = factors.arrays()
    iteration = 0
    while True:
        loss, grads = loss_and_gradients(factors)
        if iteration % record_every == 0 or iteration == max_iter:
            loss_value = _as_float(loss)  # the only host synchronisation
            first_loss = loss_value if first_loss is None else first_loss
            if not math.isfinite(loss_value) or loss_value > 1e8 * max(first_loss, 1e-300):
                raise DivergenceError(
                    f"training diverged at step {iteration} (loss {loss_value:.3g}, "
                    f"initially {first_loss:.3g}); use a smaller lr (the step size "
                    f"used was {step_sizes[1] if len(step_sizes) > 2 else step_sizes[0]:.3g})."
                )
            record = {"iteration": iteration,
                      "time": time.perf_counter() - start_time - evaluation_seconds,
                      "train_loss": loss_value}
            if recovery_error is not None:
                evaluation_start = time.perf_counter()
                record["recovery_error"] = float(recovery_error(factors))
                # the dense product behind the error is monitoring, not training
                evaluation_seconds += time.perf_counter() - evaluation_start
            for key, value in record.items():
                records[key].append(value)
            if verbose:
                print(" ".join(f"{k}={v:.6g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in record.items()))
            if math.sqrt(2.0 * loss_value) <= tol * observed_norm:
                converged = True
            elif callback is not None and callback(record, factors):
                stopped = True
            if converged or stopped or iteration == max_iter:
                break
        for array, grad, step in zip(arrays, grads.arrays(), step_sizes):
            if step != 0.0:
                array -= step * grad
        iteration += 1
    history = {key: np.asarray(values, dtype=np.int64 if key == "iteration" else np.float64)
               for key, values in records.items()}
    if not (converged or stopped):
        warnings.warn(
            f"gradient descent stopped at max_iter={max_iter} before the relative "
            f"residual on the observed entries reached tol={tol:g} (it is "
            f"{math.sqrt(2.0 * history['train_loss'][-1]) / observed_norm:.3g}); "
            "raise max_iter or tol, or check lr.",
            ConvergenceWarning,
            stacklevel=3,
        )
    return SolverResult(factors, history, iteration, converged, stopped)
