"""The invariant subspace: orthogonal operator, initial gradient, basis."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmc import models, subspace
from dmc.datasets import make_low_rank
from dmc.observations import as_observations


@given(st.integers(1, 30), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_random_orthogonal_is_semi_orthogonal_and_consistent(m, n, seed):
    q = subspace.RandomOrthogonal((m, n), np.random.default_rng(seed))
    Q = q.dense()
    assert Q.shape == (m, n)
    gram = Q.T @ Q if m >= n else Q @ Q.T
    np.testing.assert_allclose(gram, np.eye(min(m, n)), atol=1e-12)
    rows, cols = np.nonzero(np.ones((m, n)))
    np.testing.assert_allclose(q.entries(rows, cols), Q[rows, cols], atol=1e-14)
    np.testing.assert_allclose(q.entries(rows, cols, chunk=7), q.entries(rows, cols), rtol=0, atol=1e-15)
    Y = np.random.default_rng(seed).standard_normal((m, 2))
    np.testing.assert_allclose(q.rmatvec(Y), Q.T @ Y, atol=1e-12)


def test_random_orthogonal_is_dense_not_a_permutation():
    Q = subspace.RandomOrthogonal((50, 50), np.random.default_rng(0)).dense()
    assert np.count_nonzero(np.abs(Q) > 1e-8) > 50 * 10


def test_initial_gradient_is_sparse_and_exact():
    M, mask = make_low_rank((30, 20), 2, 0.4, random_state=1)
    obs = as_observations(M, mask)
    q = subspace.RandomOrthogonal(obs.shape, np.random.default_rng(2))
    G0 = subspace.initial_gradient(obs, q, 1e-3**3)
    expected = np.where(mask, 1e-9 * q.dense() - M, 0.0)
    assert G0.nnz == mask.sum()
    np.testing.assert_allclose(G0.toarray(), expected, atol=1e-15)


@pytest.mark.parametrize("shape", [(40, 40), (30, 50), (50, 30)])
def test_subspace_follows_the_construction(shape):
    rank, eps, depth = 3, 1e-3, 3
    M, mask = make_low_rank(shape, rank, 0.5, random_state=3)
    obs = as_observations(M, mask)
    rng = np.random.default_rng(4)
    q = subspace.RandomOrthogonal(shape, rng)
    G0 = subspace.initial_gradient(obs, q, eps**depth)
    spectrum = subspace.top_singular_triplets(G0, rank, rng)
    # the truncated SVD gives the top triplets of the sparse gradient
    s_full = np.linalg.svd(G0.toarray(), compute_uv=False)
    np.testing.assert_allclose(spectrum.singular_values, s_full[:rank], rtol=1e-10)
    U, V = subspace.invariant_subspace(spectrum, q, rng)
    assert U.shape == (shape[0], 2 * rank) and V.shape == (shape[1], 2 * rank)
    np.testing.assert_allclose(V.T @ V, np.eye(2 * rank), atol=1e-12)
    np.testing.assert_allclose(U, q.dense() @ V, atol=1e-12)
    # span(V) contains V_G and Q^T U_G
    for block in (spectrum.right, q.rmatvec(spectrum.left)):
        np.testing.assert_allclose(V @ (V.T @ block), block, atol=1e-10)
    # the compressed start is E0 restricted to the subspace
    start = models.init_compressed(U, V, depth, eps)
    np.testing.assert_allclose(models.end_to_end(start), eps**depth * q.dense() @ V @ V.T, atol=1e-20)


def test_rank_deficient_basis_is_completed():
    """Symmetric target with Q = I: [V_G, Q^T U_G] has rank r, not 2r."""
    rng = np.random.default_rng(5)
    B = rng.standard_normal((20, 2))
    M = B @ B.T
    obs = as_observations(M)
    q = subspace.DenseOrthogonal(np.eye(20))
    spectrum = subspace.top_singular_triplets(subspace.initial_gradient(obs, q, 1e-9), 2, rng)
    U, V = subspace.invariant_subspace(spectrum, q, rng)
    assert V.shape == (20, 4)
    np.testing.assert_allclose(V.T @ V, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(V @ (V.T @ spectrum.right), spectrum.right, atol=1e-10)
