"""Distributed fits on ``torch.distributed`` (gloo on CPUs, NCCL on GPUs).

:class:`dmc.DeepMatrixCompleter` with ``backend="torch", distributed=True``
calls :func:`fit_distributed` inside a process group the user initialized
(typically under ``torchrun``).  Each process passes a matrix of the global
shape holding only its own observed entries, in any partition; this module

1. checks collectively that every process fits the same problem
   (:func:`agree`: shape, parameters, dtype, seed) and turns any process's
   failure into the same error on every process (:func:`collectively`);
   the first collective is a monitored barrier with a timeout (gloo), so a
   process that never calls ``fit`` is named instead of waited for;
2. repartitions the entries into row blocks balanced by their number
   (:func:`row_blocks`, :func:`repartition`): each process owns its rows of
   ``U``; ``V`` and the inner factors are replicated;
3. computes the initial truncated SVD distributed: the same ARPACK Lanczos
   call (:func:`scipy.sparse.linalg.svds`, same start vector) as a single
   process, on an operator whose products are the processes' partial
   products summed by all-reduce (:class:`SummedOperator`);
4. trains with one all-reduce per step of ``1 + k^2 + n k`` numbers (the
   loss, ``U^T R V`` and ``R^T A``; :func:`row_block_loss_and_gradients`),
   and all-gathers ``U`` at the end, so every process holds the full model.

Why the distributed fit equals the single-process one: every quantity the
single-process fit computes from all entries is computed here as the same
expression with its sums over entries (or rows) split into per-process
partial sums and all-reduced; random draws happen on the host from the same
seed on every process; replicated factors are broadcast from rank 0 after
the initialization and then receive identical (all-reduced) updates.  The
results differ from a single process's only by the order of floating-point
additions.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import math
import os
import signal
import threading
import warnings

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator

from . import models, steps, subspace
from .observations import Observations

__all__ = ["Communicator", "DistributedError", "SummedOperator", "agree", "collectively",
           "fit_distributed", "initialize_compressed", "local_device", "repartition",
           "require_process_group", "row_blocks", "row_block_loss_and_gradients", "START_TIMEOUT"]

# how long the first collective of a fit waits for the other processes (gloo's
# monitored barrier); DMC_DISTRIBUTED_TIMEOUT (seconds) overrides it
START_TIMEOUT = datetime.timedelta(seconds=300)


class DistributedError(RuntimeError):
    """Another process of a distributed fit failed (its error is quoted)."""


# -- the process group ---------------------------------------------------------------
def _dist():
    try:
        import torch.distributed as dist
    except ImportError as error:
        raise ImportError('distributed=True needs torch: pip install "dmc[torch]"') from error
    return dist


def require_process_group():
    """``torch.distributed``, or a clear error when no process group is initialized."""
    dist = _dist()
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError(
            "distributed=True needs an initialized torch.distributed process group: run under "
            "torchrun (or start the processes yourself) and call "
            "torch.distributed.init_process_group('gloo' or 'nccl') before fit; for one "
            "process, use distributed=False.")
    return dist


def local_device(device=None):
    """The torch device of this process: ``device`` as given, else the local GPU under NCCL.

    ``None`` (or ``"cuda"`` without an index) follows the local rank on CUDA
    (``LOCAL_RANK`` set by torchrun, else the global rank modulo the GPU
    count); with gloo ``None`` means the CPU.
    """
    import torch

    dist = require_process_group()
    nccl = dist.get_backend() == "nccl"
    if device is None and not nccl:
        return torch.device("cpu")
    if device is None or str(device) == "cuda":
        count = max(torch.cuda.device_count(), 1)
        index = int(os.environ.get("LOCAL_RANK", dist.get_rank() % count))
        return torch.device("cuda", index)
    return torch.device(device)


class Communicator:
    """The collectives of a distributed fit, on NumPy arrays and torch tensors.

    Parameters
    ----------
    device : torch.device
        Where tensors travel from: the CPU with gloo, this process's GPU
        with NCCL.
    """

    def __init__(self, device=None):
        import torch

        dist = require_process_group()
        self._dist, self._torch = dist, torch
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.backend = dist.get_backend()
        self.device = torch.device(device) if device is not None else (
            local_device() if self.backend == "nccl" else torch.device("cpu"))
        if self.backend == "nccl" and self.device.type == "cuda":
            torch.cuda.set_device(self.device)

    # NumPy in, NumPy out (host arrays travel through a tensor on the comm device)
    def _tensor(self, array):
        torch = self._torch
        if isinstance(array, torch.Tensor):
            return array, False
        # a copy: collectives work in place and must not write into the caller's array
        tensor = torch.from_numpy(np.array(array, copy=True, order="C")).to(self.device)
        return tensor, True

    def _back(self, tensor, was_numpy):
        return tensor.cpu().numpy() if was_numpy else tensor

    def sum(self, array):
        """Element-wise sum over the processes (all-reduce); a new array or the tensor, summed in place."""
        tensor, was_numpy = self._tensor(np.asarray(array) if not hasattr(array, "dim") else array)
        if self.size > 1:
            self._dist.all_reduce(tensor, op=self._dist.ReduceOp.SUM)
        return self._back(tensor, was_numpy)

    def max(self, array):
        """Element-wise maximum over the processes."""
        tensor, was_numpy = self._tensor(np.asarray(array))
        if self.size > 1:
            self._dist.all_reduce(tensor, op=self._dist.ReduceOp.MAX)
        return self._back(tensor, was_numpy)

    def broadcast(self, array, src=0):
        """Rank ``src``'s copy of ``array`` (same shape and dtype on every process)."""
        tensor, was_numpy = self._tensor(array)
        if self.size > 1:
            self._dist.broadcast(tensor, src=src)
        return self._back(tensor, was_numpy)

    def objects(self, obj):
        """Every process's ``obj`` (picklable), in rank order."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        self._dist.all_gather_object(out, obj)
        return out

    def gather_rows(self, block, counts):
        """The row blocks of all processes stacked in rank order (all-gather).

        ``counts[r]`` is the number of rows of process ``r``; blocks are padded
        to the largest for the collective.
        """
        torch = self._torch
        tensor, was_numpy = self._tensor(block)
        if self.size == 1:
            return self._back(tensor, was_numpy)
        width = max(int(c) for c in counts)
        padded = torch.zeros((width,) + tuple(tensor.shape[1:]), dtype=tensor.dtype,
                             device=tensor.device)
        padded[:tensor.shape[0]] = tensor
        out = torch.empty((self.size * width,) + tuple(tensor.shape[1:]), dtype=tensor.dtype,
                          device=tensor.device)
        gather = getattr(self._dist, "all_gather_single", None) or self._dist.all_gather_into_tensor
        gather(out, padded)
        pieces = [out[r * width:r * width + int(c)] for r, c in enumerate(counts)]
        return self._back(torch.cat(pieces), was_numpy)

    def exchange(self, arrays, send_counts):
        """Send ``arrays[i][sum(send_counts[:r]) : ...]`` to process ``r`` (all-to-all).

        ``arrays`` are 1-D NumPy arrays ordered by destination; returns the
        received arrays (in source-rank order) and the received counts.
        """
        torch = self._torch
        send_counts = np.asarray(send_counts, dtype=np.int64)
        if self.size == 1:
            return [np.array(a) for a in arrays], send_counts
        counts = self._tensor(send_counts)[0]
        received = torch.empty_like(counts)
        self._dist.all_to_all_single(received, counts)
        recv_counts = received.cpu().numpy()
        out = []
        for array in arrays:
            tensor = self._tensor(array)[0]
            result = torch.empty(int(recv_counts.sum()), dtype=tensor.dtype, device=tensor.device)
            self._dist.all_to_all_single(result, tensor, output_split_sizes=recv_counts.tolist(),
                                         input_split_sizes=send_counts.tolist())
            out.append(result.cpu().numpy())
        return out, recv_counts

    def start(self, timeout=None):
        """The first collective of a fit: every process must arrive within ``timeout``.

        With gloo a monitored barrier names the processes that did not; with
        NCCL the process group's own timeout applies.
        """
        if self.size == 1:
            return
        timeout = timeout or _start_timeout()
        if self.backend == "gloo":
            try:
                self._dist.monitored_barrier(timeout=timeout)
            except RuntimeError as error:
                raise DistributedError(
                    f"rank {self.rank}: not every process of the group started the distributed "
                    f"fit within {timeout.total_seconds():g} s ({' '.join(str(error).split())}); "
                    "every process must call fit with its share of the entries.") from error
        else:
            self._dist.barrier()


def _start_timeout():
    seconds = os.environ.get("DMC_DISTRIBUTED_TIMEOUT")
    return datetime.timedelta(seconds=float(seconds)) if seconds else START_TIMEOUT


# -- agreeing and failing together -----------------------------------------------------
_ERROR_TYPES = {"ValueError": ValueError, "TypeError": TypeError, "ImportError": ImportError,
                "FloatingPointError": FloatingPointError}


def collectively(comm, what, function, *args, **kwargs):
    """``function(*args, **kwargs)`` on every process; a failure anywhere raises everywhere.

    The process that failed re-raises its own exception; the others raise
    one of the same kind (ValueError, TypeError, ...; else
    :class:`DistributedError`) quoting it with its rank, so no process is left
    waiting in the next collective.
    """
    try:
        result, error = function(*args, **kwargs), None
    except Exception as exc:  # noqa: BLE001 - shared with the other processes, then re-raised
        result, error = None, exc
    reports = comm.objects(None if error is None else (type(error).__name__, str(error)))
    if error is not None:
        raise error
    for rank, report in enumerate(reports):
        if report is not None:
            kind, message = report
            raise _ERROR_TYPES.get(kind, DistributedError)(
                f"rank {rank} failed while {what} ({kind}): {message}")
    return result


def _fingerprint(value):
    """A comparable text for a parameter value (Generators by their state)."""
    if isinstance(value, np.random.Generator):
        state = repr(value.bit_generator.state).encode()
        return f"Generator({hashlib.sha256(state).hexdigest()[:16]})"
    if callable(value) and not isinstance(value, type):
        return "<callable>"
    return repr(value)


def agree(comm, description):
    """Check that every process passes the same ``description`` (a dict); else ValueError everywhere.

    The message names each key that differs and its value on each process.
    """
    mine = {key: _fingerprint(value) for key, value in description.items()}
    everyone = comm.objects(mine)
    differences = []
    for key in mine:
        values = [d.get(key) for d in everyone]
        if any(v != values[0] for v in values):
            listed = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
            differences.append(f"{key} ({listed})")
    if differences:
        raise ValueError(
            "the processes of the distributed fit disagree on " + "; ".join(differences)
            + ". Every process must pass a matrix of the same global shape and the same "
              "parameters (its own entries only).")


# -- partitioning ----------------------------------------------------------------------
def row_blocks(row_counts, n_blocks):
    """Row offsets ``(n_blocks + 1,)`` cutting rows into contiguous blocks of about equal entries.

    ``row_counts[i]`` is the number of observed entries in row ``i``.  Block
    ``r`` is rows ``offsets[r]:offsets[r+1]``; it holds about
    ``|Omega| / n_blocks`` entries (a block may be empty when a few rows
    hold most entries).
    """
    row_counts = np.asarray(row_counts, dtype=np.int64)
    m = row_counts.shape[0]
    cumulative = np.cumsum(row_counts)
    total = int(cumulative[-1]) if m else 0
    targets = total * np.arange(1, n_blocks) / n_blocks
    # block r ends after the first row where the running count reaches its target
    cuts = np.searchsorted(cumulative, targets, side="left") + 1
    offsets = np.concatenate([[0], np.minimum(cuts, m), [m]]).astype(np.int64)
    return np.maximum.accumulate(offsets)


def _local_observations(M, mask):
    """This process's observed entries (possibly none) as host Observations, and the input dtype."""
    from .backend import observed_triplets

    if sp.issparse(M) and mask is None and M.ndim == 2 and M.nnz == 0:
        shape = tuple(int(s) for s in M.shape)
        empty = np.zeros(0, dtype=np.int64)
        dtype = np.dtype(M.dtype)
        name = dtype.name if dtype.name in ("float32", "float64") else None
        return Observations(shape, empty, empty.copy(), np.zeros(0, np.float64)), name
    return observed_triplets(M, mask)


def repartition(comm, obs, offsets):
    """Send every entry to the process owning its row; returns this process's Observations.

    ``obs`` holds this process's entries (any subset, global coordinates);
    the result holds the entries of rows ``offsets[rank]:offsets[rank+1]``
    from every process, with global coordinates and the global shape, in
    row-major order.  An entry stored by two processes is a ValueError on
    every process.
    """
    owner = np.searchsorted(offsets, obs.observed_rows, side="right") - 1
    order = np.argsort(owner, kind="stable")
    counts = np.bincount(owner, minlength=comm.size)
    (rows, cols, values), _ = comm.exchange(
        [obs.observed_rows[order], obs.observed_cols[order],
         obs.values[order].astype(np.float64)], counts)

    def build():
        if rows.size == 0:
            return Observations(obs.shape, rows, cols, values)
        from .observations import as_observations

        try:
            return as_observations(sp.coo_matrix((values, (rows, cols)), shape=obs.shape))
        except ValueError as error:
            raise ValueError(f"{error} (after gathering every process's entries of rows "
                             f"{offsets[comm.rank]}..{offsets[comm.rank + 1] - 1}: an entry "
                             "must be stored by one process only)") from None

    return collectively(comm, "gathering its row block", build)


# -- the distributed initial SVD -------------------------------------------------------
class SummedOperator(LinearOperator):
    """The sum over processes of their sparse matrices, as a LinearOperator.

    Each process holds ``G_r`` (global shape, its entries only); products
    with ``G = sum_r G_r`` are local sparse products summed by all-reduce
    (``m`` or ``n`` numbers per vector).  Every process receives the same
    products, so an iterative solver run on every process with the same
    start vector takes the same path: this is how the initial truncated SVD
    (ARPACK's implicitly restarted Lanczos, through
    :func:`scipy.sparse.linalg.svds`) runs distributed and agrees with the
    single-process call on the whole matrix.
    """

    def __init__(self, local, comm):
        self._local = sp.csr_matrix(local)
        self._local_t = self._local.T.tocsr()
        self._comm = comm
        super().__init__(dtype=np.float64, shape=local.shape)

    def _matvec(self, x):
        return self._comm.sum(self._local @ np.asarray(x).reshape(-1))

    def _rmatvec(self, y):
        return self._comm.sum(self._local_t @ np.asarray(y).reshape(-1))

    def _matmat(self, X):
        return self._comm.sum(np.asarray(self._local @ X))

    def _rmatmat(self, Y):
        return self._comm.sum(np.asarray(self._local_t @ Y))

    def _adjoint(self):
        return _Adjoint(self)


class _Adjoint(LinearOperator):
    def __init__(self, op):
        self._op = op
        super().__init__(dtype=op.dtype, shape=(op.shape[1], op.shape[0]))

    def _matvec(self, x):
        return self._op._rmatvec(x)

    def _rmatvec(self, y):
        return self._op._matvec(y)

    def _matmat(self, X):
        return self._op._rmatmat(X)

    def _rmatmat(self, Y):
        return self._op._matmat(Y)


def initialize_compressed(comm, obs, *, rank, depth, init_scale, end_to_end_scale, rng):
    """Initial compressed factors (full, replicated) and the top singular values of ``G0``.

    The same steps as the single-process initialization
    (:meth:`dmc.DeepMatrixCompleter._initialize`): the random orthogonal
    operator from ``rng``, ``G0 = P_Omega(E0 - M)`` on this process's entries,
    its top-``rank`` triplets by ARPACK on the summed operator (the start
    vector drawn from ``rng`` as there), the invariant subspace.  Every
    process computes the same full ``U``, ``V``; ``V`` and the singular
    values are then broadcast from rank 0 so that the replicated state is
    bit-identical.
    """
    q = subspace.RandomOrthogonal(obs.shape, rng)
    G_local = subspace.initial_gradient(obs, q, end_to_end_scale)
    spectrum = subspace.top_singular_triplets(SummedOperator(G_local, comm), rank, rng)
    U, V = subspace.invariant_subspace(spectrum, q, rng)
    V = comm.broadcast(np.ascontiguousarray(V))
    singular_values = comm.broadcast(np.ascontiguousarray(spectrum.singular_values))
    return models.init_compressed(U, V, depth, init_scale), singular_values


# -- training --------------------------------------------------------------------------
class _EmptyPattern:
    """The pattern of a process that owns no observed entries: zero residual."""

    def __init__(self, shape, xp, dtype, device):
        self.shape, self._xp, self._dtype, self._device = shape, xp, dtype, device

    def residual_products(self, A, B, values):
        xp = self._xp
        loss = xp.zeros((), dtype=A.dtype, device=self._device)
        return (loss, xp.zeros((A.shape[0], B.shape[1]), dtype=A.dtype, device=self._device),
                xp.zeros((B.shape[0], A.shape[1]), dtype=A.dtype, device=self._device))


def row_block_loss_and_gradients(pattern, values, comm):
    """The ``(factors -> (loss, gradients))`` of a row-block process.

    ``factors.left`` holds this process's rows of ``U``, ``pattern`` its
    entries (local row indices).  One all-reduce per step sums the partial
    loss, ``U_r^T (R_r V)`` (k x k, the data part of every inner gradient)
    and ``R_r^T A_r`` (n x k, the gradient of ``V``); the gradient of the
    own rows of ``U`` needs nothing from the others.
    """
    torch = comm._torch

    def loss_and_gradients(factors):
        product = models.inner_product(factors.inner)
        A = factors.left if product is None else factors.left @ product
        loss, residual_times_right, grad_right = pattern.residual_products(A, factors.right, values)
        k = factors.left.shape[1]
        core = factors.left.T @ residual_times_right if product is not None else None
        parts = [loss.reshape(1), grad_right.reshape(-1)]
        if core is not None:
            parts.append(core.reshape(-1))
        packed = comm.sum(torch.cat(parts))
        loss = packed[0]
        grad_right = packed[1:1 + grad_right.numel()].reshape(grad_right.shape)
        if core is not None:
            core = packed[1 + grad_right.numel():].reshape(k, k)
        return loss, models.assemble_gradients(factors, product, residual_times_right, grad_right,
                                               core=core)

    return loss_and_gradients


def _stop_together(comm, callbacks):
    """The user's callbacks as one solver callback whose decision is the same on every process."""
    if not callbacks:
        return []

    def callback(record, factors):
        stop = any([user(record, factors) for user in callbacks])
        return bool(comm.max(np.array([1.0 if stop else 0.0]))[0] > 0)

    return [callback]


@contextlib.contextmanager
def _immediate_interrupt():
    """Ctrl-C raises at once during a distributed fit.

    The solver defers the first Ctrl-C to the next record, which each
    process reaches at its own time: the processes would then stop at
    different steps and wait for each other.  Under torchrun every process
    receives the signal, so raising at once ends them all.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _random_state(comm, random_state):
    """The fit's Generator: the same on every process (rank 0's fresh seed when None)."""
    from .datasets import _rng

    if random_state is None:
        seed = np.array([np.random.SeedSequence().entropy % 2**63], dtype=np.int64)
        random_state = int(comm.broadcast(seed)[0])
    return _rng(random_state)


def _truth_metric(comm, ground_truth, offsets, scale, backend, dtype):
    """The recovery-error metric of a distributed fit (dense truth rows or a factor pair)."""
    from .backend import to_namespace, to_numpy
    from .metrics import factor_recovery_error

    r0, r1 = int(offsets[comm.rank]), int(offsets[comm.rank + 1])
    xp = backend.xp
    if isinstance(ground_truth, tuple):
        A, B = (to_namespace(a, backend, dtype) / math.sqrt(scale) for a in ground_truth)
        A = A[r0:r1]

        def metric(f):
            product = models.inner_product(f.inner)
            rows = f.left if product is None else f.left @ product
            return factor_recovery_error(rows, f.right, A, B, row_sum=comm.sum)
        return metric
    truth = to_namespace(to_numpy(ground_truth)[r0:r1], backend, dtype) / scale

    def metric(f):
        X = models.end_to_end(f)
        d = X - truth
        parts = comm.sum(xp.stack([xp.sum(d * d), xp.sum(truth * truth)]))
        return float(xp.sqrt(parts[0] / parts[1]))
    return metric


def fit_distributed(estimator, M, mask=None, *, ground_truth=None):
    """Fit ``estimator`` (a DeepMatrixCompleter) on the union of the processes' entries.

    Called by ``DeepMatrixCompleter.fit`` when ``distributed=True``; every
    process of the default process group must call it.  Returns the fitted
    state as a dict of the estimator's attributes (the full model on every
    process).
    """
    import time

    from .backend import dtype_name, make_pattern, resolve_backend, to_namespace
    from .estimator import (_REFERENCE_SCALE, _check_output_range, _check_raw_range,
                            _rescaled, _rule_label)
    from .solver import ConvergenceWarning, gradient_descent
    from ._base import solver_callbacks

    start = time.perf_counter()
    if estimator.backend != "torch":
        raise ValueError(f'distributed=True needs backend="torch" (the processes talk through '
                         f'torch.distributed); got backend={estimator.backend!r}.')
    if estimator.method != "compressed":
        raise ValueError(f'distributed=True fits method="compressed" only; got '
                         f'method={estimator.method!r}.')
    require_process_group()
    device = local_device(estimator.device)
    comm = Communicator(device if comm_device_is(device) else None)
    comm.start()
    obs, input_dtype = collectively(comm, "reading its entries", _local_observations, M, mask)
    params = {k: v for k, v in estimator.get_params().items()
              if k not in ("device", "verbose", "callbacks")}
    truth_kind = (None if ground_truth is None else
                  "factors" if isinstance(ground_truth, tuple) else "dense")
    agree(comm, {"shape": obs.shape, "input dtype": input_dtype, "ground_truth": truth_kind,
                 **params})
    collectively(comm, "checking the parameters", estimator._check_params, obs.shape)
    backend = resolve_backend(None, "torch", device)
    float_name = (dtype_name(estimator.dtype) if estimator.dtype is not None
                  else input_dtype or dtype_name(backend.default_float()))
    dtype = backend.float_dtype(float_name)
    m, n = obs.shape
    if ground_truth is not None:
        collectively(comm, "checking ground_truth", _check_truth, ground_truth, obs.shape)

    # global magnitudes and counts
    total = int(comm.sum(np.array([obs.n_observed], dtype=np.int64))[0])
    if total == 0:
        raise ValueError("no observed entries on any process: there is nothing to fit.")
    local_max = float(np.max(np.abs(obs.values))) if obs.n_observed else 0.0
    largest = float(comm.max(np.array([local_max]))[0])
    if largest == 0.0:
        raise ValueError("all observed values are zero: there is no signal to complete "
                         "(the zero matrix fits them exactly).")
    exponent = math.frexp(largest)[1]
    if not estimator.normalize:
        _check_raw_range(exponent)
    _check_output_range(largest, float_name)

    # row blocks balanced by entries, then every entry to its row's owner
    row_counts = comm.sum(np.bincount(obs.observed_rows, minlength=m).astype(np.int64))
    offsets = row_blocks(row_counts, comm.size)
    mine = repartition(comm, obs, offsets)
    del obs
    unit = Observations(mine.shape, mine.observed_rows, mine.observed_cols,
                        np.ldexp(mine.values.astype(np.float64), -exponent))

    rng = _random_state(comm, estimator.random_state)
    L, eps = estimator.depth, estimator.init_scale
    e0 = eps**L if estimator.normalize else math.ldexp(eps**L, -exponent)
    factors, unit_singular_values = initialize_compressed(
        comm, unit, rank=estimator.rank, depth=L, init_scale=eps, end_to_end_scale=e0, rng=rng)
    p = total / (m * n)
    relative = (float(unit_singular_values[0] / p / _REFERENCE_SCALE) if estimator.normalize
                else math.ldexp(1.0, -exponent))
    scale = math.ldexp(relative, exponent)
    if not (math.isfinite(scale) and scale > 0.0):
        raise ValueError("observed values are too large to normalize; divide the data by a "
                         "constant first.")
    with np.errstate(over="ignore"):
        singular_values = np.ldexp(unit_singular_values, exponent)
    values = (unit.values / relative).astype(float_name)
    observed_norm = math.sqrt(float(comm.sum(np.array([float(values.astype(np.float64) @ values)]))[0]))

    r0, r1 = int(offsets[comm.rank]), int(offsets[comm.rank + 1])
    left = np.ascontiguousarray(factors.left[r0:r1], dtype=float_name)
    factors = models.DeepFactors.from_arrays(
        [to_namespace(a, backend) for a in
         [left, *[np.ascontiguousarray(w, dtype=float_name) for w in factors.inner],
          np.ascontiguousarray(factors.right, dtype=float_name)]])
    lr = (models.spectral_step_size(unit_singular_values[0] / relative, p, L)
          if estimator.lr == "auto" else float(estimator.lr))
    rule = estimator._step_rule()
    context = steps.StepContext(
        lr=lr, outer_ratio=estimator.gamma, target_scale=float(unit_singular_values[0] / relative / p),
        observed_fraction=p, xp=backend.xp, row_sum=comm.sum)

    local = Observations((r1 - r0, n), unit.observed_rows - r0, unit.observed_cols, values)
    if local.n_observed:
        pattern = make_pattern(local, dtype, backend)
    else:
        pattern = _EmptyPattern(local.shape, backend.xp, dtype, backend.device)
    loss_and_gradients = row_block_loss_and_gradients(
        pattern, to_namespace(values, backend), comm)
    metrics = {}
    if ground_truth is not None:
        metrics["recovery_error"] = _truth_metric(comm, ground_truth, offsets, scale, backend, dtype)
    callbacks = _stop_together(comm, solver_callbacks(estimator.callbacks))
    with _immediate_interrupt(), warnings.catch_warnings():
        if comm.rank != 0:  # the same warning on every process: rank 0 says it once
            warnings.simplefilter("ignore", ConvergenceWarning)
        result = gradient_descent(
            factors, loss_and_gradients, rule, context=context, max_iter=estimator.max_iter,
            tol=estimator.tol, observed_norm=observed_norm, record_every=estimator.record_every,
            metrics=metrics, callbacks=callbacks, loss_unit=scale * scale, start_time=start,
            verbose=int(estimator.verbose) if comm.rank == 0 else 0)
    fitted = result.factors
    fitted.left = comm.gather_rows(fitted.left, np.diff(offsets))
    fitted = _rescaled(fitted, scale)
    return {"shape_": (m, n), "backend_": backend, "scale_": scale, "lr_": lr,
            "step_rule_": _rule_label(estimator._step_rule_name()),
            "initial_singular_values_": np.asarray(singular_values),
            "left_factor_": fitted.left, "inner_factors_": list(fitted.inner),
            "right_factor_": fitted.right, "history_": result.history,
            "n_iter_": result.n_iter, "converged_": result.converged,
            "stop_reason_": result.stop_reason, "row_offsets_": offsets}


def comm_device_is(device):
    """Whether tensors on ``device`` can travel through the default process group directly."""
    dist = _dist()
    return (dist.get_backend() == "nccl") == (device.type == "cuda")


def _check_truth(ground_truth, shape):
    """``ground_truth``: a dense m x n array or a factor pair ``(A, B)`` with ``A @ B.T`` m x n."""
    from .backend import to_numpy
    from .metrics import check_factor_pair

    if isinstance(ground_truth, tuple):
        check_factor_pair(ground_truth, shape)
        return
    if tuple(np.shape(ground_truth)) != tuple(shape):
        raise ValueError(f"ground_truth has shape {tuple(np.shape(ground_truth))} but M has shape "
                         f"{tuple(shape)}; pass the full matrix (or a factor pair (A, B)).")
    if not np.all(np.isfinite(to_numpy(ground_truth))):
        raise ValueError("ground_truth must be finite everywhere (it is the full matrix).")
