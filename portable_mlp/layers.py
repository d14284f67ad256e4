"""The pieces a network is composed of.

Each piece is a small object holding only hyper-parameters (it pickles). Its
``init(rng)`` draws host NumPy parameters; its ``forward(ops, params, x)`` returns
``(y, backprop)`` where ``backprop(dy)`` returns ``(dx, grads)``. ``ops`` is the
model's ``_backend.Ops``: the array namespace ``ops.xp`` and the step's most-called
operations (``matmul``, ``sigmoid``), resolved once per backend. The closure keeps
what the forward computed, so the backward pass reuses it (the sigmoid's
derivative comes from its output, Linear's weight gradient from its input).

Arrays a backprop receives (``dy``) are owned by the chain: pieces may update
them with augmented assignment, which writes in place where the backend allows
and rebinds where arrays are immutable (JAX, dask). Inputs ``x`` are never
modified.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from portable_mlp import initializers
from portable_mlp._backend import Ops

Array = Any
Backprop = Callable[..., tuple[Array | None, list[Array]]]


class Piece:
    """A differentiable piece without parameters (the base of every piece).

    A piece whose ``random`` is True (``Dropout``) draws in training: the model calls
    its ``forward_train(ops, params, x, key, layer, device)`` with the step's
    ``counter_rng.Key`` and the piece's index, and ``forward`` (no draws) elsewhere.
    """

    random = False

    def init(self, rng: np.random.Generator) -> list[np.ndarray]:
        """This piece's first parameters, as host NumPy arrays (none for an activation).

        Parameters
        ----------
        rng : numpy.random.Generator
            The model's seeded generator.
        """
        return []

    def param_shapes(self) -> list[tuple[int, ...]]:
        """The shapes of ``init``'s parameters, known without drawing them."""
        return []

    def decayed(self) -> list[bool]:
        """Which of ``init``'s parameters the l2 penalty applies to."""
        return []

    def output_size(self, in_features: int) -> int:
        """The number of features this piece outputs for ``in_features`` inputs.

        Parameters
        ----------
        in_features : int
            The features coming in.
        """
        return in_features

    def forward(self, ops: Ops, params: list[Array], x: Array) -> tuple[Array, Backprop]:
        """The output for ``x``, and the backprop closure that maps the output's gradient
        to ``(dx, grads)`` (``grads`` aligned with ``params``).

        Parameters
        ----------
        ops : Ops
            The backend's operations (``model.placement.ops``).
        params : list of arrays
            This piece's parameters (empty for an activation).
        x : array of shape (n, in_features)
            The input.
        """
        raise NotImplementedError

    def forward_train(self, ops: Ops, params: list[Array], x: Array, key: Any, layer: int,
                      device: Any) -> tuple[Array, Backprop]:
        """The forward pass of a training step: ``forward``, except for a random piece.

        Parameters
        ----------
        ops : Ops
            The model's backend operations (``ops.xp``: its namespace).
        params : list of arrays
            This piece's parameters.
        x : array
            The input ``(n, features)``, never modified.
        key : counter_rng.Key
            The step's draws: its step counter and the batch's first row.
        layer : int
            This piece's index in its model (two random pieces draw apart).
        device : optional
            The model's device, where the draws are made.
        """
        return self.forward(ops, params, x)

    def to_config(self) -> dict[str, Any]:
        """The piece as JSON-ready settings: checkpoints rebuild it from them."""
        return {"type": type(self).__name__}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_config().items() if k != "type")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.to_config() == self.to_config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.to_config().items())))


class Linear(Piece):
    """``y = x @ W (+ b)`` with ``W`` of shape (in_features, out_features).

    Parameters
    ----------
    in_features : int
        The inputs: ``W``'s rows.
    out_features : int
        The outputs: ``W``'s columns.
    bias : bool, default True
        Add a bias vector ``b``.
    init : {"uniform", "glorot", "he"}, default "uniform"
        How ``W`` is drawn: the article's uniform scaled by ``1/sqrt(in_features)``, Glorot
        uniform, or He normal (for ReLU). ``b`` starts at zero.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init: str = "uniform") -> None:
        for arg, value in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Linear {arg} must be a positive integer, got {value!r}")
        if not isinstance(bias, bool):
            raise TypeError(f"Linear bias must be True or False, got {bias!r}")
        initializers.get(init)  # validate the name now
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.bias, self.init_name = bias, init

    def init(self, rng: np.random.Generator) -> list[np.ndarray]:
        draw = initializers.get(self.init_name)
        params = [draw(rng, self.in_features, self.out_features)]
        if self.bias:
            params.append(np.zeros(self.out_features))
        return params

    def decayed(self) -> list[bool]:
        return [True, False] if self.bias else [True]

    def param_shapes(self) -> list[tuple[int, ...]]:
        shapes: list[tuple[int, ...]] = [(self.in_features, self.out_features)]
        return [*shapes, (self.out_features,)] if self.bias else shapes

    def output_size(self, in_features: int) -> int:
        if in_features != self.in_features:
            raise ValueError(f"Linear expects {self.in_features} input features, "
                             f"but the previous piece gives {in_features}")
        return self.out_features

    def forward(self, ops: Ops, params: list[Array], x: Array) -> tuple[Array, Backprop]:
        w, matmul = params[0], ops.matmul
        z = ops.affine(x, w, params[1]) if self.bias else matmul(x, w)

        def backprop(dz: Array, need_dx: bool = True) -> tuple[Array | None, list[Array]]:
            grads = [matmul(x.T, dz)]
            if self.bias:
                grads.append(ops.xp.sum(dz, axis=0))
            return (matmul(dz, w.T) if need_dx else None), grads

        return z, backprop

    def to_config(self) -> dict[str, Any]:
        return {"type": "Linear", "in_features": self.in_features,
                "out_features": self.out_features, "bias": self.bias, "init": self.init_name}


class Sigmoid(Piece):
    """``1 / (1 + exp(-x))``; its derivative ``y (1 - y)`` is taken from the output."""

    def forward(self, ops: Ops, params: list[Array], x: Array) -> tuple[Array, Backprop]:
        y = ops.sigmoid(x)

        def backprop(dy: Array, need_dx: bool = True) -> tuple[Array, list[Array]]:
            return ops.sigmoid_backward(y, dy), []

        return y, backprop


class Tanh(Piece):
    """``tanh(x)``; derivative ``1 - y**2`` from the output."""

    def forward(self, ops: Ops, params: list[Array], x: Array) -> tuple[Array, Backprop]:
        y = ops.xp.tanh(x)

        def backprop(dy: Array, need_dx: bool = True) -> tuple[Array, list[Array]]:
            dy -= dy * y * y
            return dy, []

        return y, backprop


class ReLU(Piece):
    """``max(x, 0)``; derivative 1 where the output is positive."""

    def forward(self, ops: Ops, params: list[Array], x: Array) -> tuple[Array, Backprop]:
        y = ops.relu(x)

        def backprop(dy: Array, need_dx: bool = True) -> tuple[Array, list[Array]]:
            return ops.relu_backward(y, dy), []

        return y, backprop


class Identity(Piece):
    """Passes its input through: the output layer for logits (cross-entropy losses)."""

    def forward(self, ops: Ops, params: list[Array], x: Array) -> tuple[Array, Backprop]:
        def backprop(dy: Array, need_dx: bool = True) -> tuple[Array, list[Array]]:
            return dy, []

        return x, backprop


class Softmax(Piece):
    """Row-wise softmax, computed stably; Jacobian-vector product from the output."""

    def forward(self, ops: Ops, params: list[Array], x: Array) -> tuple[Array, Backprop]:
        xp = ops.xp
        y = xp.exp(x - xp.max(x, axis=1, keepdims=True))
        y /= xp.sum(y, axis=1, keepdims=True)

        def backprop(dy: Array, need_dx: bool = True) -> tuple[Array, list[Array]]:
            dy -= xp.sum(dy * y, axis=1, keepdims=True)
            dy *= y
            return dy, []

        return y, backprop


PIECES: dict[str, type[Piece]] = {
    cls.__name__: cls for cls in (Linear, Sigmoid, Tanh, ReLU, Identity, Softmax)
}
ACTIVATIONS: dict[str, type[Piece]] = {
    "sigmoid": Sigmoid, "tanh": Tanh, "relu": ReLU, "identity": Identity, "softmax": Softmax,
}

def register(cls: type[Piece], activation_name: str | None = None) -> None:
    """Register a piece class for checkpoints (``from_config``) and, given
    ``activation_name``, as an activation by that name (``MLP(activation=...)``).

    Parameters
    ----------
    cls : type
        The piece class (a subclass of ``Piece``), known by its class name.
    activation_name : str or None, default None
        The name ``activation()`` knows the piece by (its default settings); None: not
        an activation.
    """
    PIECES[cls.__name__] = cls
    if activation_name is not None:
        ACTIVATIONS[activation_name] = cls


def activation(name: str) -> Piece:
    """An activation piece by its name ('sigmoid', 'tanh', 'relu', 'identity', 'softmax',
    'gelu', 'silu', 'leaky_relu', 'elu', 'softplus'), with its default settings."""
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def from_config(config: dict[str, Any]) -> Piece:
    """Rebuild a piece from ``Piece.to_config()`` (used by checkpoints)."""
    if not isinstance(config, dict) or config.get("type") not in PIECES:
        raise ValueError(f"not a piece description: {config!r}; expected a dict whose 'type' "
                         f"is one of {', '.join(PIECES)}")
    kwargs = {k: v for k, v in config.items() if k != "type"}
    cls = PIECES[config["type"]]
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for {cls.__name__}: {kwargs!r} ({exc})") from None
