"""The optimizers' elementwise update rules, written once in the standard's operations.

Each returns new parameter and slot arrays and leaves the ones passed in intact (a step
whose update is not finite is dropped whole); the gradient ``g`` is the rule's own and
may be overwritten. The first operation on a parameter or a slot makes the new array
(``p - g``, ``beta * m``); later ones use augmented assignment on that new array: in
place where the backend allows, rebinding where arrays are immutable (JAX), so that no
copy and no pass over the data is made that an in-place update written by hand does
not make. A backend's ``Ops`` holds them (``Ops.sgd``, ``Ops.sgd_momentum``, and
``Ops.adam`` and ``Ops.adamw`` bound to the namespace); on CuPy each is one fused kernel
of the same math instead.
"""

from __future__ import annotations

from typing import Any

Array = Any


def sgd(p: Array, g: Array, lr: Any) -> Array:
    """``p - lr * g``."""
    g *= lr
    return p - g


def sgd_momentum(p: Array, g: Array, v: Array, lr: Any, momentum: float,
                 nesterov: bool) -> tuple[Array, Array]:
    """``v = momentum * v - lr * g``, then ``p + v`` or (Nesterov) ``p + momentum * v
    - lr * g``; returns the new ``p`` and ``v``."""
    g *= lr
    v = momentum * v
    v -= g
    if nesterov:
        g -= momentum * v
        return p - g, v
    return p + v, v


def adam(xp: Any, p: Array, g: Array, m: Array, v: Array, beta1: float, beta2: float,
         eps: float, step: Any) -> tuple[Array, Array, Array]:
    """``m = beta1 * m + (1 - beta1) * g``, ``v = beta2 * v + (1 - beta2) * g**2``, then
    ``p - step * m / (sqrt(v) + eps)`` (``step``: the bias-corrected rate); returns the
    new ``p``, ``m`` and ``v``."""
    m = beta1 * m
    m += (1.0 - beta1) * g
    v = beta2 * v
    g *= g
    g *= 1.0 - beta2
    v += g
    denom = xp.sqrt(v)
    denom += eps
    change = step * m
    change /= denom
    return p - change, m, v


def decayed(p: Array, decay: Any) -> Array:
    """``p * decay``: decoupled weight decay (Loshchilov & Hutter), ``decay`` being
    ``1 - lr * weight_decay``, applied before the rule's own update, as
    ``torch.optim.AdamW`` applies it."""
    return p * decay


def adamw(xp: Any, p: Array, g: Array, m: Array, v: Array, beta1: float, beta2: float,
          eps: float, step: Any, decay: Any) -> tuple[Array, Array, Array]:
    """AdamW: ``p * decay`` (``decayed``), then ``adam``'s update of it; returns the new
    ``p``, ``m`` and ``v``."""
    return adam(xp, decayed(p, decay), g, m, v, beta1, beta2, eps, step)
