"""array-api-strict: the standard and nothing more, on NumPy; its devices are objects."""

from __future__ import annotations

from typing import Any

import array_api_compat as compat
import numpy as np

from portable_mlp.backends.base import Backend


class StrictBackend(Backend):
    """array-api-strict: its device objects name themselves in quotes, and off its CPU
    device an array refuses ``__array__``."""

    extra = "test"

    def __init__(self) -> None:
        super().__init__("array_api_strict")

    def is_namespace(self, xp: Any) -> bool:
        return compat.is_array_api_strict_namespace(xp)

    def device_spec(self, device: Any) -> str:
        if isinstance(device, str):
            return device
        return str(device).split("'")[1]  # Device('CPU_DEVICE')

    def to_host(self, x: Any) -> np.ndarray:
        return np.asarray(x.to_device(self.xp.Device("CPU_DEVICE")))

    def host_reads_are_free(self, device: Any) -> bool:
        return True
