"""Array namespaces, devices, and the sparse kernels the Array API standard lacks.

Everything that differs between NumPy, PyTorch and CuPy lives in this
module.  Dense work elsewhere in dmc uses operators that all three share
(``@``, ``.T``, in-place ``-=``) and the standard namespace that
array-api-compat returns; this module provides

* :func:`resolve_backend`: the namespace and device of a fit, once per fit;
* :func:`observed_triplets`: the observed entries of any supported input
  (dense + mask, dense with NaN, scipy.sparse, torch sparse COO/CSR/CSC,
  cupyx sparse) as host NumPy triplets for validation and the one-time
  subspace SVD;
* :func:`to_namespace` / :func:`to_numpy`: transfers;
* :func:`make_pattern`: the per-backend kernel table on the observed
  pattern, an object with two methods:

    * ``sample(A, B)``: ``(A @ B.T)[rows, cols]`` without forming
      ``A @ B.T``, O(|Omega| k);
    * ``residual_products(A, B, values)``: with ``R`` the sparse residual
      ``P_Omega(A @ B.T) - values``, returns ``(1/2 ||R||^2, R @ B, R.T @ A)``
      in O(|Omega| k), the whole data-dependent part of a gradient step.
      Patterns may cache work derived from ``values`` (the Numba tiled
      kernel keeps a permuted copy), so pass the same, unmodified array
      each step.

Kernels per backend.  NumPy: SciPy CSR kernels (:class:`ScipyPattern`), or
fused Numba kernels (:class:`NumbaPattern`) when Numba imports
(``pip install "dmc[fast]"``; ``DMC_KERNELS=scipy`` opts out).  Torch
(:class:`TorchPattern`): ``torch.sparse.sampled_addmm`` and CSR matrix
products, index tensors and the CSR structures built once on the device.
CuPy (:class:`CupyPattern`): cupyx.scipy.sparse CSR.
:func:`compute_threads` wraps a CPU fit loop: BLAS on one thread while the
Numba kernel uses the cores.

The loss stays a 0-d device array, so a step never synchronises with the
host; the solver reads it only at recording steps.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import scipy.sparse as sp

from ._threads import compute_threads
from .observations import Observations

__all__ = [
    "compute_threads",
    "Backend",
    "resolve_backend",
    "dtype_name",
    "observed_triplets",
    "to_namespace",
    "to_numpy",
    "make_pattern",
    "numba_available",
    "ScipyPattern",
    "NumbaPattern",
    "TorchPattern",
    "CupyPattern",
]

_EXTRAS = {"torch": "torch", "cupy": "cupy"}


def _import_backend(name):
    """Import torch or cupy, or raise an ImportError naming the extra to install."""
    try:
        if name == "torch":
            import torch

            return torch
        if name == "cupy":
            import cupy

            return cupy
    except ImportError as error:
        raise ImportError(
            f'backend="{name}" needs {name}, which is not installed: '
            f'pip install "dmc[{_EXTRAS[name]}]"'
        ) from error
    raise ValueError(f'backend must be "auto", "numpy", "torch" or "cupy"; got {name!r}.')


def _kind_of(x) -> str:
    """"torch", "cupy" or "numpy" for an input array (without importing torch/cupy)."""
    module = type(x).__module__.split(".")[0]
    if module == "torch":
        return "torch"
    if module in ("cupy", "cupyx"):
        return "cupy"
    return "numpy"


class Backend:
    """The array library, its standard namespace and the device of one fit.

    Parameters
    ----------
    name : {"numpy", "torch", "cupy"}
    device : str, int or None, default=None
        torch: a device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``),
        default ``"cpu"``; cupy: ``"cuda"``, ``"cuda:N"`` or an int, default
        GPU 0; NumPy: ignored (always the CPU).

    Attributes
    ----------
    module : module
        ``numpy``, ``torch`` or ``cupy``.
    xp : module
        The array-api-compat namespace of that library.
    device : str, torch.device or cupy.cuda.Device
    """

    def __init__(self, name, device=None):
        self.name = name
        if name == "numpy":
            import array_api_compat.numpy as xp

            self.module, self.xp, self.device = np, xp, "cpu"
        elif name == "torch":
            torch = _import_backend("torch")
            import array_api_compat.torch as xp

            self.module, self.xp = torch, xp
            self.device = torch.device(device if device is not None else "cpu")
        else:
            cupy = _import_backend("cupy")
            import array_api_compat.cupy as xp

            self.module, self.xp = cupy, xp
            self.device = cupy.cuda.Device(_cuda_index(device))

    def default_float(self):
        """The backend's default float dtype (float64; torch's default dtype for torch)."""
        if self.name == "torch":
            return self.module.get_default_dtype()
        return self.module.float64

    def float_dtype(self, name):
        """The backend's dtype called ``name`` ("float32" or "float64")."""
        return getattr(self.module, name)

    def __repr__(self):
        return f"Backend({self.name!r}, device={self.device!r})"


def _cuda_index(device):
    if device is None or device == "cuda":
        return 0
    if isinstance(device, int):
        return device
    text = str(device)
    if text.startswith("cuda:"):
        return int(text.split(":", 1)[1])
    raise ValueError(f'device for backend="cupy" must be "cuda", "cuda:N" or an int; got {device!r}.')


def resolve_backend(M, backend="auto", device=None) -> Backend:
    """The backend of a fit: the input's own (``"auto"``) or the one asked for.

    Lists and scipy.sparse inputs are NumPy.  ``device`` defaults to the
    input's device with ``"auto"`` and to ``"cpu"`` / ``"cuda"`` otherwise.
    """
    if backend == "auto":
        name = _kind_of(M)
        if name == "torch" and device is None:
            device = M.device
        if name == "cupy" and device is None:
            device = M.device.id
    elif backend in ("numpy", "torch", "cupy"):
        name = backend
    else:
        raise ValueError(f'backend must be "auto", "numpy", "torch" or "cupy"; got {backend!r}.')
    if name == "numpy" and device not in (None, "cpu"):
        raise ValueError(f'backend="numpy" runs on the CPU; got device={device!r}. '
                         'Use backend="torch" or "cupy" for a GPU.')
    return Backend(name, device)


def dtype_name(dtype) -> str:
    """``"float32"`` for np.float32, np.dtype("float32"), "float32", torch.float32, ..."""
    try:
        return np.dtype(dtype).name  # NumPy and CuPy dtypes, scalar types, names
    except TypeError:
        name = str(dtype).replace("torch.", "")
        try:
            return np.dtype(name).name
        except TypeError:
            return name


def to_numpy(x):
    """A NumPy copy (or view) of a NumPy, torch or CuPy array; other values unchanged."""
    kind = _kind_of(x)
    if kind == "torch":
        return x.detach().cpu().numpy()
    if kind == "cupy":
        return x.get()
    return np.asarray(x)


def to_namespace(x, backend: Backend, dtype=None):
    """``x`` (NumPy or the backend's own array) as a backend array on its device."""
    if backend.name == "numpy":
        out = to_numpy(x)
        return out if dtype is None else out.astype(dtype, copy=False)
    if backend.name == "torch":
        torch = backend.module
        if not isinstance(x, torch.Tensor):
            x = torch.from_numpy(np.ascontiguousarray(x))
        return x.to(device=backend.device, dtype=dtype)
    cupy = backend.module
    with backend.device:
        out = cupy.asarray(x)
        return out if dtype is None else out.astype(dtype, copy=False)


def _dense_observed(M, mask, kind):
    """Observed (rows, cols, values) of a dense torch/CuPy array, found on its device.

    Only the |Omega| observed triplets travel to the host.
    """
    if kind == "torch":
        import torch

        if M.ndim != 2:
            raise ValueError(f"M must be a 2-D matrix; got a tensor with {M.ndim} dimension(s).")
        if mask is None:
            observed = ~torch.isnan(M) if M.is_floating_point() else torch.ones_like(M, dtype=torch.bool)
        else:
            mask = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
            if tuple(mask.shape) != tuple(M.shape):
                raise ValueError(f"mask has shape {tuple(mask.shape)} but M has shape {tuple(M.shape)}; "
                                 "the mask must mark each entry of M (True = observed).")
            if mask.dtype != torch.bool:
                raise TypeError(f"mask must be a boolean tensor (True = observed); got dtype {mask.dtype}.")
            observed = mask.to(M.device)
        rows, cols = torch.nonzero(observed, as_tuple=True)
        values = M[rows, cols]
        return to_numpy(rows), to_numpy(cols), to_numpy(values)
    import cupy

    if M.ndim != 2:
        raise ValueError(f"M must be a 2-D matrix; got an array with {M.ndim} dimension(s).")
    if mask is None:
        observed = ~cupy.isnan(M) if M.dtype.kind == "f" else cupy.ones(M.shape, dtype=bool)
    else:
        mask = cupy.asarray(mask)
        if mask.shape != M.shape:
            raise ValueError(f"mask has shape {mask.shape} but M has shape {M.shape}; "
                             "the mask must mark each entry of M (True = observed).")
        if mask.dtype != bool:
            raise TypeError(f"mask must be boolean (True = observed); got dtype {mask.dtype}.")
        observed = mask
    rows, cols = cupy.nonzero(observed)
    return rows.get(), cols.get(), M[rows, cols].get()


def observed_triplets(M, mask=None):
    """Host :class:`Observations` of any supported input, and the input's dtype name.

    NumPy, lists and scipy.sparse go through :func:`dmc.observations.as_observations`
    directly; torch and CuPy inputs have their observed entries extracted on
    their device first.  Returns ``(observations, dtype_name)`` where
    ``dtype_name`` is "float32", "float64" or None (non-float input).
    """
    from .observations import as_observations

    kind = _kind_of(M)
    if kind == "numpy" and not sp.issparse(M):
        M_array = np.asarray(M) if not isinstance(M, (str, bytes)) and M is not None else M
        dtype = getattr(M_array, "dtype", None)
        obs = as_observations(M_array, mask)
    elif sp.issparse(M):
        obs = as_observations(M, mask)
        dtype = M.dtype
    else:
        if kind == "torch" and M.layout != _torch_strided():
            if mask is not None:
                raise ValueError("mask must be None for sparse M: the stored entries of a sparse "
                                 "tensor are the observed ones.")
            values = M._values() if M.layout == _torch_sparse_coo() else M.values()
            dtype = to_numpy(values[:0]).dtype
            obs = as_observations(_torch_sparse_to_scipy(M))
        elif kind == "cupy" and _is_cupyx_sparse(M):
            if mask is not None:
                raise ValueError("mask must be None for sparse M: the stored entries are the observed ones.")
            coo = M.tocoo()
            dtype = np.dtype(M.dtype)
            obs = as_observations(sp.coo_matrix((coo.data.get(), (coo.row.get(), coo.col.get())),
                                                shape=M.shape))
        else:
            rows, cols, values = _dense_observed(M, mask, kind)
            dtype = values.dtype
            shape = tuple(int(s) for s in M.shape)
            obs = as_observations(sp.coo_matrix((values, (rows, cols)), shape=shape))
    name = np.dtype(dtype).name if dtype is not None and np.dtype(dtype).kind == "f" else None
    if name not in ("float32", "float64"):
        name = None
    return obs, name


def _torch_strided():
    import torch

    return torch.strided


def _torch_sparse_coo():
    import torch

    return torch.sparse_coo


def _torch_sparse_to_scipy(M):
    import torch

    if M.ndim != 2:
        raise ValueError(f"M must be a 2-D matrix; got a sparse tensor with {M.ndim} dimensions.")
    if M.layout == torch.sparse_coo:
        # an uncoalesced COO tensor may store an entry twice: keep them apart so
        # that validation reports it instead of silently summing
        indices = to_numpy(M._indices())
        values = to_numpy(M._values())
        return sp.coo_matrix((values, (indices[0], indices[1])), shape=tuple(M.shape))
    if M.layout == torch.sparse_csr:
        return sp.csr_matrix((to_numpy(M.values()), to_numpy(M.col_indices()),
                              to_numpy(M.crow_indices())), shape=tuple(M.shape))
    if M.layout == torch.sparse_csc:
        return sp.csc_matrix((to_numpy(M.values()), to_numpy(M.row_indices()),
                              to_numpy(M.ccol_indices())), shape=tuple(M.shape))
    raise TypeError(f"unsupported torch sparse layout {M.layout}; use COO, CSR or CSC.")


def _is_cupyx_sparse(M):
    try:
        import cupyx.scipy.sparse as csp
    except ImportError:
        return False
    return csp.issparse(M)


def numba_available() -> bool:
    """Whether the fused Numba kernels import (``pip install "dmc[fast]"``)."""
    try:
        from . import _numba_kernels  # noqa: F401
    except ImportError:
        return False
    return True


class ScipyPattern:
    """Observed pattern for NumPy arrays, backed by one scipy.sparse CSR matrix.

    The CSR structure and its CSC transpose view are built once; each step
    only swaps their ``data``.  Gathered rows go into buffers kept between
    steps: fresh |Omega| x k arrays would be mmap-ed and page-faulted by the
    allocator at every step, which costs more than the gather itself, and
    ``np.take`` with ``mode="clip"`` (the indices are valid by construction)
    skips the bounds-checking copy that ``mode="raise"`` makes.
    """

    def __init__(self, obs: Observations, dtype):
        index_dtype = np.int32 if max(obs.shape) < 2**31 - 1 else np.int64
        self.rows = obs.observed_rows.astype(index_dtype)
        self.cols = obs.observed_cols.astype(index_dtype)
        self._matrix = obs.to_csr(np.zeros(obs.n_observed, dtype=dtype))
        self._transpose = self._matrix.T
        self._buffers = {}
        self.shape = obs.shape

    def _gather_buffers(self, width, dtype):
        key = (width, np.dtype(dtype))
        if key not in self._buffers:
            shape = (self.rows.shape[0], width)
            self._buffers[key] = (np.empty(shape, dtype), np.empty(shape, dtype))
        return self._buffers[key]

    def sample(self, A, B):
        left_rows, right_rows = self._gather_buffers(A.shape[1], np.result_type(A, B))
        np.take(A, self.rows, axis=0, out=left_rows, mode="clip")
        np.take(B, self.cols, axis=0, out=right_rows, mode="clip")
        return np.einsum("ij,ij->i", left_rows, right_rows)

    def residual_products(self, A, B, values):
        residual = self.sample(A, B)
        residual -= values
        self._matrix.data = residual
        self._transpose.data = residual
        return 0.5 * (residual @ residual), self._matrix @ B, self._transpose @ A

    def products(self, values, A, B):
        """``(S @ B, S.T @ A)`` for the sparse ``S`` with ``values`` on the pattern."""
        self._matrix.data = values
        self._transpose.data = values
        return self._matrix @ B, self._transpose @ A


class NumbaPattern:
    """Observed pattern for NumPy arrays with fused Numba kernels.

    Rows are split into one contiguous chunk per thread, balanced by the
    number of observed entries; each chunk accumulates its own part of
    ``R.T @ A`` and the parts are summed (k-wide, cheap).  Patterns with
    fewer than ``parallel_threshold`` entries use the serial kernels.
    """

    parallel_threshold = 100_000
    # Column tile width; None picks max(2048, n / 16) and tiles only large
    # patterns whose B no longer fits in cache (see _use_tiles); a number
    # forces tiling at that width (tests).
    tile_columns = None

    def __init__(self, obs: Observations, dtype):
        from . import _numba_kernels as kernels

        import numba

        self._kernels = kernels
        threaded = obs.n_observed >= self.parallel_threshold and numba.get_num_threads() > 1
        self._sample = kernels.sample if threaded else kernels.sample_serial
        self._threaded = threaded
        self.shape = obs.shape
        self.indptr = obs.row_pointers
        self.cols = obs.observed_cols.astype(np.int64)
        n_chunks = max(1, min(numba.get_num_threads(), obs.shape[0])) if threaded else 1
        targets = np.linspace(0, obs.n_observed, n_chunks + 1)
        chunk_rows = np.searchsorted(self.indptr, targets, side="left")
        chunk_rows[0], chunk_rows[-1] = 0, obs.shape[0]
        self.chunk_rows = np.maximum.accumulate(chunk_rows).astype(np.int64)
        self._buffers = {}
        self._obs = obs
        self._tiled = None  # decided at the first step, when the width k is known

    def _use_tiles(self, width, itemsize):
        """Tile when the pattern is large and B (n x k) no longer fits in cache.

        Measured on one thread (benchmarks/scaling.py, k = 20): tiling took
        716 against 1,276 ms per step at 1e5 x 1e5 (B 16 MB) and 170 against
        274 ms at 3e4 (B 4.8 MB), but lost at 1e4 (B 1.6 MB), where the
        row-in-tile segments are short; hence the 4 MiB bound.
        """
        if self._tiled is None:
            n = self.shape[1]
            tile_columns = self.tile_columns or max(2048, -(-n // 16))
            self._tiled = self.tile_columns is not None or (
                self._obs.n_observed >= self.parallel_threshold
                and n * width * itemsize > 4 * 2**20 and n > tile_columns)
            if self._tiled or self._threaded:
                # untiled threaded = one tile whose segments are the rows
                self._build_tiles(self._obs, tile_columns if self._tiled else n)
            self._obs = None  # the pattern keeps what it needs
        return self._tiled

    def _build_tiles(self, obs, tile_columns):
        """Column-tiled ordering: entries by (tile, row, column), cut into segments."""
        rows, cols = obs.observed_rows, obs.observed_cols
        tiles = cols // tile_columns
        n_tiles = int(-(-obs.shape[1] // tile_columns))
        order = np.lexsort((cols, rows, tiles))
        tiled_rows, tiled_tiles = rows[order], tiles[order]
        starts = np.ones(len(order), dtype=bool)
        starts[1:] = (tiled_rows[1:] != tiled_rows[:-1]) | (tiled_tiles[1:] != tiled_tiles[:-1])
        starts = np.flatnonzero(starts)
        self._segment_rows = tiled_rows[starts]
        self._segment_ptr = np.append(starts, len(order)).astype(np.int64)
        segment_tiles = tiled_tiles[starts]
        tile_segments = np.searchsorted(segment_tiles, np.arange(n_tiles + 1))
        self._tile_chunk_ptr = np.empty((n_tiles, len(self.chunk_rows)), dtype=np.int64)
        for tile in range(n_tiles):
            lo, hi = tile_segments[tile], tile_segments[tile + 1]
            self._tile_chunk_ptr[tile] = lo + np.searchsorted(self._segment_rows[lo:hi], self.chunk_rows)
        # with one tile the order is the observations' own (row-major)
        self._order = None if n_tiles == 1 else order
        self._tiled_cols = cols if n_tiles == 1 else cols[order]
        self._values_source = self._tiled_values = None

    def _step_buffers(self, width, dtype):
        """``R @ B`` output and the per-chunk parts of ``R.T @ A``, kept between steps."""
        key = (width, np.dtype(dtype))
        if key not in self._buffers:
            m, n = self.shape
            self._buffers[key] = (np.empty((m, width), dtype),
                                  np.empty((self.chunk_rows.shape[0] - 1, n, width), dtype))
        return self._buffers[key]

    def sample(self, A, B):
        out = np.empty(self.cols.shape[0], np.result_type(A, B))
        self._sample(self.indptr, self.cols, np.ascontiguousarray(A),
                             np.ascontiguousarray(B), out)
        return out

    def residual_products(self, A, B, values):
        row_out, col_parts = self._step_buffers(A.shape[1], np.result_type(A, B))
        kernels = self._kernels
        A, B = np.ascontiguousarray(A), np.ascontiguousarray(B)
        if self._use_tiles(A.shape[1], row_out.dtype.itemsize) or self._threaded:
            if self._order is None:
                tiled_values = values
            else:
                if values is not self._values_source:  # permuted once per values array
                    self._tiled_values = np.ascontiguousarray(values[self._order])
                    self._values_source = values
                tiled_values = self._tiled_values
            kernel = (kernels.tiled_fused_products if self._threaded
                      else kernels.tiled_fused_products_serial)
            loss = kernel(self._tile_chunk_ptr, self._segment_rows, self._segment_ptr,
                          self._tiled_cols, tiled_values, A, B, row_out, col_parts, self.chunk_rows)
        else:
            loss = kernels.fused_products_serial(
                self.chunk_rows, self.indptr, self.cols, values, A, B, row_out, col_parts)
        col_out = col_parts[0].copy() if col_parts.shape[0] == 1 else col_parts.sum(axis=0)
        return loss, row_out.copy(), col_out

    def products(self, values, A, B):
        """``(S @ B, S.T @ A)`` for the sparse ``S`` with ``values`` on the pattern
        (SciPy's CSR products; the fused kernels compute residuals only)."""
        if getattr(self, "_csr", None) is None:
            n_observed = self.cols.shape[0]
            self._csr = sp.csr_matrix((np.zeros(n_observed, values.dtype), self.cols, self.indptr),
                                      shape=self.shape)
            self._csr_t = self._csr.T
        self._csr.data = values
        self._csr_t.data = values
        return self._csr @ B, self._csr_t @ A


class TorchPattern:
    """Observed pattern for torch tensors on any device.

    The CSR structures of ``R`` and ``R.T`` are built once on the device and
    only their values are overwritten each step (``R.T``'s through a fixed
    permutation), so a step allocates only k-wide outputs.
    ``torch.sparse.sampled_addmm`` computes the predictions without an
    |Omega| x k gather.
    """

    def __init__(self, obs: Observations, dtype, backend: Backend):
        torch = backend.module
        self._torch = torch
        device = backend.device
        m, n = obs.shape
        as_index = lambda a: torch.as_tensor(a, dtype=torch.int64, device=device)  # noqa: E731
        self.rows = as_index(obs.observed_rows)
        self.cols = as_index(obs.observed_cols)
        order = np.lexsort((obs.observed_rows, obs.observed_cols))  # CSC order
        self._transpose_order = as_index(order)
        zeros = torch.zeros(obs.n_observed, dtype=dtype, device=device)
        col_counts = np.bincount(obs.observed_cols, minlength=n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            self._matrix = torch.sparse_csr_tensor(
                as_index(obs.row_pointers), self.cols, zeros.clone(), size=(m, n),
                check_invariants=False)
            self._transpose = torch.sparse_csr_tensor(
                as_index(np.concatenate([[0], np.cumsum(col_counts)])),
                as_index(obs.observed_rows[order]), zeros.clone(), size=(n, m),
                check_invariants=False)
            self._pattern = torch.sparse_csr_tensor(
                as_index(obs.row_pointers), self.cols, zeros.clone(), size=(m, n),
                check_invariants=False)
        self.shape = obs.shape

    def sample(self, A, B):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return self._torch.sparse.sampled_addmm(self._pattern, A, B.T, beta=0.0).values()

    def residual_products(self, A, B, values):
        residual = self.sample(A, B) - values
        self._matrix.values().copy_(residual)
        self._transpose.values().copy_(residual[self._transpose_order])
        loss = 0.5 * (residual @ residual)
        return loss, self._matrix @ B, self._transpose @ A

    def products(self, values, A, B):
        """``(S @ B, S.T @ A)`` for the sparse ``S`` with ``values`` on the pattern."""
        self._matrix.values().copy_(values)
        self._transpose.values().copy_(values[self._transpose_order])
        return self._matrix @ B, self._transpose @ A


class CupyPattern:
    """Observed pattern for CuPy arrays: cupyx.scipy.sparse CSR, built once."""

    def __init__(self, obs: Observations, dtype, backend: Backend):
        cupy = backend.module
        import cupyx.scipy.sparse as csp

        with backend.device:
            self.rows = cupy.asarray(obs.observed_rows, dtype=cupy.int32)
            self.cols = cupy.asarray(obs.observed_cols, dtype=cupy.int32)
            self._matrix = csp.csr_matrix(
                (cupy.zeros(obs.n_observed, dtype=dtype), self.cols,
                 cupy.asarray(obs.row_pointers, dtype=cupy.int32)), shape=obs.shape)
        self._cupy = cupy
        self.shape = obs.shape

    def sample(self, A, B):
        return (A[self.rows] * B[self.cols]).sum(axis=1)

    def residual_products(self, A, B, values):
        residual = self.sample(A, B) - values
        self._matrix.data = residual
        loss = 0.5 * (residual @ residual)
        return loss, self._matrix @ B, self._matrix.T @ A

    def products(self, values, A, B):
        """``(S @ B, S.T @ A)`` for the sparse ``S`` with ``values`` on the pattern."""
        self._matrix.data = values
        return self._matrix @ B, self._matrix.T @ A


def make_pattern(obs: Observations, dtype=np.float64, backend: Backend | None = None,
                 kernels=None):
    """The kernel-table entry for a backend.

    Parameters
    ----------
    obs : Observations
        The observed pattern (its values are not used).
    dtype : dtype, default=numpy.float64
        The backend's float dtype (a NumPy, torch or CuPy dtype object).
    backend : Backend or None, default=None
        None means NumPy.
    kernels : {"numba", "scipy"} or None, default=None
        NumPy only.  None: ``DMC_KERNELS`` from the environment, else
        Numba when it imports, else SciPy.

    Returns
    -------
    ScipyPattern, NumbaPattern, TorchPattern or CupyPattern
    """
    if backend is not None and backend.name == "torch":
        return TorchPattern(obs, dtype, backend)
    if backend is not None and backend.name == "cupy":
        return CupyPattern(obs, dtype, backend)
    kernels = kernels or os.environ.get("DMC_KERNELS") or ("numba" if numba_available() else "scipy")
    if kernels == "numba":
        return NumbaPattern(obs, dtype)
    if kernels == "scipy":
        return ScipyPattern(obs, dtype)
    raise ValueError(f'kernels must be "numba" or "scipy"; got {kernels!r}.')
