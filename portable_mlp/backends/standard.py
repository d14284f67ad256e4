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
    # the optimizers' rules (``portable_mlp.rules``): new arrays, the gradient consumed
    sgd: Callable[..., Any]                       # (p, g, lr) -> p
    sgd_momentum: Callable[..., tuple[Any, Any]]  # (p, g, v, lr, momentum, nesterov) -> p, v
    adam: Callable[..., tuple[Any, Any, Any]]     # (p, g, m, v, b1, b2, eps, step) -> p, m, v


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
                 sigmoid: Callable[[Any], Any] | None = None) -> Ops:
    """The standard's ``Ops`` on ``xp``; ``flat`` (``reshape(-1)``) and ``sigmoid`` where
    the library spells them faster."""
    flat = flat or functools.partial(xp.reshape, shape=(-1,))
    return Ops(xp, operator.matmul, sigmoid or functools.partial(standard_sigmoid, xp),
               functools.partial(flat_dot, flat), standard_sigmoid_backward, rules.sgd,
               rules.sgd_momentum, functools.partial(rules.adam, xp))


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
