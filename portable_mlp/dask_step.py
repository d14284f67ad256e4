"""The graph path's step on dask: one task per row block, and one for the update.

Written in ``dask.array`` operations, a step is about 31 tasks per row block plus 10
(docs/distributed.md), most of them small. Here each row block's task runs the NumPy
step's forward and backward pass on its rows and gives the block's flat buffer
(``portable_mlp.batch_sums``); one task sums the buffers, adds the l2 term, clips, and
applies ``steps.guarded_update`` on NumPy. A step is then k + 1 tasks, plus one per
array it hands back (the parameters, the optimizer's slots, the guard, the loss and the
hits), whatever the network. ``Placement.guarded_step`` hands this to ``Trainer`` on
dask; the math is the same code as every backend's.
"""

from __future__ import annotations

import copy
import functools
import itertools
import operator
from dataclasses import dataclass
from typing import Any

import numpy as np

from portable_mlp import batch_sums, counter_rng, layers, optim, steps
from portable_mlp._backend import Placement

Array = Any


@dataclass(frozen=True)
class _Spec:
    """What the tasks need besides arrays: small, pickled into each task."""

    pieces: tuple[layers.Piece, ...]
    dtype: str
    loss_fn: Any
    l2: float
    clip_norm: float | None
    optimizer: optim.Optimizer  # hyper-parameters only: its state is in the arrays

    @classmethod
    def of(cls, settings: steps.Settings) -> _Spec:
        optimizer = copy.copy(settings.optimizer)
        optimizer.state = None
        return cls(tuple(settings.model.pieces), settings.model.placement.dtype,
                   settings.loss_fn, settings.l2, settings.clip_norm, optimizer)

    def model(self, params: list[np.ndarray]) -> Any:
        """A NumPy model of these pieces holding ``params``."""
        from portable_mlp.model import Sequential

        return Sequential._from_host(self.pieces, params, _numpy(self.dtype))


@functools.cache
def _numpy(dtype: str) -> Placement:
    return Placement.create("numpy", None, dtype)


def guarded_step(settings: steps.Settings, params: list[Array], state: dict[str, Any],
                 guard: tuple[Array, Array, Array], X: Array, Y: Array, labels: Array | None,
                 w: Array | None, lr: Any
                 ) -> tuple[list[Array], dict[str, Any], tuple[Array, Array, Array], Array,
                            Array | None]:
    """``steps.guarded_step`` on dask arrays, as one task per row block of X and one for
    the update; the same arguments and results."""
    from dask import delayed

    spec = _Spec.of(settings)
    params_d = [_single(p) for p in params]
    slots_d = [[_single(s) for s in ss] for ss in state["slots"]]
    guard_d = [_single(g) for g in guard]
    rows = X.chunks[0]
    blocks = [_row_blocks(a, rows) for a in (X, Y, labels, w)]
    starts = itertools.accumulate(rows, initial=0)  # each block's first row: its masks
    sums = [delayed(_shard, pure=False)(spec, params_d, *parts, state["step"], row0)
            for parts, row0 in zip(zip(*blocks), starts)]
    out = delayed(_update, pure=False)(spec, params_d, slots_d, guard_d, sums, lr,
                                       state["step"], labels is not None)
    like = [*params, *(s for ss in state["slots"] for s in ss), *guard]
    arrays = [_array(out, i, a.shape, a.dtype) for i, a in enumerate(like)]
    n, m = len(params), len(like) - len(guard)
    found = iter(arrays[n:m])
    new_slots = [[next(found) for _ in ss] for ss in state["slots"]]
    dtype = settings.model.placement.dtype
    loss = _array(out, len(like), (), dtype)
    hits = None if labels is None else _array(out, len(like) + 1, (), dtype)
    new_guard = (arrays[m], arrays[m + 1], arrays[m + 2])
    return arrays[:n], {"step": state["step"] + 1, "slots": new_slots}, new_guard, loss, hits


def _single(array: Array) -> Any:
    """The one block of a small dask array, as a Delayed (a key: no task)."""
    if any(len(c) > 1 for c in array.chunks):
        array = array.rechunk(-1)
    return array.to_delayed().ravel()[0]


def _row_blocks(array: Array | None, rows: tuple[int, ...]) -> list[Any]:
    """The row blocks of ``array`` cut as X's ``rows`` (one block of columns), as
    Delayed; Nones for no array."""
    if array is None:
        return [None] * len(rows)
    if array.chunks[0] != rows or (array.ndim == 2 and len(array.chunks[1]) > 1):
        array = array.rechunk({0: rows, **({1: -1} if array.ndim == 2 else {})})
    return list(array.to_delayed().ravel())


def _array(out: Any, i: int, shape: tuple[int, ...], dtype: Any) -> Array:
    """Item ``i`` of the update task's result as a one-block dask array: one task
    (``da.from_delayed(out[i])`` would make two)."""
    import dask.array as da
    from dask.highlevelgraph import HighLevelGraph

    name = f"{out.key}-{i}"
    graph: dict[Any, Any] = {(name, *(0,) * len(shape)): (operator.getitem, out.key, i)}
    return da.Array(HighLevelGraph.from_collections(name, graph, dependencies=[out]), name,
                    chunks=tuple((size,) for size in shape), dtype=dtype)


def _shard(spec: _Spec, params: list[np.ndarray], X: np.ndarray, Y: np.ndarray,
           labels: np.ndarray | None, w: np.ndarray | None, step: int,
           row0: int) -> np.ndarray:
    """A row block's buffer (a task); its Dropout masks are the rows ``row0`` on of the
    step's (``counter_rng``), what the whole batch draws for them."""
    model = spec.model(params)
    weight = float(X.shape[0] if w is None else np.sum(w, dtype=np.float64))
    with np.errstate(all="ignore"):  # a non-finite value is the guard's to report
        return batch_sums.shard_sums(model, model.params, X, Y, labels, w, spec.loss_fn,
                                     weight, key=counter_rng.Key(step, row0))


def _update(spec: _Spec, params: list[np.ndarray], slots: list[list[np.ndarray]],
            guard: list[np.ndarray], sums: list[np.ndarray], lr: Any, step: int,
            track: bool) -> tuple[np.ndarray, ...]:
    """The blocks' buffers summed (in block order), the global gradients, and the
    guarded update (a task); the new arrays, flat, then the loss and the hits."""
    model = spec.model(params)
    params = model.params
    with np.errstate(all="ignore"):
        total = sums[0].copy()
        for more in sums[1:]:
            total += more
        loss_sum, weight, hits, _ = batch_sums.tail_of(model, total)
        loss, grads, norm_ok = batch_sums.global_gradients(model, params, total, loss_sum,
                                                           weight, spec.l2, spec.clip_norm)
        settings = steps.Settings(model, spec.optimizer, spec.loss_fn, spec.l2,
                                  spec.clip_norm)
        loss_array = np.asarray(loss, dtype=spec.dtype)
        new_params, state, new_guard = steps.guarded_update(
            settings, params, {"step": step, "slots": slots}, (guard[0], guard[1], guard[2]),
            loss_array,
            grads, norm_ok, lr)
    flat_slots = [s for ss in state["slots"] for s in ss]
    return (*new_params, *flat_slots, *new_guard, loss_array,
            np.asarray(hits if track else 0.0, dtype=spec.dtype))
