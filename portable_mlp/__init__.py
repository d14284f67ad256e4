"""portable_mlp: a chain-rule MLP written once against the Python Array API standard.

The same forward and backward code trains on NumPy, CuPy, PyTorch, JAX, Dask and
array-api-strict, and any other Array API library (``backend=<namespace>``,
``register_backend``). See README.md for a tour.
"""

from portable_mlp import datasets, initializers, losses, optim
from portable_mlp._backend import BACKENDS, BackendUnavailable, WorkerLostError
from portable_mlp.activations import ELU, GELU, LeakyReLU, SiLU, Softplus
from portable_mlp.backends import register_backend
from portable_mlp.callback_base import Callback, LambdaCallback
from portable_mlp.callbacks import EarlyStopping
from portable_mlp.checkpoint import Checkpoint, load, load_optimizer, save
from portable_mlp.dropout import Dropout
from portable_mlp.encoding import one_hot
from portable_mlp.export import export_onnx
from portable_mlp.grad import GradcheckError, gradcheck, value_and_grad
from portable_mlp.layers import Identity, Linear, Piece, ReLU, Sigmoid, Softmax, Tanh
from portable_mlp.lbfgs import LBFGS
from portable_mlp.model import MLP, Sequential
from portable_mlp.normalization import LayerNorm
from portable_mlp.optim import SGD, Adam, AdamW, Optimizer
from portable_mlp.steps import train_step
from portable_mlp.torch_module import export_torch
from portable_mlp.train import DivergenceError, Trainer, TrainingInterrupted, fit

__version__ = "0.1.0"

__all__ = [
    "BACKENDS", "ELU", "GELU", "LBFGS", "MLP", "SGD", "Adam", "AdamW", "BackendUnavailable",
    "Callback", "Checkpoint", "DivergenceError", "Dropout", "EarlyStopping", "GradcheckError",
    "Identity", "LambdaCallback", "LayerNorm", "LeakyReLU", "Linear", "Optimizer", "Piece",
    "ReLU", "Sequential", "SiLU", "Sigmoid", "Softmax", "Softplus", "Tanh", "Trainer",
    "TrainingInterrupted", "WorkerLostError", "datasets", "export_onnx", "export_torch", "fit",
    "gradcheck", "initializers", "load", "load_optimizer", "losses", "one_hot", "optim",
    "register_backend", "save", "train_step", "value_and_grad",
]
