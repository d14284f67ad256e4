"""Whole training, timed: ``pm.fit`` against each backend's best hand-written loop.

Each configuration is a network, a loss, an optimizer and a data set. For one backend,
``build(backend, config)`` returns two callables that each train for ``epochs`` epochs
from the same initial weights, shuffling from the same host seed, and return the last
epoch's (loss, accuracy), both read off the steps' own forward passes (what ``pm.fit``
logs by default, and what a hand loop that tracks its progress computes):

- ``hand``: the loop written in the backend's own API, the way most of its users write it.
  NumPy: the scratch_mlp article's style (explicit forward, chain rule from the cached
  activations, in-place updates). torch: autograd and ``torch.optim`` (foreach kernels).
  JAX: one ``jax.jit`` step per batch (the batch gathered inside it) with Adam written by
  hand as optax writes it.
- ``lean``: the fastest loop we can write by hand, the honest anchor. torch: the NumPy
  loop's manual forward and backward in torch (``addmm``, in-place masks), with in-place
  ``_foreach_`` Adam as ``torch.optim`` runs it; NumPy and JAX: ``hand`` itself (already
  the leanest we know).
- ``portable_mlp``: ``Trainer.fit`` on the data as the user has it (NumPy arrays),
  the trainer reused across calls so that JAX compiles once, outside the timing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import portable_mlp as pm
from portable_mlp import _backend

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8


@dataclass(frozen=True)
class FitConfig:
    name: str
    sizes: tuple[int, ...]
    activation: str   # hidden layers: "sigmoid" or "relu"
    loss: str         # "mse" (sigmoid output) or "cross_entropy" (logits)
    optimizer: str    # "sgd" or "adam"
    lr: float
    batch: int | None  # None: full batch
    bias: bool
    epochs: int       # per timed call
    dtype: str = "float64"

    @property
    def output(self) -> str:
        return "sigmoid" if self.loss == "mse" else "identity"


FIT_CONFIGS: dict[str, FitConfig] = {c.name: c for c in (
    # the scratch_mlp article's XOR, widened to 10 hidden units: 300 points, full batch
    FitConfig("xor", (2, 10, 2), "sigmoid", "mse", "sgd", 1.0, None, False, 1000),
    # scikit-learn's digits (1,797 x 64, scaled /16)
    FitConfig("digits", (64, 100, 10), "relu", "cross_entropy", "adam", 1e-3, 200, True, 20,
              "float32"),
    # MNIST-sized rows (784 features, 10 classes), random, 8,192 of them; 3 epochs a call,
    # so that fit's per-call setup (checking, casting and placing 25 MB) counts as a user's
    # longer fit would count it, not once per epoch
    FitConfig("mnist", (784, 512, 10), "relu", "cross_entropy", "adam", 1e-3, 256, True, 3,
              "float32"),
)}


def fit_data(config: FitConfig) -> tuple[np.ndarray, np.ndarray]:
    """Host features and one-hot targets of ``config`` (float64; cast where placed)."""
    if config.name == "xor":
        X, y = pm.datasets.xor(n=300, seed=0)
    elif config.name == "digits":
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        X = X / 16.0
    else:
        rng = np.random.default_rng(0)
        X, y = rng.random((8192, 784)), rng.integers(0, 10, 8192)
    return np.asarray(X, dtype=np.float64), np.asarray(pm.one_hot(y, config.sizes[-1]))


@dataclass
class FitWorkload:
    hand: Callable[[], tuple[float, float]]
    portable_mlp: Callable[[], tuple[float, float]]
    sync: Callable[[], None]
    info: dict[str, Any]
    lean: Callable[[], tuple[float, float]] | None = None  # None: ``hand`` is the leanest


def build(backend: str, config: FitConfig) -> FitWorkload:
    X, Y = fit_data(config)
    model = pm.MLP(list(config.sizes), activation=config.activation, output=config.output,
                   bias=config.bias, seed=0, backend=backend, dtype=config.dtype)
    optimizer = (pm.SGD(lr=config.lr) if config.optimizer == "sgd"
                 else pm.Adam(lr=config.lr, beta1=BETA1, beta2=BETA2, eps=EPS))
    trainer = pm.Trainer(model, loss=config.loss, optimizer=optimizer)
    host = [np.asarray(p, dtype=config.dtype) for p in model.host_params()]
    hand_loop = {"numpy": _numpy_loop, "torch": _torch_loop, "jax": _jax_loop}[backend]
    hand, sync = hand_loop(config, host, X.astype(config.dtype), Y.astype(config.dtype))
    lean = (_torch_lean_loop(config, host, X.astype(config.dtype), Y.astype(config.dtype))
            if backend == "torch" else None)

    def ours() -> tuple[float, float]:
        history = trainer.fit(X, Y, epochs=config.epochs, batch_size=config.batch, seed=1,
                              progress=False)
        return history["loss"][-1], history["accuracy"][-1]

    return FitWorkload(hand, ours, sync, {"compiled": trainer.compiled}, lean)


# --- NumPy: the scratch_mlp article's style --------------------------------------------------

def _numpy_loop(config: FitConfig, host: list[np.ndarray], X: np.ndarray, Y: np.ndarray
                ) -> tuple[Callable[[], tuple[float, float]], Callable[[], None]]:
    params = [p.copy() for p in host]
    moments = [[np.zeros_like(p), np.zeros_like(p)] for p in params]
    step = [0]
    rng = np.random.default_rng(1)
    stride = 2 if config.bias else 1

    def train_batch(xb: np.ndarray, yb: np.ndarray) -> tuple[float, float]:
        acts, a = [xb], xb
        for i in range(0, len(params), stride):
            z = a @ params[i] + (params[i + 1] if config.bias else 0.0)
            last = i + stride >= len(params)
            if last and config.loss == "cross_entropy":
                a = z
            elif config.activation == "relu" and not last:
                a = np.maximum(z, 0.0)
            else:
                a = 1.0 / (1.0 + np.exp(-z))
            acts.append(a)
        n = len(xb)
        if config.loss == "mse":
            loss = float(np.sum((a - yb) ** 2)) / (2 * n)
            delta = (a - yb) * a * (1.0 - a) / n
        else:
            shifted = a - a.max(axis=1, keepdims=True)
            log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            loss = -float(np.sum(yb * log_p)) / n
            delta = (np.exp(log_p) - yb) / n
        hits = float(np.sum(a.argmax(axis=1) == yb.argmax(axis=1)))
        grads: list[np.ndarray] = [None] * len(params)  # type: ignore[list-item]
        for layer in range(len(params) // stride - 1, -1, -1):
            i = layer * stride
            grads[i] = acts[layer].T @ delta
            if config.bias:
                grads[i + 1] = delta.sum(axis=0)
            if layer:
                back = delta @ params[i].T
                h = acts[layer]
                delta = back * (h > 0) if config.activation == "relu" else back * h * (1.0 - h)
        _numpy_update(config, params, grads, moments, step)
        return loss * n, hits

    def run() -> tuple[float, float]:
        return _epochs(config, len(X), rng, lambda idx: train_batch(X[idx], Y[idx]))

    return run, lambda: None


def _numpy_update(config: FitConfig, params: list[np.ndarray], grads: list[np.ndarray],
                  moments: list[list[np.ndarray]], step: list[int]) -> None:
    step[0] += 1
    t = step[0]
    for p, g, (m, v) in zip(params, grads, moments):
        if config.optimizer == "sgd":
            p -= config.lr * g
            continue
        m *= BETA1
        m += (1 - BETA1) * g
        v *= BETA2
        v += (1 - BETA2) * g * g
        p -= (config.lr * math.sqrt(1 - BETA2 ** t) / (1 - BETA1 ** t)) * m / (np.sqrt(v) + EPS)


def _epochs(config: FitConfig, n: int, rng: np.random.Generator,
            batch: Callable[[Any], tuple[Any, Any]]) -> tuple[float, float]:
    """``config.epochs`` epochs of ``batch(rows)`` (a full batch: ``batch(slice(None))``),
    which trains on the rows and returns its summed loss and hits: the last epoch's mean
    loss and accuracy, summed on the device and read once per epoch."""
    for _ in range(config.epochs):
        if config.batch is None or config.batch >= n:
            loss_sum, hit_sum = batch(slice(None))
        else:
            order = rng.permutation(n)
            loss_sum = hit_sum = 0.0
            for start in range(0, n, config.batch):
                loss, hits = batch(order[start:start + config.batch])
                loss_sum, hit_sum = loss_sum + loss, hit_sum + hits
        epoch = (float(loss_sum) / n, float(hit_sum) / n)
    return epoch


# --- torch: autograd and torch.optim ------------------------------------------

def _torch_loop(config: FitConfig, host: list[np.ndarray], X: np.ndarray, Y: np.ndarray
                ) -> tuple[Callable[[], tuple[float, float]], Callable[[], None]]:
    import torch

    params = [torch.tensor(p, requires_grad=True) for p in host]
    opt = (torch.optim.SGD(params, lr=config.lr) if config.optimizer == "sgd" else
           torch.optim.Adam(params, lr=config.lr, betas=(BETA1, BETA2), eps=EPS, foreach=True))
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    rng = np.random.default_rng(1)
    stride = 2 if config.bias else 1
    act = torch.relu if config.activation == "relu" else torch.sigmoid

    def train_batch(xb: Any, yb: Any) -> tuple[Any, Any]:
        a = xb
        for i in range(0, len(params), stride):
            z = a @ params[i] + params[i + 1] if config.bias else a @ params[i]
            last = i + stride >= len(params)
            a = z if last and config.loss == "cross_entropy" else (
                torch.sigmoid(z) if last else act(z))
        n = len(xb)
        if config.loss == "mse":
            loss = ((a - yb) ** 2).sum() / (2 * n)
        else:
            loss = -(yb * torch.log_softmax(a, dim=1)).sum() / n
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            hits = (a.argmax(dim=1) == yb.argmax(dim=1)).sum()
        return loss.detach() * n, hits

    def batch(rows: Any) -> tuple[Any, Any]:
        rows = rows if isinstance(rows, slice) else torch.from_numpy(rows)
        return train_batch(Xt[rows], Yt[rows])

    def run() -> tuple[float, float]:
        return _epochs(config, len(X), rng, batch)

    return run, lambda: None


# --- torch, lean: the NumPy loop's manual chain rule, in-place foreach Adam ----------

def _torch_lean_loop(config: FitConfig, host: list[np.ndarray], X: np.ndarray, Y: np.ndarray
                     ) -> Callable[[], tuple[float, float]]:
    import torch

    params = [torch.tensor(p) for p in host]
    weights, biases = params[::2] if config.bias else params, params[1::2]
    moments = [torch.zeros_like(p) for p in params], [torch.zeros_like(p) for p in params]
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    rng, step = np.random.default_rng(1), [0]
    relu = config.activation == "relu"

    def train_batch(xb: Any, yb: Any) -> tuple[Any, Any]:
        acts, a = [xb], xb
        for i, W in enumerate(weights):
            last = i == len(weights) - 1
            a = torch.addmm(biases[i], a, W) if config.bias else a @ W
            if not (last and config.loss == "cross_entropy"):
                a = torch.relu(a) if relu and not last else torch.sigmoid(a)
            acts.append(a)
        n = xb.shape[0]
        if config.loss == "mse":
            diff = a - yb
            loss = (diff * diff).sum() / (2 * n)
            delta = diff.mul_(a).mul_(1.0 - a).div_(n)
        else:
            log_p = torch.log_softmax(a, dim=1)
            loss = -(yb * log_p).sum() / n
            delta = log_p.exp_().sub_(yb).div_(n)
        hits = (a.argmax(dim=1) == yb.argmax(dim=1)).sum()
        grads: list[Any] = []
        for i in range(len(weights) - 1, -1, -1):
            grads[:0] = [acts[i].T @ delta, delta.sum(dim=0)] if config.bias else [
                acts[i].T @ delta]
            if i:
                back, h = delta @ weights[i].T, acts[i]
                delta = back.masked_fill_(h <= 0, 0.0) if relu else back.mul_(h).mul_(1.0 - h)
        _torch_update(config, params, grads, moments, step)
        return loss * n, hits

    def batch(rows: Any) -> tuple[Any, Any]:
        rows = rows if isinstance(rows, slice) else torch.from_numpy(rows)
        return train_batch(Xt[rows], Yt[rows])

    def run() -> tuple[float, float]:
        return _epochs(config, len(X), rng, batch)

    return run


def _torch_update(config: FitConfig, params: list[Any], grads: list[Any],
                  moments: tuple[list[Any], list[Any]], step: list[int]) -> None:
    """SGD, or Adam as ``torch.optim.Adam(foreach=True)`` runs it, in place."""
    import torch

    step[0] += 1
    t = step[0]
    if config.optimizer == "sgd":
        torch._foreach_add_(params, grads, alpha=-config.lr)
        return
    ms, vs = moments
    torch._foreach_lerp_(ms, grads, 1 - BETA1)
    torch._foreach_mul_(vs, BETA2)
    torch._foreach_addcmul_(vs, grads, grads, value=1 - BETA2)
    denominators = torch._foreach_sqrt(vs)
    torch._foreach_add_(denominators, EPS)
    rate = config.lr * math.sqrt(1 - BETA2 ** t) / (1 - BETA1 ** t)
    torch._foreach_addcdiv_(params, ms, denominators, value=-rate)


# --- JAX: a jitted step per batch, Adam as optax writes it --------------------

def _jax_loop(config: FitConfig, host: list[np.ndarray], X: np.ndarray, Y: np.ndarray
              ) -> tuple[Callable[[], tuple[float, float]], Callable[[], None]]:
    import jax
    import jax.numpy as jnp

    stride = 2 if config.bias else 1
    act = jax.nn.relu if config.activation == "relu" else jax.nn.sigmoid

    def loss_fn(params: list[Any], xb: Any, yb: Any) -> tuple[Any, Any]:
        a = xb
        for i in range(0, len(params), stride):
            z = a @ params[i] + params[i + 1] if config.bias else a @ params[i]
            last = i + stride >= len(params)
            a = z if last and config.loss == "cross_entropy" else (
                jax.nn.sigmoid(z) if last else act(z))
        n = xb.shape[0]
        if config.loss == "mse":
            loss = jnp.sum((a - yb) ** 2) / (2 * n)
        else:
            loss = -jnp.sum(yb * jax.nn.log_softmax(a, axis=1)) / n
        hits = jnp.sum(jnp.argmax(a, axis=1) == jnp.argmax(yb, axis=1))
        return loss, hits

    @jax.jit
    def step(params: list[Any], opt: Any, xb: Any, yb: Any) -> Any:
        (loss, hits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, xb, yb)
        params, opt = _jax_update(config, params, grads, opt)
        return params, opt, loss * xb.shape[0], hits

    @jax.jit
    def gathered_step(params: list[Any], opt: Any, Xd: Any, Yd: Any, rows: Any) -> Any:
        return step(params, opt, Xd[rows], Yd[rows])

    params = [jnp.asarray(p) for p in host]
    opt = (jnp.asarray(0), [jnp.zeros_like(p) for p in params],
           [jnp.zeros_like(p) for p in params])
    Xd, Yd = jnp.asarray(X), jnp.asarray(Y)
    state = {"params": params, "opt": opt}
    rng = np.random.default_rng(1)

    def batch(rows: Any) -> tuple[Any, Any]:
        if isinstance(rows, slice):  # the full batch: no gather
            out = step(state["params"], state["opt"], Xd, Yd)
        else:
            out = gathered_step(state["params"], state["opt"], Xd, Yd, rows)
        state["params"], state["opt"] = out[0], out[1]
        return out[2], out[3]

    def run() -> tuple[float, float]:
        return _epochs(config, len(X), rng, batch)

    return run, lambda: jax.block_until_ready(state["params"])


def _jax_update(config: FitConfig, params: list[Any], grads: list[Any], opt: Any) -> Any:
    import jax.numpy as jnp

    if config.optimizer == "sgd":
        return [p - config.lr * g for p, g in zip(params, grads)], opt
    count, mu, nu = opt
    count = count + 1
    mu = [BETA1 * m + (1 - BETA1) * g for m, g in zip(mu, grads)]
    nu = [BETA2 * v + (1 - BETA2) * g * g for v, g in zip(nu, grads)]
    scale = config.lr * jnp.sqrt(1 - BETA2 ** count) / (1 - BETA1 ** count)
    params = [p - scale * m / (jnp.sqrt(v) + EPS) for p, m, v in zip(params, mu, nu)]
    return params, (count, mu, nu)


def available(backend: str) -> str | None:
    """Why ``backend`` cannot run here, or None."""
    try:
        _backend.namespace(backend)
    except _backend.BackendUnavailable as exc:
        return str(exc)
    return None
