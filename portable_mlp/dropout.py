"""Dropout whose masks are the same on every backend: drawn by ``portable_mlp.counter_rng``."""

from __future__ import annotations

import math
import numbers
from typing import Any

from portable_mlp import counter_rng, layers, validation
from portable_mlp._backend import Ops
from portable_mlp.layers import Array, Backprop, Piece


class Dropout(Piece):
    """Zero each input with probability ``rate`` in training, and scale the kept ones by
    ``1 / (1 - rate)`` (inverted dropout, as Keras and PyTorch do), so that inference,
    where it passes its input through, needs no rescaling.

    Active in ``Trainer.step``, ``fit`` and ``pm.train_step``; off in ``model(X)``,
    ``predict``, ``predict_proba`` and ``evaluate``. The mask of an element is a hash of
    ``(seed, step, layer, element index)`` (``portable_mlp.counter_rng``): bit-identical
    on every backend, drawn on the device, inside ``jax.jit`` and on dask blocks.

    Parameters
    ----------
    rate : float
        The probability of dropping each element, in ``[0, 1)``.
    seed : int, default 0
        The masks' seed (its low 32 bits count). Two Dropout pieces of one model draw
        independently whatever their seeds: the piece's index is part of the key.
    """

    random = True

    def __init__(self, rate: float, seed: int = 0) -> None:
        if (isinstance(rate, bool) or not isinstance(rate, numbers.Real)
                or not 0.0 <= rate < 1.0 or math.isnan(rate)):
            raise ValueError(f"Dropout rate must be a number in [0, 1), got {rate!r}")
        checked = validation.check_seed(seed)
        if checked is None:
            raise ValueError("Dropout seed must be a non-negative integer, got None")
        self.rate: float = float(rate)
        self.seed: int = checked
        self._threshold: int = counter_rng.threshold(self.rate)

    def forward(self, ops: Ops, params: list[Array], x: Array) -> tuple[Array, Backprop]:
        def backprop(dy: Array, need_dx: bool = True) -> tuple[Array, list[Array]]:
            return dy, []

        return x, backprop

    def forward_train(self, ops: Ops, params: list[Array], x: Array, key: counter_rng.Key,
                      layer: int, device: Any) -> tuple[Array, Backprop]:
        """The training forward: ``x`` with the step's mask applied (see the class)."""
        if not self.rate:
            return self.forward(ops, params, x)
        xp = ops.xp
        bits = counter_rng.uniform_bits(xp, tuple(x.shape), self.seed, layer, key, device)
        # the kept elements' scale, once: the forward and the backward multiply by it
        # (cheaper than a ``where`` each on NumPy; the backward's in place)
        scale = xp.astype(bits >= self._threshold, x.dtype)
        scale *= 1.0 / (1.0 - self.rate)

        def backprop(dy: Array, need_dx: bool = True) -> tuple[Array, list[Array]]:
            dy *= scale
            return dy, []

        return x * scale, backprop

    def to_config(self) -> dict[str, Any]:
        return {"type": "Dropout", "rate": self.rate, "seed": self.seed}


layers.register(Dropout)
