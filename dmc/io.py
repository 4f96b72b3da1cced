"""Reading and writing matrices and index pairs in the file formats of ``dmc complete``.

Inputs: ``.npy`` (dense, NaN = missing); ``.npz`` holding one dense array
(NaN = missing), arrays ``M`` and ``mask`` (True = observed), or a
``scipy.sparse`` matrix from ``scipy.sparse.save_npz`` (stored entries,
zeros included, are the observed ones); Matrix Market ``.mtx`` / ``.mtx.gz``
(stored entries observed); text triplets ``row,col,value`` in ``.csv``,
``.tsv`` or ``.txt`` (comma, tab or whitespace separated, optional header,
``#`` comments, 0-based unless ``one_based``).  Outputs: ``.npy``, ``.npz``,
``.csv``/``.tsv``, or ``-`` for CSV on stdout.

Every malformed file raises a ValueError naming the file (and line) and
what is wrong.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path

__all__ = ["INPUT_FORMATS", "OUTPUT_SUFFIXES", "read_matrix", "read_pairs", "read_share",
           "write_matrix", "write_pairs"]

INPUT_FORMATS = ".npy, .npz, .mtx (or .mtx.gz), or CSV triplets .csv/.tsv/.txt"
TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
OUTPUT_SUFFIXES = (".npy", ".npz") + TEXT_SUFFIXES


def _one_line(text):
    return " ".join(str(text).split())


def _suffix(path):
    """Lower-case extension, ``.mtx`` for ``.mtx.gz`` / ``.mtx.bz2``."""
    name = str(path).lower()
    for compressed in (".gz", ".bz2"):
        if name.endswith(".mtx" + compressed):
            return ".mtx"
    return Path(name).suffix




# -- dmc complete: reading ---------------------------------------------------------
def _data_lines(handle):
    """``(line_number, stripped_text)`` of the non-blank, non-comment lines."""
    for number, line in enumerate(handle, start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield number, stripped


def _is_number(field):
    try:
        float(field)
    except ValueError:
        return False
    return True


class _Where:
    """``where[i]``: ``"PATH line N"`` of the i-th data row (found lazily, for error messages)."""

    def __init__(self, path, header):
        self.path, self.header = path, header

    def __getitem__(self, i):
        with open(self.path, "r", encoding="utf-8-sig", newline="") as handle:
            rows = _data_lines(handle)
            if self.header:
                next(rows)
            for k, (number, _) in enumerate(rows):
                if k == i:
                    return f"{self.path} line {number}"
        return f"{self.path} entry {i + 1}"


def _read_text_table(path, *, columns, what):
    """Numeric rows of a CSV/TSV/whitespace file as a float64 array of shape (k, columns).

    A first line that is not all numbers is a header.  Blank lines and lines
    starting with ``#`` are skipped.  ``columns`` may be a tuple of allowed
    column counts.  Returns the table and a ``where`` indexable that names
    the file line of each row.
    """
    import numpy as np

    allowed = columns if isinstance(columns, tuple) else (columns,)
    names = "row,col,value" if allowed == (3,) else "row,col"
    try:
        with open(path, "r", encoding="utf-8-sig", newline="") as handle:
            head = []
            for item in _data_lines(handle):
                head.append(item)
                if len(head) == 2:
                    break
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text file ({exc.reason})") from None
    if not head:
        raise ValueError(f"{path}: no {what} found (the file is empty)")
    first_number, first = head[0]
    delimiter = "," if "," in first else ("\t" if "\t" in first else None)

    def fields(text):
        return [f.strip() for f in (text.split(delimiter) if delimiter else text.split())]

    header = not all(_is_number(f) for f in fields(first))
    if header and len(head) < 2:
        raise ValueError(f"{path}: no {what} found (only a header line)")
    where = _Where(path, header)
    try:  # fast path: NumPy's C parser
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            table = np.loadtxt(path, delimiter=delimiter, comments="#", ndmin=2,
                               skiprows=first_number if header else 0, dtype=np.float64,
                               encoding="utf-8-sig")
        if table.shape[1] in allowed:
            return table, where
    except (ValueError, UserWarning):
        pass
    # slow path: find the first bad line and say what is wrong with it
    with open(path, "r", encoding="utf-8-sig", newline="") as handle:
        rows = _data_lines(handle)
        if header:
            next(rows)
        width = None
        for number, text in rows:
            parts = fields(text)
            width = len(parts) if width is None else width
            if len(parts) != width or len(parts) not in allowed:
                raise ValueError(f"{path} line {number}: expected {' or '.join(map(str, allowed))} "
                                 f"fields ({names}), found {len(parts)}: {text[:60]!r}")
            for part in parts:
                if not _is_number(part):
                    raise ValueError(f"{path} line {number}: {part[:40]!r} is not a number")
    raise ValueError(f"{path}: cannot read it as {names} lines")


def _index_columns(table, where, *, one_based, shape):
    """Integer row and column indices (0-based) from the first two columns, checked."""
    import numpy as np

    index = table[:, :2]
    # integers that float64 holds exactly (2**53), so the int64 cast below is exact
    integral = np.isfinite(index) & (index == np.round(index)) & (np.abs(index) <= 2.0**53)
    if not integral.all():
        i = int(np.flatnonzero(~integral.all(axis=1))[0])
        raise ValueError(f"{where[i]}: row and column indices must be "
                         f"integers (below 2**53); got {table[i, 0]:g}, {table[i, 1]:g}")
    index = index.astype(np.int64) - (1 if one_based else 0)
    if index.size and index.min() < 0:
        i = int(np.flatnonzero((index < 0).any(axis=1))[0])
        smallest = 1 if one_based else 0
        hint = "" if one_based else " (are the indices 1-based? use --one-based)"
        raise ValueError(f"{where[i]}: indices start at {smallest}; got "
                         f"{int(table[i, 0])}, {int(table[i, 1])}{hint}")
    if shape is not None:
        for axis, name in ((0, "row"), (1, "column")):
            outside = index[:, axis] >= shape[axis]
            if outside.any():
                i = int(np.flatnonzero(outside)[0])
                raise ValueError(f"{where[i]}: {name} index "
                                 f"{int(table[i, axis])} is outside the shape {shape[0]} x {shape[1]}")
    return index[:, 0], index[:, 1]


def _check_magic(path, suffix):
    """A .npy / .npz file must start like one (NumPy's own message blames pickles)."""
    magic = {".npy": (b"\x93NUMPY", "a NumPy .npy file"), ".npz": (b"PK", "a NumPy .npz (zip) archive")}
    if suffix in magic:
        with open(path, "rb") as handle:
            start = handle.read(6)
        if not start.startswith(magic[suffix][0]):
            raise ValueError(f"{path} is not {magic[suffix][1]}")


def _load_npy(path):
    import numpy as np

    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path}: not a readable .npy array ({_one_line(exc)})") from None


def _check_declared_entries(path, rows, cols, entries, layout):
    """A Matrix Market header must not declare more entries than the file can hold.

    Each entry takes at least two bytes (a digit and a line break), so an
    uncompressed file of ``size`` bytes holds at most ``size // 2``: a larger
    count is a truncated or corrupt file, rejected before the reader allocates
    for it (a count of 1e12 would otherwise end in an out-of-memory error).
    """
    declared = entries if layout == "coordinate" else rows * cols
    if _suffix(path) == ".mtx" and str(path).lower().endswith(".mtx"):
        capacity = Path(path).stat().st_size // 2
        if declared > capacity:
            raise ValueError(f"the header declares {declared} entries ({rows} x {cols}, "
                             f"{layout}) but the file has room for at most {capacity}: "
                             "it is truncated or the header is wrong")


def read_matrix(path, *, one_based=False, shape=None):
    """``(M, mask, n_observed)`` from an input file; mask is None unless given in the file."""
    import numpy as np
    import scipy.sparse as sp

    if not Path(path).exists():
        raise FileNotFoundError(f"input file {path} does not exist")
    if Path(path).is_dir():
        raise ValueError(f"input {path} is a folder, not a file")
    suffix = _suffix(path)
    if shape is not None and suffix not in TEXT_SUFFIXES:
        raise ValueError(f"a shape (--shape) applies to CSV triplet input only; {path} carries "
                         "its own shape")
    mask = None
    _check_magic(path, suffix)
    if suffix == ".npy":
        M = _load_npy(path)
    elif suffix == ".npz":
        import zipfile

        try:
            archive = np.load(path, allow_pickle=False)
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise ValueError(f"{path}: not a readable .npz archive ({_one_line(exc)})") from None
        with archive:
            keys = set(archive.files)
            if {"format", "shape"} <= keys:
                M = sp.load_npz(path)
            elif {"M", "mask"} <= keys:
                M, mask = archive["M"], archive["mask"]
            elif len(keys) == 1:
                M = archive[keys.pop()]
            else:
                raise ValueError(f"{path} holds arrays {sorted(keys)}; expected one dense array "
                                 "(NaN = missing), arrays 'M' and 'mask' (True = observed), or a "
                                 "scipy.sparse matrix saved with scipy.sparse.save_npz")
    elif suffix == ".mtx":
        import scipy.io

        import zlib

        # truncated or corrupt compression (EOFError, zlib.error, gzip's OSError) and
        # header numbers past the integer range (OverflowError) are malformed files too
        unreadable = (ValueError, IndexError, TypeError, OverflowError, EOFError, zlib.error)
        try:
            rows, cols, entries, layout, field, _ = scipy.io.mminfo(path)
            _check_declared_entries(path, rows, cols, entries, layout)
            M = scipy.io.mmread(path)
        except unreadable as exc:
            raise ValueError(f"{path}: not a readable Matrix Market file ({_one_line(exc)})") from None
        except OSError as exc:  # gzip.BadGzipFile and the like; a missing file was caught above
            if isinstance(exc, (PermissionError, IsADirectoryError)):
                raise
            raise ValueError(f"{path}: not a readable Matrix Market file ({_one_line(exc)})") from None
        if field == "pattern":
            raise ValueError(f"{path} is a 'pattern' Matrix Market file: it has positions but no "
                             "values to complete")
        if sp.issparse(M):
            try:
                M = sp.csr_matrix(M) if not sp.isspmatrix_coo(M) else M
                np.empty(max(rows, cols) + 1, np.int64)  # the fit's row pointers (not touched)
            except MemoryError:
                raise ValueError(f"{path}: the header declares a {rows} x {cols} matrix, too large "
                                 f"for memory with {M.nnz} entries; check the size line") from None
    elif suffix in TEXT_SUFFIXES:
        table, where = _read_text_table(path, columns=3, what="row,col,value triplets")
        rows, cols = _index_columns(table, where, one_based=one_based, shape=shape)
        inferred = (int(rows.max()) + 1, int(cols.max()) + 1)
        shape = tuple(shape) if shape is not None else inferred
        key = rows * shape[1] + cols
        order = np.argsort(key, kind="stable")
        repeated = np.flatnonzero(key[order][1:] == key[order][:-1])
        if repeated.size:
            i = int(order[repeated[0] + 1])
            raise ValueError(f"{where[i]}: entry ({int(table[i, 0])}, "
                             f"{int(table[i, 1])}) appears more than once")
        try:
            M = sp.coo_matrix((table[:, 2], (rows, cols)), shape=shape).tocsr()
        except MemoryError:  # the row pointers alone take 8 (m + 1) bytes
            raise ValueError(f"{path}: the indices make a {shape[0]} x {shape[1]} matrix, too large "
                             f"for memory with {len(table)} entries; check the indices (and "
                             "--one-based)") from None
    else:
        raise ValueError(f"{path}: unknown input format {suffix or '(no extension)'!r}; "
                         f"use {INPUT_FORMATS}")

    if sp.issparse(M):
        if M.ndim != 2:
            raise ValueError(f"{path} holds a {M.ndim}-D sparse array; dmc needs a 2-D matrix")
        return M, None, int(M.nnz)
    M = np.asarray(M)
    if M.ndim != 2:
        raise ValueError(f"{path} holds an array of shape {M.shape}; dmc needs a 2-D matrix")
    if M.dtype.kind not in "biuf":
        raise ValueError(f"{path} holds values of dtype {M.dtype}; dmc needs real numbers")
    if mask is not None:
        n_observed = int(np.count_nonzero(mask)) if np.shape(mask) == M.shape else 0
    elif M.dtype.kind == "f":
        n_observed = int(np.count_nonzero(~np.isnan(M)))
    else:
        n_observed = M.size
    return M, mask, n_observed


def read_pairs(path, *, one_based=False, shape=None):
    """0-based ``(rows, cols)`` int64 arrays from a CSV of pairs or an .npy (k x 2) array."""
    import numpy as np

    if not Path(path).exists():
        raise FileNotFoundError(f"pairs file {path} does not exist")
    suffix = _suffix(path)
    _check_magic(path, suffix)
    if suffix == ".npy":
        table = _load_npy(path)
        if table.ndim != 2 or table.shape[1] not in (2, 3) or table.dtype.kind not in "iuf":
            raise ValueError(f"{path} holds an array of shape {table.shape} and dtype {table.dtype}; "
                             "pairs must be a k x 2 integer array of (row, col)")
        table = table.astype(np.float64)
        where = [f"{path} row {i}" for i in range(len(table))]
    elif suffix in TEXT_SUFFIXES:
        table, where = _read_text_table(path, columns=(2, 3), what="row,col pairs")
    else:
        raise ValueError(f"{path}: unknown pairs format {suffix or '(no extension)'!r}; "
                         "use .csv (row,col lines) or .npy (k x 2 integers)")
    return _index_columns(table, where, one_based=one_based, shape=shape)


# -- dmc complete --distributed: each process reads its share ------------------------
def _matrix_market_header(path):
    """``(shape, declared_entries, data_start)`` of a coordinate real/integer general .mtx file."""
    with open(path, "rb") as handle:
        banner = handle.readline().decode("utf-8", "replace").split()
        if (len(banner) != 5 or banner[0].lower() != "%%matrixmarket"
                or banner[1].lower() != "matrix"):
            raise ValueError(f"{path}: not a readable Matrix Market file (no %%MatrixMarket "
                             "matrix banner)")
        layout, field, symmetry = (word.lower() for word in banner[2:])
        if layout != "coordinate" or field not in ("real", "integer", "double") \
                or symmetry != "general":
            raise ValueError(f"{path}: --distributed reads 'coordinate real general' Matrix Market "
                             f"files (each process its share of the lines); this one is "
                             f"'{layout} {field} {symmetry}': run without --distributed")
        while True:
            line = handle.readline()
            if not line:
                raise ValueError(f"{path}: not a readable Matrix Market file (no size line)")
            text = line.decode("utf-8", "replace").strip()
            if text and not text.startswith("%"):
                break
        parts = text.split()
        try:
            rows, cols, entries = (int(p) for p in parts)
        except ValueError:
            raise ValueError(f"{path}: the size line must be 'rows columns entries'; got "
                             f"{text[:60]!r}") from None
        if min(rows, cols) < 1 or entries < 0:
            raise ValueError(f"{path}: the size line declares a {rows} x {cols} matrix with "
                             f"{entries} entries")
        return (rows, cols), entries, handle.tell()


def _text_data_start(path):
    """Byte offset after the header line of a triplet file (0 without a header).

    The header is the first line that is neither blank nor a ``#`` comment,
    when its fields are not all numbers.
    """
    with open(path, "rb") as handle:
        for line in handle:
            text = line.decode("utf-8-sig", "replace").strip()
            if not text or text.startswith("#"):
                continue
            delimiter = "," if "," in text else ("\t" if "\t" in text else None)
            fields = text.split(delimiter) if delimiter else text.split()
            return handle.tell() if not all(_is_number(f.strip()) for f in fields) else 0
    return 0


def _byte_share(path, start, rank, size):
    """``(offset, text)``: the lines of ``path`` that begin in this process's byte range.

    The bytes after ``start`` are cut into ``size`` equal ranges; a line
    belongs to the range it begins in, so every line is read by exactly one
    process and each reads about ``1 / size`` of the file.
    """
    total = Path(path).stat().st_size
    span = max(total - start, 0)
    lo, hi = start + span * rank // size, start + span * (rank + 1) // size
    with open(path, "rb") as handle:
        handle.seek(max(lo - 1, start))
        if lo > start and handle.read(1) != b"\n":
            handle.readline()  # the rest of a line that began in the previous range
        begin = handle.tell()
        if begin >= hi:
            return begin, ""
        data = handle.read(hi - begin)
        if data and not data.endswith(b"\n"):
            data += handle.readline()
    try:
        return begin, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a text file ({exc.reason})") from None


def _parse_share(path, offset, text, *, skip_header):
    """Numeric ``(k, 3)`` table of a share's lines (blank and comment lines skipped)."""
    import numpy as np

    lines = [line for line in text.splitlines()
             if line.strip() and not line.lstrip().startswith(("#", "%"))]
    if skip_header and lines:
        first = lines[0]
        delimiter = "," if "," in first else ("\t" if "\t" in first else None)
        fields = first.split(delimiter) if delimiter else first.split()
        if not all(_is_number(f.strip()) for f in fields):
            lines = lines[1:]
    if not lines:
        return np.zeros((0, 3))
    delimiter = "," if "," in lines[0] else ("\t" if "\t" in lines[0] else None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            table = np.loadtxt(lines, delimiter=delimiter, ndmin=2, dtype=np.float64)
        if table.shape[1] == 3:
            return table
    except (ValueError, UserWarning):
        pass
    for line in lines:  # find the bad line for the message
        parts = [f.strip() for f in (line.split(delimiter) if delimiter else line.split())]
        if len(parts) != 3 or not all(_is_number(p) for p in parts):
            raise ValueError(f"{path}: line {line[:60]!r} (in the share starting at byte {offset}) "
                             "is not row,col,value")
    raise ValueError(f"{path}: cannot read the lines from byte {offset} as row,col,value")


def read_share(path, rank, size, *, one_based=False, shape=None):
    """This process's share of a Matrix Market or CSV triplet file, for ``--distributed``.

    Only the lines that begin in the process's ``1 / size`` of the file's
    bytes are read, so the processes together read the file once.  Matrix
    Market files must be uncompressed ``coordinate real general`` (1-based);
    CSV/TSV triplets follow :func:`read_matrix` (header line optional,
    ``#`` comments, 0-based unless ``one_based``).

    Returns
    -------
    rows, cols : ndarray of int64
        0-based global indices of this share's entries.
    values : ndarray of float64
    shape : tuple of int or None
        The declared shape (Matrix Market, or ``shape`` for CSV); None when
        the caller must infer it (the largest index over all shares, plus 1).
    declared : int or None
        The number of entries a Matrix Market header declares (over all shares).
    """
    import numpy as np

    if not Path(path).exists():
        raise FileNotFoundError(f"input file {path} does not exist")
    suffix = _suffix(path)
    name = str(path).lower()
    if suffix == ".mtx" and not name.endswith(".mtx"):
        raise ValueError(f"{path}: --distributed reads uncompressed files (each process seeks to "
                         "its share); decompress it first")
    if suffix == ".mtx":
        if shape is not None:
            raise ValueError(f"a shape (--shape) applies to CSV triplet input only; {path} carries "
                             "its own shape")
        shape, declared, start = _matrix_market_header(path)
        offset, text = _byte_share(path, start, rank, size)
        table = _parse_share(path, offset, text, skip_header=False)
        one_based = True
    elif suffix in TEXT_SUFFIXES:
        declared = None
        offset, text = _byte_share(path, _text_data_start(path), rank, size)
        table = _parse_share(path, offset, text, skip_header=False)
    else:
        raise ValueError(f"{path}: --distributed reads Matrix Market (.mtx) or CSV triplet "
                         f"(.csv/.tsv/.txt) files; got {suffix or '(no extension)'!r}")
    where = [f"{path} (share from byte {offset}) entry {i + 1}" for i in range(len(table))] \
        if len(table) < 1000 else _ShareWhere(path, offset)
    rows, cols = _index_columns(table, where, one_based=one_based,
                                shape=tuple(shape) if shape is not None else None)
    values = table[:, 2]
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{path}: observed values must be finite; the share from byte {offset} "
                         "holds NaN or infinite values")
    return rows, cols, values, (tuple(shape) if shape is not None else None), declared


class _ShareWhere:
    def __init__(self, path, offset):
        self.path, self.offset = path, offset

    def __getitem__(self, i):
        return f"{self.path} (share from byte {self.offset}) entry {i + 1}"


# -- dmc complete: writing -----------------------------------------------------------




def _float_format(dtype):
    return "%.9g" if str(dtype) == "float32" else "%.17g"


@contextlib.contextmanager
def _text_target(path):
    if str(path) == "-":
        yield sys.stdout
        sys.stdout.flush()
    else:
        with open(path, "w", encoding="utf-8", newline="") as handle:
            yield handle


def write_matrix(path, X):
    import numpy as np

    suffix = "-" if str(path) == "-" else _suffix(path)
    if suffix == ".npy":
        np.save(path, X)
    elif suffix == ".npz":
        np.savez_compressed(path, X=X)
    else:
        delimiter = "\t" if suffix == ".tsv" else ","
        with _text_target(path) as handle:
            np.savetxt(handle, X, delimiter=delimiter, fmt=_float_format(X.dtype))


def write_pairs(path, rows, cols, values, *, one_based=False):
    import numpy as np

    suffix = "-" if str(path) == "-" else _suffix(path)
    if suffix == ".npy":
        np.save(path, values)
    elif suffix == ".npz":
        np.savez_compressed(path, row=rows, col=cols, value=values)
    else:
        delimiter = "\t" if suffix == ".tsv" else ","
        shift = 1 if one_based else 0
        table = np.empty(len(values), dtype=[("row", np.int64), ("col", np.int64), ("value", np.float64)])
        table["row"], table["col"], table["value"] = rows + shift, cols + shift, values
        with _text_target(path) as handle:
            np.savetxt(handle, table, delimiter=delimiter,
                       fmt=["%d", "%d", _float_format(values.dtype)],
                       header=delimiter.join(["row", "col", "value"]), comments="")
