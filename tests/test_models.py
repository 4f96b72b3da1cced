"""dmc.models against hand-built references: products, initializations, step size.

The gradients are checked against finite differences in test_gradients.py;
these tests pin the rest of the module (found by mutation testing, see
tools/mutation.py) with references computed here independently: explicit
matrix chains, the QR factorization through Cholesky, hand-computed numbers.
"""

import numpy as np
import pytest

from dmc import models


def _chain(arrays):
    """``left @ inner[-1] @ ... @ inner[0] @ right.T`` written out."""
    left, *inner, right = arrays
    X = left
    for w in reversed(inner):
        X = X @ w
    return X @ right.T


def _haar_q(a):
    """The Q of ``a = Q R`` with ``diag(R) > 0`` (unique), via Cholesky of ``a^T a``."""
    R = np.linalg.cholesky(a.T @ a).T
    return np.linalg.solve(R.T, a.T).T


def _factors(rng, m=5, n=4, k=3, p=3):
    arrays = ([rng.standard_normal((m, k))] + [rng.standard_normal((k, k)) for _ in range(p)]
              + [rng.standard_normal((n, k))])
    return models.DeepFactors.from_arrays(arrays), arrays


def test_deep_factors_shape_width_arrays_and_copy():
    factors, arrays = _factors(np.random.default_rng(0), m=5, n=4, k=3, p=2)
    assert factors.shape == (5, 4)
    assert factors.width == 3 and isinstance(factors.width, int)
    assert len(factors.inner) == 2
    for a, b in zip(factors.arrays(), arrays):
        assert a is b
    copy = factors.copy()
    for a, b in zip(copy.arrays(), arrays):
        assert a is not b
        np.testing.assert_array_equal(a, b)
    copy.left[0, 0] += 1.0
    assert factors.left[0, 0] == arrays[0][0, 0]


def test_deep_factors_copy_clones_torch_tensors():
    torch = pytest.importorskip("torch")
    factors = models.DeepFactors(torch.ones(2, 1), [torch.ones(1, 1)], torch.ones(3, 1))
    copy = factors.copy()
    copy.left[0, 0] = 5.0
    assert float(factors.left[0, 0]) == 1.0 and float(copy.left[0, 0]) == 5.0


def test_inner_product_is_the_ordered_chain():
    rng = np.random.default_rng(1)
    inner = [rng.standard_normal((3, 3)) for _ in range(3)]
    np.testing.assert_allclose(models.inner_product(inner), inner[2] @ inner[1] @ inner[0])
    np.testing.assert_array_equal(models.inner_product(inner[:1]), inner[0])
    assert models.inner_product([]) is None


@pytest.mark.parametrize("p", [0, 1, 3])
def test_end_to_end_and_predict_entries_match_the_chain(p):
    rng = np.random.default_rng(2)
    factors, arrays = _factors(rng, m=6, n=5, k=3, p=p)
    X = _chain(arrays)
    np.testing.assert_allclose(models.end_to_end(factors), X, rtol=1e-12)
    rows = np.array([0, 5, 3, 3, 1])
    cols = np.array([4, 0, 2, 1, 1])
    np.testing.assert_allclose(models.predict_entries(factors, rows, cols), X[rows, cols], rtol=1e-12)


@pytest.mark.parametrize("shape", [(7, 3), (3, 7), (4, 4)])
def test_random_orthogonal_is_the_sign_fixed_qr_of_a_gaussian(shape):
    n_rows, n_cols = shape
    Q = models.random_orthogonal(n_rows, n_cols, np.random.default_rng(3))
    assert Q.shape == shape
    # the same Gaussian draw, drawn tall; Q (or Q^T) is its QR factor with positive diag(R)
    tall = (max(shape), min(shape))
    a = np.random.default_rng(3).standard_normal(tall)
    expected = _haar_q(a)
    np.testing.assert_allclose(Q if n_rows >= n_cols else Q.T, expected, atol=1e-12)


def test_init_wide_draws_w1_first_and_scales_every_factor():
    m, n, width, depth, eps = 6, 4, 5, 4, 0.3
    factors = models.init_wide((m, n), depth, width, eps, np.random.default_rng(4))
    rng = np.random.default_rng(4)
    w1 = _haar_q(rng.standard_normal((width, n)))                     # width x n
    middle = [_haar_q(rng.standard_normal((width, width))) for _ in range(depth - 2)]
    wl = _haar_q(rng.standard_normal((m, width)))                     # m x width
    assert factors.shape == (m, n) and factors.width == width
    assert len(factors.inner) == depth - 2
    np.testing.assert_allclose(factors.left, eps * wl, atol=1e-12)
    np.testing.assert_allclose(factors.right, eps * w1.T, atol=1e-12)
    for got, w in zip(factors.inner, middle):
        np.testing.assert_allclose(got, eps * w, atol=1e-12)
    # end to end: eps**depth times a product of orthogonal factors
    np.testing.assert_allclose(models.end_to_end(factors),
                               eps**depth * wl @ middle[1] @ middle[0] @ w1, atol=1e-12)


def test_init_wide_depth_two_has_no_inner_factor():
    factors = models.init_wide((3, 5), 2, 4, 1.0, np.random.default_rng(0))
    assert factors.inner == [] and factors.left.shape == (3, 4) and factors.right.shape == (5, 4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_init_compressed_is_identity_inner_and_copies_u_v(dtype):
    rng = np.random.default_rng(5)
    U, V = rng.standard_normal((6, 2)).astype(dtype), rng.standard_normal((4, 2)).astype(dtype)
    factors = models.init_compressed(U, V, 3, 0.1)
    assert len(factors.inner) == 3
    for w in factors.inner:
        assert w.dtype == dtype
        np.testing.assert_array_equal(w, dtype(0.1) * np.eye(2, dtype=dtype))
    np.testing.assert_array_equal(factors.left, U)
    np.testing.assert_array_equal(factors.right, V)
    assert factors.left is not U and factors.right is not V
    factors.left[0, 0] += 1.0
    factors.right[0, 0] += 1.0
    assert factors.left[0, 0] != U[0, 0] and factors.right[0, 0] != V[0, 0]


@pytest.mark.parametrize("p", [0, 1, 3])
def test_dense_loss_is_half_the_masked_squared_residual(p):
    rng = np.random.default_rng(6)
    factors, arrays = _factors(rng, m=5, n=4, k=2, p=p)
    mask = rng.random((5, 4)) < 0.5
    M = rng.standard_normal((5, 4))
    loss, grads = models.dense_loss_and_gradients(factors, mask.astype(float), np.where(mask, M, 0.0))
    R = np.where(mask, _chain(arrays) - M, 0.0)
    assert np.isclose(loss, 0.5 * np.sum(R**2), rtol=1e-12)
    # gradients written out for the outer factors: d/d left = R right C^T, d/d right = R^T left C
    C = np.eye(2) if p == 0 else _chain([np.eye(2), *arrays[1:-1], np.eye(2)])
    np.testing.assert_allclose(grads.left, R @ arrays[-1] @ C.T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads.right, R.T @ arrays[0] @ C, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("top, fraction, depth, expected", [
    (2.0, 0.5, 1, 3.0),        # sigma = 4, exponent 0: 1.5 / (1 * 0.5)
    (2.0, 0.5, 2, 0.375),      # sigma = 4, exponent 1: 1.5 / (2 * 0.5 * 4)
    (4.0, 0.25, 4, 1.5 / (4 * 0.25 * 16.0 ** 1.5)),  # sigma = 16, exponent 3/2
    (9.0, 1.0, 3, 1.5 / (3 * 9.0 ** (4 / 3))),
])
def test_spectral_step_size_hand_computed(top, fraction, depth, expected):
    assert models.spectral_step_size(top, fraction, depth) == pytest.approx(expected, rel=1e-12)
