"""Fused observed-entry kernels compiled with Numba (the ``dmc[fast]`` extra).

One pass over the observed entries in CSR order computes the residual, the
loss, ``R @ B`` and ``R.T @ A``.  Each entry touches one row of ``A`` and
one of ``B`` and nothing of size |Omega| x k is ever written, which is what
makes this about three times faster than the NumPy/SciPy composition (four
memory-bound passes over |Omega| x k arrays).

The kernels are compiled once per machine and dtype and cached on disk
(``cache=True``), for every width k.  Importing this module sets
``OMP_WAIT_POLICY=PASSIVE`` unless it is set already (see below).
"""

from __future__ import annotations

import os

# Numba's OpenMP threads sleep between and at the end of parallel regions
# instead of spinning, unless the user chose otherwise.  With spinning
# (libgomp's default) a thread that waits for a preempted partner burns the
# core that partner needs: on the shared 2-core reference machine under load
# (load average 3-4) a 2-thread step at 1000 x 1000, 20% observed, k = 10
# took 18-21 ms spinning against 5.4-7.3 ms passive (and 5.3-5.8 ms on one
# thread).  A sleeping thread costs a futex wake-up per kernel call (tens of
# microseconds).  It must be set before the OpenMP runtime starts, i.e.
# before Numba's first threaded call; it applies to the whole process.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numba  # noqa: E402
import numpy as np  # noqa: E402


def _sample(indptr, cols, A, B, out):
    """``out = (A @ B.T)[Omega]`` in CSR order."""
    m, k = A.shape
    for i in numba.prange(m):
        for e in range(indptr[i], indptr[i + 1]):
            j = cols[e]
            s = 0.0
            for c in range(k):
                s += A[i, c] * B[j, c]
            out[e] = s


def _segment_products(start, stop, a, cols, values, B, part, row_sum):
    """Entries ``start:stop`` of one row ``a``: adds ``R @ B``'s row to ``row_sum`` and
    ``R.T @ A``'s rows to ``part``; returns the entries' ``sum r^2``.

    Entries go four at a time: four independent dot products and updates per
    pass give the CPU independent work to overlap (one entry's chain, a
    gather of ``B[j]``, a dot product, the residual, the scatter into
    ``part[j]``, is mostly latency).  At 1000 x 1000, 20% observed, one
    thread, CPU time per call (min of 7 x 100): 2.1 against 3.0 ms one at a
    time at k = 10, 1.5 against 2.0 ms at k = 5, the same (4.1 ms) at k = 20.
    """
    width = a.shape[0]
    loss = 0.0
    e = start
    while e + 3 < stop:
        j0, j1, j2, j3 = cols[e], cols[e + 1], cols[e + 2], cols[e + 3]
        s0 = s1 = s2 = s3 = 0.0
        for c in range(width):
            ac = a[c]
            s0 += ac * B[j0, c]
            s1 += ac * B[j1, c]
            s2 += ac * B[j2, c]
            s3 += ac * B[j3, c]
        r0, r1 = s0 - values[e], s1 - values[e + 1]
        r2, r3 = s2 - values[e + 2], s3 - values[e + 3]
        loss += r0 * r0 + r1 * r1 + r2 * r2 + r3 * r3
        for c in range(width):
            ac = a[c]
            row_sum[c] += r0 * B[j0, c] + r1 * B[j1, c] + r2 * B[j2, c] + r3 * B[j3, c]
            part[j0, c] += r0 * ac
            part[j1, c] += r1 * ac
            part[j2, c] += r2 * ac
            part[j3, c] += r3 * ac
        e += 4
    while e < stop:
        j = cols[e]
        s = 0.0
        for c in range(width):
            s += a[c] * B[j, c]
        r = s - values[e]
        loss += r * r
        for c in range(width):
            row_sum[c] += r * B[j, c]
            part[j, c] += r * a[c]
        e += 1
    return loss


def _fused_products(chunk_rows, indptr, cols, values, A, B, row_out, col_parts):
    """One pass: the loss, ``row_out = R @ B`` and per-chunk parts of ``R.T @ A``.

    Rows are split into ``len(chunk_rows) - 1`` contiguous chunks, one per
    thread; chunk ``t`` accumulates its share of ``R.T @ A`` into
    ``col_parts[t]`` so no two threads write the same memory.  Returns the
    loss ``1/2 ||residual||^2``.
    """
    n_chunks = chunk_rows.shape[0] - 1
    losses = np.zeros(n_chunks)
    for t in numba.prange(n_chunks):
        part = col_parts[t]
        part[:, :] = 0.0
        loss = 0.0
        for i in range(chunk_rows[t], chunk_rows[t + 1]):
            row_out[i, :] = 0.0
            loss += segment_products(indptr[i], indptr[i + 1], A[i], cols, values, B, part,
                                     row_out[i])
        losses[t] = loss
    return 0.5 * losses.sum()


def _tiled_fused_products(tile_chunk_ptr, segment_rows, segment_ptr, cols, values, A, B,
                          row_out, col_parts, chunk_rows):
    """``_fused_products`` over a column-tiled ordering of the pattern.

    Entries are ordered by (column tile, row, column) and grouped into
    segments (one row within one tile).  Each chunk of rows walks the tiles
    in turn, so the rows of ``B`` and of its ``R.T @ A`` part that a tile
    touches stay in cache.  Untiled threaded patterns use it with one tile,
    whose segments are the rows.

    On one thread at 100,000 x 100,000 with 5M entries and k = 20 the tiled
    order took 405 ms per call against 1,487 ms for the row-major kernel,
    and 41 against 73 ms at 10,000 x 10,000 with 2M entries and k = 10.
    """
    n_tiles, n_chunks = tile_chunk_ptr.shape[0], tile_chunk_ptr.shape[1] - 1
    losses = np.zeros(n_chunks)
    for t in numba.prange(n_chunks):
        part = col_parts[t]
        part[:, :] = 0.0
        for i in range(chunk_rows[t], chunk_rows[t + 1]):
            row_out[i, :] = 0.0
        loss = 0.0
        for tile in range(n_tiles):
            for segment in range(tile_chunk_ptr[tile, t], tile_chunk_ptr[tile, t + 1]):
                i = segment_rows[segment]
                loss += segment_products(segment_ptr[segment], segment_ptr[segment + 1], A[i],
                                         cols, values, B, part, row_out[i])
        losses[t] = loss
    return 0.5 * losses.sum()


# Every kernel is a module-level function compiled with cache=True: a new
# process loads the machine code from __pycache__ instead of compiling it
# (about 3 s of compilation for the threaded kernel, which each new process
# paid when it was compiled per width in a closure).  The width k is a
# run-time value, so one compiled kernel serves every width.  Compiling one
# kernel per width (k a compile-time constant that LLVM unrolls) does not pay
# on the 2-core reference machine: 1000 x 1000, 20% observed, one thread, CPU
# time per call, interleaved runs: about the same at k = 10 (3.3-3.9 ms
# either way), 1.6-1.8x slower at k = 20 (8.2-9.4 against 5.3 ms).
# Serial versions serve small patterns, where starting threads costs more
# than the work.
segment_products = numba.njit(fastmath=True, boundscheck=False, cache=True)(_segment_products)
sample = numba.njit(parallel=True, cache=True)(_sample)
sample_serial = numba.njit(cache=True)(_sample)
fused_products_serial = numba.njit(fastmath=True, cache=True)(_fused_products)
tiled_fused_products = numba.njit(parallel=True, fastmath=True, boundscheck=False,
                                  cache=True)(_tiled_fused_products)
tiled_fused_products_serial = numba.njit(fastmath=True, boundscheck=False,
                                         cache=True)(_tiled_fused_products)
