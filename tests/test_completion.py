"""End-to-end completion with the estimator."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import dmc
from dmc import ConvergenceWarning, DeepMatrixCompleter
from dmc.datasets import make_low_rank


@pytest.fixture(scope="module")
def problem():
    return make_low_rank((100, 100), 3, 0.3, random_state=0)


@pytest.fixture(scope="module")
def compressed_fit(problem):
    M, mask = problem
    return DeepMatrixCompleter(rank=10, random_state=0).fit(M, mask, ground_truth=M)


def test_compressed_recovers_with_overestimated_rank(compressed_fit):
    model = compressed_fit
    assert model.converged_
    assert model.history_["recovery_error"][-1] <= 1e-6
    h = model.history_
    assert set(h) == {"iteration", "time", "train_loss", "recovery_error"}
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


def test_rectangular_completion():
    M, mask = make_low_rank((60, 90), 2, 0.4, random_state=1)
    model = DeepMatrixCompleter(rank=4, random_state=1).fit(M, mask, ground_truth=M)
    assert model.transform().shape == (60, 90)
    assert model.history_["recovery_error"][-1] <= 1e-5
    wide = DeepMatrixCompleter(rank=4, random_state=1).fit(M.T, mask.T, ground_truth=M.T)
    assert wide.history_["recovery_error"][-1] <= 1e-5


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
    """Scaling M by c leaves the trajectory of X / c unchanged up to depth effects."""
    M, mask = problem
    fits = []
    for scale in (1.0, 1000.0, 1e-3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits.append(DeepMatrixCompleter(rank=5, random_state=0).fit(scale * M, mask, ground_truth=scale * M))
    for model in fits:
        assert model.converged_ and model.history_["recovery_error"][-1] < 1e-5


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
