"""What every backend shares: the ``Ops`` a training step calls, their spelling in the
standard alone, the dtype names and the error for a backend that cannot run."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from portable_mlp import rules
from portable_mlp.backends.list_ops import StandardListOps

Array = Any

FLOAT_DTYPES = ("float32", "float64")


class BackendUnavailable(ImportError):  # noqa: N818 - reads as a state, like ImportError
    """A known backend whose library is not installed, or that has no usable device."""


@dataclass(frozen=True)
class Ops:
    """The namespace and the few operations a training step calls most, resolved once.

    Each computes the standard's math; where the library has a faster spelling of it,
    that one is used, as array-api-extra delegates to a library's own function where one
    exists (each backend's file says which and why).
    """

    xp: Any
    matmul: Callable[[Any, Any], Any]      # 2-D @ 2-D (what the pieces need; no batching)
    sigmoid: Callable[[Any], Any]          # 1 / (1 + exp(-x))
    sum_of_squares: Callable[[Any], Any]   # sum(a**2) over all of ``a``: 0-d (NumPy: a scalar)
    # dy * y * (1 - y), the sigmoid's backward from its output y (may reuse dy's buffer)
    sigmoid_backward: Callable[[Any, Any], Any]
    affine: Callable[[Any, Any, Any], Any]  # x @ w + b (torch: one addmm)
    relu: Callable[[Any], Any]              # maximum(x, 0)
    relu_backward: Callable[[Any, Any], Any]  # dy * (y > 0) from the output y (in dy's buffer)
    count_true: Callable[[Any, Any], Any]   # (mask, dtype) -> how many True, 0-d of dtype
    # the optimizers' rules over lists (``portable_mlp.rules``): the gradients consumed,
    # the new values written into ``out`` (a tuple of lists of spares; None: new arrays)
    sgd: Callable[..., Any]                       # (ps, gs, lr, out) -> ps
    sgd_momentum: Callable[..., tuple[Any, Any]]  # (ps, gs, vs, lr, mu, nesterov, out) -> ps, vs
    adam: Callable[..., tuple[Any, Any, Any]]     # (ps, gs, ms, vs, b1, b2, eps, step, out)
    adamw: Callable[..., tuple[Any, Any, Any]]    # adam's arguments, the decay's rate before out
    decay: Callable[..., Any]                     # (new_ps, ps, rate, scratch) -> new_ps
    writes_in_place: bool = False  # the rules fill ``out`` (else they return new arrays)


def rules_over(lists: Any) -> dict[str, Any]:
    """The optimizers' rules bound to a backend's list operations (``list_ops``)."""
    return {"sgd": functools.partial(rules.sgd, lists),
            "sgd_momentum": functools.partial(rules.sgd_momentum, lists),
            "adam": functools.partial(rules.adam, lists),
            "adamw": functools.partial(rules.adamw, lists),
            "decay": functools.partial(rules.decay, lists)}


def standard_affine(matmul: Callable[[Any, Any], Any], x: Array, w: Array, b: Array) -> Array:
    z = matmul(x, w)
    z += b  # in place where arrays are writable
    return z


def standard_relu(xp: Any, x: Array) -> Array:
    return xp.maximum(x, 0.0)


def standard_relu_backward(xp: Any, y: Array, dy: Array) -> Array:
    dy *= xp.astype(y > 0.0, dy.dtype)
    return dy


def standard_count_true(xp: Any, mask: Array, dtype: Any) -> Array:
    return xp.astype(xp.count_nonzero(mask), dtype)


def standard_sigmoid(xp: Any, x: Array) -> Array:
    return 1.0 / (xp.exp(-x) + 1.0)


def standard_sigmoid_backward(y: Array, dy: Array) -> Array:
    """In place where arrays are writable (augmented assignment rebinds elsewhere)."""
    dy *= y
    dy -= dy * y
    return dy


def flat_dot(flat: Callable[[Any], Any], a: Array) -> Array:
    f = flat(a)
    return f @ f


def standard_ops(xp: Any, flat: Callable[[Any], Any] | None = None,
                 sigmoid: Callable[[Any], Any] | None = None, **faster: Any) -> Ops:
    """The standard's ``Ops`` on ``xp``; ``flat`` (``reshape(-1)``), ``sigmoid`` and any
    other field (``faster``: ``affine=``, ``relu=``, the rules bound to a library's list
    operations, ``writes_in_place=``) where the library spells them faster."""
    flat = flat or functools.partial(xp.reshape, shape=(-1,))
    fields: dict[str, Any] = {
        "matmul": operator.matmul,
        "sigmoid": sigmoid or functools.partial(standard_sigmoid, xp),
        "sum_of_squares": functools.partial(flat_dot, flat),
        "sigmoid_backward": standard_sigmoid_backward,
        "affine": functools.partial(standard_affine, operator.matmul),
        "relu": functools.partial(standard_relu, xp),
        "relu_backward": functools.partial(standard_relu_backward, xp),
        "count_true": functools.partial(standard_count_true, xp),
        **rules_over(StandardListOps(xp)),
    }
    return Ops(xp, **{**fields, **faster})


def dtype_name(dtype: Any) -> str:
    """'float32' for any library's float32 dtype object or string."""
    if isinstance(dtype, str):
        return dtype
    try:  # NumPy dtypes and scalar types (np.float32), JAX's (NumPy's own)
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype).rsplit(".", 1)[-1]  # torch.float32, array_api_strict.float32


def same(x: Any) -> Any:
    return x


def pick_device(name: str, wanted: str, offered: list[Any],
                spec: Callable[[Any], str]) -> Any:
    """The device of ``offered`` that ``wanted`` names (``spec`` names each); "cpu" and
    "cpu:0" (likewise "cuda", "cuda:0") name one device."""
    kind, _, index = wanted.partition(":")
    spellings = [wanted]
    if index in ("", "0"):
        spellings.append(kind if index else f"{kind}:0")
    for spelling in spellings:
        for dev in offered:
            if spec(dev) == spelling:
                return dev
    names = ", ".join(spec(d) for d in offered)
    raise ValueError(f"device {wanted!r} is not available on backend {name!r}; "
                     f"available: {names}")


def pick_dtype(wanted: str, available: dict[str, Any], where: str, hint: str) -> Any:
    """The dtype object named ``wanted`` among ``available``, or a ValueError that says
    ``where`` it is missing."""
    if wanted not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(FLOAT_DTYPES)}, got {wanted!r}")
    if wanted not in available:
        raise ValueError(f"dtype {wanted} is not available on {where} (it offers "
                         f"{', '.join(available)}).{hint}")
    return available[wanted]
