"""Synthetic low-rank completion problems and the MovieLens 100K ratings.

:func:`make_low_rank` and :func:`uniform_mask` draw the synthetic problems
of the paper and the benchmarks; :func:`fetch_movielens_100k` downloads the
MovieLens 100K archive once and :func:`load_movielens_100k` reads its
official train/test splits, :func:`load_movielens_100k_genres` the movies'
genre flags.
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse.linalg as spla

__all__ = ["make_low_rank", "uniform_mask"]


def _rng(random_state):
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(2**32 - 1))
    return np.random.default_rng(random_state)


def _check_shape(shape):
    if len(shape) != 2 or any(int(s) != s or s < 1 for s in shape):
        raise ValueError(f"shape must be two positive integers (m, n); got {shape!r}.")
    return int(shape[0]), int(shape[1])


def uniform_mask(shape, observed_fraction, random_state=None) -> np.ndarray:
    """Boolean mask with exactly ``round(p * m * n)`` True entries, uniform.

    Drawn without replacement, so the count is exact.

    Parameters
    ----------
    shape : tuple of int
        ``(m, n)``.
    observed_fraction : float
        ``p``, in (0, 1].
    random_state : int, numpy.random.Generator or None, default=None

    Returns
    -------
    ndarray of bool, shape (m, n)
        True = observed.
    """
    m, n = _check_shape(shape)
    if not 0.0 < observed_fraction <= 1.0:
        raise ValueError(f"observed_fraction must be in (0, 1]; got {observed_fraction!r}.")
    rng = _rng(random_state)
    count = int(round(observed_fraction * m * n))
    if count < 1:
        raise ValueError(f"observed_fraction={observed_fraction} observes no entry of a {m} x {n} matrix.")
    mask = np.zeros(m * n, dtype=bool)
    mask[rng.choice(m * n, size=count, replace=False)] = True
    return mask.reshape(m, n)


def make_low_rank(shape, rank, observed_fraction, *, noise=0.0, condition_number=None, random_state=None):
    """A random rank-``rank`` matrix and a uniform observation mask.

    The paper's recipe: a standard Gaussian ``m x n`` matrix truncated to its
    top-``rank`` singular triplets (so singular values are about
    ``sqrt(m) + sqrt(n)``, entries O(1) in size).  With ``condition_number``
    the singular vectors come from the same truncation and the singular
    values are replaced by a geometric sequence with a chosen ratio between
    the largest and the smallest.

    Parameters
    ----------
    shape : tuple of int
        ``(m, n)``; rectangles are fine.
    rank : int
        True rank, ``1 <= rank <= min(m, n)``.
    observed_fraction : float
        In (0, 1].  The mask observes exactly ``round(observed_fraction * m * n)`` entries.
    noise : float, default=0
        Standard deviation of Gaussian noise added to the observed values.
    condition_number : float or None, default=None
        ``kappa = s_1 / s_rank >= 1``, finite.  None keeps the Gaussian
        truncation's own singular values (the paper's recipe; the output is
        the same as without the argument, bit for bit, for the same seed).
        A number sets the singular values to ``s_i = s_1 * kappa ** (-(i - 1)
        / (rank - 1))``, ``i = 1 .. rank``: geometric from ``s_1`` down to
        ``s_1 / kappa``, where ``s_1`` is the top singular value of the
        Gaussian truncation (about ``sqrt(m) + sqrt(n)``, the same scale as
        the default).  For ``rank=1`` there is only ``s_1``, whatever kappa.
        The singular vectors and the mask are the ones drawn without it.
    random_state : int, numpy.random.Generator or None, default=None

    Returns
    -------
    M_true : ndarray of shape (m, n)
        The noiseless low-rank matrix.
    mask : ndarray of bool, shape (m, n)
        True = observed.
    M_noisy : ndarray of shape (m, n)
        Returned only when ``noise > 0``: ``M_true`` plus noise on the observed entries (unobserved entries are
        NaN), the matrix to fit.

    Raises
    ------
    ValueError
        Bad shape, rank, observed fraction or noise, or a ``condition_number``
        that is not a finite number >= 1.

    Examples
    --------
    >>> import numpy as np
    >>> M, mask = make_low_rank((60, 50), 3, 0.3, condition_number=100, random_state=0)
    >>> s = np.linalg.svd(M, compute_uv=False)
    >>> round(float(s[0] / s[2]), 6), round(float(s[0] / s[1]), 6)
    (100.0, 10.0)
    """
    m, n = _check_shape(shape)
    if int(rank) != rank or not 1 <= rank <= min(m, n):
        raise ValueError(f"rank must be an integer in [1, min(m, n)] = [1, {min(m, n)}]; got {rank!r}.")
    if noise < 0:
        raise ValueError(f"noise must be >= 0; got {noise!r}.")
    if condition_number is not None:
        real = isinstance(condition_number, numbers.Real) and not isinstance(condition_number, bool)
        kappa = float(condition_number) if real else float("nan")
        if not np.isfinite(kappa) or kappa < 1:
            raise ValueError(f"condition_number must be None or a finite number >= 1 "
                             f"(largest / smallest singular value); got {condition_number!r}.")
    rng = _rng(random_state)
    gaussian = rng.standard_normal((m, n))
    if rank < min(m, n) and min(m, n) > 200:
        u, s, vt = spla.svds(gaussian, k=rank, v0=rng.standard_normal(min(m, n)))
    else:
        u, s, vt = np.linalg.svd(gaussian, full_matrices=False)
        u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    if condition_number is not None:
        # svds returns ascending order: keep each vector with its own value's rank
        order = np.argsort(s)[::-1]
        ratios = kappa ** (-np.arange(rank) / max(rank - 1, 1))
        s_new = np.empty_like(s)
        s_new[order] = s[order[0]] * ratios
        s = s_new
    M_true = (u * s) @ vt
    mask = uniform_mask((m, n), observed_fraction, rng)
    if noise == 0:
        return M_true, mask
    M_noisy = np.where(mask, M_true + noise * rng.standard_normal((m, n)), np.nan)
    return M_true, mask, M_noisy


# -- MovieLens 100K ------------------------------------------------------------

import hashlib as _hashlib
import os as _os
import shutil as _shutil
import tempfile as _tempfile
import urllib.request as _urllib_request
import zipfile as _zipfile
from pathlib import Path as _Path
from typing import NamedTuple as _NamedTuple

__all__ += ["Ratings", "RatingsSplit", "load_movielens_100k", "fetch_movielens_100k",
            "TimestampsSplit", "load_movielens_100k_timestamps"]

MOVIELENS_100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
#: SHA-256 of the official archive (4,924,029 bytes; GroupLens' MD5 is
#: 0e33842e24a9c977be4e0107933c0723).  The data set is frozen since 1998.
MOVIELENS_100K_SHA256 = "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"
_MOVIELENS_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")

# the opener fetch_movielens_100k uses; tests replace it with a fake
_urlopen = _urllib_request.urlopen


class Ratings(_NamedTuple):
    """Rating triplets with the data set's own (here 1-based) ids.

    Attributes
    ----------
    users, items : ndarray of int64, shape (n,)
    ratings : ndarray of float64, shape (n,)
    """

    users: np.ndarray  # int64, shape (n,)
    items: np.ndarray  # int64, shape (n,)
    ratings: np.ndarray  # float64, shape (n,)


class RatingsSplit(_NamedTuple):
    """A train/test split of a ratings data set.

    Attributes
    ----------
    train, test : Ratings
        ``(users, items, ratings)`` arrays, ids as in the files (1-based).
    shape : tuple of int
        ``(n_users, n_items)``: the largest user and item id in either file
        (943 x 1682 for MovieLens 100K), so ``users - 1`` and ``items - 1``
        index the rows and columns of the rating matrix.
    """

    train: Ratings
    test: Ratings
    shape: tuple


def _read_ratings_file(path) -> Ratings:
    table = _read_ratings_table(path)
    return Ratings(table[:, 0].copy(), table[:, 1].copy(), table[:, 2].astype(np.float64))


def _read_ratings_table(path) -> np.ndarray:
    """The ``user item rating timestamp`` rows of a GroupLens file, checked."""
    try:
        table = np.loadtxt(path, dtype=np.int64, delimiter="\t", ndmin=2)
    except ValueError as error:
        raise ValueError(
            f"{path} is not a GroupLens ratings file (tab-separated "
            f"'user item rating timestamp' integers): {error}") from None
    if table.shape[1] != 4 or table.shape[0] == 0:
        raise ValueError(
            f"{path} must hold rows of 4 tab-separated integers "
            f"'user item rating timestamp'; got shape {table.shape}.")
    if table[:, :2].min() < 1:
        raise ValueError(f"{path} holds a user or item id < 1; GroupLens ids are 1-based.")
    return table


def load_movielens_100k(path, split="u1") -> RatingsSplit:
    """Read one of the official MovieLens 100K train/test splits.

    Parameters
    ----------
    path : str or os.PathLike
        Directory holding GroupLens' ``uK.base`` / ``uK.test`` files (the
        ``ml-100k`` folder of the official archive; see
        :func:`fetch_movielens_100k`).
    split : {"u1", "u2", "u3", "u4", "u5", "ua", "ub"}, default="u1"
        ``u1`` .. ``u5`` are the five disjoint 80/20 folds; ``ua``/``ub``
        hold out exactly 10 ratings per user.

    Returns
    -------
    RatingsSplit
        ``train`` and ``test`` as :class:`Ratings` ``(users, items,
        ratings)`` with the files' 1-based ids, and ``shape``.

    Raises
    ------
    ValueError
        Unknown split name or malformed file.
    FileNotFoundError
        ``path`` is not a directory or lacks the split's files.

    Examples
    --------
    >>> data = load_movielens_100k("ml-100k", split="u1")   # doctest: +SKIP
    >>> data.train.ratings.size, data.test.ratings.size, data.shape  # doctest: +SKIP
    (80000, 20000, (943, 1682))
    """
    train, test = (_read_ratings_file(f) for f in _split_files(path, split))
    shape = (int(max(train.users.max(), test.users.max())),
             int(max(train.items.max(), test.items.max())))
    return RatingsSplit(train, test, shape)


class TimestampsSplit(_NamedTuple):
    """When each rating of a :class:`RatingsSplit` was given.

    Attributes
    ----------
    train, test : ndarray of int64
        Unix seconds, one per rating, in the order of the split's
        ``train`` and ``test`` ratings.
    """

    train: np.ndarray
    test: np.ndarray


def load_movielens_100k_timestamps(path, split="u1") -> TimestampsSplit:
    """The timestamps of one of the official MovieLens 100K splits.

    Aligned with :func:`load_movielens_100k` (same files, same order), for
    ``RatingsCompleter.fit(..., timestamps=...)`` and ``predict(...,
    timestamps=...)`` (user-day biases).

    Parameters
    ----------
    path : str or os.PathLike
        The ``ml-100k`` folder, as for :func:`load_movielens_100k`.
    split : {"u1", "u2", "u3", "u4", "u5", "ua", "ub"}, default="u1"

    Returns
    -------
    TimestampsSplit
    """
    train, test = (_read_ratings_table(f)[:, 3].copy() for f in _split_files(path, split))
    return TimestampsSplit(train, test)


def _split_files(path, split):
    """The ``.base`` and ``.test`` files of ``split`` in ``path``, checked to exist."""
    if split not in _MOVIELENS_SPLITS:
        raise ValueError(f"split must be one of {_MOVIELENS_SPLITS}; got {split!r}.")
    directory = _Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"{directory} is not a directory; pass the ml-100k folder of the GroupLens "
            "archive (fetch_movielens_100k() downloads it).")
    files = [directory / f"{split}.base", directory / f"{split}.test"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{directory} lacks {', '.join(missing)}; it should be the ml-100k folder of "
            "the GroupLens archive (fetch_movielens_100k() downloads it).")
    return files


MOVIELENS_100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western")


class ItemFeatures(_NamedTuple):
    """Side information on items: one feature vector per item id.

    The form :meth:`dmc.RatingsCompleter.fit` takes as ``item_features``
    (a pandas DataFrame indexed by item id works too).

    Attributes
    ----------
    ids : ndarray, shape (n_items,)
        Item ids, each once, as in the ratings.
    values : ndarray of float64, shape (n_items, n_features)
        Row ``p`` describes item ``ids[p]`` (e.g. 0/1 genre flags).
    names : tuple of str
        The features' names, ``n_features`` of them.
    """

    ids: np.ndarray
    values: np.ndarray
    names: tuple


def load_movielens_100k_genres(path) -> ItemFeatures:
    """The 19 genre flags of the MovieLens 100K movies, from ``u.item``.

    Parameters
    ----------
    path : str or os.PathLike
        The ``ml-100k`` folder (as for :func:`load_movielens_100k`).

    Returns
    -------
    ItemFeatures
        ``ids``: the 1,682 movie ids (int64, as in the ratings files);
        ``values``: 0/1 flags, shape (1682, 19), a movie may have several
        genres; ``names``: :data:`MOVIELENS_100K_GENRES` (the order of
        ``u.genre``).

    Raises
    ------
    FileNotFoundError
        No ``u.item`` in ``path``.
    ValueError
        A line without an id and 19 trailing 0/1 flags.

    Examples
    --------
    >>> genres = load_movielens_100k_genres("ml-100k")   # doctest: +SKIP
    >>> model = RatingsCompleter().fit(*data.train, item_features=genres)   # doctest: +SKIP
    """
    file = _Path(path) / "u.item"
    if not file.is_file():
        raise FileNotFoundError(
            f"{_Path(path)} lacks u.item; pass the ml-100k folder of the GroupLens archive "
            "(fetch_movielens_100k() downloads it).")
    n = len(MOVIELENS_100K_GENRES)
    ids, flags = [], []
    # titles are Latin-1; the fields used here are ASCII
    for number, line in enumerate(file.read_text(encoding="latin-1").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < n + 1 or any(f not in ("0", "1") for f in fields[-n:]) or not fields[0].isdigit():
            raise ValueError(f"{file}, line {number}: expected 'id|title|...|' and {n} 0/1 genre "
                             f"flags separated by '|'; got {line[:80]!r}.")
        ids.append(int(fields[0]))
        flags.append([int(f) for f in fields[-n:]])
    if not ids:
        raise ValueError(f"{file} holds no movies.")
    return ItemFeatures(np.array(ids, dtype=np.int64), np.array(flags, dtype=np.float64),
                        MOVIELENS_100K_GENRES)


__all__ += ["ItemFeatures", "MOVIELENS_100K_GENRES", "load_movielens_100k_genres"]


def _data_home(data_home=None) -> _Path:
    if data_home is None:
        data_home = _os.environ.get("DMC_DATA") or _Path.home() / ".dmc_data"
    return _Path(data_home).expanduser()


def _sha256(path) -> str:
    digest = _hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_movielens_100k(data_home=None, *, url=MOVIELENS_100K_URL,
                         sha256=MOVIELENS_100K_SHA256) -> _Path:
    """Download and unpack MovieLens 100K once; return the ``ml-100k`` folder.

    **Needs the network** on the first call (about 5 MB from GroupLens); later
    calls use the cache and do not connect.  The archive is checked against
    its SHA-256 before anything is unpacked, and a mismatch deletes it and
    raises.  Pass the returned folder to :func:`load_movielens_100k`.
    MovieLens is for research use under GroupLens' licence (see its README);
    do not redistribute it.

    Parameters
    ----------
    data_home : str, os.PathLike or None, default=None
        Cache directory.  None: ``$DMC_DATA`` if set, else ``~/.dmc_data``.
    url : str, default=MOVIELENS_100K_URL
        Archive location (default: the official GroupLens archive).
    sha256 : str, default=MOVIELENS_100K_SHA256
        The archive's expected SHA-256 (default: the official archive's).

    Returns
    -------
    pathlib.Path
        ``data_home / "ml-100k"``.

    Raises
    ------
    ValueError
        The downloaded (or cached) archive does not match ``sha256``.
    """
    home = _data_home(data_home)
    target = home / "ml-100k"
    archive = home / "ml-100k.zip"
    if (target / "u1.base").is_file() and (target / "u1.test").is_file():
        return target
    home.mkdir(parents=True, exist_ok=True)
    if archive.is_file() and _sha256(archive) != sha256:
        archive.unlink()  # a stale or partial download: fetch it again
    if not archive.is_file():
        fd, partial = _tempfile.mkstemp(dir=home, prefix="ml-100k.", suffix=".part")
        try:
            with _os.fdopen(fd, "wb") as out, _urlopen(url, timeout=60) as response:
                _shutil.copyfileobj(response, out)
            got = _sha256(partial)
            if got != sha256:
                raise ValueError(
                    f"the archive downloaded from {url} has SHA-256 {got}, expected "
                    f"{sha256}; it was deleted. Retry, or download it by hand into {home}.")
            _os.replace(partial, archive)
        finally:
            if _os.path.exists(partial):
                _os.unlink(partial)
    with _zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():  # refuse paths that leave data_home
            if member.startswith(("/", "\\")) or ".." in _Path(member).parts:
                raise ValueError(f"unsafe path {member!r} in {archive}.")
        zf.extractall(home)
    if not (target / "u1.base").is_file():
        raise ValueError(f"{archive} did not contain ml-100k/u1.base; is it the MovieLens 100K archive?")
    return target
