"""CuPy: the sigmoid, its backward and the optimizers' rules as one fused elementwise kernel
each, the same math as the standard's expressions (``portable_mlp.rules``), which launch
three to eight kernels each, 18-24 us apiece on small arrays.

``KERNELS`` holds each kernel's source, so that a test compiles every one with NVRTC on
a machine without a GPU (``tests/test_cupy_kernels.py``).
"""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Callable
from typing import Any

import array_api_compat as compat
import numpy as np

from portable_mlp import rules
from portable_mlp.backends.base import Backend
from portable_mlp.backends.list_ops import UfuncListOps
from portable_mlp.backends.standard import BackendUnavailable, Ops, standard_ops

# name: (inputs, outputs, body), as cupy.ElementwiseKernel takes them
KERNELS = {
    "sigmoid": ("T x", "T y", "y = 1 / (1 + exp(-x))"),
    "sigmoid_backward": ("T y", "T dy", "dy = dy * y * (1 - y)"),
    "sgd": ("T p, T g, T lr", "T p_new", "p_new = p - lr * g"),
    "sgd_momentum": ("T p, T g, T v, T lr, T mu", "T p_new, T v_new",
                     "v_new = mu * v - lr * g; p_new = p + v_new"),
    "sgd_nesterov": ("T p, T g, T v, T lr, T mu", "T p_new, T v_new",
                     "v_new = mu * v - lr * g; p_new = p + mu * v_new - lr * g"),
    # 1 - beta as arguments: computed in double on the host and rounded once to T, as
    # the standard's expression rounds the Python float it multiplies by
    "adam": ("T p, T g, T m, T v, T beta1, T rest1, T beta2, T rest2, T eps, T step",
             "T p_new, T m_new, T v_new",
             "m_new = beta1 * m + rest1 * g; v_new = beta2 * v + rest2 * g * g;"
             " p_new = p - step * m_new / (sqrt(v_new) + eps)"),
    # AdamW: adam's update, then the decoupled decay at rate = lr * weight_decay
    "adamw": ("T p, T g, T m, T v, T beta1, T rest1, T beta2, T rest2, T eps, T step, T rate",
              "T p_new, T m_new, T v_new",
              "m_new = beta1 * m + rest1 * g; v_new = beta2 * v + rest2 * g * g;"
              " p_new = p - step * m_new / (sqrt(v_new) + eps) - rate * p"),
}


def kernel(name: str) -> Any:
    """``cupy.ElementwiseKernel`` ``pm_<name>`` of ``KERNELS`` (compiled on first call)."""
    import cupy

    return cupy.ElementwiseKernel(*KERNELS[name], f"pm_{name}")


def each(run: Callable[..., Any], inputs: list[Any], out: Any, n_out: int) -> Any:
    """``run`` (a kernel call) per parameter, into ``out``'s spares (None: new arrays); the
    results as one list per output."""
    outs = [None] * len(inputs[0]) if out is None else list(zip(*out))
    results = [run(*row, *(o or ())) for row, o in zip(zip(*inputs), outs)]
    if n_out == 1:
        return results
    return tuple(list(r) for r in zip(*results))


def cupy_ops(xp: Any) -> Ops:
    import cupy

    forward, backward, sgd_kernel = kernel("sigmoid"), kernel("sigmoid_backward"), kernel("sgd")
    momentum, nesterov, adam_kernel, adamw_kernel = (
        kernel(n) for n in ("sgd_momentum", "sgd_nesterov", "adam", "adamw"))

    def sigmoid_backward(y: Any, dy: Any) -> Any:
        backward(y, dy)  # writes dy in place: one kernel
        return dy

    def sgd(ps: Any, gs: Any, lr: Any, out: Any) -> Any:
        return each(lambda p, g, *o: sgd_kernel(p, g, lr, *o), [ps, gs], out, 1)

    def sgd_momentum(ps: Any, gs: Any, vs: Any, lr: Any, mu: float, is_nesterov: bool,
                     out: Any) -> Any:
        run = nesterov if is_nesterov else momentum
        return each(lambda p, g, v, *o: run(p, g, v, lr, mu, *o), [ps, gs, vs], out, 2)

    def adam(ps: Any, gs: Any, ms: Any, vs: Any, beta1: float, beta2: float, eps: float,
             step: Any, out: Any) -> Any:
        return each(lambda p, g, m, v, *o: adam_kernel(p, g, m, v, beta1, 1.0 - beta1, beta2,
                                                       1.0 - beta2, eps, step, *o),
                    [ps, gs, ms, vs], out, 3)

    def adamw(ps: Any, gs: Any, ms: Any, vs: Any, beta1: float, beta2: float, eps: float,
              step: Any, rate: Any, out: Any) -> Any:
        return each(lambda p, g, m, v, *o: adamw_kernel(p, g, m, v, beta1, 1.0 - beta1, beta2,
                                                        1.0 - beta2, eps, step, rate, *o),
                    [ps, gs, ms, vs], out, 3)

    return standard_ops(xp, operator.methodcaller("reshape", -1), forward,
                        sigmoid_backward=sigmoid_backward, sgd=sgd, sgd_momentum=sgd_momentum,
                        adam=adam, adamw=adamw,
                        decay=functools.partial(rules.decay, UfuncListOps(cupy)),
                        writes_in_place=True)


class CupyBackend(Backend):
    """CuPy, through array-api-compat's namespace; ``BackendUnavailable`` without a GPU."""

    sums_in_place = True

    extra = "cuda12 or cuda13"

    def __init__(self) -> None:
        super().__init__("cupy", "array_api_compat.cupy", library="cupy")

    def _load(self) -> Any:
        import cupy

        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except cupy.cuda.runtime.CUDARuntimeError as exc:
            raise BackendUnavailable(f"no CUDA device: backend 'cupy' is installed, but cannot "
                                     f"run ({exc})") from exc
        if count < 1:
            raise BackendUnavailable("no CUDA device: backend 'cupy' is installed, but cannot "
                                     "run")
        return super()._load()

    def is_namespace(self, xp: Any) -> bool:
        return compat.is_cupy_namespace(xp)

    def is_array(self, x: Any) -> bool:
        return compat.is_cupy_array(x)

    @functools.cached_property
    def ops(self) -> Ops:
        return cupy_ops(self.xp)

    def device_spec(self, device: Any) -> str:
        return device if isinstance(device, str) else f"cuda:{device.id}"

    def to_host(self, x: Any) -> np.ndarray:
        return x.get()

    def overflow_is_fine(self) -> Callable[[], Any]:
        return contextlib.nullcontext

    def quiet(self) -> Callable[[], Any]:
        return contextlib.nullcontext

    def synchronize(self, arrays: Any = ()) -> None:
        import cupy

        cupy.cuda.get_current_stream().synchronize()
