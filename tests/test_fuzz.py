"""Fuzzed input forms (issue 13): every case fits with finite output or raises a clear
ValueError / TypeError, prints nothing, and never changes the caller's array.

Covered: dense with a mask (bool or 0/1) or with NaN for missing entries, as
arrays or nested lists; every
scipy.sparse format (csr, csc, coo, lil, dok, bsr, dia) as a matrix and as a
sparse array; coo with duplicate coordinates; C and Fortran order;
non-contiguous views; read-only arrays; float32 / float64 / int64 / int8 /
bool values; explicit zeros; magnitudes from 1e-300 to 1e300, alone or mixed
in one matrix; torch dense (NaN or mask), COO and CSR tensors when torch is
installed; one row, one
column, one entry or all entries observed; shapes from 1 x 1 to 7 x 7.

The hypothesis profile is bounded (``max_examples`` below, no deadline), so
the suite's time is fixed in CI.
"""

import warnings

import numpy as np
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dmc import ConvergenceWarning, DeepMatrixCompleter

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

SPARSE_FORMATS = ["csr", "csc", "coo", "lil", "dok", "bsr", "dia"]
FORMS = (["dense_mask", "dense_int_mask", "dense_nan", "list_mask", "list_nan", "fortran_mask", "fortran_nan", "view_mask",
          "view_nan", "readonly_mask", "readonly_nan", "coo_duplicates"]
         + [f"{f}_matrix" for f in SPARSE_FORMATS] + [f"{f}_array" for f in SPARSE_FORMATS])
try:
    import torch
except ImportError:  # torch is optional (dmc[torch])
    torch = None
else:
    FORMS += ["torch_nan", "torch_mask", "torch_coo", "torch_csr"]
PATTERNS = ["random", "all", "one_row", "one_column", "one_entry"]
DTYPES = ["float64", "float32", "int64", "int8", "bool"]


@st.composite
def problems(draw):
    m, n = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    pattern = draw(st.sampled_from(PATTERNS))
    if pattern == "random":
        observed = rng.random((m, n)) < draw(st.floats(0.2, 1.0))
    else:
        observed = np.zeros((m, n), dtype=bool)
        i, j = rng.integers(m), rng.integers(n)
        if pattern == "all":
            observed[:] = True
        elif pattern == "one_row":
            observed[i] = True
        elif pattern == "one_column":
            observed[:, j] = True
        else:
            observed[i, j] = True
    exponent = draw(st.sampled_from([0, 0, 1, -1, 5, -5, 150, -150, 300, -300, "mixed"]))
    values = np.outer(rng.standard_normal(m), rng.standard_normal(n))
    if exponent == "mixed":  # 1e-300, 1 and 1e300 side by side
        values *= 10.0 ** rng.choice([-300, 0, 300], size=(m, n))
    else:
        values *= 10.0**exponent
    if draw(st.booleans()):  # explicit zeros among the observed values
        values[rng.random((m, n)) < 0.3] = 0.0
    dtype = draw(st.sampled_from(DTYPES))
    with np.errstate(over="ignore", invalid="ignore"):  # float32 overflow to inf is a case too
        if dtype == "bool":
            values = values > 0
        elif dtype.startswith("int"):
            info = np.iinfo(dtype)
            values = np.clip(np.round(values), info.min, info.max).astype(dtype)
        else:
            values = values.astype(dtype)
    return draw(st.sampled_from(FORMS)), values, observed


def _build(form, values, observed):
    """``(M, mask)`` in the input form ``form``."""
    kind = values.dtype.kind
    if form.startswith(("dense", "list", "fortran", "view", "readonly")):
        if form.endswith("nan"):
            if kind != "f":
                values = values.astype(np.float64)
            M = np.where(observed, values, np.nan).astype(values.dtype)
            mask = None
        else:
            M = values.copy()
            mask = observed.astype(np.int64) if form == "dense_int_mask" else observed.copy()
        if form.startswith("list"):  # nested Python lists (the mask stays an array)
            M = M.tolist()
        elif form.startswith("fortran"):
            M = np.asfortranarray(M)
        elif form.startswith("view"):  # every other row and column of a larger array
            big = np.zeros((2 * M.shape[0], 2 * M.shape[1]), dtype=M.dtype)
            big[::2, ::2] = M
            M = big[::2, ::2]
            assert not M.flags.c_contiguous or M.size <= 1
        elif form.startswith("readonly"):
            M.setflags(write=False)
            if mask is not None:
                mask.setflags(write=False)
        return M, mask
    if form.startswith("torch"):
        if form == "torch_nan":
            data = values.astype(np.float64) if kind != "f" else values
            return torch.from_numpy(np.where(observed, data, np.nan).astype(data.dtype)), None
        if form == "torch_mask":
            return torch.from_numpy(values.copy()), torch.from_numpy(observed.copy())
        rows, cols = np.nonzero(observed)
        coo = torch.sparse_coo_tensor(np.array([rows, cols]), values[rows, cols], size=values.shape,
                                      check_invariants=True)
        if form == "torch_coo":
            return coo, None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            return coo.coalesce().to_sparse_csr(), None
    rows, cols = np.nonzero(observed)
    data = values[rows, cols]
    if form == "coo_duplicates":
        if rows.size:
            rows, cols, data = np.r_[rows, rows[:1]], np.r_[cols, cols[:1]], np.r_[data, data[:1]]
        return sp.coo_matrix((data, (rows, cols)), shape=values.shape), None
    fmt, container = form.split("_")
    coo = (sp.coo_matrix if container == "matrix" else sp.coo_array)((data, (rows, cols)),
                                                                     shape=values.shape)
    M = coo.asformat(fmt)
    return M, None


def _snapshot(M, mask):
    """Copies of everything the caller holds, to check nothing was changed."""
    def arrays(x):
        if x is None:
            return []
        if sp.issparse(x):
            if x.format == "dok":
                return [np.array(sorted(x.items()), dtype=object)]
            if x.format == "lil":
                return [np.array(x.rows.tolist(), dtype=object), np.array(x.data.tolist(), dtype=object)]
            return [np.array(getattr(x, name), copy=True)
                    for name in ("data", "indices", "indptr", "row", "col", "offsets")
                    if hasattr(x, name)]
        if torch is not None and isinstance(x, torch.Tensor):
            if x.layout == torch.strided:
                return [x.numpy().copy()]
            parts = ([x._values(), x._indices()] if x.layout == torch.sparse_coo
                     else [x.values(), x.crow_indices(), x.col_indices()])
            return [t.numpy().copy() for t in parts]
        if isinstance(x, list):
            return [np.array(repr(x))]
        return [np.array(x, copy=True), np.array(x.flags.writeable)]
    return arrays(M) + arrays(mask)


def _same(before, after):
    return len(before) == len(after) and all(
        a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        for a, b in zip(before, after))


def _fits(form, values, observed):
    """Whether the problem is valid for rank 1, so that fit must succeed."""
    observed_values = values[observed].astype(np.float64)
    return (min(values.shape) >= 2 and form != "coo_duplicates"
            and np.all(np.isfinite(observed_values)) and np.any(observed_values != 0))


@FUZZ
@given(problems())
def test_fit_succeeds_or_raises_a_clear_error(capfd, problem):
    form, values, observed = problem
    M, mask = _build(form, values, observed)
    before = _snapshot(M, mask)
    capfd.readouterr()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = DeepMatrixCompleter(rank=1, max_iter=20, random_state=0).fit(M, mask)
    except (ValueError, TypeError) as error:
        assert str(error).strip(), f"{type(error).__name__} without a message"
        assert not _fits(form, values, observed), f"a valid {form} problem was refused: {error}"
    else:
        assert _fits(form, values, observed), f"an invalid {form} problem was accepted"
        X = model.transform(as_numpy=True)
        assert X.shape == values.shape and np.all(np.isfinite(X))
        assert np.isfinite(model.score(M, mask))  # score reads the same input forms
    out, err = capfd.readouterr()
    assert out == "" and err == "", f"printed: {out!r} {err!r}"
    assert _same(before, _snapshot(M, mask)), f"fit changed the caller's {form} input"
