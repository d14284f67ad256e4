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

from portable_mlp import _backend, backends
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
        placed.append(model.xp.asarray(arr, copy=True))  # the model's own, not the caller's
    return placed


def slot_counts(optimizer: Any, n_params: int) -> list[int]:
    """How many state arrays ``optimizer`` keeps per parameter, asked of the optimizer
    itself on empty arrays (Adam 2, SGD with momentum 1, plain SGD 0)."""
    state = optimizer.init_state(npx, [np.empty(0)] * n_params)
    return [len(slots) for slots in state["slots"]]


def step_arguments(model: Sequential, params: Any, state: Any, X: Any, Y: Any,
                   optimizer: Any, l2: Any, clip_norm: Any, lr: Any = None
                   ) -> tuple[list[Array], dict[str, Any], Array, Array, float, float | None]:
    """``train_step``'s arguments, checked as ``Trainer`` checks its own: metadata only
    (types, lengths, shapes, dtypes), so that the checks hold for arrays that
    ``jax.jit`` is tracing and run once per compilation there. ``l2`` and ``clip_norm``
    must be Python numbers (static under ``jax.jit``). ``lr`` is None, a number or a 0-d
    floating array (its value is not read: it may be traced). Returns the params, state,
    X and Y (torch tensors detached from any autograd graph), ``l2`` and ``clip_norm``.
    ``optimizer`` is an Optimizer already (the caller checks its type)."""
    l2 = non_negative("l2", l2)
    clip_norm = positive("clip_norm", clip_norm, allow_none=True)
    _step_rate(lr)
    detached = model.placement.detached
    params = [detached(p) for p in _step_params(model, params)]
    state = _step_state(model, optimizer, state, params)
    placement = model.placement
    for name, arr in (("X", X), ("Y", Y)):
        if not (hasattr(arr, "shape") and hasattr(arr, "dtype")):
            raise TypeError(f"train_step takes X and Y as arrays placed on the model; {name} "
                            f"is a {type(arr).__name__}: place host data with "
                            "model.placement.from_host")
    if not fits(model, X, Y):
        raise ValueError(f"train_step takes X and Y placed on the model: {placement.dtype} "
                         f"arrays of shapes (n, {model.n_features}) and (n, {model.n_outputs}); "
                         f"got X {X.dtype} {tuple(X.shape)} and Y {Y.dtype} {tuple(Y.shape)}. "
                         "Place host data with model.placement.from_host")
    return params, state, detached(X), detached(Y), l2, clip_norm


def _step_rate(lr: Any) -> None:
    """A rate passed in: a number > 0 (inf allowed: a schedule that overflowed, which
    the step reports as not finite), or a 0-d floating array."""
    if lr is None:
        return
    if isinstance(lr, numbers.Real) and not isinstance(lr, bool):
        if not float(lr) > 0:
            raise ValueError(f"lr must be positive, got {lr!r}")
        return
    if (_backend.array_backend(lr) is None or tuple(lr.shape) != ()
            or not np.issubdtype(np.dtype(_backend.dtype_name(lr.dtype)), np.floating)):
        raise TypeError(f"lr must be a number or a 0-d floating array, got "
                        f"{type(lr).__name__} {lr!r}"[:200])


def _step_params(model: Sequential, params: Any) -> list[Array]:
    if not isinstance(params, (list, tuple)):
        raise TypeError(f"params must be a list of arrays (model.params), got "
                        f"{type(params).__name__}")
    if len(params) != len(model.params):
        raise ValueError(f"params holds {len(params)} arrays, the model has "
                         f"{len(model.params)}")
    for i, (p, mine) in enumerate(zip(params, model.params)):
        if not (hasattr(p, "shape") and hasattr(p, "dtype")):
            raise TypeError(f"params[{i}] is a {type(p).__name__}, not an array")
        if tuple(p.shape) != tuple(mine.shape) or p.dtype != mine.dtype:
            raise ValueError(f"params[{i}] is {p.dtype} {tuple(p.shape)}, the model's is "
                             f"{mine.dtype} {tuple(mine.shape)}")
    return list(params)


def _step_state(model: Sequential, optimizer: Any, state: Any,
                params: list[Array]) -> dict[str, Any]:
    hint = "start from optimizer.init_state(model.xp, params)"
    if not isinstance(state, dict) or set(state) != {"step", "slots"}:
        got = list(state) if isinstance(state, dict) else type(state).__name__
        raise TypeError(f"state must be the optimizer's state, a dict of 'step' and 'slots' "
                        f"({hint}); got {got}"[:300])
    slots = state["slots"]
    wanted = slot_counts(optimizer, len(params))
    if (not isinstance(slots, (list, tuple)) or len(slots) != len(params)
            or [len(ss) if isinstance(ss, (list, tuple)) else -1 for ss in slots] != wanted):
        raise ValueError(f"state['slots'] must hold {wanted} arrays per parameter for "
                         f"{optimizer!r}; {hint}")
    for i, (ss, p) in enumerate(zip(slots, params)):
        for j, s in enumerate(ss):
            if getattr(s, "shape", None) is None or tuple(s.shape) != tuple(p.shape) \
                    or s.dtype != p.dtype:
                raise ValueError(f"state['slots'][{i}][{j}] does not match params[{i}] "
                                 f"({p.dtype} {tuple(p.shape)}); {hint}")
    step = state["step"]
    if isinstance(step, bool) or not (isinstance(step, numbers.Integral)
                                      or getattr(step, "shape", None) == ()):
        raise TypeError(f"state['step'] must be an int or a 0-d array, got "
                        f"{type(step).__name__}")
    return state


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
        return placement.detached(X), placement.detached(Y)
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
    Y = placement.impl.rows(sliceable(Y, name), name)
    host = isinstance(Y, np.ndarray)
    if not (host or placement.owns(Y)) or Y.ndim != 1:
        return Y
    k = model.n_outputs
    if not (Y.dtype.kind in "iu" if host else model.xp.isdtype(Y.dtype, "integral")):
        raise ValueError(f"{name} must be 2-D, (n, {k}) targets, or 1-D integer class "
                         f"labels; got a 1-D array of dtype {Y.dtype}. "
                         f"{_label_hint(Y.dtype)}")
    labels = placement.indices(Y) if host else Y
    try:
        return one_hot(labels, max(k, 2), dtype=model.dtype)[:, -k:]  # one output: column 1
    except ValueError as exc:
        raise ValueError(f"{name} holds class labels, but the model has "
                         f"{k} output{'s' if k > 1 else ''} ({exc})") from None


def _label_hint(dtype: Any) -> str:
    if getattr(dtype, "kind", "") == "f":
        return "Labels held as floats: convert them to integers 0..k-1 first (y.astype(int))"
    return ("For string, categorical or other labels: classes, y = np.unique(y, "
            "return_inverse=True) gives integer labels (classes[k] names class k), or use "
            "portable_mlp.sklearn.MLPClassifier, which takes any labels")


def sliceable(data: Any, name: str) -> Any:
    """Lists as NumPy arrays, pandas Series and DataFrames as their NumPy values (a
    categorical Series as its categories), dask DataFrames and Series as dask arrays with
    known row blocks; arrays as they are."""
    if isinstance(data, (list, tuple)):
        return np.asarray(data)
    module = type(data).__module__
    if module.startswith("pandas"):
        return data.to_numpy()
    if module.startswith("dask.dataframe"):  # its backend makes it a dask array
        return backends.get("dask").rows(data, name)
    return data


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
    """Place ``data`` on the model: host data is moved (once), foreign arrays refused.

    With ``check_values``, the values are checked as the model will use them: after the
    cast to its dtype, so that a float64 value beyond float32's range is refused, not
    turned into inf. Masked arrays are refused (a mask would be dropped silently), and a
    torch tensor that requires grad is detached (it would chain the parameters into the
    caller's autograd graph).
    """
    placement = model.placement
    _not_masked(data, name)
    data = placement.impl.rows(data, name)
    if placement.owns(data):
        arr = _check_kind(model.xp, placement.detached(data), name, data.dtype)
        if arr.ndim != ndim:
            raise ValueError(f"{name} must be {ndim}-D, got an array of shape {tuple(arr.shape)}")
        if arr.dtype != model.dtype:
            with placement.quiet():  # values beyond the dtype's range are reported below
                cast = model.xp.astype(arr, model.dtype)
        else:
            cast = arr
        if check_values:  # training data: computed into memory once (dask), then scanned
            cast = placement.persist_rows(cast)[0]
            _check_finite(model.xp, arr, cast, name, placement.dtype)
        return cast
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
    if check_values:
        host = cast_finite(host, placement.dtype, name)
    return placement.from_host(host)


def cast_finite(host: np.ndarray, dtype: str, name: str) -> np.ndarray:
    """``host`` cast to ``dtype`` (a float dtype's name), refused (ValueError naming
    ``name``) where a value is NaN or inf, or becomes inf in the cast."""
    with np.errstate(over="ignore"):  # values beyond the dtype's range: reported below
        cast = np.asarray(host, dtype=dtype)
    _check_finite(npx, host, cast, name, dtype)
    return cast


def _check_finite(xp: Any, original: Array, cast: Array, name: str, dtype: str) -> None:
    if bool(xp.all(xp.isfinite(cast))):
        return
    if cast is not original and bool(xp.all(xp.isfinite(original))):
        largest = float(np.finfo(dtype).max)
        raise ValueError(f"{name} holds values beyond {dtype}'s range (+-{largest:.4g}), "
                         f"which would become inf in {dtype}; scale them, or use float64")
    raise ValueError(f"{name} contains NaN or inf; expected finite values")


def _not_masked(data: Any, name: str) -> None:
    if isinstance(data, np.ma.MaskedArray) or _backend.masked(data):
        raise TypeError(f"{name} is a masked array, which portable_mlp does not honour (its "
                        f"mask would be ignored); pass {name}.filled(value) or drop the masked "
                        f"rows ({name}[~{name}.mask.any(axis=1)] for 2-D data)")


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
