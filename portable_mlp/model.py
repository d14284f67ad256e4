"""Sequential: pieces composed, with parameters placed on one backend/device/dtype."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np

from portable_mlp import _backend, counter_rng, layers, validation
from portable_mlp._backend import Placement
from portable_mlp.dropout import Dropout
from portable_mlp.layers import Backprop, Piece

Array = Any


class Sequential:
    """A chain of pieces. ``model(X)`` is the forward pass; ``model.params`` the weights.

    The model holds its backend's *name*, device and dtype (a ``Placement``) and
    resolves the namespace from them once, so it deep-copies and pickles.

    Parameters
    ----------
    pieces : list of Piece
        The pieces in order: ``Linear``, activations (``Sigmoid``, ``Tanh``, ``ReLU``,
        ``Identity``, ``Softmax``).
    seed : int or None, default 0
        The random seed of the first weights (drawn on the host, the same on every backend).
    backend : str or array namespace, default "numpy"
        Where the parameters live: ``"numpy"``, ``"torch"``, ``"jax"``, ``"dask"``,
        ``"cupy"``, ``"array_api_strict"``.
    device : str or None, default None
        The device on that backend; None: its default.
    dtype : str or None, default None
        The float dtype; None: the backend's default float (float64 on NumPy, float32 on
        torch and JAX).
    """

    def __init__(self, pieces: Sequence[Piece], seed: int | None = 0, backend: Any = "numpy",
                 device: Any = None, dtype: Any = None) -> None:
        self.pieces = validation.check_pieces(pieces)
        self.placement = Placement.create(backend, device, dtype)
        rng = np.random.default_rng(validation.check_seed(seed))
        host = [p for piece in self.pieces for p in piece.init(rng)]
        self._set_host_params(host)

    # --- construction helpers --------------------------------------------
    def _set_host_params(self, host: list[np.ndarray]) -> None:
        # a copy: the model owns its parameters, and never shares the caller's arrays
        self.params = [self.placement.from_host(np.array(p)) for p in host]
        self._decayed = [d for piece in self.pieces for d in piece.decayed()]
        counts = [len(piece.decayed()) for piece in self.pieces]
        starts = itertools.accumulate(counts, initial=0)
        self._slices = [slice(start, start + count)  # where each piece's params are
                        for start, count in zip(starts, counts)]
        size = self._n_features = next(p.in_features for p in self.pieces
                                       if isinstance(p, layers.Linear))
        for piece in self.pieces:
            size = piece.output_size(size)
        self._n_outputs = size

    @classmethod
    def _from_host(cls, pieces: Sequence[Piece], host: list[np.ndarray],
                   placement: Placement, source: str = "the parameters") -> Sequential:
        """A model of ``pieces`` with the host parameters ``host`` placed on ``placement``;
        a value beyond its dtype's range is refused (ValueError naming ``source``)."""
        host = [validation.cast_finite(p, placement.dtype, f"{source}: params[{i}]")
                for i, p in enumerate(host)]
        model = cls.__new__(cls)
        model.pieces = list(pieces)
        model.placement = placement
        model._set_host_params(host)
        return model

    # --- where it lives ----------------------------------------------------
    @property
    def xp(self) -> Any:
        return self.placement.xp

    @property
    def backend(self) -> str:
        return self.placement.backend

    @property
    def device(self) -> Any:
        return self.placement.device_obj

    @property
    def dtype(self) -> Any:
        return self.placement.dtype_obj

    @property
    def n_features(self) -> int:
        return self._n_features

    @property
    def n_outputs(self) -> int:
        return self._n_outputs

    @property
    def n_params(self) -> int:
        """How many numbers training adjusts: the entries of every parameter array."""
        return sum(math.prod(p.shape) for p in self.params)

    @property
    def decayed(self) -> list[bool]:
        """Per parameter: whether the l2 penalty applies (weight matrices, not biases)."""
        return self._decayed

    def to(self, backend: Any = None, device: Any = None, dtype: Any = None) -> Sequential:
        """A copy of this model on another backend, device or dtype.

        Parameters
        ----------
        backend : str, array namespace or None, default None
            The backend's name (``"numpy"``, ``"torch"``, ``"jax"``, ``"dask"``,
            ``"cupy"``, ``"array_api_strict"``) or namespace; None keeps the model's.
        device : str or device or None, default None
            The device; None keeps the model's on the same backend, and takes the
            backend's default device on another.
        dtype : str or dtype or None, default None
            The float dtype; None keeps the model's, on any backend: a float64 model
            stays float64 (on JAX that needs ``jax_enable_x64``, or the move is refused
            with the way to enable it, as ``pm.load`` refuses), never downcast.

        Returns
        -------
        Sequential
            The copy; this model is left as it is.
        """
        same_backend = backend is None or _backend.backend_name(backend) == self.backend
        placement = Placement.create(
            self.backend if backend is None else backend,
            device if device is not None or not same_backend else self.placement.device,
            self.placement.dtype if dtype is None else dtype,
        )
        return Sequential._from_host(self.pieces, self.host_params(), placement,
                                     f"model.to(dtype={placement.dtype!r})")

    def host_params(self) -> list[np.ndarray]:
        """The parameters as host NumPy arrays of their own: copies, which later training
        steps leave as they are (``fit`` writes its updates into arrays it reuses)."""
        if self.placement.host_reads_are_free:  # to_host may hand back the array itself
            return [np.array(_backend.to_host(p)) for p in self.params]
        return [_backend.to_host(p) for p in self.params]

    def to_torch_module(self, dtype: Any = None, device: Any = None) -> Any:
        """This model as a ``torch.nn.Sequential`` with its weights (``pm.export_torch``).

        Parameters
        ----------
        dtype : str or None, default None
            float32 or float64; None: the model's.
        device : str or None, default None
            torch's device for the weights; None: torch's default.
        """
        from portable_mlp.torch_module import export_torch

        return export_torch(self, dtype=dtype, device=device)

    def load_params(self, params: Sequence[Any]) -> None:
        """Replace the parameters (host or backend arrays of the right shapes).

        Parameters
        ----------
        params : list of arrays
            New parameters, host or the model's arrays, of the model's shapes.
        """
        checked = validation.check_params(self, params)
        self.params = checked

    # --- the math ------------------------------------------------------------
    def forward(self, x: Array, params: list[Array] | None = None,
                key: counter_rng.Key | None = None) -> tuple[Array, list[Backprop]]:
        """Run every piece; return the output and the backprops in forward order.

        Parameters
        ----------
        x : array of shape (n, n_features)
            Input already placed on the model.
        params : list of arrays or None, default None
            Parameters to use instead of ``model.params``.
        key : counter_rng.Key or None, default None
            A training step's key: the random pieces (Dropout) draw with it; None
            (inference) passes through them.
        """
        with self.placement.overflow_is_fine():
            return self.forward_silenced(x, params, key)

    def forward_silenced(self, x: Array, params: list[Array] | None = None,
                         key: counter_rng.Key | None = None) -> tuple[Array, list[Backprop]]:
        """``forward`` for a caller that has silenced NumPy's float warnings already
        (a training step, in ``placement.quiet()``): no error-state context of its own.

        Parameters
        ----------
        x : array of shape (n, n_features)
            Input already placed on the model.
        params : list of arrays or None, default None
            Parameters to use instead of ``model.params``.
        key : counter_rng.Key or None, default None
            A training step's key for the random pieces (None: they pass through).
        """
        params = self.params if params is None else params
        ops, backprops = self.placement.ops, []
        for i, (piece, where) in enumerate(zip(self.pieces, self._slices)):
            if key is not None and piece.random:
                x, backprop = piece.forward_train(ops, params[where], x, key, i,
                                                  self.placement.device_obj)
            else:
                x, backprop = piece.forward(ops, params[where], x)
            backprops.append(backprop)
        return x, backprops

    @property
    def random(self) -> bool:
        """Whether a piece draws random numbers in training (Dropout)."""
        return any(piece.random for piece in self.pieces)

    def backward(self, delta: Array, backprops: list[Backprop]) -> list[Array]:
        """Chain rule: run the backprops reversed; return grads aligned with params.

        Parameters
        ----------
        delta : array of shape (n, n_outputs)
            The loss's gradient with respect to the output.
        backprops : list of callables
            What ``forward`` returned.
        """
        grads: list[Array] = []
        for i in range(len(backprops) - 1, -1, -1):
            delta, piece_grads = backprops[i](delta, i > 0)
            if piece_grads:
                grads[:0] = piece_grads
        return grads

    def __call__(self, X: Any) -> Array:
        """The forward pass: output activations for ``X`` (host data is moved here).

        Parameters
        ----------
        X : array of shape (n, n_features)
            Features: host data or the model's arrays.
        """
        return self.forward(validation.features(self, X, "X", check_values=True))[0]

    def predict(self, X: Any) -> Array:
        """Class indices: argmax of the output (one output: thresholded).

        Parameters
        ----------
        X : array of shape (n, n_features)
            Features: host data or the model's arrays.
        """
        return self.classes_of(self(X))

    def predict_proba(self, X: Any) -> Array:
        """Class probabilities: ``(n, k)`` rows that sum to 1, on the model's backend
        (one output: ``(n, 2)``, the columns ``1 - p`` and ``p``, as scikit-learn gives them).

        Read off the output piece: a Softmax's outputs as they are; logits (an Identity
        output, for the cross-entropy losses) through a softmax; a Sigmoid's outputs (the
        MSE networks) normalized to sum to 1. One output is a probability through a sigmoid
        (logits) or as it is (Sigmoid). A multi-label model trained with
        ``binary_cross_entropy`` wants no normalizing: take ``Sigmoid`` of its logits.

        Parameters
        ----------
        X : array of shape (n, n_features)
            Features: host data or the model's arrays.
        """
        last = self.pieces[-1]
        if not isinstance(last, (layers.Sigmoid, layers.Softmax, layers.Identity)):
            raise TypeError(f"predict_proba needs a model that ends with a Sigmoid, a Softmax "
                            f"or an Identity (logits); this one ends with {last!r}")
        out, xp, ops = self(X), self.xp, self.placement.ops
        if isinstance(last, layers.Identity):  # logits
            squash = layers.Softmax() if out.shape[1] > 1 else layers.Sigmoid()
            out = squash.forward(ops, [], out)[0]
        if out.shape[1] == 1:
            return xp.concat([1.0 - out, out], axis=1)
        return out / xp.sum(out, axis=1, keepdims=True)

    def classes_of(self, out: Array) -> Array:
        """The class of each row of outputs: the argmax, or one output thresholded at
        its midpoint (0.5 for Sigmoid and Softmax, 0 for logits).

        Parameters
        ----------
        out : array of shape (n, n_outputs)
            The model's outputs.
        """
        xp = self.xp
        if out.shape[1] > 1:
            return xp.argmax(out, axis=1)
        # the output's midpoint: 0.5 for the (0, 1) activations, 0 for logits and tanh
        threshold = 0.5 if isinstance(self.pieces[-1], (layers.Sigmoid, layers.Softmax)) else 0.0
        return xp.astype(out[:, 0] > threshold, self.placement.int_dtype)

    # --- python protocol -------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {"pieces": self.pieces, "placement": self.placement,
                "params": self.host_params()}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.pieces = state["pieces"]
        self.placement = state["placement"]
        self._set_host_params(state["params"])

    def summary(self, file: TextIO | None = None) -> None:
        """Print a table of the pieces (each one's output shape and parameter count) and
        the total, as Keras's ``model.summary()`` does; ``repr(model)`` is the same text.

        Parameters
        ----------
        file : file-like or None, default None
            Where to print; None: standard output.
        """
        print(repr(self), file=file)

    def __repr__(self) -> str:
        p = self.placement
        rows = [("#", "piece", "output", "params")]
        size = self.n_features
        for i, (piece, where) in enumerate(zip(self.pieces, self._slices)):
            size = piece.output_size(size)
            count = sum(math.prod(a.shape) for a in self.params[where])
            rows.append((str(i), repr(piece), f"(n, {size})", f"{count:,}"))
        widths = [max(len(row[c]) for row in rows) for c in range(4)]
        lines = [f"{r[0]:>{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  "
                 f"{r[3]:>{widths[3]}}" for r in rows]
        return "\n".join([f"Sequential on {p.backend!r}, device {p.device!r}, {p.dtype}: "
                          f"{self.n_features} inputs, {self.n_params:,} parameters", *lines])


def check_model(model: Any) -> Sequential:
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a portable_mlp model (pm.Sequential or pm.MLP), "
                        f"got {type(model).__name__}")
    return model


def MLP(  # noqa: N802 - a constructor, named like the class it builds
        sizes: Sequence[int], activation: str = "sigmoid", output: str = "sigmoid",
        bias: bool = True, seed: int | None = 0, backend: Any = "numpy", device: Any = None,
        dtype: Any = None, init: str = "uniform", dropout: float = 0.0) -> Sequential:
    """Shorthand: ``Linear`` layers of ``sizes`` with ``activation`` between them and
    ``output`` after the last (use output="identity" with the cross-entropy losses).

    Parameters
    ----------
    sizes : sequence of int
        The width of every layer, inputs first and outputs last: ``[30, 64, 2]`` is 30
        features, one hidden layer of 64 and 2 outputs.
    activation : str, default "sigmoid"
        The activation after every hidden layer, by name (``layers.ACTIVATIONS``):
        "sigmoid", "tanh", "relu", "identity", "softmax", "gelu", "silu", "leaky_relu",
        "elu", "softplus".
    output : str, default "sigmoid"
        The activation after the last layer, by the same names: ``"identity"`` (logits)
        for the cross-entropy and Poisson losses, ``"sigmoid"`` (the article's) or
        ``"softmax"`` with ``"mse"``.
    bias : bool, default True
        Give every ``Linear`` a bias.
    seed : int or None, default 0
        The random seed of the first weights (the same network on every backend) and,
        with ``dropout``, of the Dropout masks (None: a fresh seed for the weights, 0
        for the masks).
    backend : str or array namespace, default "numpy"
        Where the parameters live: ``"numpy"``, ``"torch"``, ``"jax"``, ``"dask"``,
        ``"cupy"``, ``"array_api_strict"``, a registered name or a namespace.
    device : str or None, default None
        The device on that backend (``"cpu"``, ``"cuda:0"``); None: its default.
    dtype : str or None, default None
        The float dtype; None: the backend's default float.
    init : {"uniform", "glorot", "he"}, default "uniform"
        How the weight matrices are drawn (see ``Linear``).
    dropout : float, default 0.0
        A ``Dropout(dropout)`` after each hidden activation (0: none).

    Returns
    -------
    Sequential
        The model.
    """
    sizes = validation.check_sizes(sizes)
    layers.activation(activation)
    layers.activation(output)
    rate = validation.non_negative("dropout", dropout)
    pieces: list[Piece] = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        last = i == len(sizes) - 2
        pieces += [layers.Linear(fan_in, fan_out, bias=bias, init=init),
                   layers.activation(output if last else activation)]
        if rate and not last:
            pieces.append(Dropout(rate, seed=seed or 0))
    return Sequential(pieces, seed=seed, backend=backend, device=device, dtype=dtype)
