"""What the benchmarks time: configurations, and per backend three steps side by side.

For one backend and one configuration, ``build(backend, config)`` returns a
``Workload`` holding three callables, each doing ONE training step's worth of work:

- ``floor``: the step's own matmuls alone (forward ``a @ W``, backward ``a.T @ d``
  and ``d @ W.T``), on operands of the step's shapes: what no step can beat;
- ``hand``: a hand-written step in the backend's own API, written the way the scratch_mlp article
  writes NumPy (sigmoid forward, MSE delta, chain rule from cached activations,
  ``W -= lr * g``);
- ``portable_mlp``: ``Trainer.step`` (or, on ``jax-jit``, ``jax.jit`` of the pure
  ``portable_mlp.train_step``).

The network is the scratch_mlp article's, scaled: Linear layers without bias, sigmoid hidden and
output layers, MSE, plain SGD. ``time_steps`` runs K steps and synchronizes once
(JAX, CuPy, torch CUDA queue work asynchronously), so the figure is per step.
"""

from __future__ import annotations

import functools
import itertools
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import portable_mlp as pm
from portable_mlp import _backend

VARIANTS = ("floor", "hand", "portable_mlp")


@dataclass(frozen=True)
class Config:
    name: str
    sizes: tuple[int, ...]
    batch: int
    dtype: str
    lr: float = 0.1
    gpu_only: bool = False

    @property
    def matmul_shapes(self) -> list[tuple[int, int, int]]:
        """(m, k, n) of each matmul of one step: forward, weight grads, input grads."""
        n = self.batch
        pairs = list(itertools.pairwise(self.sizes))
        fwd = [(n, a, b) for a, b in pairs]
        dw = [(a, n, b) for a, b in pairs]
        dx = [(n, b, a) for a, b in pairs[1:]]
        return fwd + dw + dx

    @property
    def flops(self) -> int:
        """2*m*n*k summed over the step's matmuls."""
        return sum(2 * m * k * n for m, k, n in self.matmul_shapes)


CONFIGS: dict[str, Config] = {c.name: c for c in (
    Config("xor", (2, 3, 2), 300, "float64", lr=0.5),
    Config("mnist", (784, 512, 512, 10), 512, "float32"),
    Config("wide", (1024, 1024, 1024, 1024), 1024, "float32"),
    Config("deep", (256,) * 10, 256, "float32"),
    Config("wide4096", (4096, 4096, 4096, 4096), 4096, "float32", gpu_only=True),
)}
CPU_CONFIGS = [name for name, c in CONFIGS.items() if not c.gpu_only]

# backend row -> (portable_mlp backend name, device)
BACKEND_ROWS: dict[str, tuple[str, str | None]] = {
    "numpy": ("numpy", None),
    "torch": ("torch", "cpu"),
    "jax": ("jax", None),
    "jax-jit": ("jax", None),
    "array_api_strict": ("array_api_strict", None),
    "dask": ("dask", None),
    "cupy": ("cupy", None),
    "torch-cuda": ("torch", "cuda:0"),
    "torch-cuda-tf32": ("torch", "cuda:0"),   # TF32 allowed: its own, labelled row
}
# Slow backends: only the article's size is worth timing there.
XOR_ONLY = {"array_api_strict", "dask"}
GPU_ROWS = {"cupy", "torch-cuda", "torch-cuda-tf32"}


class UnavailableError(Exception):
    """This backend row cannot run here (the reason is the message)."""


@dataclass
class Workload:
    backend: str
    config: Config
    steps: dict[str, Callable[[], Any]]
    sync: Callable[[Any], None]
    keep_outputs: bool                       # async backends: sync on every call's outputs
    info: dict[str, Any] = field(default_factory=dict)
    compile_s: dict[str, float] = field(default_factory=dict)
    prepare: Callable[[], None] = lambda: None  # set global matmul-precision flags


def data(config: Config, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((config.batch, config.sizes[0]))
    labels = rng.integers(0, config.sizes[-1], config.batch)
    Y = np.zeros((config.batch, config.sizes[-1]))
    Y[np.arange(config.batch), labels] = 1.0
    return X, Y


def model(config: Config, backend: str, device: str | None) -> pm.Sequential:
    return pm.MLP(list(config.sizes), activation="sigmoid", output="sigmoid", bias=False,
                  seed=2017, backend=backend, device=device, dtype=config.dtype)


def availability(row: str, config: Config) -> str | None:
    """Why this row cannot run here, or None."""
    name, device = BACKEND_ROWS[row]
    if row in XOR_ONLY and config.name != "xor":
        return f"{row} is timed on xor only (too slow to be informative at this size)"
    try:
        _backend.namespace(name)
    except _backend.BackendUnavailable as exc:
        return str(exc)
    gpu = row in GPU_ROWS or (name == "jax" and _jax_gpu())
    if row in GPU_ROWS:
        try:
            _backend.resolve_device(name, device if device else None)
            if name == "cupy":
                import cupy

                if cupy.cuda.runtime.getDeviceCount() < 1:
                    return "no GPU"
        except Exception as exc:  # any failure means: no usable GPU
            return f"no usable GPU ({type(exc).__name__}: {exc})"
    if config.gpu_only and not gpu:
        return f"{config.name} is a GPU configuration"
    if config.dtype == "float64" and name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    return None


def _jax_gpu() -> bool:
    try:
        import jax

        return jax.default_backend() == "gpu"
    except ImportError:
        return False


def build(row: str, config: Config) -> Workload:
    why = availability(row, config)
    if why:
        raise UnavailableError(why)
    builder = {"numpy": _numpy, "torch": _torch, "torch-cuda": _torch,
               "torch-cuda-tf32": _torch, "jax": _jax,
               "jax-jit": _jax, "cupy": _cupy, "array_api_strict": _generic,
               "dask": _generic}[row]
    work = builder(row, config)
    work.info.update(_common_info(row, config))
    return work


def time_steps(work: Workload, variant: str, k: int) -> float:
    """Seconds per step over ``k`` steps, synchronized once at the end."""
    work.prepare()
    fn, sync = work.steps[variant], work.sync
    if work.keep_outputs:
        start = time.perf_counter()
        outs = [fn() for _ in range(k)]
        sync(outs)
        return (time.perf_counter() - start) / k
    start = time.perf_counter()
    for _ in range(k):
        out = fn()
    sync(out)
    return (time.perf_counter() - start) / k


def steps_for(config: Config, target_s: float, per_step_guess: float) -> int:
    return max(3, int(target_s / max(per_step_guess, 1e-7)))


# --- shared pieces ------------------------------------------------------------

def _common_info(row: str, config: Config) -> dict[str, Any]:
    import array_api_compat

    return {
        "backend": row, "config": config.name, "sizes": list(config.sizes),
        "batch": config.batch, "dtype": config.dtype, "gflop_per_step": config.flops / 1e9,
        "versions": {"python": platform.python_version(), "numpy": np.__version__,
                     "array_api_compat": array_api_compat.__version__,
                     "portable_mlp": pm.__version__, **_lib_version(row)},
        "cpu_count": os.cpu_count(),
    }


def _lib_version(row: str) -> dict[str, str]:
    name = BACKEND_ROWS[row][0]
    if name == "numpy":
        return {}
    module = __import__({"dask": "dask"}.get(name, name))
    return {name: getattr(module, "__version__", "?")}


def _trainer(config: Config, name: str, device: str | None) -> tuple[pm.Trainer, Any, Any]:
    m = model(config, name, device)
    X, Y = data(config)
    Xd, Yd = m.placement.from_host(X), m.placement.from_host(Y)
    trainer = pm.Trainer(m, loss="mse", optimizer=pm.SGD(lr=config.lr))
    return trainer, Xd, Yd


def _floor_operands(config: Config, to: Callable[[np.ndarray], Any]
                    ) -> tuple[list[Any], list[Any], list[Any]]:
    """Activations in the sigmoid's range, small deltas and weights of the step's shapes."""
    rng = np.random.default_rng(1)
    n, sizes = config.batch, config.sizes
    acts = [to(rng.uniform(0.0, 1.0, (n, s))) for s in sizes[:-1]]
    deltas = [to(rng.uniform(-0.01, 0.01, (n, s))) for s in sizes[1:]]
    ws = [to(rng.uniform(-0.1, 0.1, (a, b))) for a, b in itertools.pairwise(sizes)]
    return acts, deltas, ws


def floor_matmuls(acts: list[Any], deltas: list[Any], ws: list[Any]) -> list[Any]:
    """The step's matmuls, with its memory layouts: ``a @ W``, ``a.T @ d``, ``d @ W.T``."""
    out = [a @ w for a, w in zip(acts, ws, strict=True)]
    out += [a.T @ d for a, d in zip(acts, deltas, strict=True)]
    out += [d @ w.T for d, w in zip(deltas[1:], ws[1:], strict=True)]
    return out


def _transposed_floor(config: Config, to: Callable[[np.ndarray], Any]
                      ) -> Callable[[], list[Any]]:
    operands = _floor_operands(config, to)
    return lambda: floor_matmuls(*operands)


# --- NumPy ----------------------------------------------------------------------

def seed_style_step(np_like: Any, ws: list[Any], X: Any, Y: Any, lr: float, n: int,
                    sigmoid: Callable[[Any], Any] | None = None) -> Any:
    """One training step the way the scratch_mlp article writes NumPy (CuPy shares NumPy's API, and
    the standard's namespaces serve for array-api-strict and dask):
    sigmoid layers, the MSE delta, the chain rule from cached activations, in-place
    ``W -= lr * g``. ``sigmoid``: the library's own, where it has one (torch).
    Returns the loss."""
    acts = [X]
    for w in ws:
        z = acts[-1] @ w  # the expression inline: no extra call on the NumPy baseline
        acts.append(1.0 / (1.0 + np_like.exp(-z)) if sigmoid is None else sigmoid(z))
    out = acts[-1]
    loss = np_like.sum((out - Y) ** 2) / (2.0 * n)
    delta = (out - Y) * out * (1.0 - out) / n
    for i in range(len(ws) - 1, -1, -1):
        g = acts[i].T @ delta
        if i:
            delta = (delta @ ws[i].T) * acts[i] * (1.0 - acts[i])
        ws[i] -= lr * g
    return loss


def _numpy(row: str, config: Config) -> Workload:
    trainer, Xd, Yd = _trainer(config, "numpy", None)
    dtype = np.dtype(config.dtype)
    X, Y = Xd.copy(), Yd.copy()
    ws = [p.copy() for p in trainer.model.params]
    lr, n = config.lr, config.batch

    def hand() -> Any:
        return seed_style_step(np, ws, X, Y, lr, n)

    floor = _transposed_floor(config, lambda a: np.asarray(a, dtype=dtype))
    return Workload(row, config, {"floor": floor, "hand": hand,
                                  "portable_mlp": lambda: trainer.step(Xd, Yd)},
                    sync=lambda out: None, keep_outputs=False,
                    info={"device": "cpu", "matmul_precision": f"{config.dtype} (BLAS, full)",
                          "blas": _numpy_blas()})


def _numpy_blas() -> str:
    try:
        cfg = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{cfg.get('name')} {cfg.get('version')}"
    except Exception:
        return "unknown"


# --- torch -----------------------------------------------------------------------

def _torch(row: str, config: Config) -> Workload:
    import torch

    device = BACKEND_ROWS[row][1]
    trainer, Xd, Yd = _trainer(config, "torch", device)
    X, Y = Xd.clone(), Yd.clone()
    ws = [p.clone() for p in trainer.model.params]
    lr, n = config.lr, config.batch

    def hand() -> Any:
        return seed_style_step(torch, ws, X, Y, lr, n, sigmoid=torch.sigmoid)

    dtype = getattr(torch, config.dtype)
    floor = _transposed_floor(config, lambda a: torch.as_tensor(a, dtype=dtype, device=device))
    cuda = device != "cpu"
    tf32 = row.endswith("tf32")

    def prepare() -> None:
        if cuda:  # full float32 unless this is the labelled TF32 row
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32

    prepare()
    precision = f"{config.dtype}; float32_matmul_precision={torch.get_float32_matmul_precision()}"
    if cuda:
        precision += f"; cuda.matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}"
    return Workload(row, config, {"floor": floor, "hand": hand,
                                  "portable_mlp": lambda: trainer.step(Xd, Yd)},
                    sync=(lambda out: torch.cuda.synchronize()) if cuda else (lambda out: None),
                    keep_outputs=False, prepare=prepare,
                    info={"device": device, "matmul_precision": precision,
                          "torch_threads": torch.get_num_threads()})


# --- JAX ---------------------------------------------------------------------------

def _jax(row: str, config: Config) -> Workload:
    import jax
    import jax.numpy as jnp

    jit = row == "jax-jit"
    if jax.default_backend() == "gpu":  # full float32 matmuls (the GPU default is lower)
        jax.config.update("jax_default_matmul_precision", "highest")
    trainer, Xd, Yd = _trainer(config, "jax", None)
    model_ = trainer.model
    lr, n = config.lr, config.batch

    def hand_step(ws: list[Any], X: Any, Y: Any) -> tuple[list[Any], Any]:
        acts = [X]
        for w in ws:
            acts.append(jax.nn.sigmoid(acts[-1] @ w))
        out = acts[-1]
        loss = jnp.sum((out - Y) ** 2) / (2.0 * n)
        delta = (out - Y) * out * (1.0 - out) / n
        new = list(ws)
        for i in range(len(ws) - 1, -1, -1):
            g = acts[i].T @ delta
            if i:
                delta = (delta @ ws[i].T) * acts[i] * (1.0 - acts[i])
            new[i] = ws[i] - lr * g
        return new, loss

    operands = _floor_operands(config, lambda a: jnp.asarray(a, dtype=config.dtype))
    floor_fn = _transposed_floor(config, lambda a: jnp.asarray(a, dtype=config.dtype))
    hand_state = {"ws": list(model_.params)}
    info: dict[str, Any] = {"device": str(jax.devices()[0]),
                            "matmul_precision": f"{config.dtype}; jax_default_matmul_precision="
                                                f"{jax.config.jax_default_matmul_precision}",
                            "jit": jit}
    compile_s: dict[str, float] = {}

    if not jit:
        def hand() -> Any:
            hand_state["ws"], loss = hand_step(hand_state["ws"], Xd, Yd)
            return hand_state["ws"], loss

        steps = {"floor": floor_fn, "hand": hand,
                 "portable_mlp": lambda: (trainer.step(Xd, Yd), trainer.model.params)}
    else:
        opt = trainer.optimizer
        jpm = jax.jit(functools.partial(pm.train_step, model_, optimizer=opt))

        # operands are arguments, never closure constants: XLA would fold them at compile time
        jfloor, jhand = jax.jit(floor_matmuls), jax.jit(hand_step)
        pm_state = {"ws": list(model_.params), "opt": opt.init_state(model_.xp, model_.params)}
        pm_state["opt"]["step"] = jnp.asarray(0)  # as every later call passes it: one trace
        for name, fn, args in (("floor", jfloor, operands),
                               ("hand", jhand, (hand_state["ws"], Xd, Yd)),
                               ("portable_mlp", jpm, (pm_state["ws"], pm_state["opt"], Xd, Yd))):
            start = time.perf_counter()
            jax.block_until_ready(fn.lower(*args).compile()(*args))
            compile_s[name] = time.perf_counter() - start

        def hand() -> Any:
            hand_state["ws"], loss = jhand(hand_state["ws"], Xd, Yd)
            return hand_state["ws"], loss

        def pm_jit() -> Any:
            pm_state["ws"], pm_state["opt"], loss, _ = jpm(pm_state["ws"], pm_state["opt"], Xd, Yd)
            return pm_state["ws"], loss

        steps = {"floor": lambda: jfloor(*operands), "hand": hand, "portable_mlp": pm_jit}
        info["compile_note"] = "compile_s: lower+compile+first run, excluded from step times"
    return Workload(row, config, steps, sync=jax.block_until_ready, keep_outputs=True,
                    info=info, compile_s=compile_s)


# --- CuPy --------------------------------------------------------------------------

def _cupy(row: str, config: Config) -> Workload:
    import cupy

    trainer, Xd, Yd = _trainer(config, "cupy", None)
    X, Y = Xd.copy(), Yd.copy()
    ws = [p.copy() for p in trainer.model.params]
    lr, n = config.lr, config.batch

    def hand() -> Any:
        return seed_style_step(cupy, ws, X, Y, lr, n)

    floor = _transposed_floor(config, lambda a: cupy.asarray(a, dtype=config.dtype))
    stream = cupy.cuda.get_current_stream()
    return Workload(row, config, {"floor": floor, "hand": hand,
                                  "portable_mlp": lambda: trainer.step(Xd, Yd)},
                    sync=lambda out: stream.synchronize(), keep_outputs=False,
                    info={"device": "cuda:0", "matmul_precision":
                          f"{config.dtype}; CUPY_TF32={os.environ.get('CUPY_TF32', '0')}"})


# --- array-api-strict, dask: through the standard namespace ------------------------

def _generic(row: str, config: Config) -> Workload:
    """Backends without an API of their own here: the hand step is written on ``xp``."""
    trainer, Xd, Yd = _trainer(config, row, None)
    xp = trainer.model.xp
    ws = [xp.asarray(w, copy=True) for w in trainer.model.params]  # the hand step's own
    lr, n = config.lr, config.batch
    name = row

    def hand() -> Any:
        # on immutable dask arrays, ws[i] -= ... rebinds the list entry
        loss = seed_style_step(xp, ws, Xd, Yd, lr, n)
        ws[:] = _backend.materialize(name, ws)
        return loss

    placement = trainer.model.placement
    floor_ops = _transposed_floor(config, placement.from_host)

    def floor() -> Any:
        return _backend.materialize(name, floor_ops())

    lazy = row == "dask"
    return Workload(row, config, {"floor": floor, "hand": hand,
                                  "portable_mlp": lambda: trainer.step(Xd, Yd)},
                    sync=(lambda out: _backend.synchronize(name, out)) if lazy else
                    (lambda out: None), keep_outputs=lazy,
                    info={"device": "cpu", "matmul_precision": f"{config.dtype} (via NumPy)"})
