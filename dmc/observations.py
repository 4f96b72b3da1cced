"""Validated observed entries, built from any of the input forms dmc accepts.

Every model in dmc sees the data only through :class:`Observations`: the
coordinates ``(observed_rows, observed_cols)`` of the observed entries, in
row-major (CSR) order, and their values.  Missing entries are never stored,
so memory is O(|Omega|) whatever the matrix size.

Input conventions
-----------------
* dense array + boolean ``mask`` (True = observed);
* dense array with NaN marking the missing entries and ``mask=None``;
* a ``scipy.sparse`` matrix or array whose *stored* entries are the observed
  ones.  A stored zero is an observed zero.  This differs from
  scikit-learn's imputers, where an implicit zero is a value; here an
  implicit zero is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["Observations", "as_observations", "check_mask"]


@dataclass(frozen=True)
class Observations:
    """Observed entries of an ``m x n`` matrix in row-major order.

    Attributes
    ----------
    shape : tuple of int
        ``(m, n)``, the shape of the full matrix.
    observed_rows, observed_cols : ndarray of int64, shape (n_observed,)
        Coordinates of the observed entries, sorted by row then column,
        without duplicates.
    values : ndarray of float, shape (n_observed,)
        Observed values, finite.
    """

    shape: tuple
    observed_rows: np.ndarray
    observed_cols: np.ndarray
    values: np.ndarray

    @property
    def n_observed(self) -> int:
        """Number of observed entries, ``|Omega|``."""
        return int(self.values.shape[0])

    @property
    def observed_fraction(self) -> float:
        """``|Omega| / (m * n)``."""
        m, n = self.shape
        return self.n_observed / (m * n)

    def sparse_line_count(self, quantile=0.1) -> float:
        """Observed entries in a sparsely observed row or column.

        The ``quantile`` of the per-row counts and of the per-column counts,
        whichever is smaller (empty rows and columns count as 0).  How far a
        Newton-like step sized for ``p`` times the full Gram matrix may be
        trusted depends on it (:class:`dmc.steps.PreconditionedStep`).
        """
        m, n = self.shape
        rows = np.bincount(self.observed_rows, minlength=m)
        cols = np.bincount(self.observed_cols, minlength=n)
        return float(min(np.quantile(rows, quantile), np.quantile(cols, quantile)))

    @property
    def row_pointers(self) -> np.ndarray:
        """CSR index pointer of the observed pattern, shape (m + 1,)."""
        counts = np.bincount(self.observed_rows, minlength=self.shape[0])
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def to_csr(self, data=None) -> sp.csr_matrix:
        """The observed pattern as a CSR matrix holding ``data`` (default: values)."""
        data = self.values if data is None else data
        return sp.csr_matrix(
            (data, self.observed_cols, self.row_pointers), shape=self.shape
        )

    def mask(self) -> np.ndarray:
        """Dense boolean mask (m x n); forms an m x n array, for small problems."""
        mask = np.zeros(self.shape, dtype=bool)
        mask[self.observed_rows, self.observed_cols] = True
        return mask

    def astype(self, dtype) -> "Observations":
        """The same entries with values of ``dtype`` (no copy when it already matches)."""
        return Observations(self.shape, self.observed_rows, self.observed_cols,
                            self.values.astype(dtype, copy=False))

    def scaled(self, factor) -> "Observations":
        """The same entries with values multiplied by ``factor``."""
        return Observations(self.shape, self.observed_rows, self.observed_cols,
                            self.values * factor)

    def subset(self, selection) -> "Observations":
        """The observations at ``selection`` (boolean or sorted integer index)."""
        return Observations(self.shape, self.observed_rows[selection],
                            self.observed_cols[selection], self.values[selection])


def _float_dtype(dtype) -> np.dtype:
    """Float dtype kept from the input; integers and bools promote to float64."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f" and dtype.itemsize in (4, 8):
        return dtype
    if dtype.kind in "biuf":
        return np.dtype(np.float64)
    raise TypeError(
        f"M has dtype {dtype}; dmc needs real numbers (float32, float64 or "
        "integers, which are promoted to float64). Convert it with "
        "M.astype(float)."
    )


def check_mask(mask, shape) -> np.ndarray:
    """Validate a boolean-like mask of the given shape and return it as bool."""
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(
            f"mask has shape {mask.shape} but M has shape {tuple(shape)}; the "
            "mask must mark each entry of M (True = observed)."
        )
    if mask.dtype == bool:
        return mask
    if mask.dtype.kind in "iuf":
        unique = np.unique(mask)
        if np.all(np.isin(unique, (0, 1))):
            return mask.astype(bool)
    raise TypeError(
        f"mask must be boolean (True = observed) or hold only 0 and 1; got "
        f"dtype {mask.dtype}. Pass e.g. mask=(M_known != 0) or a bool array."
    )


def _check_finite(values) -> None:
    if not np.all(np.isfinite(values)):
        bad = int(np.count_nonzero(~np.isfinite(values)))
        raise ValueError(
            f"{bad} observed value(s) are NaN or infinite. Mark missing entries "
            "as unobserved (mask=False, or NaN with mask=None) instead of "
            "storing them."
        )


def _check_nonempty(n_observed: int) -> None:
    if n_observed == 0:
        raise ValueError(
            "no observed entries: there is nothing to fit. Check the mask "
            "(True = observed) or the NaN pattern of M."
        )


def _sorted_entries(M):
    """``(rows, cols, values)`` of the stored entries in row-major order.

    CSR input with sorted column indices (the usual case) is read in place:
    no sort and no COO copy, which keeps the peak memory near the output's.
    Anything else goes through COO and one stable sort.  Duplicates stay
    separate so that the caller can report them.
    """
    if M.format == "csr" and M.has_sorted_indices:
        indptr = np.asarray(M.indptr)
        rows = np.repeat(np.arange(M.shape[0], dtype=np.int64), np.diff(indptr))
        return rows, np.asarray(M.indices, dtype=np.int64), np.asarray(M.data)
    coo = sp.coo_array(M)
    order = np.lexsort((coo.col, coo.row))
    return (coo.row[order].astype(np.int64), coo.col[order].astype(np.int64),
            np.asarray(coo.data[order]))


def _from_sparse(M, dtype) -> Observations:
    shape = tuple(int(s) for s in M.shape)
    rows, cols, values = _sorted_entries(M)
    if rows.size > 1:
        same = (rows[1:] == rows[:-1]) & (cols[1:] == cols[:-1])
        if np.any(same):
            i = int(np.flatnonzero(same)[0])
            raise ValueError(
                f"the sparse input stores entry ({rows[i]}, {cols[i]}) more than "
                "once. Each stored entry is one observation; remove duplicates "
                "or combine them explicitly (e.g. M.sum_duplicates() if they "
                "should add)."
            )
    # always a copy: the observations must not change if the caller edits M
    values = values.astype(_float_dtype(values.dtype) if dtype is None else dtype, copy=True)
    return Observations(shape, rows, cols, values)


def as_observations(M, mask=None, *, dtype=None) -> Observations:
    """Build validated :class:`Observations` from a dense or sparse input.

    Parameters
    ----------
    M : array-like of shape (m, n) or scipy.sparse matrix
        Dense values (with ``mask`` or NaN for missing entries) or a sparse
        matrix whose stored entries are the observed ones.
    mask : array-like of bool, shape (m, n), optional
        True where M is observed.  Not allowed with sparse M.
    dtype : numpy dtype, optional
        Float dtype of the values; default keeps float32/float64 and promotes
        integers to float64.

    Returns
    -------
    Observations
    """
    if sp.issparse(M):
        if mask is not None:
            raise ValueError(
                "mask must be None for sparse M: the stored entries of a sparse "
                "matrix are the observed ones."
            )
        if M.ndim != 2:
            raise ValueError(f"M must be 2-D; got a sparse array with {M.ndim} dims.")
        obs = _from_sparse(M, dtype)
    else:
        if isinstance(M, (str, bytes)) or M is None:
            raise TypeError(f"M must be a 2-D array or a scipy.sparse matrix; got {type(M).__name__}.")
        M = np.asarray(M)
        if M.ndim != 2:
            raise ValueError(
                f"M must be a 2-D matrix; got an array with {M.ndim} dimension(s) "
                f"and shape {M.shape}. Reshape it, e.g. M.reshape(m, n)."
            )
        values_dtype = _float_dtype(M.dtype) if dtype is None else np.dtype(dtype)
        if mask is None:
            if M.dtype.kind == "f":
                observed = ~np.isnan(M)
            else:
                observed = np.ones(M.shape, dtype=bool)
        else:
            observed = check_mask(mask, M.shape)
        rows, cols = np.nonzero(observed)  # row-major order
        obs = Observations(tuple(int(s) for s in M.shape), rows.astype(np.int64),
                           cols.astype(np.int64), M[rows, cols].astype(values_dtype))
    if min(obs.shape) < 1:
        raise ValueError(f"M has shape {obs.shape}; both dimensions must be >= 1.")
    _check_nonempty(obs.n_observed)
    _check_finite(obs.values)
    return obs
