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

from portable_mlp import rules
from portable_mlp.backends.base import Backend
from portable_mlp.backends.standard import Ops, standard_sigmoid_backward

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


class NumpyBackend(Backend):
    """NumPy, through array-api-compat's namespace; one device, "cpu"."""

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
        return Ops(self.xp, numpy_matmul, numpy_sigmoid, numpy_sum_of_squares,
                   standard_sigmoid_backward, rules.sgd, rules.sgd_momentum,
                   functools.partial(rules.adam, self.xp))

    def devices(self) -> list[Any]:
        return ["cpu"]

    def to_host(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def host_reads_are_free(self, device: Any) -> bool:
        return True
