"""The activations users reach for next: GELU, SiLU, LeakyReLU, ELU, Softplus.

Each is a piece (``portable_mlp.layers``) with its derivative written by hand beside its
forward, from what the forward computed, in the standard's operations only. They are
registered by name for ``MLP(activation=...)``, the CLI and the estimators.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from portable_mlp import layers
from portable_mlp._backend import Ops
from portable_mlp.layers import Array, Backprop, Piece

_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_TANH_CUBIC = 0.044715


def _finite(name: str, value: Any, positive: bool = False) -> float:
    """A piece's float setting, checked: a finite real (positive where asked)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(
            value) or (positive and value <= 0):
        kind = "a positive" if positive else "a finite"
        raise ValueError(f"{name} must be {kind} number, got {value!r}")
    return float(value)


class GELU(Piece):
    """The Gaussian error linear unit, ``x * Phi(x)`` (Hendrycks & Gimpel).

    Parameters
    ----------
    approximate : {'tanh', 'none'}, default 'tanh'
        'tanh': ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3)))``, written in the
        standard's operations, the same on every backend (Flax's default). 'none': the
        exact ``0.5 x (1 + erf(x / sqrt(2)))``; the standard has no ``erf``, so this
        needs a namespace that has one (PyTorch's) and is refused elsewhere, never
        replaced by the approximation behind the user's back.
    """

    def __init__(self, approximate: str = "tanh") -> None:
        if approximate not in ("tanh", "none"):
            raise ValueError(f"GELU approximate must be 'tanh' or 'none', got {approximate!r}")
        self.approximate = approximate

    def forward(self, ops: Ops, params: list[Array], x: Array) -> tuple[Array, Backprop]:
        return (self._tanh if self.approximate == "tanh" else self._exact)(ops.xp, x)

    @staticmethod
    def _tanh(xp: Any, x: Array) -> tuple[Array, Backprop]:
        x2 = x * x
        t = xp.tanh(_SQRT_2_OVER_PI * (x + _TANH_CUBIC * x2 * x))
        y = 0.5 * x * (1.0 + t)

        def backprop(dy: Array, need_dx: bool = True) -> tuple[Array, list[Array]]:
            du = _SQRT_2_OVER_PI * (1.0 + 3.0 * _TANH_CUBIC * x2)
            dy *= 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du
            return dy, []

        return y, backprop

    @staticmethod
    def _exact(xp: Any, x: Array) -> tuple[Array, Backprop]:
        erf = getattr(xp, "erf", None)
        if erf is None:
            raise ValueError(f"GELU(approximate='none') needs erf, which the namespace "
                             f"{xp.__name__} does not have (the Array API standard has none); "
                             "use GELU(approximate='tanh'), or a backend with erf (torch)")
        cdf = 0.5 * (1.0 + erf(x * _INV_SQRT_2))
        y = x * cdf

        def backprop(dy: Array, need_dx: bool = True) -> tuple[Array, list[Array]]:
            dy *= cdf + x * (_INV_SQRT_2PI * xp.exp(-0.5 * x * x))
            return dy, []

        return y, backprop

    def to_config(self) -> dict[str, Any]:
        return {"type": "GELU", "approximate": self.approximate}


class SiLU(Piece):
    """``x * sigmoid(x)`` (swish); derivative ``s (1 + x (1 - s))`` with ``s = sigmoid(x)``."""

    def forward(self, ops: Ops, params: list[Array], x: Array) -> tuple[Array, Backprop]:
        s = ops.sigmoid(x)
        y = x * s

        def backprop(dy: Array, need_dx: bool = True) -> tuple[Array, list[Array]]:
            dy *= s * (1.0 + x * (1.0 - s))
            return dy, []

        return y, backprop


class LeakyReLU(Piece):
    """``x`` where positive, ``slope * x`` elsewhere.

    Parameters
    ----------
    slope : float, default 0.01
        The slope for negative inputs (PyTorch's default ``negative_slope``).
    """

    def __init__(self, slope: float = 0.01) -> None:
        self.slope = _finite("LeakyReLU slope", slope)

    def forward(self, ops: Ops, params: list[Array], x: Array) -> tuple[Array, Backprop]:
        xp = ops.xp
        positive = x > 0.0
        y = xp.where(positive, x, self.slope * x)

        def backprop(dy: Array, need_dx: bool = True) -> tuple[Array, list[Array]]:
            return xp.where(positive, dy, self.slope * dy), []

        return y, backprop

    def to_config(self) -> dict[str, Any]:
        return {"type": "LeakyReLU", "slope": self.slope}


class ELU(Piece):
    """``x`` where positive, ``alpha * (exp(x) - 1)`` elsewhere; derivative 1 or
    ``alpha * exp(x)`` (not ``y + alpha``: that cancels to 0 far into the tail).

    Parameters
    ----------
    alpha : float, default 1.0
        The value the output tends to for very negative inputs is ``-alpha``.
    """

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = _finite("ELU alpha", alpha, positive=True)

    def forward(self, ops: Ops, params: list[Array], x: Array) -> tuple[Array, Backprop]:
        xp = ops.xp
        positive = x > 0.0
        negative = xp.minimum(x, 0.0)  # exp of the negative part only: no overflow
        y = xp.where(positive, x, self.alpha * xp.expm1(negative))

        def backprop(dy: Array, need_dx: bool = True) -> tuple[Array, list[Array]]:
            return xp.where(positive, dy, dy * (self.alpha * xp.exp(negative))), []

        return y, backprop

    def to_config(self) -> dict[str, Any]:
        return {"type": "ELU", "alpha": self.alpha}


class Softplus(Piece):
    """``log(1 + exp(x))``, computed stably as ``max(x, 0) + log1p(exp(-|x|))``;
    derivative ``sigmoid(x)``."""

    def forward(self, ops: Ops, params: list[Array], x: Array) -> tuple[Array, Backprop]:
        xp = ops.xp
        y = xp.maximum(x, 0.0) + xp.log1p(xp.exp(-xp.abs(x)))

        def backprop(dy: Array, need_dx: bool = True) -> tuple[Array, list[Array]]:
            dy *= ops.sigmoid(x)
            return dy, []

        return y, backprop


for _piece, _name in ((GELU, "gelu"), (SiLU, "silu"), (LeakyReLU, "leaky_relu"), (ELU, "elu"),
                      (Softplus, "softplus")):
    layers.register(_piece, _name)
