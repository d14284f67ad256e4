"""The batches of one training epoch, in a seeded order, without moving the data.

Arrays in one piece of memory (NumPy, torch, JAX, CuPy...) are shuffled as they always
were: a permutation of the rows drawn on the host, ``take``, then consecutive slices.
Arrays chunked by rows (dask) are shuffled block-locally, as xgboost.dask and dask-glm keep
data where it lies: the order of the blocks is shuffled, and each block's rows are
permuted on the worker that holds it, by a generator in the state the host's generator
had (so a block's permutation is the one the host draws, and one block is shuffled exactly
like NumPy's data). No row crosses the cluster to be shuffled; only a batch that straddles
two blocks joins two slices.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from portable_mlp._backend import Placement

Array = Any


def minibatches(placement: Placement, arrays: Sequence[Any],
                w_host: np.ndarray | None, batch_size: int | None, shuffle: bool,
                rng: np.random.Generator) -> Iterator[tuple[list[Array | None], float]]:
    """The epoch's batches as ``(slices, count)``: ``slices`` holds a batch of each of
    ``arrays`` (X first, then arrays of X's rows: targets, their labels, the sample
    weights; None stays None), ``count`` what the batch weighs in the epoch's mean (its
    size, or the sum of its sample weights ``w_host``). Batches of zero weight are not
    yielded; a full batch (batch_size None or >= n) yields ``arrays`` as they are, once."""
    arrays = list(arrays)
    n = arrays[0].shape[0]
    if batch_size is None or batch_size >= n:
        yield arrays, _total(n, w_host)
        return
    if shuffle:
        arrays, permutation = _shuffled(placement, arrays, rng)
        if w_host is not None:
            w_host = w_host[permutation]
    starts = list(range(0, n, batch_size))
    counts = batch_counts(n, batch_size, w_host)
    for start, count in zip(starts, counts):
        if count == 0:  # no sample in effect: its weighted mean would be 0/0
            continue
        rows = slice(start, min(start + batch_size, n))  # out-of-bounds stops are not standard
        yield [None if a is None else a[rows, ...] for a in arrays], float(count)


def batch_counts(n: int, batch_size: int, w_host: np.ndarray | None) -> np.ndarray:
    """What each batch of ``batch_size`` rows (in order) weighs: its size or its weight."""
    starts = np.arange(0, n, batch_size)
    if w_host is None:
        return np.diff(np.append(starts, n)).astype(np.float64)
    return np.add.reduceat(w_host, starts, dtype=np.float64)


def _total(n: int, w_host: np.ndarray | None) -> float:
    return float(n) if w_host is None else float(np.sum(w_host, dtype=np.float64))


def _shuffled(placement: Placement, arrays: list[Array], rng: np.random.Generator
              ) -> tuple[list[Array | None], np.ndarray]:
    """``arrays`` (X first) with their rows in a new order drawn from ``rng``, and that
    order as host indices (for the host's copy of the sample weights)."""
    X = arrays[0]
    blocks = placement.row_blocks(X)
    if blocks is None:
        permutation = rng.permutation(X.shape[0])
        order = placement.indices(permutation)
        xp = placement.xp
        return [None if a is None else xp.take(a, order, axis=0) for a in arrays], permutation
    block_order = rng.permutation(len(blocks))
    offsets = np.cumsum([0, *blocks])
    states, parts = [], []
    for b in block_order:
        states.append(rng.bit_generator.state)  # a copy: what the worker starts from
        parts.append(offsets[b] + rng.permutation(blocks[b]))  # and what it will draw
    shuffled = placement.shuffled_blocks(arrays, block_order, states, type(rng.bit_generator))
    return shuffled, np.concatenate(parts)
