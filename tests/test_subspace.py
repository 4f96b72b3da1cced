"""The invariant subspace: orthogonal operator, initial gradient, basis."""

import numpy as np
import pytest
import scipy.sparse as sp
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


# -- against explicit constructions (found by mutation testing, tools/mutation.py)

def _explicit_q(shape, seed, n_reflections=8):
    """``[I_m 0] H_1 ... H_h S P [I_n; 0]^T`` built densely from the same draws."""
    m, n = shape
    d = max(m, n)
    h = min(n_reflections, d)
    rng = np.random.default_rng(seed)
    permutation = rng.permutation(d)
    signs = rng.choice(np.array([-1.0, 1.0]), size=d)
    Y = rng.standard_normal((d, h))
    H = np.eye(d)
    for j in range(h):
        y = Y[:, j] / np.linalg.norm(Y[:, j])
        H = H @ (np.eye(d) - 2.0 * np.outer(y, y))
    E = np.zeros((d, n))
    E[permutation[:n], np.arange(n)] = signs[:n]  # column i goes to row permutation[i], signed
    return (H @ E)[:m]


@pytest.mark.parametrize("shape, n_reflections", [((9, 6), 8), ((6, 9), 8), ((7, 7), 3), ((4, 3), 8),
                                                  ((5, 5), None), ((12, 10), None)])
def test_random_orthogonal_is_the_explicit_reflection_product(shape, n_reflections):
    kwargs = {} if n_reflections is None else {"n_reflections": n_reflections}
    q = subspace.RandomOrthogonal(shape, np.random.default_rng(11), **kwargs)
    expected = _explicit_q(shape, 11, 8 if n_reflections is None else n_reflections)
    np.testing.assert_allclose(q.dense(), expected, atol=1e-12)
    X = np.random.default_rng(0).standard_normal((shape[1], 3))
    np.testing.assert_allclose(q.matvec(X), expected @ X, atol=1e-12)
    Y = np.random.default_rng(1).standard_normal((shape[0], 2))
    np.testing.assert_allclose(q.rmatvec(Y), expected.T @ Y, atol=1e-12)
    rows = np.array([0, shape[0] - 1, 1, 2])
    cols = np.array([shape[1] - 1, 0, 2, 1])
    np.testing.assert_allclose(q.entries(rows, cols), expected[rows, cols], atol=1e-12)
    np.testing.assert_allclose(q.entries(rows, cols, chunk=3), expected[rows, cols], atol=1e-12)
    assert q.shape == shape


def test_random_orthogonal_float32_input_is_computed_in_float64():
    q = subspace.RandomOrthogonal((6, 4), np.random.default_rng(2))
    X = np.random.default_rng(3).standard_normal((4, 2)).astype(np.float32)
    assert q.matvec(X).dtype == np.float64 and q.rmatvec(q.matvec(X)).dtype == np.float64
    np.testing.assert_allclose(q.matvec(X), q.dense() @ X.astype(np.float64), atol=1e-12)
    Y = np.random.default_rng(4).standard_normal((6, 2)).astype(np.float32)
    assert q.rmatvec(Y).dtype == np.float64
    np.testing.assert_allclose(q.rmatvec(Y), q.dense().T @ Y.astype(np.float64), rtol=1e-12, atol=1e-12)


def test_dense_orthogonal_wraps_the_matrix():
    Q = np.linalg.qr(np.random.default_rng(4).standard_normal((6, 3)))[0].astype(np.float32)
    q = subspace.DenseOrthogonal(Q)
    assert q.shape == (6, 3) and q.dense().dtype == np.float64
    np.testing.assert_array_equal(q.dense(), Q.astype(np.float64))
    X = np.ones((3, 2))
    np.testing.assert_allclose(q.matvec(X), Q.astype(np.float64) @ X)
    np.testing.assert_allclose(q.rmatvec(np.ones((6, 1))), Q.T.astype(np.float64) @ np.ones((6, 1)))
    np.testing.assert_array_equal(q.entries(np.array([5, 0]), np.array([2, 1])), [Q[5, 2], Q[0, 1]])


def test_initial_gradient_of_float32_data_is_float64():
    M, mask = make_low_rank((8, 6), 2, 0.6, random_state=0)
    obs = as_observations(M.astype(np.float32), mask)
    q = subspace.DenseOrthogonal(np.eye(8, 6))
    G0 = subspace.initial_gradient(obs, q, 0.5)
    assert G0.dtype == np.float64 and G0.shape == (8, 6)
    expected = np.where(mask, 0.5 * np.eye(8, 6) - M.astype(np.float32).astype(np.float64), 0.0)
    np.testing.assert_allclose(G0.toarray(), expected, atol=1e-15)


@pytest.mark.parametrize("shape, rank", [((12, 9), 2), ((9, 12), 3), ((6, 4), 4), ((4, 6), 5), ((5, 5), 1)])
def test_top_singular_triplets_match_a_dense_svd(shape, rank):
    rng = np.random.default_rng(7)
    G = sp.random(*shape, density=0.6, random_state=8, format="csr") + sp.eye(*shape, format="csr")
    spectrum = subspace.top_singular_triplets(G.tocsr(), rank, rng)
    u, s, vt = np.linalg.svd(G.toarray(), full_matrices=False)
    r = min(rank, min(shape))
    assert spectrum.left.shape == (shape[0], r) and spectrum.right.shape == (shape[1], r)
    np.testing.assert_allclose(spectrum.singular_values, s[:r], rtol=1e-10)
    # vectors up to sign: the triplets reproduce G's best rank-r approximation
    np.testing.assert_allclose(spectrum.left @ np.diag(spectrum.singular_values) @ spectrum.right.T,
                               u[:, :r] @ np.diag(s[:r]) @ vt[:r], atol=1e-10)
    np.testing.assert_allclose(G @ spectrum.right, spectrum.left * spectrum.singular_values, atol=1e-10)


def test_top_singular_triplets_are_reproducible_from_the_rng():
    G = (sp.random(30, 20, density=0.3, random_state=1, format="csr") + sp.eye(30, 20)).tocsr()
    a = subspace.top_singular_triplets(G, 3, np.random.default_rng(5))
    b = subspace.top_singular_triplets(G, 3, np.random.default_rng(5))
    np.testing.assert_array_equal(a.left, b.left)
    np.testing.assert_array_equal(a.right, b.right)


def test_orthonormal_basis_full_rank_is_the_range():
    rng = np.random.default_rng(9)
    B = rng.standard_normal((10, 4))
    basis = subspace._orthonormal_basis(B, 4, rng)
    assert basis.shape == (10, 4)
    np.testing.assert_allclose(basis.T @ basis, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(basis @ (basis.T @ B), B, atol=1e-12)


def test_orthonormal_basis_drops_tiny_directions_and_completes():
    rng = np.random.default_rng(10)
    a = rng.standard_normal((10, 2))
    # third column is in span(a) up to 1e-12 relative: numerically rank 2
    B = np.hstack([a, a @ np.array([[1.0], [2.0]]) + 1e-12 * rng.standard_normal((10, 1))])
    basis = subspace._orthonormal_basis(B, 5, rng)
    assert basis.shape == (10, 5)
    np.testing.assert_allclose(basis.T @ basis, np.eye(5), atol=1e-12)
    np.testing.assert_allclose(basis[:, :2] @ (basis[:, :2].T @ a), a, atol=1e-10)
    # exactly rank-deficient: the extra directions are orthogonal to the range
    C = np.hstack([a, a])
    basis = subspace._orthonormal_basis(C, 4, rng)
    np.testing.assert_allclose(basis.T @ basis, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(basis[:, 2:].T @ a, 0.0, atol=1e-12)


def test_orthonormal_basis_keeps_small_but_real_directions():
    rng = np.random.default_rng(12)
    B = np.hstack([rng.standard_normal((8, 1)), 1e-8 * rng.standard_normal((8, 1))])
    basis = subspace._orthonormal_basis(B, 2, rng)
    np.testing.assert_allclose(basis @ (basis.T @ B), B, atol=1e-20)


@pytest.mark.parametrize("scale", [1e-16, 1e-8, 1.0, 1e8])
def test_orthonormal_basis_threshold_is_relative_to_the_largest_singular_value(scale):
    rng = np.random.default_rng(13)
    B = scale * rng.standard_normal((10, 3))
    basis = subspace._orthonormal_basis(B, 3, rng)
    np.testing.assert_allclose(basis.T @ basis, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(basis @ (basis.T @ B), B, atol=1e-12 * scale)


def test_orthonormal_basis_drops_a_direction_below_1e_10_of_the_largest():
    rng = np.random.default_rng(14)
    a1, a2, noise = rng.standard_normal((3, 12, 1))
    # singular values about 1, 1e-2 and 1e-11 relative: the last is dropped
    B = 1e6 * np.hstack([a1, 1e-2 * a2, a1 + 1e-11 * noise])
    u, s, _ = np.linalg.svd(B, full_matrices=False)
    assert 1e-12 * s[0] < s[2] < 1e-10 * s[0]
    basis = subspace._orthonormal_basis(B, 3, rng)
    np.testing.assert_allclose(basis.T @ basis, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.abs(basis[:, :2].T @ u[:, :2]), np.eye(2), atol=1e-8)
    # the third column is a random completion, not the dropped singular vector
    assert abs(basis[:, 2] @ u[:, 2]) < 0.9


def test_orthonormal_basis_completes_a_single_missing_direction():
    rng = np.random.default_rng(15)
    a = rng.standard_normal((9, 3))
    basis = subspace._orthonormal_basis(np.hstack([a, a[:, :1]]), 4, rng)
    assert basis.shape == (9, 4)
    np.testing.assert_allclose(basis.T @ basis, np.eye(4), atol=1e-12)


# -- randomized truncated SVD (Halko, Martinsson and Tropp) ---------------------
def _decaying(m, n, decay, seed=0):
    """A dense m x n matrix with singular values decay**j and known singular vectors."""
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, min(m, n))))
    V, _ = np.linalg.qr(rng.standard_normal((n, min(m, n))))
    s = decay ** np.arange(min(m, n))
    return (U * s) @ V.T, U, s, V


def _largest_angle(A, B):
    import scipy.linalg as sla

    return float(np.max(sla.subspace_angles(A, B)))


@pytest.mark.parametrize("shape, rank", [((120, 80), 5), ((80, 120), 8), ((60, 60), 1), ((40, 30), 30)])
def test_randomized_triplets_match_a_dense_svd(shape, rank):
    A, U, s, V = _decaying(*shape, decay=0.7)
    spectrum = subspace.randomized_singular_triplets(A, rank, np.random.default_rng(1))
    assert spectrum.left.shape == (shape[0], rank) and spectrum.right.shape == (shape[1], rank)
    np.testing.assert_allclose(spectrum.singular_values, s[:rank], rtol=1e-10)
    assert _largest_angle(spectrum.left, U[:, :rank]) < 1e-8
    assert _largest_angle(spectrum.right, V[:, :rank]) < 1e-8
    np.testing.assert_allclose(spectrum.left.T @ spectrum.left, np.eye(rank), atol=1e-12)
    np.testing.assert_allclose(spectrum.right.T @ spectrum.right, np.eye(rank), atol=1e-12)
    np.testing.assert_allclose(A @ spectrum.right, spectrum.left * spectrum.singular_values, atol=1e-10)


def test_randomized_triplets_need_the_power_iterations_on_a_slow_decay():
    # sigma_{l+1} / sigma_rank = 0.97**10: the plain range finder is off by far more than 1e-6
    A, U, s, V = _decaying(200, 150, decay=0.97, seed=2)
    rank = 4
    errors = {}
    for n_iter in (0, 8):
        spectrum = subspace.randomized_singular_triplets(A, rank, np.random.default_rng(3), n_iter=n_iter)
        errors[n_iter] = np.max(np.abs(spectrum.singular_values - s[:rank]) / s[:rank])
    assert errors[0] > 1e-3
    assert errors[8] < errors[0] / 10


def test_randomized_triplets_of_sparse_and_operator_inputs_agree_with_arpack():
    rng = np.random.default_rng(4)
    m, n = 90, 70
    rows, cols = rng.integers(0, m, 600), rng.integers(0, n, 600)
    S = sp.csr_matrix((np.ones(600), (rows, cols)), shape=(m, n))
    S.sum_duplicates()
    q = subspace.RandomOrthogonal((m, n), rng)
    G = subspace.full_initial_gradient(-S, q, 1e-3)
    arpack = subspace.top_singular_triplets(G, 3, np.random.default_rng(5))
    fast = subspace.top_singular_triplets(G, 3, np.random.default_rng(5), solver="randomized", n_iter=20)
    np.testing.assert_allclose(fast.singular_values, arpack.singular_values, rtol=1e-8)
    assert _largest_angle(fast.left, arpack.left) < 1e-4
    assert _largest_angle(fast.right, arpack.right) < 1e-4
    sparse = subspace.randomized_singular_triplets(S, 3, np.random.default_rng(6), n_iter=20)
    dense = np.linalg.svd(S.toarray(), compute_uv=False)
    np.testing.assert_allclose(sparse.singular_values, dense[:3], rtol=1e-8)


def test_randomized_triplets_are_reproducible_from_the_rng():
    A = _decaying(50, 40, decay=0.9)[0]
    a = subspace.randomized_singular_triplets(A, 3, np.random.default_rng(5), n_iter=1)
    b = subspace.randomized_singular_triplets(A, 3, np.random.default_rng(5), n_iter=1)
    c = subspace.randomized_singular_triplets(A, 3, np.random.default_rng(6), n_iter=1)
    np.testing.assert_array_equal(a.left, b.left)
    np.testing.assert_array_equal(a.singular_values, b.singular_values)
    np.testing.assert_array_equal(a.right, b.right)
    assert not np.array_equal(a.singular_values, c.singular_values)  # the test block comes from rng


def test_randomized_triplets_of_a_low_rank_matrix_fall_back_to_householder():
    # rank 2 < block 12: the Gram matrix of the sketch is singular, Cholesky fails
    rng = np.random.default_rng(7)
    A = rng.standard_normal((40, 2)) @ rng.standard_normal((2, 30))
    spectrum = subspace.randomized_singular_triplets(A, 2, rng)
    np.testing.assert_allclose(spectrum.singular_values, np.linalg.svd(A, compute_uv=False)[:2], rtol=1e-10)
    np.testing.assert_allclose(spectrum.left * spectrum.singular_values @ spectrum.right.T, A, atol=1e-10)


def test_cholesky_qr_is_orthonormal_and_spans_the_block():
    rng = np.random.default_rng(8)
    # condition number 1e6 (not just scaled columns): one Cholesky-QR pass alone loses orthogonality
    U, _ = np.linalg.qr(rng.standard_normal((500, 10)))
    W, _ = np.linalg.qr(rng.standard_normal((10, 10)))
    Y = (U * np.logspace(0, -6, 10)) @ W.T
    Q = subspace.cholesky_qr(Y)
    np.testing.assert_allclose(Q.T @ Q, np.eye(10), atol=1e-12)
    np.testing.assert_allclose(Q @ (Q.T @ Y), Y, atol=1e-12)


def test_cholesky_qr_falls_back_on_a_rank_deficient_block():
    rng = np.random.default_rng(9)
    Y = rng.standard_normal((50, 3)) @ rng.standard_normal((3, 6))
    Q = subspace.cholesky_qr(Y)
    assert Q.shape == (50, 6)
    np.testing.assert_allclose(Q.T @ Q, np.eye(6), atol=1e-12)
    np.testing.assert_allclose(Q @ (Q.T @ Y), Y, atol=1e-10)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"rank": 0}, ValueError, "rank must be an integer >= 1"),
    ({"rank": 2.0}, ValueError, "rank must be an integer"),
    ({"rank": 21}, ValueError, "rank=21 exceeds min"),
    ({"n_iter": -1}, ValueError, "n_iter must be an integer >= 0"),
    ({"n_iter": True}, ValueError, "n_iter must be an integer"),
    ({"n_oversamples": -2}, ValueError, "n_oversamples must be an integer >= 0"),
    ({"rng": 3}, TypeError, "rng must be a numpy.random.Generator"),
    ({"G": [[1.0, 2.0]]}, TypeError, "G must be a 2-D matrix or operator"),
])
def test_randomized_triplets_reject_bad_input(kwargs, error, match):
    args = {"G": np.ones((30, 20)), "rank": 2, "rng": np.random.default_rng(0)}
    args.update(kwargs)
    G, rank, rng = args.pop("G"), args.pop("rank"), args.pop("rng")
    with pytest.raises(error, match=match):
        subspace.randomized_singular_triplets(G, rank, rng, **args)


def test_top_singular_triplets_rejects_an_unknown_solver():
    with pytest.raises(ValueError, match='solver must be "arpack" or "randomized"'):
        subspace.top_singular_triplets(np.ones((5, 4)), 1, np.random.default_rng(0), solver="lanczos")
