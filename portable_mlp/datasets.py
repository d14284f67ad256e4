"""Small seeded 2-D data sets, generated here (no downloads). All return host NumPy."""

from __future__ import annotations

import numpy as np

from portable_mlp import validation


def xor(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The seed's XOR data: ``RandomState(seed).randn(n, 2)``, label ``x0 > 0 xor x1 > 0``.

    Returns X float64 (n, 2) and y int64 (n,).
    """
    n = validation.positive("n", n, integer=True)
    X = np.random.RandomState(validation.check_seed(seed)).randn(n, 2)
    y = np.logical_xor(X[:, 0] > 0, X[:, 1] > 0).astype(np.int64)
    return X, y
