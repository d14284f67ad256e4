"""Everything that differs between array libraries lives here, and only here.

The rest of portable_mlp sees an array namespace ``xp`` and the standard's
functions on it. This module turns backend *names* into namespaces, devices and
dtypes (so objects can hold names and still pickle), moves data to and from the
host, and answers the few questions whose answer depends on the library:
is reading a value back to the host free, how to
wait for queued work (timing) and how to keep a lazy graph bounded (dask).

Backends are imported lazily, only when asked for by name.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import operator
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import array_api_compat as compat
import numpy as np

from portable_mlp import _install, rules

Array = Any

BACKENDS = ("numpy", "cupy", "torch", "jax", "dask", "array_api_strict")

# module to import, namespace to use, pip extra that installs it
_MODULES = {
    "numpy": ("numpy", "array_api_compat.numpy", None),
    "cupy": ("cupy", "array_api_compat.cupy", "cuda12 or cuda13"),
    "torch": ("torch", "array_api_compat.torch", "torch"),
    "jax": ("jax", "jax.numpy", "jax"),
    "dask": ("dask.array", "array_api_compat.dask.array", "dask"),
    "array_api_strict": ("array_api_strict", "array_api_strict", "test"),
}

# Backends whose arrays live on the host and compute eagerly: reading a value
# back costs no synchronisation (torch only on its CPU device).
_EAGER_HOST = {"numpy", "array_api_strict"}


class BackendUnavailable(ImportError):  # noqa: N818 - reads as a state, like ImportError
    """A known backend whose library is not installed."""


def check_name(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name (one of {', '.join(BACKENDS)}) "
                        f"or an array namespace, got {type(name).__name__}")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    return name


@functools.cache
def namespace(name: str) -> ModuleType:
    """The standard-compliant namespace of backend ``name`` (imported on first use)."""
    module, ns, _ = _MODULES[check_name(name)]
    try:
        importlib.import_module(module)
        return importlib.import_module(ns)
    except ImportError as exc:
        raise BackendUnavailable(f"backend {name!r} is not installed ({exc}); "
                                 f"try: {install_hint(name)}") from exc


def install_hint(name: str) -> str:
    """The pip command that installs backend ``name`` with portable_mlp."""
    extra = _MODULES[check_name(name)][2]
    if extra is None:
        return "pip install numpy"
    hint = _install.pip_install(*extra.split(" or "))
    if name == "torch":  # the default wheel on Linux is the CUDA build, several GB
        hint += f" (without an NVIDIA GPU, first the CPU build: {_install.CPU_TORCH})"
    return hint


def describe(name: str) -> dict[str, Any]:
    """What ``portable-mlp info`` shows for a backend: whether it is installed (and the pip
    extra that installs it), its version, its devices and its default device and float dtype."""
    module, _, extra = _MODULES[check_name(name)]
    found: dict[str, Any] = {"backend": name, "installed": False, "extra": extra, "version": None,
                             "devices": [], "default_device": None, "default_dtype": None,
                             "problem": None}
    try:
        namespace(name)
    except BackendUnavailable as exc:
        found["problem"] = str(exc)
        return found
    except Exception as exc:  # installed, but fails on import
        found.update(installed=True, problem=f"{type(exc).__name__}: {exc}")
        return found
    found["installed"] = True
    found["version"] = str(getattr(sys.modules[module.split(".")[0]], "__version__", "unknown"))
    try:
        device = resolve_device(name, None)
        # JAX lists None, its uncommitted default placement, beside the real devices
        found["devices"] = [device_spec(d) for d in devices(name) if d is not None]
        found["default_device"] = found["devices"][0] if device is None else device_spec(device)
        found["default_dtype"] = dtype_name(resolve_dtype(name, device, None))
    except Exception as exc:  # imports, but cannot reach a device (CuPy without a usable GPU)
        found["problem"] = f"{type(exc).__name__}: {exc}"
    return found


def name_of_namespace(xp: Any) -> str:
    """The backend name of an array namespace (compat wrapper or library module)."""
    checks = (
        ("numpy", compat.is_numpy_namespace),
        ("cupy", compat.is_cupy_namespace),
        ("torch", compat.is_torch_namespace),
        ("jax", compat.is_jax_namespace),
        ("dask", compat.is_dask_namespace),
        ("array_api_strict", compat.is_array_api_strict_namespace),
    )
    for name, is_it in checks:
        if is_it(xp):
            return name
    raise TypeError(f"unsupported array namespace {xp!r}; expected one of {', '.join(BACKENDS)}")


def device_of(x: Any) -> str:
    """The spec of the device array ``x`` lives on (dask arrays: "cpu", this module's one
    dask device, whatever their chunks are)."""
    if compat.is_dask_array(x):
        return "cpu"
    return device_spec(compat.device(x))


def backend_name(backend: Any) -> str:
    """Accept a backend name or a namespace (a module); return the name."""
    if isinstance(backend, str):
        return check_name(backend)
    if not isinstance(backend, ModuleType):
        raise TypeError(f"backend must be a name (one of {', '.join(BACKENDS)}) or an array "
                        f"namespace (a module such as numpy), got {type(backend).__name__} "
                        f"{backend!r}"[:300])
    return name_of_namespace(backend)


def array_backend(x: Any) -> str | None:
    """The backend name an array belongs to, or None if it is not an array we know."""
    if isinstance(x, np.ndarray):
        return "numpy"
    try:
        return name_of_namespace(compat.array_namespace(x))
    except TypeError:
        return None


@dataclass(frozen=True)
class Ops:
    """The namespace and the few operations a training step calls most, resolved once.

    Each computes the standard's math; where the library has a faster spelling of it,
    that one is used, as array-api-extra delegates to a library's own function where one
    exists. NumPy: ``ndarray.dot`` on small products skips ``matmul``'s ufunc dispatch
    (about 0.6 us a call, a third of a matmul on the scratch_mlp article's tiny arrays), the sigmoid
    runs in one buffer, ``np.vdot`` sums squares without a reshape. PyTorch and JAX:
    their fused sigmoid (one pass, not the expression's four; one dispatch on JAX).
    CuPy: the sigmoid, its backward and the optimizers' rules as one kernel each.
    """

    xp: Any
    matmul: Callable[[Any, Any], Any]      # 2-D @ 2-D (what the pieces need; no batching)
    sigmoid: Callable[[Any], Any]          # 1 / (1 + exp(-x))
    sum_of_squares: Callable[[Any], Any]   # sum(a**2) over all of ``a``: 0-d (NumPy: a scalar)
    # dy * y * (1 - y), the sigmoid's backward from its output y (may reuse dy's buffer)
    sigmoid_backward: Callable[[Any, Any], Any]
    # the optimizers' rules (``portable_mlp.rules``): new arrays, the gradient consumed
    sgd: Callable[..., Any]                       # (p, g, lr) -> p
    sgd_momentum: Callable[..., tuple[Any, Any]]  # (p, g, v, lr, momentum, nesterov) -> p, v
    adam: Callable[..., tuple[Any, Any, Any]]     # (p, g, m, v, b1, b2, eps, step) -> p, m, v
    adamw: Callable[..., tuple[Any, Any, Any]]    # adam's arguments, then decay -> p, m, v


@functools.cache
def ops(name: str) -> Ops:
    """The ``Ops`` of backend ``name``."""
    xp = namespace(name)
    adam = functools.partial(rules.adam, xp)
    adamw = functools.partial(rules.adamw, xp)
    if name == "numpy":
        return Ops(xp, _numpy_matmul, _numpy_sigmoid, _numpy_sum_of_squares,
                   _standard_sigmoid_backward, rules.sgd, rules.sgd_momentum, adam, adamw)
    flat: Callable[[Any], Any] = operator.methodcaller("reshape", -1)
    if name == "array_api_strict":  # its arrays have no reshape method
        flat = functools.partial(xp.reshape, shape=(-1,))
    sigmoid: Callable[[Any], Any] = functools.partial(_standard_sigmoid, xp)
    if name == "cupy":
        return _cupy_ops(xp, flat)
    if name == "torch":
        import torch

        sigmoid = torch.sigmoid
    elif name == "jax":
        import jax

        sigmoid = jax.nn.sigmoid
    elif name == "dask":
        sigmoid = _dask_sigmoid
    return Ops(xp, operator.matmul, sigmoid, functools.partial(_flat_dot, flat),
               _standard_sigmoid_backward, rules.sgd, rules.sgd_momentum, adam, adamw)


@functools.cache
def ops_of(xp: Any) -> Ops:
    """The ``Ops`` of an array namespace (what an optimizer's ``update`` is given)."""
    return ops(name_of_namespace(xp))


def _standard_sigmoid(xp: Any, x: Any) -> Any:
    return 1.0 / (xp.exp(-x) + 1.0)


def _standard_sigmoid_backward(y: Any, dy: Any) -> Any:
    """In place where arrays are writable (augmented assignment rebinds elsewhere)."""
    dy *= y
    dy -= dy * y
    return dy


def _cupy_ops(xp: Any, flat: Callable[[Any], Any]) -> Ops:
    """CuPy: the sigmoid, its backward and the optimizers' rules as one fused elementwise
    kernel each, the same math as the standard's expressions (``portable_mlp.rules``),
    which launch three to eight kernels each, 18-24 us apiece on small arrays."""
    import cupy

    def kernel(inputs: str, outputs: str, body: str, name: str) -> Any:
        return cupy.ElementwiseKernel(inputs, outputs, body, f"pm_{name}")

    forward = kernel("T x", "T y", "y = 1 / (1 + exp(-x))", "sigmoid")
    backward = kernel("T y", "T dy", "dy = dy * y * (1 - y)", "sigmoid_backward")
    sgd = kernel("T p, T g, T lr", "T p_new", "p_new = p - lr * g", "sgd")
    momentum = kernel("T p, T g, T v, T lr, T mu", "T p_new, T v_new",
                      "v_new = mu * v - lr * g; p_new = p + v_new", "sgd_momentum")
    nesterov = kernel("T p, T g, T v, T lr, T mu", "T p_new, T v_new",
                      "v_new = mu * v - lr * g; p_new = p + mu * v_new - lr * g",
                      "sgd_nesterov")
    # 1 - beta as arguments: computed in double on the host and rounded once to T, as
    # the standard's expression rounds the Python float it multiplies by
    adam_kernel = kernel("T p, T g, T m, T v, T beta1, T rest1, T beta2, T rest2, T eps, "
                         "T step", "T p_new, T m_new, T v_new",
                         "m_new = beta1 * m + rest1 * g; v_new = beta2 * v + rest2 * g * g;"
                         " p_new = p - step * m_new / (sqrt(v_new) + eps)", "adam")
    adamw_kernel = kernel("T p, T g, T m, T v, T beta1, T rest1, T beta2, T rest2, T eps, "
                          "T step, T decay", "T p_new, T m_new, T v_new",
                          "m_new = beta1 * m + rest1 * g; v_new = beta2 * v + rest2 * g * g;"
                          " p_new = p * decay - step * m_new / (sqrt(v_new) + eps)", "adamw")

    def sigmoid_backward(y: Any, dy: Any) -> Any:
        backward(y, dy)  # writes dy in place: one kernel
        return dy

    def sgd_momentum(p: Any, g: Any, v: Any, lr: Any, mu: float, is_nesterov: bool) -> Any:
        return (nesterov if is_nesterov else momentum)(p, g, v, lr, mu)

    def adam(p: Any, g: Any, m: Any, v: Any, beta1: float, beta2: float, eps: float,
             step: Any) -> Any:
        return adam_kernel(p, g, m, v, beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps, step)

    def adamw(p: Any, g: Any, m: Any, v: Any, beta1: float, beta2: float, eps: float,
              step: Any, decay: Any) -> Any:
        return adamw_kernel(p, g, m, v, beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps, step,
                            decay)

    return Ops(xp, operator.matmul, forward, functools.partial(_flat_dot, flat),
               sigmoid_backward, sgd, sgd_momentum, adam, adamw)


def _flat_dot(flat: Callable[[Any], Any], a: Any) -> Any:
    f = flat(a)
    return f @ f


# ``ndarray.dot`` beats ``@`` while the left operand has up to this many elements: by
# matmul's dispatch on tiny products, by 5-10% on 256 x 256 ones; beyond, OpenBLAS runs
# ``@``'s GEMM 0-6% faster (float32 and float64; this project's 2-core x86 machine,
# NumPy 2.4). One comparison of a size: cheaper than counting multiply-adds.
_DOT_MAX_SIZE = 1 << 16


def _numpy_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for 2-D arrays, by whichever of NumPy's two GEMM paths is faster."""
    return a.dot(b) if a.size <= _DOT_MAX_SIZE else a @ b


def _numpy_sum_of_squares(a: np.ndarray) -> Any:
    return np.vdot(a, a)


def _numpy_sigmoid(x: np.ndarray) -> np.ndarray:
    """The standard's expression in one buffer: one allocation, not four (about 18%
    faster on 256 x 256 float32 and up; arrays only: ``out`` takes no NumPy scalar)."""
    y = np.negative(x)
    np.exp(y, y)
    y += 1.0
    return np.divide(1.0, y, y)  # np.reciprocal takes twice as long on float32


def _dask_sigmoid(x: Any) -> Any:
    return x.map_blocks(_quiet_numpy_sigmoid, dtype=x.dtype)


def _quiet_numpy_sigmoid(x: np.ndarray) -> np.ndarray:
    # dask runs the blocks later, outside any ``errstate`` that ``overflow_is_fine`` opens
    with np.errstate(over="ignore"):
        return _numpy_sigmoid(x)


def overflow_is_fine(name: str) -> Callable[[], Any]:
    """A context-manager factory for a forward pass: on eager NumPy-computed backends,
    NumPy must not warn when ``exp`` overflows to inf, as in ``1 / (1 + exp(-x))``
    for x below about -709 (float64) or -88 (float32), where inf gives the right
    sigmoid, 0. A no-op elsewhere."""
    if name in ("numpy", "array_api_strict"):
        return functools.partial(np.errstate, over="ignore")
    return contextlib.nullcontext


def quiet(name: str) -> Callable[[], Any]:
    """A context-manager factory for a training step: NumPy must not warn (or raise,
    under ``-W error``) on overflow or invalid values, as a step that overflows is
    reported whole by the divergence check. NumPy computes on NumPy and array-api-strict,
    and casts JAX's Python scalars (``g * 1e308`` on float32); dask's blocks run in
    worker threads, quieted in ``materialize``. A no-op elsewhere."""
    if name in ("numpy", "array_api_strict", "jax"):
        return functools.partial(np.errstate, all="ignore")
    return contextlib.nullcontext


# --- devices ---------------------------------------------------------------

def devices(name: str) -> list[Any]:
    """Every device the backend offers, as device objects."""
    xp = namespace(name)
    if name == "torch":
        import torch

        found = [torch.device("cpu")]
        found += [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
        return found
    if name in ("numpy", "dask"):
        return ["cpu"]
    # JAX lists None ("the default") among its devices: keep only real ones
    return [d for d in xp.__array_namespace_info__().devices() if d is not None]


def device_spec(device: Any) -> str:
    """A picklable string naming a device object."""
    if isinstance(device, str):
        return device
    if hasattr(device, "platform") and hasattr(device, "id"):  # jax
        return f"{device.platform}:{device.id}"
    if type(device).__module__.startswith("cupy"):
        return f"cuda:{device.id}"
    if type(device).__module__.startswith("array_api_strict"):
        return str(device).split("'")[1]
    return str(device)


def resolve_device(name: str, spec: Any) -> Any:
    """The device object of backend ``name`` for ``spec`` (None: the default device)."""
    xp = namespace(name)
    if spec is None:
        if name == "dask":
            return "cpu"
        if name == "torch":  # follows torch.set_default_device (the standard's info: cpu)
            import torch

            return torch.get_default_device()
        default = xp.__array_namespace_info__().default_device()
        # JAX answers None ("the default"): name the device its arrays land on, so that
        # arrays placed there are recognised as this model's (Placement.owns compares specs)
        return default if default is not None else compat.device(xp.zeros(0))
    wanted = device_spec(spec)
    kind, _, index = wanted.partition(":")
    spellings = [wanted]
    if index in ("", "0"):  # "cpu" and "cpu:0" (likewise "cuda", "cuda:0") name one device
        spellings.append(kind if index else f"{kind}:0")
    for spelling in spellings:
        for dev in devices(name):
            if device_spec(dev) == spelling:
                return dev
    offered = ", ".join(device_spec(d) for d in devices(name))
    raise ValueError(f"device {wanted!r} is not available on backend {name!r}; "
                     f"available: {offered}")


# --- dtypes ----------------------------------------------------------------

FLOAT_DTYPES = ("float32", "float64")


def resolve_dtype(name: str, device: Any, dtype: Any) -> Any:
    """The floating dtype object to use; honour the request or refuse it clearly."""
    xp = namespace(name)
    info = xp.__array_namespace_info__()
    if dtype is None:
        return info.default_dtypes(device=device)["real floating"]
    dname = dtype_name(dtype)
    if dname not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dname!r}")
    available = info.dtypes(device=device, kind="real floating")
    if dname not in available:
        hint = ""
        if name == "jax":
            hint = (" JAX keeps float64 off by default: call "
                    "jax.config.update(\"jax_enable_x64\", True) before creating arrays, "
                    "or set the environment variable JAX_ENABLE_X64=1.")
        raise ValueError(f"dtype {dname} is not available on backend {name!r}, device "
                         f"{device_spec(device)!r} (it offers {', '.join(available)}).{hint}")
    return available[dname]


def dtype_name(dtype: Any) -> str:
    """'float32' for any library's float32 dtype object or string."""
    if isinstance(dtype, str):
        return dtype
    try:  # NumPy dtypes and scalar types (np.float32), JAX's (NumPy's own)
        return np.dtype(dtype).name
    except TypeError:
        text = str(dtype)
    for prefix in ("torch.", "array_api_strict."):
        text = text.removeprefix(prefix)
    return text


# --- data movement ---------------------------------------------------------

def from_host(name: str, x: np.ndarray, device: Any, dtype: Any) -> Any:
    """Copy a host (NumPy) array onto the backend's device, cast to ``dtype``."""
    xp = namespace(name)
    if name == "dask":
        return _dask_from_host(np.asarray(x, dtype=dtype_name(dtype)))
    if name == "jax":  # a copy, as asarray makes, in a third of its time (25 MB: 4.5 vs 16 ms)
        import jax

        return jax.device_put(np.asarray(x, dtype=dtype_name(dtype)), device, may_alias=False)
    return xp.asarray(shareable(name, x), dtype=dtype, device=device)


def shareable(name: str, x: np.ndarray) -> np.ndarray:
    """``x``, or a copy where the backend cannot share its memory: torch refuses
    read-only memory (a memmap, say) and negative strides (a view such as ``X[::-1]``)."""
    if name == "torch" and (not x.flags.writeable or any(s < 0 for s in x.strides)):
        return np.array(x)
    return x


def detached(x: Any) -> Any:
    """``x`` cut from any autograd graph (torch tensors that require grad; as is
    otherwise): input must not chain the parameters into the caller's graph."""
    if compat.is_torch_array(x) and x.requires_grad:
        return x.detach()
    return x


def _same(x: Any) -> Any:
    return x


def to_host(x: Any) -> np.ndarray:
    """A NumPy copy (or view) of any backend's array."""
    if isinstance(x, np.ndarray):
        return x
    if compat.is_torch_array(x):
        if x.device.type == "meta":
            raise TypeError("a torch tensor on the 'meta' device holds no values, only a shape "
                            "and a dtype; make it on a device that holds data (cpu, cuda)")
        return x.detach().cpu().numpy()
    if compat.is_cupy_array(x):
        return x.get()
    if compat.is_dask_array(x):
        return np.asarray(_dask_compute(x)[0])
    if array_backend(x) == "array_api_strict":  # off its CPU device it refuses __array__
        import array_api_strict

        return np.asarray(x.to_device(array_api_strict.Device("CPU_DEVICE")))
    return np.asarray(x)


# --- execution -------------------------------------------------------------

def host_reads_are_free(name: str, device: Any) -> bool:
    """Reading a value back costs no device sync and forces no lazy compute."""
    return name in _EAGER_HOST or (name == "torch" and device_spec(device) == "cpu")


def synchronize(name: str, arrays: Any = ()) -> None:
    """Wait until queued work producing ``arrays`` is done (for timing only)."""
    if name == "cupy":
        import cupy

        cupy.cuda.get_current_stream().synchronize()
    elif name == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
    elif name == "jax":
        import jax

        jax.block_until_ready(arrays)
    elif name == "dask":
        import dask

        dask.compute(arrays)


def compiles(name: str) -> bool:
    """Whether training on this backend runs compiled by default (JAX: ``jax.jit``)."""
    return name == "jax"


def jit(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` compiled where the backend compiles (JAX); ``fn`` itself elsewhere."""
    if not compiles(name):
        return fn
    import jax

    return jax.jit(fn)


def scan(name: str) -> Callable[..., Any]:
    """``lax.scan`` (``scan(body, carry, xs) -> (carry, ys)``) on a backend that compiles."""
    if not compiles(name):
        raise ValueError(f"backend {name!r} does not compile; scan runs only inside compiled "
                         "code")
    from jax import lax

    return lax.scan


def read_scalars(name: str, arrays: list[Any]) -> list[float]:
    """0-d arrays read back to the host as floats, in one transfer where that matters."""
    if name == "jax":
        import jax

        arrays = jax.device_get(arrays)
    elif name == "dask":  # one compute for all; a lost worker's data is a WorkerLostError
        arrays = list(_dask_compute(*arrays))
    return [float(a) for a in arrays]  # every backend's 0-d arrays convert


def materialize(name: str, arrays: list[Any], cut_lineage: bool = False) -> list[Any]:
    """Bound a lazy graph: compute ``arrays`` into memory (dask); identity elsewhere.

    On a ``distributed`` cluster the scheduler keeps the lineage of what it persisted
    (dask/distributed#809), so a chain of persisted steps grows its state step after step;
    ``cut_lineage`` gathers the (small) arrays to this process and scatters them back to
    every worker, with no history: the scheduler then forgets the steps that made them.
    """
    if name != "dask":
        return arrays
    import dask

    # the blocks run in worker threads, outside the caller's np.errstate: a NumPy warning
    # there (overflow in a diverging step) is for the divergence check to report
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        persisted = list(dask.persist(*arrays))
    client = dask_client()
    if not cut_lineage or client is None:
        return persisted
    return [_dask_from_host(np.asarray(v), broadcast=True) for v in _dask_compute(*persisted)]


# --- dask: data on a cluster -------------------------------------------------

# Host arrays up to this size are broadcast to every worker of a cluster when placed:
# parameters and small data sets, which every worker needs, and which then survive the
# loss of a worker. Larger ones are scattered once, to one worker.
_BROADCAST_BYTES = 1 << 20

# On a cluster, the parameters' lineage is cut every this many persists (one a step):
# the scheduler's state stays bounded, for one gather and one broadcast of the
# parameters per this many steps.
CUT_LINEAGE_EVERY = 10


class WorkerLostError(RuntimeError):
    """A Dask worker died holding results that the cluster cannot recompute; the model
    cannot go on from them (its parameters may be among them)."""


def dask_client() -> Any:
    """The ``distributed`` Client that dask computes on now, or None (a local scheduler)."""
    if "distributed" not in sys.modules:  # no Client can exist without it imported
        return None
    import dask.base
    from distributed import default_client

    try:
        client = default_client()
    except ValueError:
        return None
    return client if dask.base.get_scheduler() == client.get else None


def _dask_from_host(x: np.ndarray, broadcast: bool | None = None) -> Any:
    """A one-block dask array of host data. On a cluster, the data is sent to the workers
    once (``scatter``) and graphs hold only its key: a NumPy array embedded in a graph
    travels with every graph that uses it (Dask's large-graph warning)."""
    import dask.array as da

    client = dask_client()
    if client is None:
        return da.from_array(x, chunks=x.shape)
    if broadcast is None:
        broadcast = x.nbytes <= _BROADCAST_BYTES
    future = client.scatter(x, broadcast=broadcast, hash=False)
    return da.from_delayed(future, shape=x.shape, dtype=x.dtype)


def _dask_compute(*arrays: Any) -> tuple[Any, ...]:
    """``dask.compute``, with a worker's loss of unrecoverable data said plainly."""
    import dask

    try:
        return dask.compute(*arrays)
    except Exception as exc:
        if type(exc).__name__ not in ("FutureCancelledError", "CancelledError"):
            raise
        raise WorkerLostError(
            f"a Dask worker died holding results that the cluster cannot recompute ({exc}): "
            "the parameters of a recent step (between lineage cuts they live on one worker "
            "only), or data scattered from this process, which has no lineage. Load the data "
            "with dask (dask.array, dask.dataframe.read_parquet, ...) so that lost blocks are "
            "recomputed, and resume training from a checkpoint (pm.Checkpoint, pm.load)") from exc


def _dask_persist_rows(X: Any, others: list[Any]) -> list[Any]:
    """X with its columns in one block, and ``others`` cut into X's row blocks, persisted
    together: each row block of the data then lives whole on one worker."""
    import dask

    if X.ndim == 2 and len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    rows = X.chunks[0]
    aligned = [a if a is None or a.chunks[0] == rows else a.rechunk({0: rows}) for a in others]
    present = [a for a in (X, *aligned) if a is not None]
    persisted = iter(dask.persist(*present))
    return [next(persisted) if a is not None else None for a in (X, *aligned)]


def _dask_shuffled_blocks(arrays: list[Any], order: np.ndarray,
                          states: list[Mapping[str, Any]], kind: type) -> list[Any]:
    """The row blocks (the first array's) of each array in ``order``, block ``order[i]``'s
    rows permuted by a
    ``Generator(kind(...))`` in state ``states[i]``; persisted. Each block is permuted on
    the worker that holds it: only the generator states (a few bytes) enter the graph."""
    import dask
    import dask.array as da

    out: list[Any] = []
    rows = arrays[0].chunks[0]
    for a in arrays:
        if a is None:
            out.append(None)
            continue
        if a.chunks[0] != rows:  # not cut as X is (persist_rows does it once per fit)
            a = a.rechunk({0: rows})
        parts = [a.blocks[int(b)].map_blocks(_permuted_rows, kind, state, dtype=a.dtype)
                 for b, state in zip(order, states)]
        out.append(da.concatenate(parts, axis=0))
    present = iter(dask.persist(*[a for a in out if a is not None]))
    return [None if a is None else next(present) for a in out]


def _permuted_rows(block: np.ndarray, kind: type, state: Mapping[str, Any]) -> np.ndarray:
    bits = kind()
    bits.state = state
    return block[np.random.Generator(bits).permutation(block.shape[0])]


@dataclass(frozen=True)
class Placement:
    """Where a model's arrays live: backend name, device spec and dtype name.

    Holds only names, so it pickles; the namespace, device object and dtype
    object are resolved once and cached.
    """

    backend: str
    device: str
    dtype: str

    @classmethod
    def create(cls, backend: Any = "numpy", device: Any = None, dtype: Any = None) -> Placement:
        name = backend_name(backend)
        dev = resolve_device(name, device)
        dt = resolve_dtype(name, dev, dtype)
        return cls(name, device_spec(dev), dtype_name(dt))

    @functools.cached_property
    def xp(self) -> Any:
        return namespace(self.backend)

    @functools.cached_property
    def device_obj(self) -> Any:
        return resolve_device(self.backend, self.device)

    @functools.cached_property
    def dtype_obj(self) -> Any:
        return resolve_dtype(self.backend, self.device_obj, self.dtype)

    @functools.cached_property
    def ops(self) -> Ops:
        return ops(self.backend)

    @functools.cached_property
    def overflow_is_fine(self) -> Callable[[], Any]:
        return overflow_is_fine(self.backend)

    @functools.cached_property
    def detached(self) -> Callable[[Any], Any]:
        """``detached`` where arrays may carry an autograd graph (torch); the identity
        elsewhere (no per-call test on the hot path)."""
        return detached if self.backend == "torch" else _same

    @functools.cached_property
    def quiet(self) -> Callable[[], Any]:
        return quiet(self.backend)

    @functools.cached_property
    def host_reads_are_free(self) -> bool:
        return host_reads_are_free(self.backend, self.device)

    def __getstate__(self) -> dict[str, str]:
        return {"backend": self.backend, "device": self.device, "dtype": self.dtype}

    def __setstate__(self, state: dict[str, str]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)

    def from_host(self, x: np.ndarray) -> Any:
        return from_host(self.backend, x, self.device_obj, self.dtype_obj)

    def indices(self, host: np.ndarray) -> Any:
        """Integer indices for ``xp.take`` (dask takes host indices best)."""
        if self.backend == "dask":
            return host
        return self.xp.asarray(shareable(self.backend, host), dtype=self.int_dtype,
                               device=self.device_obj)

    @functools.cached_property
    def int_dtype(self) -> Any:
        info = self.xp.__array_namespace_info__()
        return info.default_dtypes(device=self.device_obj)["integral"]

    def materialize(self, arrays: list[Any]) -> list[Any]:
        """``materialize`` of this backend; on a dask cluster, the lineage is cut every
        ``CUT_LINEAGE_EVERY`` calls (one call a step)."""
        if self.backend != "dask":
            return arrays
        self._persists[0] += 1
        return materialize(self.backend, arrays, self._persists[0] % CUT_LINEAGE_EVERY == 0)

    @functools.cached_property
    def _persists(self) -> list[int]:
        """How many times ``materialize`` ran (a counter that the frozen class can bump)."""
        return [0]

    def persist_rows(self, X: Array, *others: Array | None) -> list[Array | None]:
        """The data of a fit, computed into memory once (dask): ``others`` (Y, its class
        labels, sample weights or None) cut into X's row blocks, so that each block of
        rows lives whole on one worker; the same arrays elsewhere."""
        if self.backend != "dask":
            return [X, *others]
        return _dask_persist_rows(X, list(others))

    def row_blocks(self, x: Array) -> tuple[int, ...] | None:
        """The lengths of the row blocks of a chunked (dask) array; None for arrays in one
        piece of memory, which a host permutation and ``take`` shuffle best."""
        return tuple(x.chunks[0]) if self.backend == "dask" else None

    def shuffled_blocks(self, arrays: list[Array | None], order: np.ndarray,
                        states: list[Mapping[str, Any]], kind: type) -> list[Array | None]:
        """Each array's row blocks in ``order``, each block's rows permuted where it lies
        by ``np.random.Generator(kind())`` set to the matching state of ``states``."""
        return _dask_shuffled_blocks(arrays, order, states, kind)

    @functools.cached_property
    def guarded_step(self) -> Callable[..., Any]:
        """``Trainer``'s step function: ``steps.guarded_step``, or on dask the same step
        as one task per row block and one for the update (``portable_mlp.dask_step``)."""
        if self.backend == "dask":
            from portable_mlp import dask_step

            return dask_step.guarded_step
        from portable_mlp import steps

        return steps.guarded_step

    @functools.cached_property
    def compiles(self) -> bool:
        return compiles(self.backend)

    def jit(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return jit(self.backend, fn)

    @functools.cached_property
    def scan(self) -> Callable[..., Any]:
        return scan(self.backend)

    def read_scalars(self, arrays: list[Any]) -> list[float]:
        return read_scalars(self.backend, arrays)

    def synchronize(self, arrays: Any = ()) -> None:
        synchronize(self.backend, arrays)

    def owns(self, x: Any) -> bool:
        """Whether ``x`` is already an array of this backend on this device."""
        if isinstance(x, np.ndarray):  # the common case, answered without a call
            return self.backend == "numpy"
        if type(x) in self._own_types:  # an array type of this backend, seen before:
            # compare device objects (no namespace lookup, no string per call)
            return self.backend == "dask" or self._device_of(x) == self.device_obj
        if array_backend(x) != self.backend:
            return False
        self._own_types.add(type(x))
        return self.backend in ("numpy", "dask") or device_spec(compat.device(x)) == self.device

    @functools.cached_property
    def _device_of(self) -> Callable[[Any], Any]:
        """An array's device object: torch's ``.device`` attribute (the standard's, read
        directly: 0.2 us against 1.8 us through ``array_api_compat.device``), compat's
        elsewhere."""
        return operator.attrgetter("device") if self.backend == "torch" else compat.device

    @functools.cached_property
    def _own_types(self) -> set[type]:
        """Array types known to belong to this backend (filled by ``owns``)."""
        return set()
