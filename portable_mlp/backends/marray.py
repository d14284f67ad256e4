"""marray over NumPy: masked arrays, whose namespace is made by a function, not imported.

What marray needed beyond the standard: its namespace (``marray.masked_namespace(numpy)``,
a new module each call, so it is recognised by its name ``marray.numpy``), a host transfer
(DLPack and ``__array__`` give the data without the mask), and its mask, so that masked
entries are refused as NumPy's masked arrays are, never used as whatever lies under them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from portable_mlp.backends.base import Backend

NAMESPACE = "marray.numpy"


def _masked_numpy() -> Any:
    import marray

    return marray.masked_namespace(np)


class MarrayBackend(Backend):
    """marray's masked arrays over NumPy, computed by NumPy on the host."""

    extra = "generic"

    def __init__(self) -> None:
        super().__init__("marray", _masked_numpy, library="marray")

    def is_namespace(self, xp: Any) -> bool:
        return getattr(xp, "__name__", None) == NAMESPACE

    def is_array(self, x: Any) -> bool:
        return type(x).__module__ == "marray" and super().is_array(x)

    has_masks = True

    def masked(self, x: Any) -> bool:
        return bool(np.any(x.mask))

    def to_host(self, x: Any) -> np.ndarray:
        """The data; refused where an entry is masked."""
        if self.masked(x):
            raise TypeError("a marray array with masked entries has no values there; fill "
                            "them or drop their rows first")
        return np.asarray(x.data)

    @functools.cached_property
    def device(self) -> Callable[[Any], Any]:
        return lambda x: x.device

    def host_reads_are_free(self, device: Any) -> bool:
        return True
