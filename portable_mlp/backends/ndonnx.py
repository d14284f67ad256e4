"""ndonnx (arrays that build an ONNX graph, with values computed eagerly where known).

What ndonnx needed beyond the standard: a host transfer. Its ``__dlpack__`` raises
BufferError ("ndonnx does not support the export of array data") and it has no
``__array__``; ``unwrap_numpy`` gives the values. Its device object prints as a memory
address, so the generic path names it by its position among the devices ("device:0").
This file is ``register_backend``'s worked example (docs/backends.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from portable_mlp.backends.base import Backend


def to_host(x: Any) -> np.ndarray:
    return np.asarray(x.unwrap_numpy())


BACKEND = Backend("ndonnx", extra="generic", to_host=to_host)
