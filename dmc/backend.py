"""Array namespace and the sparse kernels the Array API standard lacks.

Dense work in dmc goes through the standard namespace; the kernels on the
observed pattern live here, one implementation per backend:

* ``sample(A, B)``: ``(A @ B.T)[rows, cols]`` without forming ``A @ B.T``
  (a sampled dense-dense product), O(|Omega| k);
* ``residual_products(A, B, values)``: with ``R`` the sparse residual
  ``P_Omega(A @ B.T) - values``, returns ``(1/2 ||R||^2, R @ B, R.T @ A)``
  in O(|Omega| k), the whole data-dependent part of a gradient step.

For NumPy there are two implementations: SciPy's CSR kernels (always
available) and a fused Numba kernel (``pip install "dmc[fast]"``), used
automatically when Numba imports unless ``DMC_KERNELS=scipy`` is set.
"""

from __future__ import annotations

import os

import numpy as np

from .observations import Observations

__all__ = ["ScipyPattern", "NumbaPattern", "make_pattern", "numba_available"]


def numba_available() -> bool:
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


class NumbaPattern:
    """Observed pattern for NumPy arrays with fused Numba kernels.

    Rows are split into one contiguous chunk per thread, balanced by the
    number of observed entries; each chunk accumulates its own part of
    ``R.T @ A`` and the parts are summed (k-wide, cheap).
    """

    def __init__(self, obs: Observations, dtype):
        from . import _numba_kernels

        import numba

        self._kernels = _numba_kernels
        self.shape = obs.shape
        self.indptr = obs.row_pointers
        self.cols = obs.observed_cols.astype(np.int64)
        n_chunks = max(1, min(numba.get_num_threads(), obs.shape[0]))
        targets = np.linspace(0, obs.n_observed, n_chunks + 1)
        chunk_rows = np.searchsorted(self.indptr, targets, side="left")
        chunk_rows[0], chunk_rows[-1] = 0, obs.shape[0]
        self.chunk_rows = np.maximum.accumulate(chunk_rows).astype(np.int64)
        self._buffers = {}

    def _step_buffers(self, width, dtype):
        key = (width, np.dtype(dtype))
        if key not in self._buffers:
            m, n = self.shape
            self._buffers[key] = (
                np.empty(self.cols.shape[0], dtype),
                np.empty((m, width), dtype),
                np.empty((self.chunk_rows.shape[0] - 1, n, width), dtype),
            )
        return self._buffers[key]

    def sample(self, A, B):
        out = np.empty(self.cols.shape[0], np.result_type(A, B))
        self._kernels.sample(self.indptr, self.cols, np.ascontiguousarray(A),
                             np.ascontiguousarray(B), out)
        return out

    def residual_products(self, A, B, values):
        residual, row_out, col_parts = self._step_buffers(A.shape[1], np.result_type(A, B))
        loss = self._kernels.fused_products(
            self.chunk_rows, self.indptr, self.cols, values, np.ascontiguousarray(A),
            np.ascontiguousarray(B), residual, row_out, col_parts)
        col_out = col_parts[0].copy() if col_parts.shape[0] == 1 else col_parts.sum(axis=0)
        return loss, row_out.copy(), col_out


def make_pattern(obs: Observations, dtype=np.float64, kernels=None):
    """The kernel table entry for NumPy observations.

    Parameters
    ----------
    kernels : {"numba", "scipy"}, optional
        Default: ``DMC_KERNELS`` from the environment, else Numba when it
        imports, else SciPy.
    """
    kernels = kernels or os.environ.get("DMC_KERNELS") or ("numba" if numba_available() else "scipy")
    if kernels == "numba":
        return NumbaPattern(obs, dtype)
    if kernels == "scipy":
        return ScipyPattern(obs, dtype)
    raise ValueError(f'kernels must be "numba" or "scipy"; got {kernels!r}.')
