"""The paper's theorem: compressed and wide models coincide under full observation."""

import warnings

import numpy as np
import pytest

from dmc import models, subspace
from dmc.backend import make_pattern
from dmc.datasets import make_low_rank
from dmc.observations import as_observations
from dmc.solver import ConvergenceWarning, gradient_descent


def _trajectory(factors, loss_and_gradients, step_sizes, n_steps, record_every):
    """End-to-end matrices at every record (captured through the recording hook)."""
    snapshots = []

    def capture(f):
        snapshots.append(models.end_to_end(f).copy())
        return 0.0

    with warnings.catch_warnings():  # tol=0 runs to max_iter on purpose
        warnings.simplefilter("ignore", ConvergenceWarning)
        gradient_descent(factors, loss_and_gradients, step_sizes, max_iter=n_steps, tol=0.0,
                         observed_norm=1.0, record_every=record_every, metrics={"snapshot": capture})
    return snapshots


@pytest.mark.parametrize("depth, eps, n_steps", [(2, 1e-3, 3000), (3, 1e-3, 30000), (4, 5e-2, 6000)])
def test_compressed_equals_wide_model_at_every_step(depth, eps, n_steps):
    """Depth 4 starts larger so that it trains within the test's step budget."""
    shape, rank = (40, 40), 3
    M, _ = make_low_rank(shape, rank, 1.0, random_state=0)
    obs = as_observations(M)  # fully observed
    rng = np.random.default_rng(1)

    wide = models.init_wide(shape, depth, max(shape), eps, rng)
    Q = models.end_to_end(wide) / eps**depth  # the wide model's own E0 / eps^L
    q = subspace.DenseOrthogonal(Q)
    spectrum = subspace.top_singular_triplets(subspace.initial_gradient(obs, q, eps**depth), rank, rng)
    U, V = subspace.invariant_subspace(spectrum, q, rng)
    compressed = models.init_compressed(U, V, depth, eps)

    lr = models.spectral_step_size(spectrum.singular_values[0], 1.0, depth)
    record_every = n_steps // 30
    pattern = make_pattern(obs)
    mask, filled = np.ones(shape), M
    wide_path = _trajectory(
        wide, lambda f: models.dense_loss_and_gradients(f, mask, filled),
        [lr] * len(wide.arrays()), n_steps, record_every)
    compressed_path = _trajectory(
        compressed, lambda f: models.sparse_loss_and_gradients(f, pattern, obs.values),
        [0.0] + [lr] * depth + [0.0], n_steps, record_every)  # gamma = 0

    scale = np.linalg.norm(M)
    assert len(wide_path) == len(compressed_path) == n_steps // record_every + 1
    # Inside the subspace the two models coincide (to rounding, every depth) ...
    in_subspace = [np.linalg.norm(U @ (U.T @ a @ V) @ V.T - b) / scale
                   for a, b in zip(wide_path, compressed_path)]
    assert max(in_subspace) <= 1e-10, max(in_subspace)
    # ... and outside it the wide model keeps its initial eps^L-sized part,
    # which can only decay (slowly: its gradient is of order eps^(2L-1)).
    complement = eps**depth * np.sqrt(shape[0] - 2 * rank)
    outside = np.array([np.linalg.norm(a - U @ (U.T @ a @ V) @ V.T) for a in wide_path])
    np.testing.assert_allclose(outside[0], complement, rtol=1e-8)
    assert np.all(np.diff(outside) <= 1e-15) and outside[-1] >= 0.99 * complement
    # So where that part is negligible (depth 3, eps 1e-3: 6e-9 absolute) the
    # end-to-end matrices agree to 1e-8 relative.
    differences = [np.linalg.norm(a - b) / scale for a, b in zip(wide_path, compressed_path)]
    if complement / scale < 1e-9:
        assert max(differences) <= 1e-8, max(differences)
    # and training did something: the wide model has fit the target
    assert np.linalg.norm(wide_path[-1] - M) / scale < 1e-3
