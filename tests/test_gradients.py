"""Analytic gradients of every model against finite differences."""

import warnings

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import dmc
from dmc import models
from dmc.datasets import make_low_rank
from dmc.backend import make_pattern
from dmc.observations import as_observations


def _loss(arrays, mask, values):
    X = models.end_to_end(models.DeepFactors.from_arrays(arrays))
    residual = mask * (X - values)
    return 0.5 * np.sum(residual * residual)


@st.composite
def problems(draw):
    m = draw(st.integers(2, 9))
    n = draw(st.integers(2, 9))
    width = draw(st.integers(1, 5))
    n_inner = draw(st.integers(0, 4))  # depth 2..4 wide/narrow, 0..4 inner for compressed
    seed = draw(st.integers(0, 2**32 - 1))
    return m, n, width, n_inner, seed


def _random_problem(m, n, width, n_inner, seed):
    rng = np.random.default_rng(seed)
    arrays = ([rng.standard_normal((m, width))]
              + [rng.standard_normal((width, width)) for _ in range(n_inner)]
              + [rng.standard_normal((n, width))])
    mask = rng.random((m, n)) < 0.6
    mask.flat[rng.integers(m * n)] = True
    values = rng.standard_normal((m, n))
    return arrays, mask, values


def _check_against_finite_differences(arrays, grads, mask, values, seed):
    rng = np.random.default_rng(seed + 1)
    for index, (array, grad) in enumerate(zip(arrays, grads.arrays())):
        direction = rng.standard_normal(array.shape)
        h = 1e-6
        plus = [a.copy() for a in arrays]
        minus = [a.copy() for a in arrays]
        plus[index] += h * direction
        minus[index] -= h * direction
        numeric = (_loss(plus, mask, values) - _loss(minus, mask, values)) / (2 * h)
        analytic = np.sum(grad * direction)
        scale = max(1.0, abs(numeric), np.linalg.norm(grad) * np.linalg.norm(direction))
        assert abs(numeric - analytic) <= 1e-6 * scale, (index, numeric, analytic)


@given(problems())
def test_sparse_gradients_match_finite_differences(problem):
    m, n, width, n_inner, seed = problem
    arrays, mask, values = _random_problem(*problem)
    obs = as_observations(values, mask)
    loss, grads = models.sparse_loss_and_gradients(
        models.DeepFactors.from_arrays(arrays), make_pattern(obs), obs.values)
    assert np.isclose(loss, _loss(arrays, mask, values), rtol=1e-12)
    _check_against_finite_differences(arrays, grads, mask, values, seed)


@given(problems())
def test_dense_gradients_match_finite_differences(problem):
    m, n, width, n_inner, seed = problem
    arrays, mask, values = _random_problem(*problem)
    loss, grads = models.dense_loss_and_gradients(
        models.DeepFactors.from_arrays(arrays), mask.astype(float), np.where(mask, values, 0.0))
    assert np.isclose(loss, _loss(arrays, mask, values), rtol=1e-12)
    _check_against_finite_differences(arrays, grads, mask, values, seed)


@given(problems())
def test_sparse_and_dense_paths_agree(problem):
    arrays, mask, values = _random_problem(*problem)
    factors = models.DeepFactors.from_arrays(arrays)
    obs = as_observations(values, mask)
    _, sparse = models.sparse_loss_and_gradients(factors, make_pattern(obs), obs.values)
    _, dense = models.dense_loss_and_gradients(factors, mask.astype(float), np.where(mask, values, 0.0))
    for a, b in zip(sparse.arrays(), dense.arrays()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@given(st.integers(2, 4), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_gradients_of_initialized_models(depth, rank, seed):
    """The three models as the estimator builds them, depth 2-4, on a real mask."""
    M, mask = make_low_rank((12, 10), 2, 0.5, random_state=seed)
    for method in ("compressed", "narrow", "original"):
        est = dmc.DeepMatrixCompleter(rank=rank, depth=depth, method=method, init_scale=0.5,
                                      max_iter=3, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", dmc.ConvergenceWarning)
            est.fit(M, mask)
        factors = est._factors()
        arrays = factors.arrays()
        obs = as_observations(M, mask)
        _, grads = models.sparse_loss_and_gradients(factors, make_pattern(obs), obs.values)
        _check_against_finite_differences(arrays, grads, mask, M, seed % 1000)
        expected_inner = depth if method == "compressed" else depth - 2
        assert len(factors.inner) == expected_inner
