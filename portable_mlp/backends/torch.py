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
from portable_mlp.backends.standard import Ops, rules_over, standard_ops


def shareable(x: np.ndarray) -> np.ndarray:
    """``x``, or a copy where torch cannot share its memory: it refuses read-only memory
    (a memmap, say) and negative strides (a view such as ``X[::-1]``)."""
    if not x.flags.writeable or any(s < 0 for s in x.strides):
        return np.array(x)
    return x


class TorchListOps:
    """torch's ``_foreach_`` kernels: one call for every parameter (a fifth of the time
    of an operation per tensor on a small network), in place on ``out``."""

    def __init__(self) -> None:
        import torch

        self.t = torch

    @staticmethod
    def _number(c: Any) -> Any:
        """A 0-d tensor (``train_step``'s ``lr``) as the Python number ``alpha=`` takes."""
        return c.item() if hasattr(c, "item") else c

    def _from(self, out: Any, xs: Any) -> Any:
        """``out`` holding a copy of ``xs`` (None: new tensors)."""
        if out is None:
            return self.t._foreach_mul(xs, 1.0)
        if out is not xs:
            self.t._foreach_copy_(out, xs)
        return out

    def scale(self, out: Any, xs: Any, c: Any) -> Any:
        out = self._from(out, xs)
        self.t._foreach_mul_(out, self._number(c))
        return out

    def axpy(self, acc: Any, xs: Any, c: Any, scratch: Any) -> Any:
        c = self._number(c)
        try:
            self.t._foreach_add_(acc, xs, alpha=c)
        except RuntimeError:  # c beyond the dtype's range (refused before any write):
            self.t._foreach_add_(acc, self.t._foreach_mul(xs, c))  # inf, as c * x gives
        return acc

    def axpy_into(self, out: Any, ps: Any, xs: Any, c: Any) -> Any:
        return self.axpy(self._from(out, ps), xs, c, None)

    def add_square(self, acc: Any, xs: Any, c: Any, scratch: Any) -> Any:
        self.t._foreach_addcmul_(acc, xs, xs, value=self._number(c))  # c < 1: in range
        return acc

    def sqrt_plus(self, out: Any, xs: Any, c: Any) -> Any:
        out = self._from(out, xs)
        self.t._foreach_sqrt_(out)
        self.t._foreach_add_(out, c)
        return out

    def sub_ratio_into(self, out: Any, ps: Any, num: Any, den: Any, c: Any) -> Any:
        out, c = self._from(out, ps), self._number(c)
        try:
            self.t._foreach_addcdiv_(out, num, den, value=-c)
        except RuntimeError:  # c beyond the dtype's range, refused before any write
            self.t._foreach_sub_(out, self.t._foreach_div(self.t._foreach_mul(num, c), den))
        return out


def torch_relu_backward(y: Any, dy: Any) -> Any:
    return dy.mul_(y > 0.0)  # the mask as it is: no cast (torch promotes bool)


class TorchBackend(Backend):
    """PyTorch, through array-api-compat's namespace."""

    sums_in_place = True

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

        addmm = torch.addmm

        def affine(x: Any, w: Any, b: Any) -> Any:
            return addmm(b, x, w)  # one kernel, one dispatch: the bias added in the GEMM

        return standard_ops(self.xp, operator.methodcaller("reshape", -1), torch.sigmoid,
                            affine=affine, relu=torch.relu, relu_backward=torch_relu_backward,
                            **rules_over(TorchListOps()), writes_in_place=True)

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
