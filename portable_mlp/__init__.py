"""portable_mlp: a chain-rule MLP written once against the Python Array API standard.

The same forward and backward code trains on NumPy, CuPy, PyTorch, JAX, Dask and
array-api-strict, and any other Array API library (``backend=<namespace>``,
``register_backend``). See README.md for a tour.
"""

from portable_mlp import datasets, initializers, losses, optim
from portable_mlp._backend import BACKENDS, BackendUnavailable, WorkerLostError
from portable_mlp.backends import register_backend
from portable_mlp.callback_base import Callback, LambdaCallback
from portable_mlp.callbacks import EarlyStopping
from portable_mlp.checkpoint import Checkpoint, load, load_optimizer, save
from portable_mlp.encoding import one_hot
from portable_mlp.export import export_onnx
from portable_mlp.grad import GradcheckError, gradcheck, value_and_grad
from portable_mlp.layers import Identity, Linear, Piece, ReLU, Sigmoid, Softmax, Tanh
from portable_mlp.lbfgs import LBFGS
from portable_mlp.model import MLP, Sequential
from portable_mlp.optim import SGD, Adam, Optimizer
from portable_mlp.steps import train_step
from portable_mlp.torch_module import export_torch
from portable_mlp.train import DivergenceError, Trainer, TrainingInterrupted, fit

__version__ = "0.1.0"

__all__ = [
    "BACKENDS", "LBFGS", "MLP", "SGD", "Adam", "BackendUnavailable", "Callback", "Checkpoint",
    "DivergenceError", "EarlyStopping", "GradcheckError", "Identity", "LambdaCallback", "Linear",
    "Optimizer", "Piece", "ReLU", "Sequential", "Sigmoid", "Softmax", "Tanh", "Trainer",
    "TrainingInterrupted", "WorkerLostError", "datasets", "export_onnx", "export_torch", "fit",
    "gradcheck", "initializers", "load", "load_optimizer", "losses", "one_hot", "optim",
    "register_backend", "save", "train_step", "value_and_grad",
]
