"""End-to-end completion with the estimator."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import dmc
from dmc import ConvergenceWarning, DeepMatrixCompleter, subspace
from dmc.datasets import make_low_rank
from dmc.observations import as_observations


def _error_against(model, M):
    """Recovery error of the fitted model's own output, ``transform()``, against M.

    ``history_["recovery_error"]`` is computed inside ``fit`` on the
    normalized problem; this checks what a user gets back."""
    return np.linalg.norm(model.transform(as_numpy=True) - M) / np.linalg.norm(M)


@pytest.fixture(scope="module")
def problem():
    return make_low_rank((100, 100), 3, 0.3, random_state=0)


@pytest.fixture(scope="module")
def compressed_fit(problem):
    M, mask = problem
    return DeepMatrixCompleter(rank=10, random_state=0).fit(M, mask, ground_truth=M)


def test_compressed_recovers_with_overestimated_rank(problem, compressed_fit):
    M, _ = problem
    model = compressed_fit
    assert model.converged_
    assert model.history_["recovery_error"][-1] <= 1e-6
    # what the user gets back, against M itself (not the history computed in fit)
    assert _error_against(model, M) <= 1e-6
    rows, cols = np.nonzero(np.ones_like(M, dtype=bool))
    np.testing.assert_allclose(model.predict(rows, cols), M[rows, cols], rtol=0,
                               atol=1e-5 * np.abs(M).max())
    h = model.history_
    assert set(h) == {"iteration", "time", "train_loss", "step_size", "recovery_error"}
    assert all(v.ndim == 1 and len(v) == len(h["iteration"]) for v in h.values())
    assert h["iteration"][-1] == model.n_iter_
    assert np.all(np.diff(h["time"]) >= 0)
    assert model.left_factor_.shape == (100, 20) and model.right_factor_.shape == (100, 20)
    assert len(model.inner_factors_) == 3


@pytest.mark.parametrize("method", ["original", "narrow"])
def test_other_models_run_and_record(problem, method):
    M, mask = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = DeepMatrixCompleter(rank=10, method=method, max_iter=3000, record_every=100,
                                    random_state=0).fit(M, mask, ground_truth=M)
    h = model.history_
    assert len(h["recovery_error"]) == 31 and np.all(np.isfinite(h["recovery_error"]))
    assert h["train_loss"][-1] < h["train_loss"][0]
    width = 100 if method == "original" else 20
    assert model.left_factor_.shape == (100, width)


def test_original_also_recovers(problem):
    M, mask = problem
    model = DeepMatrixCompleter(rank=10, method="original", random_state=0).fit(M, mask, ground_truth=M)
    assert model.history_["recovery_error"][-1] <= 1e-5
    assert _error_against(model, M) <= 1e-5


def test_rectangular_completion():
    M, mask = make_low_rank((60, 90), 2, 0.4, random_state=1)
    model = DeepMatrixCompleter(rank=4, random_state=1).fit(M, mask, ground_truth=M)
    assert model.transform().shape == (60, 90)
    assert model.history_["recovery_error"][-1] <= 1e-5
    assert _error_against(model, M) <= 1e-5
    wide = DeepMatrixCompleter(rank=4, random_state=1).fit(M.T, mask.T, ground_truth=M.T)
    assert wide.history_["recovery_error"][-1] <= 1e-5
    assert _error_against(wide, M.T) <= 1e-5


def test_same_random_state_same_history(problem):
    M, mask = problem
    histories = []
    for _ in range(2):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = DeepMatrixCompleter(rank=5, max_iter=500, random_state=7).fit(M, mask, ground_truth=M)
        histories.append(model.history_)
    for key in ("iteration", "train_loss", "recovery_error"):
        np.testing.assert_array_equal(histories[0][key], histories[1][key])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        other = DeepMatrixCompleter(rank=5, max_iter=500, random_state=8).fit(M, mask)
    assert not np.array_equal(other.history_["train_loss"], histories[0]["train_loss"])


def test_input_forms_give_the_same_fit(problem):
    M, mask = problem
    nan_dense = np.where(mask, M, np.nan)
    rows, cols = np.nonzero(mask)
    sparse = sp.csr_matrix((M[rows, cols], (rows, cols)), shape=M.shape)
    fits = []
    for args in ((M, mask), (nan_dense, None), (sparse, None), (sparse.tocoo(), None)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits.append(DeepMatrixCompleter(rank=5, max_iter=300, random_state=3).fit(*args))
    for other in fits[1:]:
        np.testing.assert_array_equal(other.history_["train_loss"], fits[0].history_["train_loss"])
        np.testing.assert_array_equal(other.transform(), fits[0].transform())


def test_sparse_stored_zero_is_an_observation():
    M, mask = make_low_rank((30, 30), 2, 0.5, random_state=2)
    rows, cols = np.nonzero(mask)
    values = M[rows, cols]
    values[0] = 0.0
    sparse = sp.csr_matrix((values, (rows, cols)), shape=M.shape)
    sparse.data[sparse.data == 0] = 0.0  # explicit zero kept as stored entry
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = DeepMatrixCompleter(rank=3, max_iter=50, random_state=0).fit(sparse)
        dense = np.where(mask, M, np.nan)
        dense[rows[0], cols[0]] = 0.0
        b = DeepMatrixCompleter(rank=3, max_iter=50, random_state=0).fit(dense)
    np.testing.assert_array_equal(a.history_["train_loss"], b.history_["train_loss"])


def test_predict_and_low_rank_factors_match_transform(compressed_fit):
    model = compressed_fit
    X = model.transform()
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 100, 50), rng.integers(0, 100, 50)
    np.testing.assert_allclose(model.predict(rows, cols), X[rows, cols], rtol=1e-12, atol=1e-12)
    row_factors, col_factors = model.get_low_rank_factors()
    np.testing.assert_allclose(row_factors @ col_factors.T, X, atol=1e-12)


def test_fit_transform_and_params(problem):
    M, mask = problem
    model = DeepMatrixCompleter(rank=5, max_iter=20)
    with pytest.warns(ConvergenceWarning, match="max_iter=20"):
        X = model.fit_transform(M, mask)
    assert X.shape == M.shape
    assert model.get_params()["rank"] == 5
    assert model.set_params(depth=4) is model and model.depth == 4
    assert "rank=5" in repr(model)
    with pytest.raises(ValueError, match="(?i)invalid parameter"):
        model.set_params(ranks=3)


def test_lr_auto_is_scale_invariant(problem):
    """Scaling M by c leaves the trajectory of X / c unchanged (normalize=True, lr="auto").

    Not only does every scale converge: the recovery error and the relative
    training loss are the same at every recorded step, to rounding."""
    M, mask = problem
    scales = (1.0, 1000.0, 1e-3)
    fits = [DeepMatrixCompleter(rank=5, random_state=0).fit(c * M, mask, ground_truth=c * M)
            for c in scales]
    reference = fits[0].history_
    assert fits[0].converged_ and reference["recovery_error"][-1] < 1e-5
    for c, model in zip(scales[1:], fits[1:]):
        h = model.history_
        n = min(len(h["iteration"]), len(reference["iteration"]))  # the common records first
        np.testing.assert_array_equal(h["iteration"][:n], reference["iteration"][:n])
        # measured gaps: 4e-10 at c = 1000, 4e-7 at c = 1e-3 (rounding of the small data)
        np.testing.assert_allclose(h["recovery_error"][:n], reference["recovery_error"][:n],
                                   rtol=1e-5, err_msg=f"recovery error trajectory at scale {c}")
        np.testing.assert_allclose(h["train_loss"][:n] / c**2, reference["train_loss"][:n],
                                   rtol=1e-5, err_msg=f"relative training loss trajectory at scale {c}")
        assert model.converged_ and model.n_iter_ == fits[0].n_iter_
        np.testing.assert_allclose(model.transform() / c, fits[0].transform(), rtol=0,
                                   atol=1e-6 * np.abs(M).max())


def _manual_gradient_descent(M, mask, *, rank, depth, init_scale, lr, gamma, steps, seed):
    """Plain gradient descent on ``1/2 ||P_Omega(U W_L..W_1 V^T - M)||_F^2`` in dense NumPy.

    The start (U, V from the initial gradient's truncated SVD, W_l = eps I)
    is drawn from the same seed in the same order as DeepMatrixCompleter
    does; the steps are written out here, independently of the estimator's
    scaling, sparse kernels and solver."""
    rng = np.random.default_rng(seed)
    obs = as_observations(M, mask)
    q = subspace.RandomOrthogonal(obs.shape, rng)
    G0 = subspace.initial_gradient(obs, q, init_scale**depth)
    U, V = subspace.invariant_subspace(subspace.top_singular_triplets(G0, rank, rng), q, rng)
    k = U.shape[1]
    W = [init_scale * np.eye(k) for _ in range(depth)]
    P = np.asarray(mask, dtype=np.float64)

    def chain(factors):  # factors[-1] @ ... @ factors[0]
        product = np.eye(k)
        for w in factors:
            product = w @ product
        return product

    for _ in range(steps):
        C = chain(W)
        R = P * (U @ C @ V.T - M)
        G = U.T @ R @ V  # gradient with respect to C
        grad_W = [chain(W[l + 1:]).T @ G @ chain(W[:l]).T for l in range(depth)]
        U, V = U - gamma * lr * (R @ V @ C.T), V - gamma * lr * (R.T @ U @ C)
        W = [w - lr * g for w, g in zip(W, grad_W)]
    return U @ chain(W) @ V.T


def test_normalize_false_fits_the_data_as_given(problem):
    """normalize=False is plain gradient descent on M itself (the paper's setting)."""
    M, mask = problem
    params = dict(rank=5, depth=3, init_scale=0.3, lr=0.02, gamma=0.01)
    # plain gradient descent: the constant step rule, where the estimator has step rules
    plain = {"step_rule": "constant"} if "step_rule" in DeepMatrixCompleter().get_params() else {}
    with pytest.warns(ConvergenceWarning, match="max_iter=60"):
        model = DeepMatrixCompleter(**params, **plain, normalize=False, max_iter=60,
                                    random_state=0).fit(M, mask)
    reference = _manual_gradient_descent(M, mask, **params, steps=60, seed=0)
    assert np.abs(reference).max() > 0.1 * np.abs(M).max()  # the steps moved X well off 0
    np.testing.assert_allclose(model.transform(), reference, rtol=0,
                               atol=1e-9 * np.abs(reference).max())
    assert model.scale_ == 1.0


def test_callback_stops(problem):
    M, mask = problem
    seen = []

    def stop_at_200(record):
        seen.append(record["iteration"])
        return record["iteration"] >= 200

    model = DeepMatrixCompleter(rank=5, callbacks=stop_at_200, random_state=0).fit(M, mask)
    assert model.n_iter_ == 200 and not model.converged_ and seen[-1] == 200


def test_float32_input_stays_float32(problem):
    M, mask = problem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = DeepMatrixCompleter(rank=5, max_iter=100, random_state=0).fit(M.astype(np.float32), mask)
    assert model.transform().dtype == np.float32


def test_divergence_is_reported(problem):
    M, mask = problem
    with pytest.raises(dmc.DivergenceError, match="smaller lr"):
        DeepMatrixCompleter(rank=5, lr=50.0, init_scale=0.5, random_state=0).fit(M, mask)
