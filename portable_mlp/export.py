"""ONNX export: a model's graph written from its pieces, for any ONNX runtime to serve.

Each piece type maps to a few ONNX operators through ``CONVERTERS``, a registry keyed
by the piece's type: a new piece adds one entry (``@converts(MyPiece)``). The graph is
written from the pieces and the host parameters, not traced, so a model on any backend
exports the same graph as the same model on NumPy.

The graph's outputs are ``output`` (what ``model(X)`` returns) and, on request,
``probabilities`` and ``label``, computed as ``model.predict_proba`` and ``model.predict``
compute them. Nodes are written through ``GraphWriter``, which the scikit-learn converters
(``portable_mlp.sklearn._onnx``) implement over skl2onnx's container: one mapping for both.
Needs the ``onnx`` package (``pip install 'portable_mlp[onnx]'``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from portable_mlp import _backend, _install, activations, layers, validation
from portable_mlp.dropout import Dropout
from portable_mlp.layers import Piece
from portable_mlp.normalization import LayerNorm

if TYPE_CHECKING:
    import onnx

    from portable_mlp.model import Sequential

DEFAULT_OPSET = 17  # onnxruntime 1.13 (2022) and later run it
MIN_OPSET = 13  # ReduceSum and Squeeze take their axes as inputs from 13 on: one code path
INPUT, OUTPUT, PROBABILITIES, LABEL = "input", "output", "probabilities", "label"
BATCH = "batch"  # the name of the dynamic first dimension


def _onnx() -> Any:
    """The onnx module, or an ImportError that says how to install it."""
    return _install.require("onnx", "ONNX export", "onnx")


class GraphWriter(Protocol):
    """Where converters write nodes: our own graph (``_Graph``) or skl2onnx's container."""

    dtype: np.dtype[Any]

    def name(self, hint: str) -> str:
        """A fresh tensor name."""
        ...

    def constant(self, hint: str, value: np.ndarray) -> str:
        """An initializer holding ``value``; returns its name."""
        ...

    def node(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> None:
        """Append ``op_type(inputs) -> output`` (attributes as keyword arguments)."""
        ...


Converter = Callable[[GraphWriter, Piece, list[np.ndarray], str, str], None]
CONVERTERS: dict[type[Piece], Converter] = {}


def converts(piece_type: type[Piece]) -> Callable[[Converter], Converter]:
    """Register ``convert(graph, piece, params, x, y)``: it writes nodes that compute the
    piece's output ``y`` from its input ``x`` (tensor names): one or two for most
    pieces, a few more for a formula ONNX has no operator for at every supported opset
    (GELU, LayerNorm)."""
    def register(convert: Converter) -> Converter:
        CONVERTERS[piece_type] = convert
        return convert
    return register


@converts(layers.Linear)
def _linear(g: GraphWriter, piece: Piece, params: list[np.ndarray], x: str, y: str) -> None:
    weights = [g.constant("weight", params[0])]
    if len(params) > 1:
        weights.append(g.constant("bias", params[1]))
    g.node("Gemm", [x, *weights], y)  # W is (in, out), as x @ W wants: no transB


def _elementwise(op_type: str, **attrs: Any) -> Converter:
    def convert(g: GraphWriter, piece: Piece, params: list[np.ndarray], x: str, y: str) -> None:
        g.node(op_type, [x], y, **attrs)
    return convert


for _piece, _op in ((layers.Sigmoid, "Sigmoid"), (layers.Tanh, "Tanh"), (layers.ReLU, "Relu"),
                    (layers.Identity, "Identity")):
    converts(_piece)(_elementwise(_op))
converts(layers.Softmax)(_elementwise("Softmax", axis=1))
converts(Dropout)(_elementwise("Identity"))  # inference: the input as it is


def _positive(g: GraphWriter, x: str) -> str:
    """The tensor ``x > 0`` (onnxruntime has no float64 LeakyRelu, Elu nor Softplus: these
    are written from operators it runs in both float dtypes)."""
    above = g.name("positive")
    g.node("Greater", [x, _scalar(g, "zero", 0.0)], above)
    return above


@converts(activations.LeakyReLU)
def _leaky_relu(g: GraphWriter, piece: Any, params: list[np.ndarray], x: str, y: str) -> None:
    scaled = g.name("scaled")
    g.node("Mul", [x, _scalar(g, "slope", piece.slope)], scaled)
    g.node("Where", [_positive(g, x), x, scaled], y)


@converts(activations.ELU)
def _elu(g: GraphWriter, piece: Any, params: list[np.ndarray], x: str, y: str) -> None:
    negative, e, tail = g.name("negative"), g.name("exp"), g.name("tail")
    g.node("Min", [x, _scalar(g, "zero", 0.0)], negative)
    g.node("Exp", [negative], e)
    _chain(g, e, tail, [("Sub", _scalar(g, "one", 1.0)), ("Mul", _scalar(g, "alpha",
                                                                         piece.alpha))])
    g.node("Where", [_positive(g, x), x, tail], y)


@converts(activations.Softplus)
def _softplus(g: GraphWriter, piece: Piece, params: list[np.ndarray], x: str, y: str) -> None:
    """``max(x, 0) + log(1 + exp(-|x|))``, stable as ``Softplus.forward``."""
    size, negative, e, log, relu = (g.name(h) for h in ("abs", "neg", "exp", "log", "relu"))
    g.node("Abs", [x], size)
    g.node("Neg", [size], negative)
    g.node("Exp", [negative], e)
    plus_one = g.name("plus_one")
    g.node("Add", [e, _scalar(g, "one", 1.0)], plus_one)
    g.node("Log", [plus_one], log)
    g.node("Relu", [x], relu)
    g.node("Add", [relu, log], y)


@converts(activations.SiLU)
def _silu(g: GraphWriter, piece: Piece, params: list[np.ndarray], x: str, y: str) -> None:
    s = g.name("sigmoid")
    g.node("Sigmoid", [x], s)
    g.node("Mul", [x, s], y)


def _scalar(g: GraphWriter, hint: str, value: float) -> str:
    return g.constant(hint, np.array(value, g.dtype))


def _chain(g: GraphWriter, x: str, y: str, steps: list[tuple[str, str]]) -> None:
    """``x`` through binary operators, each with its second operand: the last gives ``y``."""
    for i, (op, other) in enumerate(steps):
        out = y if i == len(steps) - 1 else g.name(op.lower())
        g.node(op, [x, other], out)
        x = out


@converts(activations.GELU)
def _gelu(g: GraphWriter, piece: Any, params: list[np.ndarray], x: str, y: str) -> None:
    """The formula of ``GELU.forward`` (ONNX's own Gelu needs opset 20)."""
    half = g.name("half_x")
    g.node("Mul", [x, _scalar(g, "half", 0.5)], half)
    if piece.approximate == "none":
        scaled, erf = g.name("scaled"), g.name("erf")
        g.node("Mul", [x, _scalar(g, "inv_sqrt2", activations._INV_SQRT_2)], scaled)
        g.node("Erf", [scaled], erf)
        _chain(g, erf, y, [("Add", _scalar(g, "one", 1.0)), ("Mul", half)])
        return
    cube, inner, t = g.name("cube"), g.name("inner"), g.name("tanh")
    _chain(g, x, cube, [("Mul", x), ("Mul", x), ("Mul", _scalar(g, "cubic",
                                                                activations._TANH_CUBIC))])
    _chain(g, x, inner, [("Add", cube), ("Mul", _scalar(g, "c", activations._SQRT_2_OVER_PI))])
    g.node("Tanh", [inner], t)
    _chain(g, t, y, [("Add", _scalar(g, "one", 1.0)), ("Mul", half)])


@converts(LayerNorm)
def _layer_norm(g: GraphWriter, piece: Any, params: list[np.ndarray], x: str, y: str) -> None:
    """``LayerNorm.forward``'s arithmetic (ReduceSum: its axes are an input from opset 13
    on; ONNX's LayerNormalization needs 17)."""
    axis, inv_n = g.constant("axis", np.array([1])), _scalar(g, "inv_n", 1.0 / piece.n)

    def mean(a: str) -> str:
        total, out = g.name("sum"), g.name("mean")
        g.node("ReduceSum", [a, axis], total, keepdims=1)
        g.node("Mul", [total, inv_n], out)
        return out

    centred, square, std = g.name("centred"), g.name("square"), g.name("std")
    g.node("Sub", [x, mean(x)], centred)
    g.node("Mul", [centred, centred], square)
    variance = mean(square)
    _chain(g, variance, std, [("Add", _scalar(g, "eps", piece.eps))])
    root = g.name("root")
    g.node("Sqrt", [std], root)
    _chain(g, centred, y, [("Div", root), ("Mul", g.constant("scale", params[0])),
                           ("Add", g.constant("shift", params[1]))])


def write_pieces(g: GraphWriter, pieces: list[Piece], params: list[list[np.ndarray]],
                 x: str, y: str) -> None:
    """The nodes of every piece, from tensor ``x`` to tensor ``y``."""
    for i, (piece, own) in enumerate(zip(pieces, params)):
        out = y if i == len(pieces) - 1 else g.name(type(piece).__name__.lower())
        CONVERTERS[type(piece)](g, piece, own, x, out)
        x = out


def write_probabilities(g: GraphWriter, last: Piece, n_outputs: int, out: str, y: str) -> None:
    """``Sequential.predict_proba``'s arithmetic on the output tensor ``out``."""
    if isinstance(last, layers.Identity):  # logits
        squashed = g.name("squashed")
        g.node("Softmax" if n_outputs > 1 else "Sigmoid", [out], squashed,
               **({"axis": 1} if n_outputs > 1 else {}))
        out = squashed
    if n_outputs == 1:
        negative = g.name("negative")
        g.node("Sub", [g.constant("one", np.ones((), g.dtype)), out], negative)
        g.node("Concat", [negative, out], y, axis=1)
        return
    total = g.name("total")
    g.node("ReduceSum", [out, g.constant("axis", np.array([1]))], total, keepdims=1)
    g.node("Div", [out, total], y)


def write_label(g: GraphWriter, last: Piece, n_outputs: int, out: str, y: str) -> None:
    """``Sequential.classes_of``: argmax, or one output over its midpoint (int64)."""
    if n_outputs > 1:
        g.node("ArgMax", [out], y, axis=1, keepdims=0)
        return
    threshold = 0.5 if isinstance(last, (layers.Sigmoid, layers.Softmax)) else 0.0
    above, flat = g.name("above"), g.name("above_flat")
    g.node("Greater", [out, g.constant("threshold", np.array(threshold, g.dtype))], above)
    g.node("Squeeze", [above, g.constant("axis", np.array([1]))], flat)
    g.node("Cast", [flat], y, to=7)  # TensorProto.INT64


class _Graph:
    """A GraphWriter that collects nodes and initializers for ``onnx.helper.make_graph``."""

    def __init__(self, dtype: np.dtype[Any]) -> None:
        self.dtype = dtype
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._used: dict[str, int] = {}

    def name(self, hint: str) -> str:
        count = self._used.get(hint, 0)
        self._used[hint] = count + 1
        return f"{hint}_{count}"

    def constant(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        self.initializers.append(_onnx().numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> None:
        self.nodes.append(_onnx().helper.make_node(
            op_type, inputs, [output], name=f"{op_type}_{len(self.nodes)}", **attrs))


# --- checks -----------------------------------------------------------------------

def check_convertible(pieces: list[Piece]) -> None:
    """A TypeError naming the first piece that has no ONNX mapping."""
    for i, piece in enumerate(pieces):
        if type(piece) not in CONVERTERS:
            raise TypeError(f"piece {i} ({piece!r}) has no ONNX mapping; mapped piece types: "
                            f"{', '.join(t.__name__ for t in CONVERTERS)} (add one with "
                            "portable_mlp.export.converts)")


def check_dtype(dtype: Any, model: Sequential) -> np.dtype[Any]:
    """The export dtype: ``dtype`` (float32 or float64), or the model's."""
    name = model.placement.dtype if dtype is None else _backend.dtype_name(dtype)
    if name not in _backend.FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64 (or None: the model's), "
                         f"got {dtype!r}")
    return np.dtype(name)


def check_opset(opset: Any) -> int:
    """``opset``, or DEFAULT_OPSET: an int between MIN_OPSET and what onnx knows."""
    if opset is None:
        return DEFAULT_OPSET
    newest = _onnx().defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) \
            or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} to {newest} (the newest "
                         f"this onnx {_onnx().__version__} knows), got {opset!r}")
    return int(opset)


def check_heads(model: Sequential, probabilities: bool, label: bool) -> None:
    for flag, value in (("probabilities", probabilities), ("label", label)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False, got {value!r}")
    last = model.pieces[-1]
    if probabilities and not isinstance(last, (layers.Sigmoid, layers.Softmax, layers.Identity)):
        raise ValueError(f"probabilities=True needs a model that ends with a Sigmoid, a "
                         f"Softmax or an Identity (logits), as predict_proba does; this one "
                         f"ends with {last!r}")


def piece_params(model: Sequential, dtype: np.dtype[Any]) -> list[list[np.ndarray]]:
    """Each piece's host parameters, cast to ``dtype`` (refused if one overflows it)."""
    host = [validation.cast_finite(p, dtype.name, f"params[{i}]")
            for i, p in enumerate(model.host_params())]
    return [host[where] for where in model._slices]


# --- the model ------------------------------------------------------------------------

def to_onnx(model: Sequential, *, dtype: Any = None, opset: int | None = None,
            probabilities: bool = False, label: bool = False) -> onnx.ModelProto:
    """The ONNX model of ``model`` (see ``export_onnx``), checked, not written."""
    from portable_mlp.model import check_model

    onnx = _onnx()
    model = check_model(model)
    check_convertible(model.pieces)
    np_dtype, version = check_dtype(dtype, model), check_opset(opset)
    check_heads(model, probabilities, label)
    g = _Graph(np_dtype)
    write_pieces(g, model.pieces, piece_params(model, np_dtype), INPUT, OUTPUT)
    k, last = model.n_outputs, model.pieces[-1]
    elem = onnx.helper.np_dtype_to_tensor_dtype(np_dtype)
    outputs = [onnx.helper.make_tensor_value_info(OUTPUT, elem, [BATCH, k])]
    if probabilities:
        write_probabilities(g, last, k, OUTPUT, PROBABILITIES)
        outputs.append(onnx.helper.make_tensor_value_info(PROBABILITIES, elem,
                                                          [BATCH, max(k, 2)]))
    if label:
        write_label(g, last, k, OUTPUT, LABEL)
        outputs.append(onnx.helper.make_tensor_value_info(LABEL, onnx.TensorProto.INT64,
                                                          [BATCH]))
    inputs = [onnx.helper.make_tensor_value_info(INPUT, elem, [BATCH, model.n_features])]
    graph = onnx.helper.make_graph(g.nodes, "portable_mlp", inputs, outputs, g.initializers)
    return _finish(onnx, graph, model, version)


def _finish(onnx: Any, graph: Any, model: Sequential, opset: int) -> onnx.ModelProto:
    from portable_mlp import __version__

    imports = [onnx.helper.make_opsetid("", opset)]
    proto = onnx.helper.make_model(graph, opset_imports=imports, producer_name="portable_mlp",
                                   producer_version=__version__,
                                   ir_version=onnx.helper.find_min_ir_version_for(imports))
    onnx.helper.set_model_props(proto, {
        "portable_mlp_version": __version__,
        "pieces": json.dumps([piece.to_config() for piece in model.pieces]),
        "architecture": "-".join(map(str, _sizes(model))),
        "trained_dtype": model.placement.dtype,
    })
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _sizes(model: Sequential) -> list[int]:
    """The feature count after every Linear: 64-100-10 for MLP([64, 100, 10])."""
    sizes = [model.n_features]
    sizes += [p.out_features for p in model.pieces if isinstance(p, layers.Linear)]
    return sizes


def export_onnx(model: Sequential, path: str | os.PathLike[str], *, dtype: Any = None,
                opset: int | None = None, probabilities: bool = False,
                label: bool = False) -> onnx.ModelProto:
    """Write ``model`` as an ONNX file that onnxruntime (or any ONNX runtime) serves.

    Parameters
    ----------
    model
        A ``pm.Sequential`` (or ``pm.MLP``) on any backend; its ``host_params()`` are written.
    path
        The file to write (atomically, as ``pm.save`` writes). Its folder must exist.
    dtype
        float32 or float64: the graph's input, weights and outputs. None: the model's.
    opset
        The ONNX operator set (default 17; from 13 to the newest the installed onnx knows).
    probabilities, label
        Add the outputs ``probabilities`` (as ``model.predict_proba``) and ``label`` (int64,
        as ``model.predict``) beside ``output`` (as ``model(X)``).

    Returns
    -------
    The ``onnx.ModelProto`` written. Its input is ``input``, of shape (batch, n_features)
    with a dynamic batch; ``metadata_props`` hold the library version and the pieces.

    Every argument is checked before anything is written: a piece without a mapping is a
    TypeError, a bad dtype or opset a ValueError, a missing folder a FileNotFoundError.
    """
    from portable_mlp.checkpoint import check_target, write_atomic

    target = check_target(path)
    proto = to_onnx(model, dtype=dtype, opset=opset, probabilities=probabilities, label=label)
    write_atomic(target, proto.SerializeToString())
    return proto
