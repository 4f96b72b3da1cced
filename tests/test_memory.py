"""The sparse (compressed) path never forms an m x n array: its memory is
O(|Omega| + (m + n) k) (DESIGN.md section 4), measured with tracemalloc."""

import tracemalloc
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from dmc import ConvergenceWarning, DeepMatrixCompleter


def _sparse_low_rank(m, n, n_observed, rank, seed):
    """A rank-``rank`` matrix sampled at ``n_observed`` distinct entries, built without any m x n array."""
    rng = np.random.default_rng(seed)
    flat = np.unique(rng.integers(0, m * n, int(n_observed * 1.01)))[:n_observed]
    rows, cols = flat // n, flat % n
    left, right = rng.standard_normal((m, rank)), rng.standard_normal((n, rank))
    values = np.einsum("ij,ij->i", left[rows], right[cols])
    return sp.csr_matrix((values, (rows, cols)), shape=(m, n))


def test_sparse_fit_memory_is_bounded_by_observed_entries_and_factors(monkeypatch):
    m, n, n_observed, rank = 2_000, 200_000, 400_000, 3
    M = _sparse_low_rank(m, n, n_observed, rank, seed=0)
    assert M.nnz == n_observed
    k = 2 * rank  # the compressed model's width
    # The budget: 32 doubles per observed entry (indices, values, residuals, the
    # kernels' CSR/CSC copies, the initial gradient) and 8 arrays of (m + n) x k
    # doubles (U, V, their gradients, the Lanczos and Householder vectors of the
    # initialization).  180 MB here; measured peak: 95 MB.  A single m x n float64
    # array would be 3.2 GB, a boolean m x n mask 400 MB.
    budget = 32 * 8 * n_observed + 8 * 8 * (m + n) * k
    dense_bytes = 8 * m * n
    assert budget < dense_bytes / 15
    # SciPy kernels: arrays that Numba allocates inside compiled code come from its
    # own allocator, which tracemalloc does not see (and compiling costs a minute here)
    monkeypatch.setenv("DMC_KERNELS", "scipy")
    model = DeepMatrixCompleter(rank=rank, method="compressed", max_iter=5, backend="numpy",
                                random_state=0)
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # 5 steps stop at max_iter on purpose
            model.fit(M)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert model.n_iter_ == 5 and model.left_factor_.shape == (m, k)
    assert peak < budget, (f"peak {peak / 1e6:.0f} MB over the budget {budget / 1e6:.0f} MB "
                           f"(|Omega| = {n_observed}, (m + n) k = {(m + n) * k})")
    # the fitted model answers for entries without the dense matrix either
    values = model.predict(np.array([0, m - 1]), np.array([0, n - 1]))
    assert values.shape == (2,) and np.all(np.isfinite(values))


def test_tracemalloc_sees_numpy_allocations():
    """The measurement above means something: a dense array of the size it rules out is seen."""
    tracemalloc.start()
    try:
        block = np.ones((2_000, 2_000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak >= block.nbytes == 32_000_000


@pytest.fixture(autouse=True)
def _no_leftover_tracing():
    yield
    assert not tracemalloc.is_tracing()
