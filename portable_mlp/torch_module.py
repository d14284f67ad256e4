"""A model as a ``torch.nn.Sequential``: PyTorch's own modules holding the trained weights.

Each piece type maps to one torch module through ``MODULES``, a registry keyed by the
piece's type (as ``portable_mlp.export.CONVERTERS`` for ONNX). The result is plain PyTorch,
free of this library: ``torch.export.export``, ``torch.jit.script``, ``torch.compile`` and
``torch.save`` take it as any ``nn.Sequential``. Needs torch (any backend's model converts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from portable_mlp import _backend, _install, activations, layers
from portable_mlp.dropout import Dropout
from portable_mlp.layers import Piece
from portable_mlp.normalization import LayerNorm

if TYPE_CHECKING:
    import torch

    from portable_mlp.model import Sequential

# (torch, piece, its host parameters, dtype, device) -> an nn.Module
ModuleMaker = Callable[[Any, Piece, list[np.ndarray], Any, Any], Any]


def _torch() -> Any:
    return _install.require("torch", "export_torch", "torch")


def _linear(torch: Any, piece: Any, params: list[np.ndarray], dtype: Any, device: Any) -> Any:
    module = torch.nn.Linear(piece.in_features, piece.out_features, bias=piece.bias,
                             dtype=dtype, device=device)
    with torch.no_grad():  # torch keeps W as (out, in): ours transposed
        module.weight.copy_(torch.from_numpy(np.ascontiguousarray(params[0].T)))
        if piece.bias:
            module.bias.copy_(torch.from_numpy(params[1]))
    return module


def _plain(name: str, **kwargs: Any) -> ModuleMaker:
    return lambda torch, piece, params, dtype, device: getattr(torch.nn, name)(**kwargs)


def _layer_norm(torch: Any, piece: Any, params: list[np.ndarray], dtype: Any,
                device: Any) -> Any:
    module = torch.nn.LayerNorm(piece.n, eps=piece.eps, dtype=dtype, device=device)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(params[0]))
        module.bias.copy_(torch.from_numpy(params[1]))
    return module


def _configured(name: str, **settings: str) -> ModuleMaker:
    """torch's module ``name`` with the piece's attributes as its keyword arguments
    (``settings``: torch's keyword -> the piece's attribute)."""
    return lambda torch, piece, params, dtype, device: getattr(torch.nn, name)(
        **{kw: getattr(piece, attr) for kw, attr in settings.items()})


MODULES: dict[type[Piece], ModuleMaker] = {
    layers.Linear: _linear,
    layers.Sigmoid: _plain("Sigmoid"),
    layers.Tanh: _plain("Tanh"),
    layers.ReLU: _plain("ReLU"),
    layers.Identity: _plain("Identity"),
    layers.Softmax: _plain("Softmax", dim=1),
    activations.GELU: _configured("GELU", approximate="approximate"),
    activations.SiLU: _plain("SiLU"),
    activations.LeakyReLU: _configured("LeakyReLU", negative_slope="slope"),
    activations.ELU: _configured("ELU", alpha="alpha"),
    activations.Softplus: _plain("Softplus"),
    LayerNorm: _layer_norm,
    Dropout: _configured("Dropout", p="rate"),  # the module comes in eval mode: identity
}


def export_torch(model: Sequential, *, dtype: Any = None, device: Any = None
                 ) -> torch.nn.Sequential:
    """``model`` as a ``torch.nn.Sequential`` of ``nn.Linear`` and activation modules.

    Parameters
    ----------
    model
        A ``pm.Sequential`` on any backend; its ``host_params()`` are copied.
    dtype
        float32 or float64 (None: the model's).
    device
        torch's device for the weights (None: torch's default device).

    Returns
    -------
    The module, in eval mode; ``module(X)`` equals ``model(X)`` for a tensor ``X``.
    """
    from portable_mlp.model import check_model

    model = check_model(model)
    for i, piece in enumerate(model.pieces):
        if type(piece) not in MODULES:
            raise TypeError(f"piece {i} ({piece!r}) has no torch module; mapped piece types: "
                            f"{', '.join(t.__name__ for t in MODULES)}")
    name = model.placement.dtype if dtype is None else _backend.dtype_name(dtype)
    if name not in _backend.FLOAT_DTYPES:
        raise ValueError(f"dtype must be float32 or float64 (or None: the model's), "
                         f"got {dtype!r}")
    torch = _torch()
    host = [p.astype(name) for p in model.host_params()]
    torch_dtype = getattr(torch, name)
    modules = [MODULES[type(piece)](torch, piece, host[where], torch_dtype, device)
               for piece, where in zip(model.pieces, model._slices)]
    return torch.nn.Sequential(*modules).eval()
