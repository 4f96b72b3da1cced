"""Thread pools during a CPU fit: BLAS on one thread while Numba's kernel uses the cores.

A compressed step is one pass of the fused Numba kernel over the observed
entries (threaded over all cores) and a few dense products with a k x k
factor ((m x k) @ (k x k), (k x m) @ (m x k)).  Those products are far too
small to gain from threads, yet from k = 20 at 1000 x 1000 OpenBLAS splits
them over its own pool, whose threads then busy-wait after every call and
take cores from Numba's threads in the next kernel.  :func:`compute_threads`
limits BLAS to one thread for the duration of a fit (with threadpoolctl, the
ecosystem's tool for this) and restores it afterwards.
"""

from __future__ import annotations

import contextlib
import warnings

__all__ = ["compute_threads"]


@contextlib.contextmanager
def compute_threads(backend=None, *, blas_threads=1):
    """Limit BLAS threads for the duration of a CPU fit loop.

    Wrap the step loop with it::

        with compute_threads(backend):
            for step in range(max_iter):
                ...

    Parameters
    ----------
    backend : Backend, str or None, default=None
        The fit's backend (a :class:`dmc.backend.Backend` or its name);
        None means NumPy.  Only the NumPy backend is limited: torch and CuPy
        manage their own threads and devices, and the context does nothing.
    blas_threads : int or None, default=1
        Threads that BLAS may use inside the context; None leaves BLAS as it
        is.

    Notes
    -----
    Entering costs about a millisecond (threadpoolctl looks up the loaded
    BLAS libraries), so enter it once per fit, not once per step.  Without
    threadpoolctl installed the context does nothing.  Numba's own threads
    are left alone; set them with ``numba.set_num_threads`` or
    ``NUMBA_NUM_THREADS``.
    """
    name = getattr(backend, "name", backend) or "numpy"
    if name != "numpy" or blas_threads is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with warnings.catch_warnings():
        # threadpoolctl warns (RuntimeWarning) about some combinations of
        # OpenMP runtimes loaded together; that is no reason to fail a fit
        warnings.simplefilter("ignore", RuntimeWarning)
        limits = threadpool_limits(limits=blas_threads, user_api="blas")
    try:
        yield
    finally:
        limits.restore_original_limits()
