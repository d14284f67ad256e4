"""The batches of one training epoch, drawn from a host seed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from portable_mlp._backend import Placement

Array = Any


def minibatches(placement: Placement, X: Array, Y: Array, w: Array | None,
                w_host: np.ndarray | None, batch_size: int | None, shuffle: bool,
                rng: np.random.Generator) -> Iterator[tuple[Array, Array, Array | None, float]]:
    """The epoch's batches as ``(Xb, Yb, wb or None, count)``.

    ``count`` is what the batch weighs in the epoch's mean: its size, or the sum of its
    sample weights. Batches of zero weight are not yielded. A full batch (``batch_size``
    None or >= n) yields ``(X, Y, w, n or sum(w))`` once, without drawing from ``rng``.
    """
    n = X.shape[0]
    if batch_size is None or batch_size >= n:
        yield X, Y, w, float(n if w_host is None else np.sum(w_host, dtype=np.float64))
        return
    starts = list(range(0, n, batch_size))
    if shuffle:
        permutation = rng.permutation(n)
        order = placement.indices(permutation)
        xp = placement.xp
        X, Y = xp.take(X, order, axis=0), xp.take(Y, order, axis=0)
        if w_host is not None:
            w, w_host = xp.take(w, order, axis=0), w_host[permutation]
    counts = batch_counts(n, batch_size, w_host)
    for start, count in zip(starts, counts):
        if count == 0:
            continue
        stop = min(start + batch_size, n)  # out-of-bounds stops are not standard
        yield (X[start:stop, ...], Y[start:stop, ...], None if w is None else w[start:stop],
               float(count))


def batch_counts(n: int, batch_size: int, w_host: np.ndarray | None) -> np.ndarray:
    """What each batch of ``batch_size`` rows (in order) weighs: its size or its weight."""
    starts = np.arange(0, n, batch_size)
    if w_host is None:
        return np.diff(np.append(starts, n)).astype(np.float64)
    return np.add.reduceat(w_host, starts, dtype=np.float64)
