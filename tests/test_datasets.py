import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dmc.datasets import make_low_rank


@given(st.integers(2, 40), st.integers(2, 40), st.floats(0.05, 1.0), st.integers(0, 2**32 - 1))
def test_low_rank_problem(m, n, p, seed):
    assume(round(p * m * n) >= 1)
    rank = min(m, n) // 2 or 1
    M, mask = make_low_rank((m, n), rank, p, random_state=seed)
    assert M.shape == mask.shape == (m, n) and mask.dtype == bool
    assert mask.sum() == round(p * m * n)
    s = np.linalg.svd(M, compute_uv=False)
    assert np.sum(s > 1e-10 * s[0]) == rank


def test_large_problem_uses_truncated_svd_and_is_reproducible():
    a, mask_a = make_low_rank((300, 250), 4, 0.1, random_state=1)
    b, mask_b = make_low_rank((300, 250), 4, 0.1, random_state=1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(mask_a, mask_b)
    s = np.linalg.svd(a, compute_uv=False)
    assert s[3] > 10 and s[4] < 1e-9
    # singular values of a standard Gaussian matrix: about sqrt(m) + sqrt(n)
    assert 0.8 * (np.sqrt(300) + np.sqrt(250)) < s[0] < 1.2 * (np.sqrt(300) + np.sqrt(250))


def test_noise_is_on_observed_entries_only():
    M, mask, noisy = make_low_rank((50, 40), 3, 0.3, noise=0.1, random_state=2)
    assert np.all(np.isnan(noisy[~mask]))
    diff = noisy[mask] - M[mask]
    assert 0.08 < diff.std() < 0.12
