"""Checks at the public boundary: clear errors before anything is mutated.

Shape, dtype and namespace checks are metadata only (cheap, no pass over the
values); the NaN/inf scan is a separate, explicit step done once per ``fit``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import array_api_compat.numpy as npx
import numpy as np

from portable_mlp import _backend
from portable_mlp.encoding import one_hot
from portable_mlp.layers import Linear, Piece

if TYPE_CHECKING:  # for annotations only: the model module imports this one
    from portable_mlp.model import Sequential

Array = Any


def check_pieces(pieces: Sequence[Piece]) -> list[Piece]:
    if not isinstance(pieces, Sequence) or isinstance(pieces, str) or not pieces:
        raise ValueError(f"pieces must be a non-empty list of pieces, got {pieces!r}")
    for piece in pieces:
        if not isinstance(piece, Piece):
            raise TypeError(f"every piece must be a portable_mlp piece (Linear, Sigmoid, ...), "
                            f"got {type(piece).__name__}")
    linear = [p for p in pieces if isinstance(p, Linear)]
    if not linear:
        raise ValueError("a model needs at least one Linear piece")
    size = linear[0].in_features
    for piece in pieces:
        size = piece.output_size(size)
    return list(pieces)


def check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def check_sizes(sizes: Sequence[int]) -> list[int]:
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence) or len(sizes) < 2:
        raise ValueError(f"sizes must list at least an input and an output size, got {sizes!r}")
    for size in sizes:
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"every layer size must be a positive integer, got {sizes!r}")
    return [int(s) for s in sizes]


def positive(name: str, value: Any, *, integer: bool = False, allow_none: bool = False) -> Any:
    """``value`` if it is a positive (integer) number; a clear ValueError otherwise."""
    if value is None and allow_none:
        return None
    kinds = (numbers.Integral,) if integer else (numbers.Real,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        kind = "an integer" if integer else "a number"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    return int(value) if integer else float(value)  # type: ignore[call-overload]


def non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be >= 0 and finite, got {value!r}")
    return float(value)


def check_params(model: Sequential, params: Sequence[Any]) -> list[Array]:
    expected = [tuple(p.shape) for p in model.params]
    if len(params) != len(expected):
        raise ValueError(f"expected {len(expected)} parameter arrays, got {len(params)}")
    placed = []
    for i, (p, shape) in enumerate(zip(params, expected)):
        arr = as_array(model, p, f"params[{i}]", ndim=len(shape), check_values=True)
        if tuple(arr.shape) != shape:
            raise ValueError(f"params[{i}] has shape {tuple(arr.shape)}, expected {shape}")
        placed.append(model.xp.asarray(arr, copy=True))  # updated in place later: own it
    return placed


def features(model: Sequential, X: Any, name: str = "X", check_values: bool = False) -> Array:
    """``X`` as a (n, n_features) array of the model's backend, device and dtype."""
    return rows(model, X, name, model.n_features, check_values)


def batch(model: Sequential, X: Any, Y: Any) -> tuple[Array, Array]:
    """``features`` and ``targets`` of one training batch (metadata checks only).

    Arrays already placed on the model with the right dtype and shapes pass through
    after ``owns`` and ``fits`` (metadata only): ``Trainer.step`` does no more per call.
    """
    placement = model.placement
    if placement.owns(X) and placement.owns(Y) and fits(model, X, Y):
        return X, Y
    Xp = features(model, X)
    return Xp, targets(model, Y, Xp.shape[0])


def fits(model: Sequential, X: Array, Y: Array) -> bool:
    """Whether ``X`` and ``Y`` have the model's dtype and the shapes of one batch.

    Metadata only, so it holds for arrays that ``jax.jit`` is tracing as well.
    """
    dtype, x_shape, y_shape = model.placement.dtype_obj, X.shape, Y.shape
    return (X.dtype == dtype and Y.dtype == dtype and len(x_shape) == 2 and len(y_shape) == 2
            and x_shape[0] == y_shape[0] > 0 and x_shape[1] == model.n_features
            and y_shape[1] == model.n_outputs)


def targets(model: Sequential, Y: Any, n: int, name: str = "Y",
            check_values: bool = False) -> Array:
    """``Y`` as a (n, n_outputs) array matching ``n`` rows of X.

    1-D integer class labels are accepted too, as Keras's sparse losses take them: they
    are one-hot encoded on the model's backend (a model with one output takes 0/1 labels
    as its one column).
    """
    Y = _encoded_labels(model, Y, name)
    out = rows(model, Y, name, model.n_outputs, check_values)
    if out.shape[0] != n:
        raise ValueError(f"X and {name} have different lengths: {n} rows in X, "
                         f"{out.shape[0]} in {name}")
    return out


def _encoded_labels(model: Sequential, Y: Any, name: str) -> Any:
    """1-D integer labels (host or the model's own) one-hot encoded on the model's device;
    anything else as it is, for ``rows`` to check."""
    placement = model.placement
    if isinstance(Y, (list, tuple)):
        Y = np.asarray(Y)
    host = isinstance(Y, np.ndarray)
    if not (host or placement.owns(Y)) or Y.ndim != 1:
        return Y
    k = model.n_outputs
    if not (Y.dtype.kind in "iu" if host else model.xp.isdtype(Y.dtype, "integral")):
        raise ValueError(f"{name} must be 2-D, (n, {k}) targets, or 1-D integer class "
                         f"labels; got a 1-D array of dtype {Y.dtype} (labels held as floats: "
                         f"convert them to integers first)")
    labels = placement.indices(Y) if host else Y
    try:
        return one_hot(labels, max(k, 2), dtype=model.dtype)[:, -k:]  # one output: column 1
    except ValueError as exc:
        raise ValueError(f"{name} holds class labels, but the model has "
                         f"{k} output{'s' if k > 1 else ''} ({exc})") from None


def sample_weights(model: Sequential, weights: Any, n: int,
                   name: str = "sample_weight") -> Array | None:
    """``weights`` as an ``(n,)`` array on the model: finite, non-negative, not all zero."""
    if weights is None:
        return None
    arr = as_array(model, weights, name, ndim=1, check_values=True)
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries, but X has {n} rows")
    xp = model.xp
    if not bool(xp.all(arr >= 0.0)):
        raise ValueError(f"{name} must be non-negative")
    if not bool(xp.any(arr > 0.0)):
        raise ValueError(f"{name} must not be all zero")
    return arr


def rows(model: Sequential, data: Any, name: str, n_cols: int, check_values: bool) -> Array:
    arr = as_array(model, data, name, ndim=2, check_values=check_values)
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows); expected at least one sample")
    if arr.shape[1] != n_cols:
        raise ValueError(f"{name} has {arr.shape[1]} columns, but the model expects {n_cols}")
    return arr


def as_array(model: Sequential, data: Any, name: str, ndim: int, check_values: bool) -> Array:
    """Place ``data`` on the model: host data is moved (once), foreign arrays refused."""
    placement = model.placement
    if placement.backend == "dask":
        data = _dask_rows(data, name)
    if placement.owns(data):
        arr = _check_kind(model.xp, data, name, data.dtype)
        if arr.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D, got an array of shape {tuple(arr.shape)}")
        if arr.dtype != model.dtype:
            arr = model.xp.astype(arr, model.dtype)
        if check_values:  # training data: computed into memory once, then scanned
            arr = placement.persist_rows(arr)[0]
        if check_values and not bool(model.xp.all(model.xp.isfinite(arr))):
            raise ValueError(f"{name} contains NaN or inf; expected finite values")
        return arr
    foreign = _backend.array_backend(data)
    if foreign == placement.backend:
        raise TypeError(
            f"{name} is on device {_backend.device_spec(_device(data))!r}, but the model is on "
            f"device {placement.device!r}; move {name} to the model's device first, or the "
            f"model to the data's with model.to(device=...)")
    if foreign not in (None, "numpy"):
        raise TypeError(
            f"{name} is a {foreign} array on device "
            f"{_backend.device_spec(_device(data))!r}, but the model lives on backend "
            f"{placement.backend!r}, device {placement.device!r}; convert it first, e.g. "
            f"model.xp.asarray(...) after moving it to the host (numpy.asarray), "
            f"or move the model with model.to({foreign!r})")
    host = np.asarray(data) if foreign is None else data
    _check_kind(npx, host, name, host.dtype)
    if host.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got an array of shape {host.shape}")
    if check_values and not np.isfinite(host).all():
        raise ValueError(f"{name} contains NaN or inf; expected finite values")
    return placement.from_host(host)


def _dask_rows(data: Any, name: str) -> Any:
    """A dask DataFrame or Series as a dask array with known row blocks (one per
    partition; counting the rows is one pass over the partitions); other data as it is.
    A dask array of unknown block lengths is refused: rows cannot be sliced from it."""
    if type(data).__module__.startswith("dask.dataframe"):
        data = data.to_dask_array(lengths=True)
    chunks = getattr(data, "chunks", None)
    if _backend.array_backend(data) == "dask" and chunks and any(math.isnan(c) for c in chunks[0]):
        raise ValueError(f"{name} is a dask array whose row blocks have unknown lengths; "
                         f"call {name}.compute_chunk_sizes(), or pass the dask DataFrame itself")
    return data


def _device(x: Any) -> Any:
    import array_api_compat

    return array_api_compat.device(x)


def _check_kind(xp: Any, arr: Any, name: str, dtype: Any) -> Any:
    if isinstance(arr, np.ndarray) and arr.dtype.kind in "OUSV":
        raise TypeError(f"{name} has dtype {arr.dtype} ({_KINDS[arr.dtype.kind]}); "
                        "expected real numbers (float, int or bool)")
    if not xp.isdtype(dtype, ("real floating", "integral", "bool")):
        raise TypeError(f"{name} has dtype {dtype}; expected real numbers (float, int or bool)")
    return arr


_KINDS = {"O": "Python objects", "U": "strings", "S": "bytes", "V": "raw records"}
