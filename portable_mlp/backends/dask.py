"""Dask: a lazy graph kept bounded (persist, a lineage cut on a cluster), data scattered to
the workers once, rows shuffled block by block where they lie, a lost worker said plainly.

Dask has one device here, "cpu", whatever its arrays' chunks and workers are.
"""

from __future__ import annotations

import contextlib
import functools
import math
import operator
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import array_api_compat as compat
import numpy as np

from portable_mlp.backends.base import Backend
from portable_mlp.backends.numpy import numpy_sigmoid
from portable_mlp.backends.standard import Ops, standard_ops

# Host arrays up to this size are broadcast to every worker of a cluster when placed:
# parameters and small data sets, which every worker needs, and which then survive the
# loss of a worker. Larger ones are scattered once, to one worker.
_BROADCAST_BYTES = 1 << 20

# On a cluster, the parameters' lineage is cut every this many persists (one a step):
# the scheduler's state stays bounded, for one gather and one broadcast of the
# parameters per this many steps.
CUT_LINEAGE_EVERY = 10


class WorkerLostError(RuntimeError):
    """A Dask worker died holding results that the cluster cannot recompute; the model
    cannot go on from them (its parameters may be among them)."""


def dask_client() -> Any:
    """The ``distributed`` Client that dask computes on now, or None (a local scheduler)."""
    if "distributed" not in sys.modules:  # no Client can exist without it imported
        return None
    import dask.base
    from distributed import default_client

    try:
        client = default_client()
    except ValueError:
        return None
    return client if dask.base.get_scheduler() == client.get else None


def compute(*arrays: Any) -> tuple[Any, ...]:
    """``dask.compute``, with a worker's loss of unrecoverable data said plainly."""
    import dask

    try:
        return dask.compute(*arrays)
    except Exception as exc:
        if type(exc).__name__ not in ("FutureCancelledError", "CancelledError"):
            raise
        raise WorkerLostError(
            f"a Dask worker died holding results that the cluster cannot recompute ({exc}): "
            "the parameters of a recent step (between lineage cuts they live on one worker "
            "only), or data scattered from this process, which has no lineage. Load the data "
            "with dask (dask.array, dask.dataframe.read_parquet, ...) so that lost blocks are "
            "recomputed, and resume training from a checkpoint (pm.Checkpoint, pm.load)") from exc


def from_host(x: np.ndarray, broadcast: bool | None = None) -> Any:
    """A one-block dask array of host data. On a cluster, the data is sent to the workers
    once (``scatter``) and graphs hold only its key: a NumPy array embedded in a graph
    travels with every graph that uses it (Dask's large-graph warning)."""
    import dask.array as da

    client = dask_client()
    if client is None:
        return da.from_array(x, chunks=x.shape)
    if broadcast is None:
        broadcast = x.nbytes <= _BROADCAST_BYTES
    future = client.scatter(x, broadcast=broadcast, hash=False)
    return da.from_delayed(future, shape=x.shape, dtype=x.dtype)


def materialize(arrays: list[Any], cut_lineage: bool = False) -> list[Any]:
    """``arrays`` computed into memory (persisted).

    On a ``distributed`` cluster the scheduler keeps the lineage of what it persisted
    (dask/distributed#809), so a chain of persisted steps grows its state step after step;
    ``cut_lineage`` gathers the (small) arrays to this process and scatters them back to
    every worker, with no history: the scheduler then forgets the steps that made them.
    """
    import dask

    # the blocks run in worker threads, outside the caller's np.errstate: a NumPy warning
    # there (overflow in a diverging step) is for the divergence check to report
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        persisted = list(dask.persist(*arrays))
    if not cut_lineage or dask_client() is None:
        return persisted
    return [from_host(np.asarray(v), broadcast=True) for v in compute(*persisted)]


def _quiet_numpy_sigmoid(x: np.ndarray) -> np.ndarray:
    # dask runs the blocks later, outside any ``errstate`` that ``overflow_is_fine`` opens
    with np.errstate(over="ignore"):
        return numpy_sigmoid(x)


def _sigmoid(x: Any) -> Any:
    return x.map_blocks(_quiet_numpy_sigmoid, dtype=x.dtype)


class DaskBackend(Backend):
    """dask.array, through array-api-compat's namespace."""

    extra = "dask"
    single_device = True
    lazy = True

    def __init__(self) -> None:
        super().__init__("dask", "array_api_compat.dask.array", library="dask")

    def _load(self) -> Any:
        import dask.array  # noqa: F401 - the extra's array module, not dask alone

        return super()._load()

    def is_namespace(self, xp: Any) -> bool:
        return compat.is_dask_namespace(xp)

    def is_array(self, x: Any) -> bool:
        return compat.is_dask_array(x)

    @functools.cached_property
    def ops(self) -> Ops:
        return standard_ops(self.xp, operator.methodcaller("reshape", -1), _sigmoid)

    @functools.cached_property
    def device(self) -> Callable[[Any], Any]:
        return lambda x: "cpu"

    def devices(self) -> list[Any]:
        return ["cpu"]

    def default_device(self) -> Any:
        return "cpu"

    def from_host(self, x: np.ndarray, device: Any, dtype: Any) -> Any:
        return from_host(np.asarray(x, dtype=np.dtype(dtype)))

    def indices(self, host: np.ndarray, dtype: Any, device: Any) -> Any:
        return host  # dask takes host indices best

    def to_host(self, x: Any) -> np.ndarray:
        return np.asarray(compute(x)[0])

    def overflow_is_fine(self) -> Callable[[], Any]:
        return contextlib.nullcontext

    def quiet(self) -> Callable[[], Any]:  # the blocks run in worker threads: materialize
        return contextlib.nullcontext

    def synchronize(self, arrays: Any = ()) -> None:
        import dask

        dask.compute(arrays)

    def read_scalars(self, arrays: list[Any]) -> list[float]:
        """One compute for all; a lost worker's data is a WorkerLostError."""
        return [float(a) for a in compute(*arrays)]

    def materializer(self) -> Callable[[list[Any]], list[Any]]:
        """``materialize``, with the lineage cut every ``CUT_LINEAGE_EVERY`` calls."""
        calls = [0]

        def persist(arrays: list[Any]) -> list[Any]:
            calls[0] += 1
            return materialize(arrays, calls[0] % CUT_LINEAGE_EVERY == 0)

        return persist

    def persist_rows(self, X: Any, others: list[Any]) -> list[Any]:
        """X with its columns in one block, and ``others`` cut into X's row blocks, persisted
        together: each row block of the data then lives whole on one worker."""
        import dask

        if X.ndim == 2 and len(X.chunks[1]) > 1:
            X = X.rechunk({1: -1})
        rows = X.chunks[0]
        aligned = [a if a is None or a.chunks[0] == rows else a.rechunk({0: rows})
                   for a in others]
        present = [a for a in (X, *aligned) if a is not None]
        persisted = iter(dask.persist(*present))
        return [next(persisted) if a is not None else None for a in (X, *aligned)]

    def rows(self, data: Any, name: str) -> Any:
        """A dask DataFrame or Series as a dask array with known row blocks (one per
        partition; counting the rows is one pass over the partitions); other data as it
        is. A dask array of unknown block lengths is refused: rows cannot be cut from it."""
        if type(data).__module__.startswith("dask.dataframe"):
            data = data.to_dask_array(lengths=True)
        chunks = getattr(data, "chunks", None)
        if self.is_array(data) and chunks and any(math.isnan(c) for c in chunks[0]):
            raise ValueError(f"{name} is a dask array whose row blocks have unknown lengths; "
                             f"call {name}.compute_chunk_sizes(), or pass the dask DataFrame "
                             "itself")
        return data

    def row_blocks(self, x: Any) -> tuple[int, ...] | None:
        return tuple(x.chunks[0])

    def shuffled_blocks(self, arrays: list[Any], order: np.ndarray,
                        states: list[Mapping[str, Any]], kind: type) -> list[Any]:
        """The row blocks (the first array's) of each array in ``order``, block
        ``order[i]``'s rows permuted by a ``Generator(kind(...))`` in state ``states[i]``;
        persisted. Each block is permuted on the worker that holds it: only the generator
        states (a few bytes) enter the graph."""
        import dask
        import dask.array as da

        out: list[Any] = []
        rows = arrays[0].chunks[0]
        for a in arrays:
            if a is None:
                out.append(None)
                continue
            if a.chunks[0] != rows:  # not cut as X is (persist_rows does it once per fit)
                a = a.rechunk({0: rows})
            parts = [a.blocks[int(b)].map_blocks(_permuted_rows, kind, state, dtype=a.dtype)
                     for b, state in zip(order, states)]
            out.append(da.concatenate(parts, axis=0))
        present = iter(dask.persist(*[a for a in out if a is not None]))
        return [None if a is None else next(present) for a in out]

    def guarded_step(self) -> Callable[..., Any]:
        """The step as one task per row block and one for the update."""
        from portable_mlp import dask_step

        return dask_step.guarded_step


def _permuted_rows(block: np.ndarray, kind: type, state: Mapping[str, Any]) -> np.ndarray:
    bits = kind()
    bits.state = state
    return block[np.random.Generator(bits).permutation(block.shape[0])]
