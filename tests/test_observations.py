"""dmc.observations against hand-written cases: order, properties, dtypes, bad input.

The entries, pointers and fractions below are written out by hand for small
matrices (found by mutation testing, see tools/mutation.py).
"""

import numpy as np
import pytest
import scipy.sparse as sp

from dmc.observations import Observations, as_observations, check_mask

# a 3 x 4 matrix with 5 observed entries; row 1 is empty
M = np.array([[1.0, 2.0, 3.0, 4.0],
              [5.0, 6.0, 7.0, 8.0],
              [9.0, 10.0, 11.0, 12.0]])
MASK = np.array([[False, True, False, True],
                 [False, False, False, False],
                 [True, False, True, True]])
ROWS, COLS, VALUES = [0, 0, 2, 2, 2], [1, 3, 0, 2, 3], [2.0, 4.0, 9.0, 11.0, 12.0]


def _check(obs, values=VALUES, dtype=np.float64):
    assert obs.shape == (3, 4) and all(type(s) is int for s in obs.shape)
    np.testing.assert_array_equal(obs.observed_rows, ROWS)
    np.testing.assert_array_equal(obs.observed_cols, COLS)
    assert obs.observed_rows.dtype == np.int64 and obs.observed_cols.dtype == np.int64
    np.testing.assert_array_equal(obs.values, values)
    assert obs.values.dtype == dtype


def test_dense_with_mask_nan_and_sparse_inputs_give_the_same_entries():
    _check(as_observations(M, MASK))
    _check(as_observations(np.where(MASK, M, np.nan)))
    _check(as_observations(sp.csr_matrix(np.where(MASK, M, 0.0))))


@pytest.mark.parametrize("fmt", ["coo", "csc", "lil", "dok"])
def test_sparse_formats_are_read_in_row_major_order(fmt):
    _check(as_observations(sp.csr_matrix(np.where(MASK, M, 0.0)).asformat(fmt)))


def test_csr_with_unsorted_indices_is_sorted():
    # row 0 stores columns 3 then 1, row 2 stores 3, 0, 2
    A = sp.csr_matrix((np.array([4.0, 2.0, 12.0, 9.0, 11.0]), np.array([3, 1, 3, 0, 2]),
                       np.array([0, 2, 2, 5])), shape=(3, 4))
    assert not A.has_sorted_indices
    _check(as_observations(A))


def test_stored_zero_is_observed_and_implicit_zero_is_missing():
    A = sp.csr_matrix((np.array([0.0, 5.0]), np.array([2, 0]), np.array([0, 1, 1, 2])), shape=(3, 4))
    obs = as_observations(A)
    np.testing.assert_array_equal(obs.observed_rows, [0, 2])
    np.testing.assert_array_equal(obs.values, [0.0, 5.0])


def test_integer_dense_input_without_mask_is_fully_observed_float64():
    obs = as_observations(np.arange(6).reshape(2, 3))
    assert obs.n_observed == 6 and obs.values.dtype == np.float64
    np.testing.assert_array_equal(obs.observed_rows, [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(obs.observed_cols, [0, 1, 2, 0, 1, 2])
    np.testing.assert_array_equal(obs.values, [0, 1, 2, 3, 4, 5])


@pytest.mark.parametrize("dtype, expected", [
    (np.float32, np.float32), (np.float64, np.float64), (np.float16, np.float64),
    (np.int32, np.float64), (np.int64, np.float64), (np.uint8, np.float64), (bool, np.float64),
])
def test_values_dtype_kept_or_promoted(dtype, expected):
    dense = M.astype(dtype)
    assert as_observations(dense, MASK).values.dtype == expected
    if dtype is not np.float16:  # scipy.sparse has no float16
        assert as_observations(sp.csr_matrix(np.where(MASK, dense, 0))).values.dtype == expected


def test_dtype_argument_overrides():
    obs = as_observations(M, MASK, dtype=np.float32)
    _check(obs, dtype=np.float32)
    obs = as_observations(sp.csr_matrix(np.where(MASK, M, 0.0)), dtype=np.float32)
    _check(obs, dtype=np.float32)


@pytest.mark.parametrize("dtype", [np.complex128, object, "U3"])
def test_non_real_dtype_is_a_type_error(dtype):
    with pytest.raises(TypeError, match=r"needs real numbers .* Convert it with M\.astype\(float\)"):
        as_observations(M.astype(dtype), MASK)


def test_properties_hand_computed():
    obs = as_observations(M, MASK)
    assert obs.n_observed == 5 and type(obs.n_observed) is int
    assert obs.observed_fraction == 5 / 12
    np.testing.assert_array_equal(obs.row_pointers, [0, 2, 2, 5])
    assert obs.row_pointers.dtype == np.int64
    np.testing.assert_array_equal(obs.mask(), MASK)
    assert obs.mask().dtype == bool
    np.testing.assert_array_equal(obs.to_csr().toarray(), np.where(MASK, M, 0.0))
    np.testing.assert_array_equal(obs.to_csr(np.arange(5.0)).toarray()[MASK], np.arange(5.0))
    assert obs.to_csr().shape == (3, 4)


def test_row_pointers_with_trailing_empty_rows():
    obs = Observations((4, 3), np.array([0, 1], dtype=np.int64), np.array([1, 0], dtype=np.int64),
                       np.array([1.0, 2.0]))
    np.testing.assert_array_equal(obs.row_pointers, [0, 1, 2, 2, 2])
    assert obs.to_csr().shape == (4, 3)  # not the shape the entries alone would imply
    assert obs.mask().shape == (4, 3)


def test_astype_scaled_and_subset():
    obs = as_observations(M, MASK)
    same = obs.astype(np.float64)
    assert same.values is obs.values  # no copy when the dtype already matches
    single = obs.astype(np.float32)
    assert single.values.dtype == np.float32 and single.shape == obs.shape
    np.testing.assert_array_equal(single.observed_rows, ROWS)
    np.testing.assert_array_equal(single.observed_cols, COLS)
    scaled = obs.scaled(0.5)
    np.testing.assert_array_equal(scaled.values, np.array(VALUES) * 0.5)
    np.testing.assert_array_equal(scaled.observed_rows, ROWS)
    np.testing.assert_array_equal(scaled.observed_cols, COLS)
    assert scaled.shape == (3, 4)
    sub = obs.subset(np.array([1, 3]))
    np.testing.assert_array_equal(sub.observed_rows, [0, 2])
    np.testing.assert_array_equal(sub.observed_cols, [3, 2])
    np.testing.assert_array_equal(sub.values, [4.0, 11.0])
    assert sub.shape == (3, 4)


def test_sparse_values_are_copied():
    A = sp.csr_matrix(np.where(MASK, M, 0.0))
    obs = as_observations(A)
    A.data[:] = -1.0
    np.testing.assert_array_equal(obs.values, VALUES)
    A32 = sp.csr_matrix(np.where(MASK, M, 0.0).astype(np.float32))
    obs = as_observations(A32)
    A32.data[:] = -1.0
    np.testing.assert_array_equal(obs.values, VALUES)


def test_check_mask():
    assert check_mask(MASK, (3, 4)) is MASK
    for numeric in (MASK.astype(int), MASK.astype(np.uint8), MASK.astype(float)):
        out = check_mask(numeric, (3, 4))
        assert out.dtype == bool
        np.testing.assert_array_equal(out, MASK)
    np.testing.assert_array_equal(check_mask(np.ones((3, 4)), (3, 4)), np.ones((3, 4), bool))
    with pytest.raises(ValueError, match=r"mask has shape \(3, 3\) but M has shape \(3, 4\)"):
        check_mask(MASK[:, :3], (3, 4))
    with pytest.raises(TypeError, match="got dtype float64"):
        check_mask(MASK * 2.0, (3, 4))
    with pytest.raises(TypeError, match="got dtype int64"):
        check_mask(MASK.astype(np.int64) - 1, (3, 4))


def test_duplicate_sparse_entry_names_the_entry():
    A = sp.coo_matrix((np.array([1.0, 2.0, 3.0]), (np.array([0, 2, 2]), np.array([1, 3, 3]))),
                      shape=(3, 4))
    with pytest.raises(ValueError, match=r"stores entry \(2, 3\) more than once"):
        as_observations(A)
    B = sp.coo_matrix((np.array([1.0, 2.0]), (np.array([1, 1]), np.array([0, 0]))), shape=(3, 4))
    with pytest.raises(ValueError, match=r"stores entry \(1, 0\) more than once"):
        as_observations(B)
    # same row or same column alone is not a duplicate
    C = sp.coo_matrix((np.array([1.0, 2.0, 3.0]), (np.array([0, 0, 1]), np.array([0, 1, 1]))),
                      shape=(3, 4))
    assert as_observations(C).n_observed == 3


def test_single_entry_sparse_input():
    obs = as_observations(sp.csr_matrix((np.array([7.0]), (np.array([1]), np.array([2]))), shape=(3, 4)))
    np.testing.assert_array_equal(obs.observed_rows, [1])
    np.testing.assert_array_equal(obs.values, [7.0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="mask must be None for sparse M"):
        as_observations(sp.csr_matrix(M), MASK)
    with pytest.raises(TypeError, match="got str"):
        as_observations("abc")
    with pytest.raises(TypeError, match="got NoneType"):
        as_observations(None)
    with pytest.raises(ValueError, match=r"got an array with 1 dimension\(s\) and shape \(4,\)"):
        as_observations(np.ones(4))
    with pytest.raises(ValueError, match=r"M has shape \(0, 4\); both dimensions must be >= 1"):
        as_observations(np.ones((0, 4)))
    with pytest.raises(ValueError, match=r"M has shape \(3, 0\)"):
        as_observations(sp.csr_matrix((3, 0)))
    with pytest.raises(ValueError, match="no observed entries"):
        as_observations(M, np.zeros((3, 4), bool))
    bad = M.copy()
    bad[0, 1] = np.inf
    bad[2, 0] = np.nan
    with pytest.raises(ValueError, match=r"^2 observed value\(s\) are NaN or infinite"):
        as_observations(bad, MASK)
    bad[2, 0] = 1.0
    with pytest.raises(ValueError, match=r"^1 observed value\(s\)"):
        as_observations(sp.csr_matrix(np.where(MASK, bad, 0.0)))


def test_one_dimensional_sparse_array_is_rejected():
    if not hasattr(sp, "coo_array"):
        pytest.skip("scipy without sparse arrays")
    try:
        A = sp.coo_array(np.array([1.0, 0.0, 2.0]))
    except (ValueError, TypeError):
        pytest.skip("this scipy has no 1-D sparse arrays")
    if A.ndim != 1:
        pytest.skip("this scipy has no 1-D sparse arrays")
    with pytest.raises(ValueError, match="M must be 2-D; got a sparse array with 1 dims"):
        as_observations(A)


def test_single_row_and_single_column_matrices_are_valid():
    obs = as_observations(np.array([[1.0, np.nan, 3.0]]))
    assert obs.shape == (1, 3) and obs.n_observed == 2
    obs = as_observations(sp.csr_matrix(np.array([[1.0], [0.0]])))
    assert obs.shape == (2, 1) and obs.n_observed == 1


def test_sorted_csr_is_read_in_place_without_coo(monkeypatch):
    """The documented memory path: sorted CSR input never goes through COO."""
    from dmc import observations

    def no_coo(*args, **kwargs):
        raise AssertionError("sorted CSR input went through COO")
    A = sp.csr_matrix(np.where(MASK, M, 0.0))
    monkeypatch.setattr(observations.sp, "coo_array", no_coo)
    _check(as_observations(A))
    with pytest.raises(AssertionError, match="through COO"):
        as_observations(A.tocsc())


def test_sparse_line_count_is_the_smaller_quantile_of_row_and_column_counts():
    # rows 0..4 hold 5, 4, 3, 2, 0 entries; columns 0..5 hold 4, 4, 3, 2, 1, 0
    rows, cols = [], []
    for i, count in enumerate([5, 4, 3, 2, 0]):
        rows += [i] * count
        cols += list(range(count))
    obs = Observations((5, 6), np.array(rows), np.array(cols), np.ones(len(rows)))
    # np.quantile's linear rule by hand: rows sorted 0 2 3 4 5, q = 0.5 -> 3;
    # columns sorted 0 1 2 3 4 4, q = 0.5 -> 2.5
    assert obs.sparse_line_count(0.5) == 2.5
    # q = 0.1: rows 0 + 0.4 * (2 - 0) = 0.8; columns 0 + 0.5 * 1 = 0.5
    assert obs.sparse_line_count() == pytest.approx(0.5)
    assert obs.sparse_line_count(1.0) == 4.0  # the fullest column, below the fullest row
