"""PyTorch: its fused sigmoid, its devices, autograd's graph cut from input, and the memory
it cannot share with NumPy."""

from __future__ import annotations

import contextlib
import functools
import operator
from collections.abc import Callable, Iterator
from typing import Any

import array_api_compat as compat
import numpy as np

from portable_mlp import _install
from portable_mlp.backends.base import Backend
from portable_mlp.backends.standard import Ops, standard_ops


def shareable(x: np.ndarray) -> np.ndarray:
    """``x``, or a copy where torch cannot share its memory: it refuses read-only memory
    (a memmap, say) and negative strides (a view such as ``X[::-1]``)."""
    if not x.flags.writeable or any(s < 0 for s in x.strides):
        return np.array(x)
    return x


class TorchBackend(Backend):
    """PyTorch, through array-api-compat's namespace."""

    extra = "torch"

    def __init__(self) -> None:
        super().__init__("torch", "array_api_compat.torch", library="torch")

    def install_hint(self) -> str:  # the default wheel on Linux is the CUDA build, several GB
        return (f"{super().install_hint()} (without an NVIDIA GPU, first the CPU build: "
                f"{_install.CPU_TORCH})")

    def is_namespace(self, xp: Any) -> bool:
        return compat.is_torch_namespace(xp)

    def is_array(self, x: Any) -> bool:
        return compat.is_torch_array(x)

    @functools.cached_property
    def ops(self) -> Ops:  # torch.sigmoid: one fused pass, not the expression's four
        import torch

        return standard_ops(self.xp, operator.methodcaller("reshape", -1), torch.sigmoid)

    @functools.cached_property
    def device(self) -> Callable[[Any], Any]:
        """The ``.device`` attribute read directly: 0.2 us, against 1.8 us through
        ``array_api_compat.device``."""
        return operator.attrgetter("device")

    def devices(self) -> list[Any]:
        import torch

        return [torch.device("cpu"),
                *(torch.device("cuda", i) for i in range(torch.cuda.device_count()))]

    def default_device(self) -> Any:  # follows torch.set_default_device (the standard's: cpu)
        import torch

        return torch.get_default_device()

    def from_host(self, x: np.ndarray, device: Any, dtype: Any) -> Any:
        return self.xp.asarray(shareable(x), dtype=dtype, device=device)

    def indices(self, host: np.ndarray, dtype: Any, device: Any) -> Any:
        return self.xp.asarray(shareable(host), dtype=dtype, device=device)

    def to_host(self, x: Any) -> np.ndarray:
        if x.device.type == "meta":
            raise TypeError("a torch tensor on the 'meta' device holds no values, only a shape "
                            "and a dtype; make it on a device that holds data (cpu, cuda)")
        return x.detach().cpu().numpy()

    def detached(self, x: Any) -> Any:
        """Input that requires grad must not chain the parameters into the caller's graph."""
        return x.detach() if getattr(x, "requires_grad", False) else x

    def overflow_is_fine(self) -> Callable[[], Any]:
        return contextlib.nullcontext

    def quiet(self) -> Callable[[], Any]:
        return contextlib.nullcontext

    def host_reads_are_free(self, device: Any) -> bool:
        return self.device_spec(device) == "cpu"

    @contextlib.contextmanager
    def threads(self, n: int) -> Iterator[None]:
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def thread_count(self) -> int:
        import torch

        return int(torch.get_num_threads())

    def synchronize(self, arrays: Any = ()) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
