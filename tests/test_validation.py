"""Bad input gets a clear ValueError or TypeError."""

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from dmc import ConvergenceWarning, DeepMatrixCompleter, NotFittedError
from dmc.datasets import make_low_rank
from dmc.observations import as_observations


@pytest.fixture
def problem():
    return make_low_rank((20, 16), 2, 0.5, random_state=0)


def fit(M, mask=None, **params):
    params.setdefault("rank", 2)
    params.setdefault("max_iter", 5)
    return DeepMatrixCompleter(**params).fit(M, mask)


def test_mask_shape_mismatch(problem):
    M, mask = problem
    with pytest.raises(ValueError, match="mask has shape"):
        fit(M, mask[:, :-1])


def test_mask_not_boolean(problem):
    M, mask = problem
    with pytest.raises(TypeError, match="mask must be boolean"):
        fit(M, mask * 2.5)
    with pytest.raises(TypeError, match="mask must be boolean"):
        fit(M, np.where(mask, "a", "b"))


def test_mask_of_zeros_and_ones_is_accepted(problem):
    M, mask = problem
    obs = as_observations(M, mask.astype(int))
    assert obs.n_observed == mask.sum()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_observed_values(problem, bad):
    M, mask = problem
    M = M.copy()
    M[np.nonzero(mask)[0][0], np.nonzero(mask)[1][0]] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit(M, mask)


def test_inf_in_nan_marked_input(problem):
    M, mask = problem
    M = np.where(mask, M, np.nan)
    M[np.nonzero(mask)[0][0], np.nonzero(mask)[1][0]] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit(M)


def test_no_observed_entries(problem):
    M, mask = problem
    with pytest.raises(ValueError, match="no observed entries"):
        fit(M, np.zeros_like(mask))
    with pytest.raises(ValueError, match="no observed entries"):
        fit(np.full(M.shape, np.nan))
    with pytest.raises(ValueError, match="no observed entries"):
        fit(sp.csr_matrix(M.shape))


@pytest.mark.parametrize("rank", [0, -1, 9, 2.0, True])
def test_bad_rank(problem, rank):
    M, mask = problem
    with pytest.raises(ValueError, match="rank"):
        fit(M, mask, rank=rank)


@pytest.mark.parametrize("depth", [1, 0, 2.5])
def test_bad_depth(problem, depth):
    M, mask = problem
    with pytest.raises(ValueError, match="depth must be an integer >= 2"):
        fit(M, mask, depth=depth)


@pytest.mark.parametrize("shape", [(20,), (2, 3, 4), ()])
def test_not_two_dimensional(shape):
    with pytest.raises(ValueError, match="2-D"):
        fit(np.ones(shape))


@pytest.mark.parametrize("name, value", [
    ("init_scale", 0.0), ("init_scale", -1e-3), ("lr", 0.0), ("lr", -1.0), ("lr", "fast"),
    ("max_iter", 0), ("max_iter", -5), ("max_iter", 1.5), ("gamma", -0.1), ("tol", -1.0),
    ("record_every", 0), ("method", "wide"), ("width", 0),
])
def test_bad_parameters(problem, name, value):
    M, mask = problem
    with pytest.raises(ValueError, match=name):
        fit(M, mask, **{name: value})


def test_bad_types(problem):
    M, mask = problem
    with pytest.raises(TypeError, match="callbacks"):
        fit(M, mask, callbacks=3)
    with pytest.raises(TypeError, match="normalize"):
        fit(M, mask, normalize="yes")
    with pytest.raises(TypeError, match="real numbers"):
        fit(np.array([["a", "b"], ["c", "d"]]), rank=1)
    with pytest.raises(TypeError, match="2-D array"):
        fit(None)


def test_sparse_duplicates(problem):
    M, _ = problem
    duplicated = sp.coo_matrix(([1.0, 2.0, 3.0], ([0, 0, 1], [1, 1, 2])), shape=M.shape)
    with pytest.raises(ValueError, match=r"stores entry \(0, 1\) more than once"):
        fit(duplicated, rank=1)


@pytest.mark.parametrize("layout", ["csr", "csc", "coo", "lil", "dok"])
def test_sparse_layouts_give_the_same_observations(problem, layout):
    M, mask = problem
    rows, cols = np.nonzero(mask)
    reference = as_observations(np.where(mask, M, np.nan))
    sparse = sp.csr_matrix((M[rows, cols], (rows, cols)), shape=M.shape).asformat(layout)
    obs = as_observations(sparse)
    for a, b in zip((obs.observed_rows, obs.observed_cols, obs.values),
                    (reference.observed_rows, reference.observed_cols, reference.values)):
        np.testing.assert_array_equal(a, b)


def test_unsorted_and_duplicated_csr(problem):
    M, _ = problem
    unsorted = sp.csr_matrix((np.array([1.0, 2.0]), np.array([3, 1]), np.array([0, 2] + [2] * 19)),
                             shape=M.shape)
    unsorted.has_sorted_indices = False
    obs = as_observations(unsorted)
    np.testing.assert_array_equal(obs.observed_cols, [1, 3])
    np.testing.assert_array_equal(obs.values, [2.0, 1.0])
    duplicated = sp.csr_matrix((np.array([1.0, 2.0]), np.array([3, 3]), np.array([0, 2] + [2] * 19)),
                               shape=M.shape)
    with pytest.raises(ValueError, match=r"stores entry \(0, 3\) more than once"):
        as_observations(duplicated)
    values = sp.csr_matrix(M)
    obs = as_observations(values)
    values.data[:] = 0.0  # editing the input afterwards leaves the observations alone
    assert np.any(obs.values != 0)


def test_sparse_with_mask_is_rejected(problem):
    M, mask = problem
    with pytest.raises(ValueError, match="mask must be None for sparse"):
        fit(sp.csr_matrix(M), mask)


def test_ground_truth_shape_mismatch(problem):
    M, mask = problem
    with pytest.raises(ValueError, match="ground_truth has shape"):
        DeepMatrixCompleter(rank=2).fit(M, mask, ground_truth=M[:-1])


def test_predict_checks(problem):
    M, mask = problem
    with pytest.raises(NotFittedError, match="not fitted"):
        DeepMatrixCompleter(rank=2).predict([0], [0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter=5 stops it early on purpose
        model = fit(M, mask)
    with pytest.raises(ValueError, match="rows must lie in"):
        model.predict([20], [0])
    with pytest.raises(ValueError, match="equally long"):
        model.predict([0, 1], [0])
    with pytest.raises(TypeError, match="integers"):
        model.predict([0.5], [1])


def test_dataset_arguments():
    with pytest.raises(ValueError, match="observed_fraction"):
        make_low_rank((10, 10), 2, 1.5)
    with pytest.raises(ValueError, match="rank"):
        make_low_rank((10, 10), 11, 0.5)
    with pytest.raises(ValueError, match="shape"):
        make_low_rank((10, -1), 2, 0.5)


@pytest.mark.filterwarnings("ignore::dmc.ConvergenceWarning")
@pytest.mark.parametrize("as_list", [False, True])
def test_integer_input_becomes_float64(problem, as_list):
    M, mask = problem
    integers = np.rint(10 * M).astype(np.int64)
    model = fit(integers.tolist() if as_list else integers, mask)
    assert model.transform().dtype == np.float64


def test_all_observed_zero_is_reported(problem):
    M, mask = problem
    for normalize in (True, False):
        with pytest.raises(ValueError, match="all observed values are zero"):
            fit(np.zeros_like(M), mask, normalize=normalize)


def test_duplicate_rating_names_the_ids_plainly():
    from dmc import RatingsCompleter

    with pytest.raises(ValueError, match=r"user 'u1' rated item 7 more than once"):
        RatingsCompleter(rank=1).fit(np.array(["u1", "u1", "u2"]), np.array([7, 7, 8]),
                                     np.array([1.0, 2.0, 3.0]))
