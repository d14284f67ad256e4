"""JAX: compiled steps (``jax.jit``, ``lax.scan``), its fused sigmoid, its device names and
one transfer for many scalars."""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Callable
from typing import Any

import array_api_compat as compat
import numpy as np

from portable_mlp.backends.base import Backend
from portable_mlp.backends.standard import Ops, standard_ops


class JaxBackend(Backend):
    """JAX, through ``jax.numpy`` (the standard's namespace itself)."""

    extra = "jax"
    compiles = True
    dtype_hint = (" JAX keeps float64 off by default: call "
                  "jax.config.update(\"jax_enable_x64\", True) before creating arrays, "
                  "or set the environment variable JAX_ENABLE_X64=1.")

    def __init__(self) -> None:
        super().__init__("jax", "jax.numpy", library="jax")

    def is_namespace(self, xp: Any) -> bool:
        return compat.is_jax_namespace(xp)

    def is_array(self, x: Any) -> bool:
        return compat.is_jax_array(x)

    @functools.cached_property
    def ops(self) -> Ops:  # jax.nn.sigmoid: one dispatch, not the expression's four
        import jax

        return standard_ops(self.xp, operator.methodcaller("reshape", -1), jax.nn.sigmoid)

    def spells(self, device: Any) -> bool:
        return hasattr(device, "platform") and hasattr(device, "id")

    def device_spec(self, device: Any) -> str:
        if isinstance(device, str):
            return device
        return f"{device.platform}:{device.id}"

    def from_host(self, x: np.ndarray, device: Any, dtype: Any) -> Any:
        """A copy, as asarray makes, in a third of its time (25 MB: 4.5 vs 16 ms)."""
        import jax

        return jax.device_put(np.asarray(x, dtype=np.dtype(dtype)), device, may_alias=False)

    def overflow_is_fine(self) -> Callable[[], Any]:
        return contextlib.nullcontext

    def quiet(self) -> Callable[[], Any]:
        """NumPy casts JAX's Python scalars (``g * 1e308`` on float32): silenced."""
        return functools.partial(np.errstate, all="ignore")

    def synchronize(self, arrays: Any = ()) -> None:
        import jax

        jax.block_until_ready(arrays)

    def jit(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        import jax

        return jax.jit(fn)

    def scan(self) -> Callable[..., Any]:
        """``lax.scan`` (``scan(body, carry, xs) -> (carry, ys)``)."""
        from jax import lax

        return lax.scan

    def read_scalars(self, arrays: list[Any]) -> list[float]:
        """One transfer for all."""
        import jax

        return [float(a) for a in jax.device_get(arrays)]
