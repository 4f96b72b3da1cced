"""``DeepMatrixCompleter``: the scikit-style front door of dmc."""

from __future__ import annotations

import copy
import math
import time
import warnings

import numpy as np

from . import models, steps, subspace
from ._base import BaseCompleter, check_callbacks, check_verbose, is_int, is_real, solver_callbacks
from ._early_stopping import EarlyStopping, validation_split
from .backend import (compute_threads, dtype_name, make_pattern, observed_triplets,
                      resolve_backend, to_namespace, to_numpy)
from .datasets import _rng
from .exceptions import not_fitted
from .metrics import check_factor_pair, factor_recovery_error, recovery_error, rmse
from .observations import Observations
from .refresh import RefreshSchedule, SubspaceRefresh
from .solver import ConvergenceWarning, gradient_descent

__all__ = ["DeepMatrixCompleter"]

_METHODS = ("compressed", "original", "narrow")
_DTYPES = ("float32", "float64")
# normalize=True rescales M to this spectral norm.  The outer factors'
# gradients scale differently from the inner ones', so the effective
# discrepancy of the step sizes, and with it the speed of the final phase,
# depends on the data's scale; 10 (the scale of a 100 x 100 Gaussian-recipe
# matrix) took 10,400 steps to recovery error 1e-6 on 100 x 100 (rank 3 of
# 10, 30%) and 6,300 on 1000 x 1000 (rank 5, 20%), against 20,500 and 6,900
# at scale 1 and 13,000 on the first at scale 63.
_REFERENCE_SCALE = 10.0
# the outer factors' step ratio of the lr-based step rules; step_rule="auto"
# takes the preconditioned rule (which has its own) only while gamma is this
_DEFAULT_GAMMA = 0.05
# step_rule="auto" takes the preconditioned rule only from starts this small
# (at depth 3, init_scale 1e-3 and 1e-2 converged; 0.1 diverged or stalled)
_PRECONDITIONED_MAX_INIT = 1e-2

# normalize=False trains on the raw values: the loss (their squares, summed) and
# the gradients must stay well inside float64, and the step-size estimate and
# init_scale assume values not far from order one; 2**-64 .. 2**64 (about
# 5e-20 .. 2e19) leaves margin both ways
_RAW_EXPONENT_RANGE = (-64, 64)


def _check_raw_range(exponent):
    """With ``normalize=False``, max |M| (in ``[2**(exponent-1), 2**exponent)``) must be moderate."""
    low, high = _RAW_EXPONENT_RANGE
    if not low < exponent <= high:
        raise ValueError(
            f"observed values of magnitude about 2**{exponent - 1} = {math.ldexp(1.0, exponent - 1):.3g} "
            f"are outside the range normalize=False supports, max |M| in [{math.ldexp(1.0, low):.3g}, "
            f"{math.ldexp(1.0, high):.3g}): without normalization the loss (squares of the raw "
            "values) and the gradients leave float64's range or the steps stall. Use "
            "normalize=True (the default), which fits any finite magnitude, or rescale the data.")


def _check_output_range(max_abs, float_name):
    """The fitted model is held in ``float_name``: it must hold values of size ``max_abs``."""
    info = np.finfo(float_name)
    low, high = float(info.tiny), float(info.max) / 16  # normal numbers, with room for the fit's overshoot
    if not low <= max_abs <= high:
        raise ValueError(
            f"observed values up to {max_abs:.3g} do not fit the model's dtype {float_name}: "
            f"the largest observed magnitude must lie in [{low:.3g}, {high:.3g}] (normal "
            f"{float_name} numbers, with room for the fit to overshoot)"
            + ("; fit in float64." if float_name != "float64" else "; rescale the data."))


# a fit that ends at max_iter with a relative residual on the observed entries
# above _NOISY_RESIDUAL, past the initial plateau, that fell by less than
# _STALLED over the second half of the fit is not slowly converging to an exact low-rank fit: it sits at the
# data's noise floor (or they are far from low rank), and the warning points
# to early stopping
_NOISY_RESIDUAL, _STALLED = 1e-2, 0.9
# early stopping ends a fit only once the training loss has fallen by this much
# (relative) since the best validation record (_after_plateau)
_PLATEAU_PROGRESS = 0.01


def _split_observations(obs, validation_fraction, rng):
    """``(train, validation)`` parts of ``obs``, split by :func:`validation_split`."""
    keep = validation_split(obs.values.size, validation_fraction, rng, what="observed entries")
    return tuple(Observations(obs.shape, obs.observed_rows[part], obs.observed_cols[part],
                              obs.values[part]) for part in (keep, ~keep))


def _after_plateau(stopper, rule=None, record_every=1, progress=_PLATEAU_PROGRESS):
    """``stopper``, but never on a plateau of the training loss.

    It starts at the first record whose training loss is below 90% of the
    first one: on the initial plateau of a small start nothing is learned yet
    and the validation error may not improve for many records.  After that it
    stops only when the training loss has also fallen by at least ``progress``
    (relative) since the best validation record: a fit that stopped improving
    on held-out entries while it learned nothing on the training entries is on
    a plateau between singular directions (the incremental learning of a small
    start), not fitting noise, and may still improve.  Under the adaptive rule
    such plateaus were flat to 1e-5 and thousands of steps long on a noisy
    smooth field (256 x 200, 30%), where the unguarded stopper ended the fit
    on the first one at 0.58 error (benchmarks/README.md, section
    "approximate_low_rank"); overfitting lowered the training loss by far
    more than 1% over the same patience.

    With a :class:`dmc.steps.SwitchOnStall` ``rule`` that has not switched yet, the
    stopper also waits ``rule.window`` more steps: a plateau of the first rule is
    what the switch is for, and the second rule may still improve on it.
    """
    first, at_best = [], []
    waiting = isinstance(rule, steps.SwitchOnStall)

    def callback(record, state):
        loss = record["train_loss"]
        if not first:
            first.append(loss)
        if not loss < 0.9 * first[0]:
            return False
        stop = bool(stopper(record, state))
        if stopper.records_since_best == 0 or not at_best:  # this record is the new best
            at_best[:] = [loss]
        if stop and not loss <= (1.0 - progress) * at_best[0]:
            return False  # a plateau: nothing learned since the best state, so nothing overfitted
        if stop and waiting and not rule.switched:
            extra = stopper.records_since_best - stopper.patience
            stop = extra * record_every >= rule.window
        return stop
    return callback


def _rule_label(rule):
    """``step_rule_``: a rule's name, or the class name of a step rule object (saved as text)."""
    return rule if isinstance(rule, str) else type(rule).__name__


def _max_iter_message(max_iter, tol, residual, early_stopping, train_loss, preconditioned=False,
                      on_plateau=False):
    """The ConvergenceWarning of a fit that reached ``max_iter``, with what to try.

    ``train_loss`` is the recorded loss history (its second half tells a
    stalled fit from one still descending); ``preconditioned`` says whether
    the fit already used :class:`dmc.steps.PreconditionedStep`; ``on_plateau``
    (early stopping only) that the validation RMSE had stopped improving but
    the training loss had not fallen either (:func:`_after_plateau`).
    """
    if early_stopping and on_plateau:
        advice = ("" if preconditioned else
                  ', or try step_rule="preconditioned" (no plateau per singular direction)')
        return (f"the validation RMSE had not improved for n_iter_no_change records at "
                f"max_iter={max_iter}, but the training loss had not fallen by 1% either: a "
                f"plateau between singular directions (or a fit that has converged), not "
                f"overfitting, so early stopping let it go on (the best state so far was kept). "
                f"Raise max_iter if the fit may still leave the plateau{advice}.")
    if early_stopping:
        return (f"the validation RMSE still improved within the last n_iter_no_change records "
                f"at max_iter={max_iter}; raise max_iter (the best state so far was kept).")
    message = (f"gradient descent stopped at max_iter={max_iter} before the relative residual "
               f"on the observed entries reached tol={tol:g} (it is {residual:.3g}); raise "
               "max_iter or tol, or check lr.")
    with np.errstate(divide="ignore", invalid="ignore"):
        # past the initial plateau (the residual has halved) and no longer descending
        stalled = (math.sqrt(train_loss[-1] / train_loss[len(train_loss) // 2]) > _STALLED
                   and train_loss[-1] < 0.25 * train_loss[0])
    if residual > _NOISY_RESIDUAL and stalled:
        message += (" A residual this far above tol usually means noisy data, which no "
                    "low-rank model fits exactly: fitting longer fits the noise. Try "
                    "early_stopping=True (stops at the best error on held-out entries), or "
                    "dmc.RatingsCompleter for (user, item, rating) data.")
        if not preconditioned:
            # an exact but ill-conditioned matrix stalls the same way (each small
            # singular direction waits on its own plateau under the adaptive rule)
            message += (" If the data are (nearly) exactly low rank with singular values "
                        "spread over decades, the fit is waiting for its small directions "
                        "instead: try step_rule=\"preconditioned\" (with early_stopping=True "
                        "on noisy data).")
    return message


def _rescaled(factors, scale):
    """The same factorization times ``scale``, spread evenly over the inner
    factors (or over left and right at depth 2) to keep the factors balanced."""
    if scale == 1.0:
        return factors
    spread = factors.inner if factors.inner else [factors.left, factors.right]
    share = scale ** (1.0 / len(spread))
    for array in spread:
        array *= share
    return factors


def _factor_truth_metric(pair, scale, backend, dtype):
    """The recovery error against ``M* = A @ B.T`` (on the fit's scale), from factors only."""
    root = math.sqrt(scale)  # (A / root)(B / root)^T = M* / scale
    A, B = (to_namespace(factor, backend, dtype) / root for factor in pair)

    def metric(f):
        product = models.inner_product(f.inner)
        return factor_recovery_error(f.left if product is None else f.left @ product, f.right, A, B)
    return metric


class DeepMatrixCompleter(BaseCompleter):
    """Matrix completion by a deep factorization trained with gradient descent.

    The default ``method="compressed"`` trains ``X = U Wt_L ... Wt_1 V^T``
    with ``k = 2 * rank`` columns, ``U`` and ``V`` taken from the truncated
    SVD of the initial gradient (Yaras et al., ICML 2024), on the observed
    entries only: each step costs O(|Omega| k + (m + n) k^2).

    Parameters
    ----------
    rank : int, default=10
        Rank budget ``rhat``; the model width is ``2 * rank``.  It may
        overestimate the true rank: the implicit low-rank bias of depth >= 3
        keeps the extra directions near zero.  Needs ``2 * rank <= min(m, n)``.
    depth : int, default=3
        Number of factors ``L`` in the deep product (>= 2).  For
        ``"compressed"`` these are the ``L`` inner ``k x k`` factors.
    method : {"compressed", "original", "narrow"}, default="compressed"
        ``"original"``: the wide, dense overparameterized model (width
        ``max(m, n)`` or ``width``), O(L d^3) per step, the reference.
        ``"narrow"``: the same depth at width ``2 * rank`` from a random
        orthogonal start.
    init_scale : float, default=1e-3
        ``eps``: every factor starts at ``eps`` times an orthogonal matrix.
    lr : "auto" or float, default="auto"
        Step size for the loss ``1/2 * sum over Omega (X_ij - M_ij)^2`` (the
        plain sum, not a mean; the paper's step 5e3 on its loss divided by
        ``m*n`` is 5e-3 here at 1000 x 1000), on the normalized data when
        ``normalize=True``.  ``"auto"`` derives it from
        the top singular value of the initial gradient so that the default
        works at any size and scale (see
        :func:`dmc.models.spectral_step_size`); the value used is ``lr_``.
    gamma : float, default=0.05
        Step size ratio of the outer factors ``U, V`` to the inner ones
        (``"compressed"`` only).  ``gamma=0`` freezes the subspace.  The
        paper uses 0.01; 0.05 reached the same recovery in about a third of
        the steps once the plateau is skipped (choosing-parameters docs).
    step_rule : {"auto", "adaptive", "preconditioned", "switching", "constant"} or step rule, default="auto"
        How gradients become steps (:mod:`dmc.steps`).  ``"auto"``
        (``step_rule_`` says what it chose): for ``"compressed"``,
        ``"preconditioned"`` at depth 3 from ``init_scale <= 1e-2`` where
        the data are well sampled (the sparsest tenth of the rows and
        columns aside, every one holds at least ``4 * rank`` observed
        entries; :func:`dmc.steps.well_sampled`), ``"switching"`` there
        with ``2 * rank`` to ``4 * rank`` entries, and
        ``"adaptive"`` otherwise, in distributed fits or with ``lr`` or
        ``gamma`` set (they size the adaptive and constant rules' steps; the
        preconditioned rule has its own and rejects them); ``"constant"``
        for the wide models.  Why: on well-sampled
        matrices whose singular values are spread out (real data: a dominant
        direction and a decaying tail) the adaptive rule learns one
        direction per plateau and plateaus grow with the condition number,
        while the preconditioned one does not (benchmarks/README.md,
        "Conditioning"); with few observations per row it recovers less.
        ``"switching"``: adaptive until the fit stalls, then preconditioned
        with the subspace refresh (:class:`dmc.steps.SwitchOnStall`; a fit
        that does not stall follows the adaptive rule exactly).
        ``"adaptive"``: one common scalar step,
        large while the factors are tiny, capped by the stability limit at
        the current scale, ``lr`` at the end, with heavy-ball momentum 0.5;
        it stays on the gradient-flow path of plain gradient descent (the
        same completed matrix) without the initial plateau.  ``"preconditioned"``: damped Gram preconditioning of each
        factor, for matrices with spread-out singular values (its path
        differs; with few observations it recovers less).  ``"constant"``:
        the paper's plain gradient descent, ``lr`` and ``gamma * lr``
        (``"auto"`` for ``"original"`` and ``"narrow"``).  An object with
        ``init``, ``update`` and ``step_size`` methods is used as given.
        The step taken is recorded in ``history_["step_size"]``.
    refresh_every : "auto", int or None, default="auto"
        Steps between subspace refreshes (:mod:`dmc.refresh`, compressed
        model only): the inner chain is rebalanced and directions that never
        grew are re-aimed at the top singular pairs of the current residual,
        which is where gradient descent from a tiny start would grow the next
        direction; on matrices whose small singular directions the initial
        gradient misses, this replaces a plateau per direction.  Once the
        relative residual is below 1e-5 the never-grown directions are also
        pruned, so that exact fits reach ``tol``.  ``"auto"``: with
        ``step_rule="preconditioned"``, every 100 steps and as soon as the
        fit stalls (:class:`dmc.refresh.RefreshSchedule`); never otherwise
        (with the adaptive rule it was measured not to help) and never in
        distributed fits (not implemented there yet).  An integer: every
        that many steps, with any step rule.  ``None``: never.
    width : int, optional
        Width of the ``"original"`` model; default ``max(m, n)``.
    normalize : bool, default=True
        Fit ``M / s`` instead of ``M``, with ``s = (s_1 / p) / 10``: ``s_1 / p``
        estimates ``||M||_2`` from the initial gradient's top singular value
        ``s_1`` and the observed fraction ``p``, so the fitted data has
        spectral norm about 10 (``s`` is stored as ``scale_``); predictions
        are scaled back.  Gradient descent from a small start is not scale
        invariant: the time to escape the start grows like
        ``(||M||_2^(1/L) / init_scale)^(L-2)``, so normalizing makes
        ``init_scale``, ``lr`` and ``tol`` act the same on ratings, pixel
        values or unit-variance data.  ``False`` fits ``M`` as given, which is
        the paper's setting (its ``eps`` is absolute); use it to reproduce
        the paper's step counts.  With ``True`` any finite data whose largest
        observed magnitude is a normal float64 number (2.2e-308 to 1.1e307)
        fits: the initial SVD works on the values divided by a power of two
        near their largest magnitude.  ``False`` accepts largest magnitudes
        in [5.4e-20, 1.8e19] (the raw loss and steps need moderate values)
        and raises ValueError outside it.
    max_iter : int, default=20000
        Maximum number of gradient steps.
    tol : float, default=1e-7
        Stop when ``||P_Omega(X - M)||_F / ||P_Omega(M)||_F <= tol``, checked
        every ``record_every`` steps (see :mod:`dmc.solver`).
    record_every : int, default=10
        Steps between history records and stopping checks.
    callbacks : callable or list of callables, optional
        Each is called at every record (every ``record_every`` steps) with
        the record, a dict with the keys of ``history_`` (``iteration``,
        ``time``, ``train_loss`` in the units of M, ``recovery_error`` when
        tracked); a true return value stops the fit (``stop_reason_ ==
        "callback"``).  Callbacks are not saved by :meth:`save`.
    verbose : int or bool, default=0
        0: silent.  1 (or True): a progress bar with the loss and recovery
        error (tqdm, installed by ``dmc[progress]``; without it a line every
        5 seconds).  2: a line per record.  Ctrl-C during a fit stops it
        cleanly whatever ``verbose`` is: the state reached so far is kept
        (``stop_reason_ == "interrupted"``) and a
        :class:`dmc.solver.FitInterruptedWarning` is issued.
    backend : {"auto", "numpy", "torch", "cupy"}, default="auto"
        Array library the fit runs in.  ``"auto"`` follows the input (NumPy
        for lists and scipy.sparse); the others convert the input.  Fitted
        factors, ``transform()`` and ``predict()`` are arrays of this
        library on ``device``; pass ``as_numpy=True`` to get NumPy copies.
        Histories are always NumPy.
    device : str, optional
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default: the input's device
        with ``"auto"``, else the CPU (torch) or GPU 0 (cupy).
    dtype : {"float32", "float64"} or None, default=None
        Default: the input's float dtype; integers become the backend's
        default float (float64 for NumPy and CuPy, ``torch.get_default_dtype()``
        for torch).
    random_state : int, numpy Generator or None
        Seeds every random draw (orthogonal operator, SVD start vector,
        random initializations).  All draws happen on the host in NumPy, so
        a seed gives the same initialization on every backend.  With
        ``early_stopping=True`` it also chooses the validation entries.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the observed entries (never
        trained on), record their RMSE as ``history_["validation_rmse"]``,
        stop after ``n_iter_no_change`` records without a better value and
        restore the factors of the best one (``best_iter_``).  Use it on
        noisy data (measurements, ratings), where fitting to ``tol`` fits
        the noise; exact low-rank data need no validation split.  It does
        not stop on a plateau between singular directions: the stop also
        needs the training loss to have fallen by 1% since the best record
        (overfitting lowers it, a plateau does not; on MovieLens u1 as a
        sparse matrix at rank 10 this took test RMSE from 0.963 to 0.933,
        in about ten times the steps).  With the switching step rule it
        also waits, before the switch, one stall window (1,000 steps)
        longer: on a plateau of the adaptive rule the switch is still to
        come.
    validation_fraction : float, default=0.1
        Share of the observed entries held out with ``early_stopping``, in
        (0, 1).
    n_iter_no_change : int, default=50
        Records (every ``record_every`` steps) without a better validation
        RMSE before stopping, with ``early_stopping``.  Patience matters:
        the factorization learns directions one after another and the
        validation RMSE can rise for a few hundred steps while one is
        learned (on MovieLens 100K at rank 10, for about 400 steps before
        falling well below its earlier minimum), so the default waits 500
        steps at ``record_every=10``.
    distributed : bool, default=False
        Fit inside an initialized ``torch.distributed`` process group (e.g.
        under ``torchrun``), with ``backend="torch"`` and
        ``method="compressed"``: every process passes to ``fit`` a matrix of
        the global shape holding only its own observed entries (any
        partition), and every process ends with the same full model, equal
        to the single-process fit on all the entries up to rounding.
        ``device=None`` follows the local rank on CUDA (NCCL) and is the CPU
        with gloo.  See :mod:`dmc.distributed` and the "Distributed fits"
        page of the documentation.

    Notes
    -----
    Initialization (the truncated SVD of the sparse initial gradient) runs
    once per fit in SciPy on a host copy of the observed entries, O(|Omega|)
    bytes; the training loop then runs entirely on the backend's device and
    synchronises with the host only every ``record_every`` steps.

    Attributes
    ----------
    shape_ : tuple of int
    scale_ : float
        The divisor applied to M before fitting (1.0 when ``normalize=False``).
    lr_ : float
        Step size of the inner factors actually used.
    step_rule_ : str
        The step rule used: ``step_rule`` with ``"auto"`` resolved to
        ``"preconditioned"``, ``"adaptive"`` or ``"constant"``; for a step
        rule object, its class name.
    initial_singular_values_ : ndarray
        Top singular values of the initial gradient ``G0`` (``rank`` of them
        for ``"compressed"``, one otherwise).
    left_factor_, inner_factors_, right_factor_ : ndarrays
        ``X = left_factor_ @ inner_factors_[-1] @ ... @ inner_factors_[0]
        @ right_factor_.T``.
    history_ : dict of 1-D ndarrays
        ``iteration``, ``time`` (seconds since fit started, initialization
        included, recovery-error evaluation excluded), ``train_loss`` (in the units of M),
        ``step_size`` (the inner factors' step on the normalized problem), with
        ``ground_truth``, ``recovery_error``, and with ``early_stopping``,
        ``validation_rmse`` (on the held-out entries, in the units of M).
    n_iter_ : int
        Gradient steps taken.
    best_iter_ : int
        Steps of the state kept: the best validation RMSE with
        ``early_stopping``, else ``n_iter_``.
    converged_ : bool
        Whether ``tol`` was met.
    stop_reason_ : {"tol", "early_stopping", "callback", "max_iter", "interrupted"}
        Why the fit ended.
    row_offsets_ : ndarray of shape (P + 1,)
        Distributed fits only: process ``r`` owned rows
        ``row_offsets_[r]:row_offsets_[r + 1]`` of ``left_factor_`` while
        training (blocks balanced by observed entries).

    Examples
    --------
    >>> from dmc import DeepMatrixCompleter
    >>> from dmc.datasets import make_low_rank
    >>> M, mask = make_low_rank((100, 100), rank=3, observed_fraction=0.3, random_state=0)
    >>> model = DeepMatrixCompleter(rank=5, random_state=0).fit(M, mask, ground_truth=M)
    >>> bool(model.history_["recovery_error"][-1] < 1e-5)
    True
    """

    _backend_state = ("left_factor_", "inner_factors_", "right_factor_")

    def __init__(self, rank=10, *, depth=3, method="compressed", init_scale=1e-3,
                 lr="auto", gamma=_DEFAULT_GAMMA, step_rule="auto", refresh_every="auto", width=None, normalize=True, max_iter=20000,
                 tol=1e-7, record_every=10, callbacks=None, verbose=0,
                 backend="auto", device=None, dtype=None, random_state=None,
                 early_stopping=False, validation_fraction=0.1, n_iter_no_change=50,
                 distributed=False):
        self.rank = rank
        self.depth = depth
        self.method = method
        self.init_scale = init_scale
        self.lr = lr
        self.gamma = gamma
        self.step_rule = step_rule
        self.refresh_every = refresh_every
        self.width = width
        self.normalize = normalize
        self.max_iter = max_iter
        self.tol = tol
        self.record_every = record_every
        self.callbacks = callbacks
        self.verbose = verbose
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.random_state = random_state
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.distributed = distributed

    # -- validation ----------------------------------------------------------
    def _check_params(self, shape):
        m, n = shape
        if not is_int(self.rank) or self.rank < 1:
            raise ValueError(f"rank must be a positive integer; got {self.rank!r}.")
        if 2 * self.rank > min(m, n):
            raise ValueError(
                f"rank={self.rank} is too large for a {m} x {n} matrix: the model "
                f"width 2 * rank must be <= min(m, n) = {min(m, n)}. Use rank <= {min(m, n) // 2}."
            )
        if not is_int(self.depth) or self.depth < 2:
            raise ValueError(f"depth must be an integer >= 2; got {self.depth!r}.")
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}; got {self.method!r}.")
        if not is_real(self.init_scale) or not self.init_scale > 0 or not np.isfinite(self.init_scale):
            raise ValueError(f"init_scale must be a positive finite number; got {self.init_scale!r}.")
        if isinstance(self.lr, str):
            if self.lr != "auto":
                raise ValueError(f'lr must be "auto" or a positive number; got {self.lr!r}.')
        elif not is_real(self.lr) or not self.lr > 0 or not np.isfinite(self.lr):
            raise ValueError(f'lr must be "auto" or a positive number; got {self.lr!r}.')
        if not is_real(self.gamma) or not self.gamma >= 0 or not np.isfinite(self.gamma):
            raise ValueError(f"gamma must be a number >= 0; got {self.gamma!r}.")
        if self.step_rule != "auto":
            rule = self._step_rule()
            if steps.is_preconditioned(rule) and (self.lr != "auto" or self.gamma != _DEFAULT_GAMMA):
                name, value = ("lr", self.lr) if self.lr != "auto" else ("gamma", self.gamma)
                raise ValueError(
                    f"{name}={value!r} has no effect with the preconditioned step rule (its steps "
                    "are fractions of the Newton step, see dmc.steps.PreconditionedStep); leave "
                    f"{name} at its default, or choose step_rule=\"adaptive\" or \"constant\" "
                    "to set it.")
            if self.method != "compressed" and not isinstance(rule, steps.ConstantStep):
                raise ValueError(
                    f'step_rule={self.step_rule!r} applies to method="compressed" only; the '
                    f'{self.method} model trains with step_rule="constant" (or "auto").')
        if not (self.refresh_every in ("auto", None)
                or (is_int(self.refresh_every) and self.refresh_every >= 1)):
            raise ValueError(f'refresh_every must be "auto", None or a positive integer; got '
                             f"{self.refresh_every!r}.")
        if self.method != "compressed" and self.refresh_every not in ("auto", None):
            raise ValueError(f'refresh_every applies to method="compressed" only; got '
                             f"refresh_every={self.refresh_every!r} with method={self.method!r}.")
        if not isinstance(self.normalize, (bool, np.bool_)):
            raise TypeError(f"normalize must be True or False; got {self.normalize!r}.")
        if self.width is not None and (not is_int(self.width) or self.width < 1):
            raise ValueError(f"width must be None or a positive integer; got {self.width!r}.")
        if not is_int(self.max_iter) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer; got {self.max_iter!r}.")
        if not is_real(self.tol) or not self.tol >= 0:
            raise ValueError(f"tol must be a number >= 0; got {self.tol!r}.")
        if not is_int(self.record_every) or self.record_every < 1:
            raise ValueError(f"record_every must be a positive integer; got {self.record_every!r}.")
        if self.dtype is not None and dtype_name(self.dtype) not in _DTYPES:
            raise ValueError(f'dtype must be None, "float32" or "float64"; got {self.dtype!r}.')
        if not isinstance(self.early_stopping, (bool, np.bool_)):
            raise TypeError(f"early_stopping must be True or False; got {self.early_stopping!r}.")
        if not is_real(self.validation_fraction) or not 0 < self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be a number in (0, 1); got "
                             f"{self.validation_fraction!r}.")
        if not is_int(self.n_iter_no_change) or self.n_iter_no_change < 1:
            raise ValueError(f"n_iter_no_change must be a positive integer; got "
                             f"{self.n_iter_no_change!r}.")
        check_callbacks(self.callbacks)
        check_verbose(self.verbose)

    # -- fitting -------------------------------------------------------------
    def _initialize(self, obs, rng, exponent=0):
        """Initial factors and the top singular value(s) of the initial gradient.

        ``obs`` holds the observed values divided by ``2**exponent`` (exactly:
        a power of two), so that they are of order one whatever the data's
        magnitude and ARPACK / LAPACK never see values near float64's limits;
        the singular values returned are in the same unit.  The initial
        gradient is that of the problem trained on: ``P_Omega(E0 - M / c)``
        with ``normalize`` (``c = 2**exponent``, within a factor of 2 of max
        |M|, as the normalized problem is), ``P_Omega(E0 - M) / c`` without.
        """
        shape, L, eps = obs.shape, self.depth, self.init_scale
        if self.method == "compressed":
            q = subspace.RandomOrthogonal(shape, rng)
            e0 = eps**L if self.normalize else math.ldexp(eps**L, -exponent)
            G0 = subspace.initial_gradient(obs, q, e0)
            spectrum = subspace.top_singular_triplets(G0, self.rank, rng)
            U, V = subspace.invariant_subspace(spectrum, q, rng)
            factors = models.init_compressed(U, V, L, eps)
        else:
            width = 2 * self.rank if self.method == "narrow" else (self.width or max(shape))
            factors = models.init_wide(shape, L, width, eps, rng)
            # E0 is ~eps**L: negligible for a step-size estimate
            spectrum = subspace.top_singular_triplets(obs.to_csr(), 1, rng)
        return factors, spectrum.singular_values

    def fit(self, M, mask=None, *, ground_truth=None):
        """Fit the deep factorization to the observed entries of M.

        Parameters
        ----------
        M : array-like of shape (m, n) or scipy.sparse matrix
            Dense values with ``mask``, dense with NaN for missing entries, or
            a sparse matrix whose stored entries (zeros included) are the
            observed ones.
        mask : array-like of bool, shape (m, n), optional
            True = observed.
        ground_truth : array-like of shape (m, n) or tuple (A, B), optional
            The full matrix, or a factor pair with ``M* = A @ B.T`` (``A``
            m x r, ``B`` n x r, arrays of any backend); when given,
            ``history_["recovery_error"]`` is recorded.  A dense truth forms
            the dense product at each record; a factor pair costs
            O((m + n)(k + r)^2) per record and forms nothing of size m x n
            (:func:`dmc.metrics.factor_recovery_error`).

        Returns
        -------
        self
        """
        if not isinstance(self.distributed, (bool, np.bool_)):
            raise TypeError(f"distributed must be True or False; got {self.distributed!r}.")
        if self.distributed:  # the process-group logic lives in dmc.distributed
            from .distributed import fit_distributed

            if self.early_stopping or self.refresh_every not in ("auto", None):
                raise ValueError(
                    "distributed=True does not support early_stopping=True or an explicit "
                    "refresh_every yet (the validation split and the subspace refresh are "
                    "single-process); leave them at their defaults.")

            for name, value in fit_distributed(self, M, mask, ground_truth=ground_truth).items():
                setattr(self, name, value)
            return self
        start = time.perf_counter()
        backend = resolve_backend(M, self.backend, self.device)
        obs, input_dtype = observed_triplets(M, mask)
        self._check_params(obs.shape)
        if not np.any(obs.values):
            raise ValueError("all observed values are zero: there is no signal to complete "
                             "(the zero matrix fits them exactly).")
        if isinstance(ground_truth, tuple):
            check_factor_pair(ground_truth, obs.shape)
        elif ground_truth is not None:
            if tuple(ground_truth.shape if hasattr(ground_truth, "shape")
                     else np.shape(ground_truth)) != obs.shape:
                raise ValueError(
                    f"ground_truth has shape {tuple(np.shape(to_numpy(ground_truth)))} but M has "
                    f"shape {obs.shape}; pass the full matrix M is sampled from."
                )
        float_name = (dtype_name(self.dtype) if self.dtype is not None
                      else input_dtype or dtype_name(backend.default_float()))
        dtype = backend.float_dtype(float_name)
        rng = _rng(self.random_state)
        if self.early_stopping:  # the validation entries never reach the fit below
            obs, validation = _split_observations(obs, self.validation_fraction, rng)
        # the data's magnitude as a power of two: max |M| in [2**(exponent-1), 2**exponent)
        values = obs.values.astype(np.float64)
        exponent = math.frexp(float(np.max(np.abs(values))))[1]
        if not self.normalize:
            _check_raw_range(exponent)
        _check_output_range(float(np.max(np.abs(values))), float_name)
        unit_obs = Observations(obs.shape, obs.observed_rows, obs.observed_cols,
                                np.ldexp(values, -exponent))  # exact
        factors, unit_singular_values = self._initialize(unit_obs, rng, exponent)
        p = obs.observed_fraction
        # scale / 2**exponent; the scale itself is formed once, so it may lie anywhere in float64
        relative = (float(unit_singular_values[0] / p / _REFERENCE_SCALE) if self.normalize
                    else math.ldexp(1.0, -exponent))
        try:
            scale = math.ldexp(relative, exponent)  # exactly 1.0 without normalize
        except OverflowError:  # math.ldexp raises where np.ldexp would give inf
            scale = math.inf
        if not (math.isfinite(scale) and scale > 0.0):
            raise ValueError(
                f"observed values up to {float(np.max(np.abs(values))):.3g} are too large to "
                "normalize: the scale s_1 / p / 10 (s_1 the top singular value of the observed "
                f"matrix, p the observed fraction) exceeds float64's maximum "
                f"{np.finfo(np.float64).max:.3g}; divide the data by a constant first.")
        with np.errstate(over="ignore"):  # in units of M: may overflow past 1e307 (reported as inf)
            singular_values = np.ldexp(unit_singular_values, exponent)
        obs = Observations(obs.shape, obs.observed_rows, obs.observed_cols,
                           (unit_obs.values / relative).astype(float_name))
        # C order: row gathers on the observed pattern are several times faster
        factors = models.DeepFactors.from_arrays(
            [to_namespace(np.ascontiguousarray(a, dtype=float_name), backend)
             for a in factors.arrays()])
        lr = (models.spectral_step_size(unit_singular_values[0] / relative, p, self.depth)
              if self.lr == "auto" else float(self.lr))
        per_line = obs.sparse_line_count()
        rule = self._step_rule(per_line)
        context = steps.StepContext(
            lr=lr, outer_ratio=self.gamma if self.method == "compressed" else 1.0,
            target_scale=float(unit_singular_values[0] / relative / p), observed_fraction=p,
            xp=backend.xp, observed_per_line=per_line)

        if self.method == "original":
            observed_mask = to_namespace(obs.mask().astype(float_name), backend)
            filled = np.zeros(obs.shape, dtype=float_name)
            filled[obs.observed_rows, obs.observed_cols] = obs.values
            filled = to_namespace(filled, backend)

            def loss_and_gradients(f):
                return models.dense_loss_and_gradients(f, observed_mask, filled)
        else:
            pattern = make_pattern(obs, dtype, backend)
            values = to_namespace(obs.values, backend)

            def loss_and_gradients(f):
                return models.sparse_loss_and_gradients(f, pattern, values)

        schedule = self._refresh_schedule(rule)
        refresh = None if schedule is None else SubspaceRefresh(
            lambda A, B: pattern.residual_products(A, B, values), backend.xp, schedule=schedule,
            observed_fraction=p, random_state=rng)

        metrics = {}
        if isinstance(ground_truth, tuple):
            metrics["recovery_error"] = _factor_truth_metric(ground_truth, scale, backend, dtype)
        elif ground_truth is not None:
            truth = to_namespace(ground_truth, backend, dtype) / scale
            if not bool(backend.xp.all(backend.xp.isfinite(truth))):
                raise ValueError("ground_truth must be finite everywhere (it is the full matrix).")

            metrics["recovery_error"] = lambda f: recovery_error(models.end_to_end(f), truth)
        callbacks = solver_callbacks(self.callbacks)
        if self.early_stopping:
            v_rows, v_cols = (to_namespace(i.astype(np.int64), backend)
                              for i in (validation.observed_rows, validation.observed_cols))
            v_values = np.ldexp(validation.values.astype(np.float64), -exponent) / relative
            metrics["validation_rmse"] = lambda f: scale * rmse(to_numpy(models.predict_entries(
                f, v_rows, v_cols, backend.xp)), v_values)  # in the units of M
            stopper = EarlyStopping("validation_rmse", self.n_iter_no_change)
            callbacks.insert(0, _after_plateau(stopper, rule, self.record_every))

        with compute_threads(backend), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # re-issued below, with advice
            result = gradient_descent(
                factors, loss_and_gradients, rule, context=context, max_iter=self.max_iter,
                tol=self.tol, observed_norm=float(np.linalg.norm(obs.values)),
                record_every=self.record_every, metrics=metrics,
                callbacks=callbacks, loss_unit=scale * scale,  # inf (not OverflowError) past 1e154
                start_time=start, verbose=int(self.verbose), refresh=refresh,
            )
        patience_spent = self.early_stopping and stopper.records_since_best >= stopper.patience
        if result.stop_reason == "max_iter":
            warnings.warn(_max_iter_message(self.max_iter, self.tol, result.residual,
                                            self.early_stopping,
                                            result.history["train_loss"],
                                            steps.is_preconditioned(rule), patience_spent),
                          ConvergenceWarning, stacklevel=2)
        self.best_iter_ = result.n_iter
        if self.early_stopping and stopper.best_state is not None:
            if patience_spent and result.stop_reason == "callback":
                result.stop_reason = "early_stopping"
            result.factors, self.best_iter_ = stopper.best_state, stopper.best_iter
        self.shape_ = obs.shape
        self.backend_ = backend
        self.scale_ = scale
        self.lr_ = lr
        self.step_rule_ = _rule_label(self._step_rule_name(per_line))
        self.initial_singular_values_ = np.asarray(singular_values)
        fitted = _rescaled(result.factors, scale)
        self.left_factor_ = fitted.left
        self.inner_factors_ = list(fitted.inner)
        self.right_factor_ = fitted.right
        self.history_ = result.history
        self.n_iter_ = result.n_iter
        self.converged_ = result.converged
        self.stop_reason_ = result.stop_reason
        return self

    def _step_rule_name(self, observed_per_line=None):
        """The step rule ``"auto"`` stands for (a name), or ``step_rule`` as given.

        Compressed fits on well-sampled data (:func:`dmc.steps.well_sampled`:
        every row and column but the sparsest tenth holds at least twice the
        width ``k = 2 * rank``) take the preconditioned rule, whose step count
        does not grow with the condition number; with k to 2k entries the
        switching rule (adaptive until the fit stalls); sparser fits the
        adaptive one, which recovers more from few observations; distributed
        fits the adaptive one (the subspace refresh the preconditioned rule
        needs on spread-out spectra is not distributed yet), and so do fits
        with a numeric ``lr`` or another ``gamma``, which the preconditioned
        rule has no use for.  The preconditioned rule is tuned for depth 3
        from a small start: at depth 2 it diverged, at depth 4 from
        ``init_scale=1e-3`` it never left the start, and from 0.1 it diverged
        or stalled (100 x 100 at 50% and 300 x 250 at 30%, kappa 1 / 10 /
        100), so other depths and larger starts keep the adaptive rule.
        """
        if self.step_rule != "auto":
            return self.step_rule
        if self.method != "compressed":
            return "constant"
        if (self.lr == "auto" and self.gamma == _DEFAULT_GAMMA and not self.distributed
                and self.depth == 3 and self.init_scale <= _PRECONDITIONED_MAX_INIT):
            k = 2 * self.rank
            if steps.well_sampled(observed_per_line, k):
                return "preconditioned"
            if steps.well_sampled(observed_per_line, k, per_column=1):
                # measured: no worse than adaptive on 60 random problems in this band,
                # and recovered 39 that it did not (steps.SwitchOnStall)
                return "switching"
        return "adaptive"

    def _step_rule(self, observed_per_line=None):
        """The step rule object of this fit (``"auto"`` resolved for ``observed_per_line``).

        A step rule object is copied: a rule may keep per-fit state on itself
        (:class:`dmc.steps.SwitchOnStall`), and fitting must not change a parameter.
        """
        name = self._step_rule_name(observed_per_line)
        return steps.make_step_rule(name if isinstance(name, str) else copy.deepcopy(name))

    def _refresh_schedule(self, rule):
        """When this fit refreshes its subspace (a RefreshSchedule), or None for never."""
        if self.method != "compressed" or self.distributed:  # not distributed yet
            return None
        if self.refresh_every == "auto":
            # every 100 steps and on stalls: see RefreshSchedule for the measurements
            active = None
            if isinstance(rule, steps.SwitchOnStall):  # from the switch on, for its second rule
                switching, rule = rule, rule.second
                active = lambda: switching.switched  # noqa: E731
            return (RefreshSchedule(100, stall_window=20, active=active)
                    if steps.is_preconditioned(rule) else None)
        if self.refresh_every is None:
            return None
        return RefreshSchedule(self.refresh_every, stall_window=None)

    # -- using the fit -------------------------------------------------------
    def _check_fitted(self):
        if not hasattr(self, "left_factor_"):
            raise not_fitted(self, "fit(M, mask)")

    def _factors(self):
        self._check_fitted()
        return models.DeepFactors(self.left_factor_, self.inner_factors_, self.right_factor_)

    def get_low_rank_factors(self, *, as_numpy=False):
        """``(row_factors, column_factors)`` with ``X = row_factors @ column_factors.T``.

        ``row_factors`` is m x k and ``column_factors`` n x k (``k = 2 * rank``
        for the compressed and narrow models): the compact form of the
        completed matrix for problems too large to hold densely.  Arrays of
        the fit's backend, or NumPy copies with ``as_numpy=True``.
        """
        f = self._factors()
        product = models.inner_product(f.inner)
        factors = (f.left if product is None else f.left @ product), f.right
        return tuple(to_numpy(a) for a in factors) if as_numpy else factors

    def transform(self, *, as_numpy=False):
        """The completed dense m x n matrix (backend array, or NumPy with ``as_numpy``)."""
        X = models.end_to_end(self._factors())
        return to_numpy(X) if as_numpy else X

    def fit_transform(self, M, mask=None, **fit_params):
        """``fit(M, mask, **fit_params).transform()``."""
        return self.fit(M, mask, **fit_params).transform()

    def predict(self, rows, cols, *, as_numpy=False):
        """Completed values at index pairs ``(rows[i], cols[i])``, without the dense matrix.

        Parameters
        ----------
        rows, cols : array-like of int, same length
            NumPy arrays, lists or arrays of the fit's backend.
        as_numpy : bool, default=False

        Returns
        -------
        values : array of shape (len(rows),)
            In the fit's backend; NumPy with ``as_numpy=True``.
        """
        self._check_fitted()
        rows, cols = to_numpy(rows), to_numpy(cols)
        if rows.shape != cols.shape or rows.ndim != 1:
            raise ValueError(f"rows and cols must be 1-D and equally long; got shapes {rows.shape} and {cols.shape}.")
        for name, index, size in (("rows", rows, self.shape_[0]), ("cols", cols, self.shape_[1])):
            if index.size and index.dtype.kind not in "iu":
                raise TypeError(f"{name} must hold integers; got dtype {index.dtype}.")
            if index.size and (index.min() < 0 or index.max() >= size):
                raise ValueError(f"{name} must lie in [0, {size}); got values in [{index.min()}, {index.max()}].")
        backend = self.backend_
        values = models.predict_entries(
            self._factors(), to_namespace(rows.astype(np.int64), backend),
            to_namespace(cols.astype(np.int64), backend), backend.xp)
        return to_numpy(values) if as_numpy else values

    def score(self, M, mask=None):
        """Negative root mean squared error on the observed entries of ``M``.

        Use it on entries held out from ``fit``: higher is better, as
        scikit-learn's model selection expects (the ``neg_root_mean_squared_error``
        convention).

        Parameters
        ----------
        M : array-like of shape (m, n) or sparse matrix
            In any form ``fit`` accepts; its observed entries are scored.
        mask : array-like of bool, shape (m, n), optional
            True = scored.

        Returns
        -------
        float
            ``-sqrt(mean over the observed (i, j) of (X_ij - M_ij)^2)``.
        """
        self._check_fitted()
        obs, _ = observed_triplets(M, mask)
        if obs.shape != self.shape_:
            raise ValueError(f"M has shape {obs.shape} but the model was fitted on shape "
                             f"{self.shape_}; score entries of the same matrix.")
        predicted = self.predict(obs.observed_rows, obs.observed_cols, as_numpy=True)
        return -rmse(predicted, obs.values)
