"""Saving fitted estimators to one portable ``.npz`` file, and loading them back.

No pickle is involved, so a file can be loaded safely from an untrusted
source and read by any NumPy (``numpy.load(path, allow_pickle=False)``).

File format (``format_version`` 1)
----------------------------------
An ordinary NumPy ``.npz`` archive (a zip of ``.npy`` files) holding:

* ``__dmc__``: a 0-d unicode array with a JSON header::

      {"format": "dmc.estimator", "format_version": 1, "dmc_version": "0.1.0",
       "class": "DeepMatrixCompleter", "params": {...}, "state": {...}}

  ``params`` are the estimator's ``get_params()`` (tuples as
  ``{"__tuple__": [...]}``; callbacks and random Generators are written as
  null, with a warning).  ``state`` maps every fitted attribute to either a
  JSON value or a reference to archive members: ``{"__array__": name,
  "on_backend": bool}``, ``{"__list__": [...]}``, ``{"__dict__": {...}}``,
  ``{"__backend__": name, "device": str}``.
* one ``.npy`` member per array, named after its attribute
  (``inner_factors_.0``, ``history_.train_loss``, ...).

Arrays marked ``on_backend`` (the fitted factors of a torch or CuPy fit)
are put back on the backend and device asked for at load time, so a model
fitted on a GPU loads on a CPU-only machine with ``backend="numpy"``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from .backend import Backend, _kind_of, dtype_name, to_namespace, to_numpy
from .exceptions import not_fitted

__all__ = ["FORMAT", "FORMAT_VERSION", "load_estimator", "save_estimator"]

FORMAT = "dmc.estimator"
FORMAT_VERSION = 1
_HEADER = "__dmc__"


def _estimator_classes():
    from .estimator import DeepMatrixCompleter
    from .interactions import InteractionsCompleter
    from .ratings import RatingsCompleter

    return {cls.__name__: cls for cls in (DeepMatrixCompleter, RatingsCompleter,
                                          InteractionsCompleter)}


# -- writing -----------------------------------------------------------------
def _param_to_json(name, value, lost):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, tuple):
        return {"__tuple__": [_param_to_json(name, v, lost) for v in value]}
    if isinstance(value, list) and not any(callable(v) for v in value):
        return [_param_to_json(name, v, lost) for v in value]
    kind = type(value).__module__.split(".")[0]
    if kind == "torch" and type(value).__name__ == "device":
        return str(value)  # "cuda:0"
    if "dtype" in type(value).__name__.lower() or isinstance(value, type):
        return dtype_name(value)  # torch.float32, np.dtype("float32"), np.float32 -> "float32"
    lost.append(name)  # callables, Generators, ...: code and live objects are not data
    return None


def _state_to_json(name, value, arrays, on_backend):
    if isinstance(value, Backend):
        # CuPy devices are saved by number, torch devices by name ("cuda:0")
        return {"__backend__": value.name, "device": str(getattr(value.device, "id", value.device))}
    kind = _kind_of(value)
    if kind in ("numpy", "torch", "cupy") and hasattr(value, "shape"):
        array = to_numpy(value)
        if array.dtype == object:
            try:
                array = array.astype(str)
            except (TypeError, ValueError):
                raise TypeError(f"{name} holds objects that cannot be saved without pickle.") from None
        arrays[name] = array
        return {"__array__": name, "on_backend": on_backend}
    if isinstance(value, dict):
        return {"__dict__": {str(k): _state_to_json(f"{name}.{k}", v, arrays, on_backend)
                             for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        key = "__list__" if isinstance(value, list) else "__tuple__"
        return {key: [_state_to_json(f"{name}.{i}", v, arrays, on_backend)
                      for i, v in enumerate(value)]}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save attribute {name} of type {type(value).__name__}.")


def _fitted_state(estimator):
    check_fitted = getattr(estimator, "_check_fitted", None)
    if check_fitted is not None:
        check_fitted()  # NotFittedError, as every method that needs a fit raises
    names = [n for n in vars(estimator) if n.endswith("_") and not n.startswith("_")]
    names += [n for n in estimator._persisted_private if hasattr(estimator, n)]
    if not names:
        raise not_fitted(estimator)
    return {n: getattr(estimator, n) for n in names}


def save_estimator(estimator, path):
    """Write ``estimator`` to ``path`` in the format above; returns the Path."""
    from . import __version__

    path = Path(path)
    lost = []
    params = {k: _param_to_json(k, v, lost) for k, v in estimator.get_params(deep=False).items()}
    if lost:
        warnings.warn(f"{', '.join(lost)} cannot be saved without pickle and will be None in "
                      "the loaded estimator.", UserWarning, stacklevel=3)
    arrays = {}
    # the fitted factors live on the fit's backend (NumPy included); loading
    # onto another backend moves exactly these, histories stay NumPy
    state = {name: _state_to_json(name, value, arrays, name in estimator._backend_state)
             for name, value in _fitted_state(estimator).items()}
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, "dmc_version": __version__,
              "class": type(estimator).__name__, "params": params, "state": state}
    with open(path, "wb") as file:  # a file object: np.savez would append ".npz" to a name
        np.savez(file, **{_HEADER: np.array(json.dumps(header))}, **arrays)
    return path


# -- reading -----------------------------------------------------------------
def _param_from_json(value):
    if isinstance(value, dict) and "__tuple__" in value:
        return tuple(_param_from_json(v) for v in value["__tuple__"])
    if isinstance(value, list):
        return [_param_from_json(v) for v in value]
    return value


class _Damaged(ValueError):
    """A model file whose structure is not what ``save`` writes."""


def _read_header(archive, path):
    if _HEADER not in archive.files:
        raise ValueError(f"{path} is a NumPy archive but not a dmc model (no {_HEADER} entry); "
                         "dmc models are written by estimator.save(path).")
    text = _member(archive, _HEADER)
    if text.dtype.kind != "U" or text.ndim != 0:
        raise _Damaged(f"its {_HEADER} entry is a {text.dtype} array of shape {text.shape}, not text")
    try:
        header = json.loads(str(text))
    except json.JSONDecodeError as error:
        raise _Damaged(f"its header is not valid JSON ({error})") from None
    if not isinstance(header, dict):
        raise _Damaged(f"its header is a JSON {type(header).__name__}, not an object")
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a dmc model file (format {header.get('format')!r}).")
    version = header.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise _Damaged(f"its format_version is {version!r}, not an integer")
    for key, kind in (("class", str), ("params", dict), ("state", dict)):
        if not isinstance(header.get(key), kind):
            raise _Damaged(f"its header has no {key!r} {kind.__name__}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path} was written by dmc {header.get('dmc_version')} in format "
                         f"version {header['format_version']}; this dmc reads up to version "
                         f"{FORMAT_VERSION}. Upgrade dmc to load it.")
    return header


def load_estimator(path, *, backend=None, device=None, expected=None):
    """The estimator saved at ``path`` (see :meth:`dmc.DeepMatrixCompleter.load`).

    Parameters
    ----------
    path : str or os.PathLike
    backend : {"numpy", "torch", "cupy"}, optional
        Backend for the fitted factors; default the saved one.
    device : str, optional
        Device on that backend.
    expected : type, optional
        The class the caller expects; a file holding another class raises.

    Returns
    -------
    estimator
    """
    import tokenize
    import zipfile
    import zlib

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}.")
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:  # not an npz (zip) file
        raise ValueError(f"{path} is not a dmc model file (.npz): {error}") from None
    try:
        with archive:
            estimator = _load(archive, path, backend, device, expected)
        _check_state(estimator)
    except _Damaged as error:
        raise ValueError(f"{path} is a damaged dmc model file: {error}. Save the model again.") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, SyntaxError, tokenize.TokenError,
            NotImplementedError) as error:  # NotImplementedError: a flipped compression-method field
        # a truncated or modified archive: bad CRC, a member missing or cut short
        # (SyntaxError, TokenError: NumPy parsing a damaged .npy member header)
        raise ValueError(f"{path} is a damaged dmc model file (truncated or modified: "
                         f"{type(error).__name__}: {error}). Save the model again.") from None
    return estimator


def _member(archive, name):
    """The archive member ``name`` (a string naming an existing member)."""
    if not isinstance(name, str) or name not in archive.files:
        raise _Damaged(f"the header refers to a missing array {name!r}")
    try:
        return archive[name]
    except ValueError as error:  # e.g. an object array, which would need pickle
        raise _Damaged(f"its member {name!r} cannot be read without pickle ({error})") from None


def _shape(array):
    return tuple(int(s) for s in getattr(array, "shape", ()))


def _check_observed(estimator, users, items):
    """The training pairs (``_observed``, for ``recommend``) must index the ids."""
    observed = getattr(estimator, "_observed", None)
    if not (isinstance(observed, tuple) and len(observed) == 2
            and all(isinstance(a, np.ndarray) and a.dtype.kind in "iu" for a in observed)
            and observed[0].shape == observed[1].shape
            and (observed[0].size == 0 or (observed[0].min() >= 0 and observed[0].max() < users[0]
                                           and observed[1].min() >= 0
                                           and observed[1].max() < items[0]))):
        raise _Damaged("its observed pairs are missing or do not match the ids")


def _check_neighbours(estimator, users, items):
    """RatingsCompleter's kNN corrections: residuals per training pair, n x n similarities.

    Files saved before the correction existed hold neither (their models
    predict without it).
    """
    residuals = getattr(estimator, "_residuals", None)
    if residuals is not None and (not isinstance(residuals, np.ndarray) or residuals.dtype.kind != "f"
                                  or residuals.shape != estimator._observed[0].shape):
        raise _Damaged(f"its training residuals (shape {_shape(residuals)}) do not match its "
                       f"{estimator._observed[0].size} training pairs")
    for count_name, name, size, kind in (("n_neighbours_", "item_similarities_", items[0], "items"),
                                         ("n_user_neighbours_", "user_similarities_", users[0], "users")):
        count = getattr(estimator, count_name, 0)
        if not (isinstance(count, int) and not isinstance(count, bool) and count >= 0):
            raise _Damaged(f"{count_name} is {count!r}, not an integer >= 0")
        similarities = getattr(estimator, name, None)
        if count and (residuals is None or not isinstance(similarities, np.ndarray)
                      or similarities.dtype.kind != "f" or _shape(similarities) != (size, size)):
            raise _Damaged(f"its {name} (shape {_shape(similarities)}) do not match its {size} "
                           f"{kind}, or its training residuals are missing")


def _check_state(estimator):
    """The fitted arrays must fit together (a tampered file could pair any arrays)."""
    name = type(estimator).__name__
    try:
        estimator._check_fitted()
    except AttributeError:
        raise _Damaged(f"it holds an unfitted {name} (no fitted factors)") from None
    if name == "DeepMatrixCompleter":
        left, inner, right = estimator.left_factor_, estimator.inner_factors_, estimator.right_factor_
        if not isinstance(inner, list):
            raise _Damaged("inner_factors_ is not a list")
        chain = [left, *reversed(inner), right]
        shapes = [_shape(a) for a in chain]
        if any(len(s) != 2 for s in shapes):
            raise _Damaged(f"the factors have shapes {shapes}, not matrices")
        widths_ok = all(shapes[i][1] == shapes[i + 1][0] for i in range(1, len(shapes) - 2))
        widths_ok = widths_ok and shapes[0][1] == (shapes[1][0] if inner else shapes[-1][1])
        widths_ok = widths_ok and (not inner or shapes[-2][1] == shapes[-1][1])
        shape = getattr(estimator, "shape_", None)
        if not widths_ok or not isinstance(shape, tuple) or shape != (shapes[0][0], shapes[-1][0]):
            raise _Damaged(f"the factors' shapes {shapes} do not multiply to shape_ {shape!r}")
    elif name == "InteractionsCompleter":
        users, items = _shape(estimator.user_ids_), _shape(estimator.item_ids_)
        rows, cols = _shape(estimator.user_factors_), _shape(estimator.item_factors_)
        if (len(users) != 1 or len(items) != 1 or len(rows) != 2 or len(cols) != 2
                or rows[0] != users[0] or cols[0] != items[0] or rows[1] != cols[1]):
            raise _Damaged(f"its factors ({rows}, {cols}) and ids ({users}, {items}) "
                           "do not fit together")
        _check_observed(estimator, users, items)
    elif name == "RatingsCompleter":
        users, items = _shape(estimator.user_ids_), _shape(estimator.item_ids_)
        rows, cols = _shape(estimator.row_factors_), _shape(estimator.column_factors_)
        expected = {"user_bias_": users, "item_bias_": items}
        if hasattr(estimator, "implicit_factors_"):  # absent from files saved before it existed
            expected["implicit_factors_"] = cols
        if (len(users) != 1 or len(items) != 1 or len(rows) != 2 or len(cols) != 2
                or rows[0] != users[0] or cols[0] != items[0] or rows[1] != cols[1]
                or any(_shape(getattr(estimator, k)) != v for k, v in expected.items())):
            raise _Damaged(f"its factors ({rows}, {cols}), biases and ids ({users}, {items}) "
                           "do not fit together")
        _check_observed(estimator, users, items)
        _check_neighbours(estimator, users, items)
        embeddings = getattr(estimator, "feature_factors_", None)
        if embeddings is not None and (len(_shape(embeddings)) != 2 or _shape(embeddings)[1] != cols[1]):
            raise _Damaged(f"its feature_factors_ (shape {_shape(embeddings)}) do not fit together "
                           f"with its column factors ({cols})")
        keys, biases = getattr(estimator, "day_bias_keys_", None), getattr(estimator, "day_bias_", None)
        if (keys is None) != (biases is None) or keys is not None and (
                not isinstance(keys, np.ndarray) or keys.dtype.kind not in "iu" or keys.ndim != 1
                or _shape(biases) != keys.shape or np.any(np.diff(keys) <= 0)):
            raise _Damaged(f"its user-day biases (keys {_shape(keys)}, values {_shape(biases)}) "
                           "are not one value per sorted key")
        low_high = getattr(estimator, "rating_range_", None)
        if not (isinstance(low_high, tuple) and len(low_high) == 2
                and all(isinstance(v, float) for v in low_high)):
            raise _Damaged(f"rating_range_ is {low_high!r}, not a pair of floats")
    for attribute in ("left_factor_", "right_factor_", "row_factors_", "column_factors_",
                      "user_bias_", "item_bias_", "user_factors_", "item_factors_", "day_bias_"):
        value = getattr(estimator, attribute, None)
        if value is not None and to_numpy(value).dtype.kind != "f":
            raise _Damaged(f"{attribute} does not hold floating-point numbers")


def _load(archive, path, backend, device, expected):
    header = _read_header(archive, path)
    classes = _estimator_classes()
    name = header["class"]
    if name not in classes:
        raise ValueError(f"{path} holds an unknown estimator class {name!r}.")
    cls = classes[name]
    if expected is not None and cls is not expected:
        raise ValueError(f"{path} holds a {name}; load it with {name}.load(path).")
    params = {k: _param_from_json(v) for k, v in header["params"].items()}
    unknown = sorted(set(params) - set(cls._get_param_names()))
    if unknown:
        raise _Damaged(f"it sets parameters {unknown} that {name} does not have")
    has_backend = "backend" in params
    if (backend is not None or device is not None) and not has_backend:
        raise ValueError(f"{name} runs on NumPy only; load it without backend or device.")
    saved = header["state"].get("backend_")
    target = None
    if saved is not None and not (isinstance(saved, dict) and "__backend__" in saved):
        raise _Damaged(f"its backend_ entry is {saved!r}")
    if saved is not None:
        name_ = backend or saved["__backend__"]
        if device is None and name_ == saved["__backend__"]:
            device = None if name_ == "numpy" else saved["device"]
        if name_ == "cupy" and isinstance(device, str) and device.isdigit():
            device = int(device)
        if name_ not in ("numpy", "torch", "cupy"):
            raise ValueError(f'backend must be "numpy", "torch" or "cupy"; got {name_!r}.')
        try:
            target = Backend(name_, device)
        except RuntimeError as error:
            raise ValueError(f"cannot place the saved model on backend={name_!r}, "
                             f"device={device!r} ({error}); pass backend='numpy' or "
                             "device='cpu' to load it elsewhere.") from None
        if backend is not None:
            params["backend"] = backend
        if backend is not None or device is not None:
            params["device"] = None if target.name == "numpy" else str(target.device)
    estimator = cls(**params)

    def restore(value):
        if isinstance(value, dict):
            if "__array__" in value:
                array = _member(archive, value["__array__"])
                if value.get("on_backend") and target is not None:
                    return to_namespace(array, target)
                return array
            if "__backend__" in value:
                return target
            if "__dict__" in value:
                return {k: restore(v) for k, v in value["__dict__"].items()}
            if "__list__" in value:
                return [restore(v) for v in value["__list__"]]
            if "__tuple__" in value:
                return tuple(restore(v) for v in value["__tuple__"])
        return value

    for attribute, value in header["state"].items():
        setattr(estimator, attribute, restore(value))
    return estimator
