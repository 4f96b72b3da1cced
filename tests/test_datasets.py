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


# -- condition_number ------------------------------------------------------------
@pytest.mark.parametrize("shape, rank", [((60, 50), 4), ((300, 250), 4), ((40, 70), 1), ((30, 30), 30)])
@pytest.mark.parametrize("kappa", [1.0, 10.0, 1000.0])
def test_condition_number_sets_a_geometric_spectrum(shape, rank, kappa):
    M, mask = make_low_rank(shape, rank, 0.3, condition_number=kappa, random_state=3)
    M_default, mask_default = make_low_rank(shape, rank, 0.3, random_state=3)
    s = np.linalg.svd(M, compute_uv=False)  # independent reference (dense LAPACK)
    s_default = np.linalg.svd(M_default, compute_uv=False)
    top = s_default[0]  # the scale is the paper recipe's top singular value
    expected = top * kappa ** (-np.arange(rank) / max(rank - 1, 1))
    np.testing.assert_allclose(s[:rank], expected, rtol=1e-9)
    assert np.all(s[rank:] <= 1e-10 * s[0])  # rank is exact
    np.testing.assert_array_equal(mask, mask_default)  # same mask for the same seed
    if rank < min(shape):
        # same singular subspaces as the default draw
        u = np.linalg.svd(M)[0][:, :rank]
        u_default = np.linalg.svd(M_default)[0][:, :rank]
        np.testing.assert_allclose(np.linalg.svd(u.T @ u_default, compute_uv=False), 1.0, atol=1e-8)


def test_condition_number_none_keeps_the_default_output_bit_for_bit():
    for shape, rank in [((60, 50), 3), ((300, 250), 4)]:
        a = make_low_rank(shape, rank, 0.2, random_state=7)
        b = make_low_rank(shape, rank, 0.2, condition_number=None, random_state=7)
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    a = make_low_rank((50, 40), 3, 0.3, noise=0.1, random_state=8)
    b = make_low_rank((50, 40), 3, 0.3, noise=0.1, condition_number=None, random_state=8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_condition_number_keeps_the_noise_draw():
    M, mask, noisy = make_low_rank((50, 40), 3, 0.3, noise=0.1, condition_number=50, random_state=2)
    M0, mask0, noisy0 = make_low_rank((50, 40), 3, 0.3, noise=0.1, random_state=2)
    np.testing.assert_array_equal(mask, mask0)
    assert np.all(np.isnan(noisy[~mask]))
    np.testing.assert_allclose(noisy[mask] - M[mask], noisy0[mask] - M0[mask], atol=1e-12)


@pytest.mark.parametrize("bad", [0.5, 0.0, -3.0, np.inf, np.nan, "10", True, [10.0]])
def test_bad_condition_number_raises(bad):
    with pytest.raises(ValueError, match="condition_number"):
        make_low_rank((30, 20), 3, 0.5, condition_number=bad, random_state=0)


def test_integer_and_numpy_condition_numbers_are_accepted():
    a, _ = make_low_rank((30, 20), 3, 0.5, condition_number=10, random_state=0)
    b, _ = make_low_rank((30, 20), 3, 0.5, condition_number=np.float32(10.0), random_state=0)
    np.testing.assert_allclose(a, b, rtol=1e-12)
