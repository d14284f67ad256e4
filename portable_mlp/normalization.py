"""Layer normalization: each row standardized over its features, then scaled and shifted."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from portable_mlp import layers
from portable_mlp._backend import Ops
from portable_mlp.layers import Array, Backprop, Piece


class LayerNorm(Piece):
    """``(x - mean) / sqrt(var + eps) * scale + shift`` over each row's features (Ba et
    al.), as ``torch.nn.LayerNorm(n, eps)`` computes it (the biased variance). Its
    parameters are the scale (``(n,)``, ones at first) and the shift (``(n,)``, zeros);
    the l2 penalty applies to neither.

    Parameters
    ----------
    n : int
        The number of features of each row (the previous piece's output size).
    eps : float, default 1e-5
        Added to the variance before the square root (PyTorch's and Keras's default).
    """

    def __init__(self, n: int, eps: float = 1e-5) -> None:
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"LayerNorm n must be a positive integer, got {n!r}")
        if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not 0 < eps < np.inf:
            raise ValueError(f"LayerNorm eps must be a positive finite number, got {eps!r}")
        self.n: int = int(n)
        self.eps: float = float(eps)

    def init(self, rng: np.random.Generator) -> list[np.ndarray]:
        return [np.ones(self.n), np.zeros(self.n)]

    def decayed(self) -> list[bool]:
        return [False, False]

    def param_shapes(self) -> list[tuple[int, ...]]:
        return [(self.n,), (self.n,)]

    def output_size(self, in_features: int) -> int:
        if in_features != self.n:
            raise ValueError(f"LayerNorm expects {self.n} features, but the previous piece "
                             f"gives {in_features}")
        return self.n

    def forward(self, ops: Ops, params: list[Array], x: Array) -> tuple[Array, Backprop]:
        xp = ops.xp
        scale, shift = params
        centred = x - xp.mean(x, axis=1, keepdims=True)
        rstd = 1.0 / xp.sqrt(xp.mean(centred * centred, axis=1, keepdims=True) + self.eps)
        xhat = centred * rstd
        y = xhat * scale + shift

        def backprop(dy: Array, need_dx: bool = True) -> tuple[Array | None, list[Array]]:
            grads = [xp.sum(dy * xhat, axis=0), xp.sum(dy, axis=0)]
            if not need_dx:
                return None, grads
            dxhat = dy * scale
            dxhat -= xp.mean(dxhat, axis=1, keepdims=True)
            dxhat -= xhat * xp.mean(dxhat * xhat, axis=1, keepdims=True)
            dxhat *= rstd
            return dxhat, grads

        return y, backprop

    def to_config(self) -> dict[str, Any]:
        return {"type": "LayerNorm", "n": self.n, "eps": self.eps}


layers.register(LayerNorm)
