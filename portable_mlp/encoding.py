"""Label encoding that works on any backend's arrays."""

from __future__ import annotations

import numbers
from typing import Any

import array_api_compat
import numpy as np

from portable_mlp import _backend


def one_hot(y: Any, n_classes: int, dtype: Any = None) -> Any:
    """``(n,)`` integer labels in ``[0, n_classes)`` -> ``(n, n_classes)`` floats.

    The result lives in ``y``'s namespace and on its device; ``dtype`` defaults to
    that namespace's default floating dtype. Lists are treated as NumPy.

    Parameters
    ----------
    y : array of shape (n,)
        Integer class labels in ``[0, n_classes)``, of any backend (a list: NumPy).
    n_classes : int
        The number of classes: the columns of the result.
    dtype : dtype or None, default None
        The result's float dtype; None: the namespace's default float.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, numbers.Integral) or n_classes < 1:
        raise ValueError(f"n_classes must be a positive integer, got {n_classes!r}")
    if isinstance(y, (list, tuple)):
        y = np.asarray(y)
    try:
        xp = array_api_compat.array_namespace(y)
    except TypeError:
        raise TypeError(f"y must be an array of integer labels, got {type(y).__name__}") from None
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per sample), got shape {tuple(y.shape)}")
    if not xp.isdtype(y.dtype, "integral"):
        raise TypeError(f"y must hold integer labels, got dtype {y.dtype}")
    device = array_api_compat.device(y)
    if y.shape[0]:
        low, high = _backend.to_host(xp.min(y)), _backend.to_host(xp.max(y))
        if low < 0 or high >= n_classes:
            raise ValueError(f"labels must be in [0, {n_classes}), got values from {low} to {high}")
    if dtype is None:
        dtype = xp.__array_namespace_info__().default_dtypes(device=device)["real floating"]
    classes = xp.arange(n_classes, dtype=y.dtype, device=device)
    return xp.astype(y[:, None] == classes[None, :], dtype)
