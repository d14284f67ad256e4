"""skl2onnx converters for MLPClassifier and MLPRegressor: pipelines of them to ONNX.

``register()`` (``portable_mlp.sklearn.register_onnx_converters``) registers both with
skl2onnx; ``skl2onnx.to_onnx(Pipeline([..., MLPClassifier()]), X[:1])`` then converts
them as it converts scikit-learn's own MLPs: labels, probabilities, ZipMap.

The network's nodes come from ``portable_mlp.export`` (the same registry of pieces as
``pm.export_onnx``), written into skl2onnx's container through ``_ContainerWriter``. Then,
as the estimators compute them from the logits: multi-class, a softmax and the argmax;
binary (and one class), a sigmoid, the columns ``1 - p`` and ``p``, and the logit's sign;
multi-label, a sigmoid per label and 0/1 labels; the regressor, the identity or ``exp``
(Poisson).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from skl2onnx import update_registered_converter
from skl2onnx.common.data_types import (
    DoubleTensorType,
    FloatTensorType,
    Int64TensorType,
    StringTensorType,
)
from skl2onnx.common.utils import check_input_and_output_numbers, check_input_and_output_types

from portable_mlp import _backend, export
from portable_mlp.sklearn._classifier import MLPClassifier
from portable_mlp.sklearn._regressor import MLPRegressor

FLOAT_TYPES = [FloatTensorType, DoubleTensorType]


class _ContainerWriter:
    """``export.GraphWriter`` over skl2onnx's scope (names) and container (nodes)."""

    def __init__(self, scope: Any, container: Any, dtype: np.dtype[Any]) -> None:
        if container.target_opset < export.MIN_OPSET:
            raise ValueError(f"portable_mlp's estimators convert to opset {export.MIN_OPSET} "
                             f"or newer; target_opset is {container.target_opset}")
        self.scope, self.container, self.dtype = scope, container, dtype

    def name(self, hint: str) -> str:
        return str(self.scope.get_unique_variable_name(hint))

    def constant(self, hint: str, value: np.ndarray) -> str:
        name, value = self.name(hint), np.asarray(value)
        content: Any
        if value.dtype == object:  # class labels: strings
            elem, content = onnx.TensorProto.STRING, [str(v).encode() for v in value.ravel()]
        else:
            elem, content = onnx.helper.np_dtype_to_tensor_dtype(value.dtype), value.ravel()
        self.container.add_initializer(name, elem, list(value.shape), content)
        return name

    def node(self, op_type: str, inputs: list[str], output: str, **attrs: Any) -> None:
        self.container.add_node(op_type, inputs, output,
                                name=self.scope.get_unique_operator_name(op_type), **attrs)


def _network(scope: Any, operator: Any, container: Any) -> tuple[_ContainerWriter, str]:
    """The estimator's network on the operator's input: the writer and the logits' name."""
    est = operator.raw_operator
    elem = operator.inputs[0].type.to_onnx_type().tensor_type.elem_type
    g = _ContainerWriter(scope, container, onnx.helper.tensor_dtype_to_np_dtype(elem))
    model = est.model_
    logits = g.name("logits")
    export.write_pieces(g, model.pieces, export.piece_params(model, g.dtype),
                        operator.inputs[0].full_name, logits)
    return g, logits


# --- the classifier ------------------------------------------------------------------

def _classes(est: MLPClassifier, scope: Any) -> np.ndarray:
    """``classes_`` as ONNX labels: int64, or strings; float labels must be whole. With
    skl2onnx's option ``nocl``, the indices 0..k-1."""
    classes = _backend.to_host(est.classes_)
    if scope.get_options(est, {"nocl": False})["nocl"]:
        return np.arange(classes.shape[0], dtype=np.int64)
    if classes.dtype.kind in "biu":
        return classes.astype(np.int64)
    if classes.dtype.kind == "f":
        if not np.array_equal(classes, np.round(classes)):
            raise ValueError(f"ONNX labels are integers or strings; classes_ {classes} holds "
                             "fractions")
        return classes.astype(np.int64)
    return np.array([str(c) for c in classes], dtype=object)


def shape_classifier(operator: Any) -> None:
    """Outputs: labels (int64 or strings; (N, k) 0/1 for multi-label), probabilities."""
    check_input_and_output_numbers(operator, input_count_range=1, output_count_range=2)
    check_input_and_output_types(operator, good_input_types=FLOAT_TYPES)
    est, n = operator.raw_operator, operator.inputs[0].get_first_dimension()
    classes = _classes(est, operator.scope_inst)
    width = est.n_outputs_ if est._kind == "multiclass" or est._kind == "multilabel" else 2
    label = ([n, width], Int64TensorType) if est._kind == "multilabel" else (
        [n], StringTensorType if classes.dtype == object else Int64TensorType)
    operator.outputs[0].type = label[1](label[0])
    operator.outputs[1].type = type(operator.inputs[0].type)([n, width])


def convert_classifier(scope: Any, operator: Any, container: Any) -> None:
    est = operator.raw_operator
    classes = _classes(est, scope)
    _check_zipmap(container, est, classes)
    g, logits = _network(scope, operator, container)
    label, proba = (v.full_name for v in operator.outputs)
    if est._kind == "multiclass":
        g.node("Softmax", [logits], proba, axis=1)
        index = g.name("index")
        g.node("ArgMax", [logits], index, axis=1, keepdims=0)
    elif est._kind == "multilabel":
        g.node("Sigmoid", [logits], proba)
        above = g.name("above")
        g.node("Greater", [logits, g.constant("zero", np.zeros((), g.dtype))], above)
        g.node("Cast", [above], label, to=onnx.TensorProto.INT64)
        return
    else:  # binary, or one class: the logit's sigmoid p, in the columns 1 - p and p
        export.write_probabilities(g, est.model_.pieces[-1], 1, logits, proba)
        index = _binary_index(g, logits, one_class=classes.shape[0] == 1)
    g.node("Gather", [g.constant("classes", classes), index], label, axis=0)


def _binary_index(g: _ContainerWriter, logits: str, one_class: bool) -> str:
    """Index 1 where the logit is positive; one class: always 0 (a threshold of +inf),
    as ``MLPClassifier._class_index``."""
    above, flat, index = g.name("above"), g.name("above_flat"), g.name("index")
    threshold = np.array(np.inf if one_class else 0.0, g.dtype)
    g.node("Greater", [logits, g.constant("threshold", threshold)], above)
    g.node("Squeeze", [above, g.constant("axis", np.array([1]))], flat)
    g.node("Cast", [flat], index, to=onnx.TensorProto.INT64)
    return index


def _check_zipmap(container: Any, est: MLPClassifier, classes: np.ndarray) -> None:
    """ZipMap pairs each probability column with a class: one-class and multi-label
    classifiers have no such pairs, and convert with ``options={"zipmap": False}``."""
    zipmap = container.get_options(est, {"zipmap": True})["zipmap"]
    odd = est._kind == "multilabel" or classes.shape[0] == 1
    if zipmap is not False and odd:
        what = "multi-label" if est._kind == "multilabel" else "one-class"
        raise ValueError(f"a {what} MLPClassifier's probabilities are not one column per "
                         "class: convert it with options={MLPClassifier: {'zipmap': False}}")


# --- the regressor -----------------------------------------------------------------

def shape_regressor(operator: Any) -> None:
    check_input_and_output_numbers(operator, input_count_range=1, output_count_range=1)
    check_input_and_output_types(operator, good_input_types=FLOAT_TYPES)
    est, n = operator.raw_operator, operator.inputs[0].get_first_dimension()
    operator.outputs[0].type = type(operator.inputs[0].type)([n, est.n_outputs_])


def convert_regressor(scope: Any, operator: Any, container: Any) -> None:
    est = operator.raw_operator
    g, out = _network(scope, operator, container)
    g.node("Exp" if est.loss == "poisson" else "Identity", [out], operator.outputs[0].full_name)


def register() -> None:
    """Register both converters with skl2onnx (again: replaces them)."""
    update_registered_converter(
        MLPClassifier, "PortableMlpMLPClassifier", shape_classifier, convert_classifier,
        options={"zipmap": [True, False, "columns"], "nocl": [False, True],
                 "output_class_labels": [False, True]})
    update_registered_converter(MLPRegressor, "PortableMlpMLPRegressor", shape_regressor,
                                convert_regressor)
