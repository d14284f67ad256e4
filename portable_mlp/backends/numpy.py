"""NumPy: the host itself, and faster spellings of the step's most-called operations.

``ndarray.dot`` on small products skips ``matmul``'s ufunc dispatch (about 0.6 us a call,
a third of a matmul on the scratch_mlp article's tiny arrays), the sigmoid runs in one
buffer, ``np.vdot`` sums squares without a reshape.
"""

from __future__ import annotations

import functools
from typing import Any

import array_api_compat as compat
import numpy as np

from portable_mlp.backends.base import Backend
from portable_mlp.backends.list_ops import UfuncListOps
from portable_mlp.backends.standard import Ops, rules_over, standard_affine, standard_ops

# ``ndarray.dot`` beats ``@`` while the left operand has up to this many elements: by
# matmul's dispatch on tiny products, by 5-10% on 256 x 256 ones; beyond, OpenBLAS runs
# ``@``'s GEMM 0-6% faster (float32 and float64; this project's 2-core x86 machine,
# NumPy 2.4). One comparison of a size: cheaper than counting multiply-adds.
_DOT_MAX_SIZE = 1 << 16


def numpy_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for 2-D arrays, by whichever of NumPy's two GEMM paths is faster."""
    return a.dot(b) if a.size <= _DOT_MAX_SIZE else a @ b


def numpy_sum_of_squares(a: np.ndarray) -> Any:
    return np.vdot(a, a)


def numpy_sigmoid(x: np.ndarray) -> np.ndarray:
    """The standard's expression in one buffer: one allocation, not four (about 18%
    faster on 256 x 256 float32 and up; arrays only: ``out`` takes no NumPy scalar)."""
    y = np.negative(x)
    np.exp(y, y)
    y += 1.0
    return np.divide(1.0, y, y)  # np.reciprocal takes twice as long on float32


def numpy_relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def numpy_relu_backward(y: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """The standard's product with the mask, without casting the mask first."""
    return np.multiply(dy, y > 0.0, out=dy)


def numpy_count_true(mask: np.ndarray, dtype: Any) -> Any:
    """NumPy's own count, a scalar of ``dtype`` (no wrapper: a third of the time)."""
    return dtype.type(np.count_nonzero(mask))


class NumpyBackend(Backend):
    """NumPy, through array-api-compat's namespace; one device, "cpu"."""

    sums_in_place = True
    single_device = True
    small_steps_cost_more = False

    def __init__(self) -> None:
        super().__init__("numpy", "array_api_compat.numpy", library="numpy")

    def install_hint(self) -> str:
        return "pip install numpy"

    def is_namespace(self, xp: Any) -> bool:
        return compat.is_numpy_namespace(xp)

    def is_array(self, x: Any) -> bool:
        return compat.is_numpy_array(x)

    @functools.cached_property
    def ops(self) -> Ops:
        return standard_ops(self.xp, sigmoid=numpy_sigmoid, matmul=numpy_matmul,
                            sum_of_squares=numpy_sum_of_squares,
                            affine=functools.partial(standard_affine, numpy_matmul),
                            relu=numpy_relu, relu_backward=numpy_relu_backward,
                            count_true=numpy_count_true, **rules_over(UfuncListOps(np)),
                            writes_in_place=True)

    def devices(self) -> list[Any]:
        return ["cpu"]

    def to_host(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def host_reads_are_free(self, device: Any) -> bool:
        return True
