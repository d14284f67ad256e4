"""A shard's weighted sums, and a global batch's gradients from their sum over shards.

Data-parallel training splits a batch into shards (an SPMD rank's rows, a dask row
block) and gives each one flat buffer,

    [every gradient x n, the loss x n, n, the hits, stop]

where ``n`` is what the shard weighs (its rows, or their sample weights). Summed over
the shards (an allreduce, or a tree of dask tasks) and divided by the summed weight,
that is the gradient of the whole batch; ``global_gradients`` adds the l2 term and
clips, once. A non-finite value in any shard makes the sum non-finite (IEEE: NaN or
inf plus anything finite is not finite), so a divergence is seen wherever the sum is.
``stop`` is free for the caller's use (SPMD: the client asked the fit to end).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from portable_mlp import _backend, counter_rng, grad, steps

if TYPE_CHECKING:
    from portable_mlp.model import Sequential

Array = Any
TAIL = 4  # the buffer's entries after the gradients: loss x n, n, hits, stop


def n_grads(model: Sequential) -> int:
    """How many gradient entries lead the buffer."""
    return sum(math.prod(p.shape) for p in model.params)


def shard_sums(model: Sequential, params: list[Array], X: Array, Y: Array,
               labels: Array | None, w: Array | None, loss_fn: Any, weight: float,
               stop: float = 0.0, key: counter_rng.Key | None = None) -> Array:
    """The buffer of one shard of ``weight`` (0: an empty shard, zeros but ``stop``);
    its hits are 0 without the ``labels`` of Y's classes. ``key``: the step's draws
    (Dropout), with the shard's first row in the batch (None: no draws)."""
    place = model.placement
    xp, dtype, device = place.xp, place.dtype_obj, place.device_obj
    if weight == 0.0:
        return xp.concat([xp.zeros(n_grads(model) + TAIL - 1, dtype=dtype, device=device),
                          xp.asarray([stop], dtype=dtype, device=device)])
    loss, grads, out = grad.loss_grads_and_output(model, params, X, Y, loss_fn, 0.0, w, key=key)
    hits = (xp.asarray(0.0, dtype=dtype, device=device) if labels is None
            else steps.weighted_hits(model, out, labels, w))
    tail = xp.stack([loss * weight, xp.asarray(weight, dtype=dtype, device=device), hits,
                     xp.asarray(stop, dtype=dtype, device=device)])
    return xp.concat([*(xp.reshape(g, (-1,)) * weight for g in grads), tail])


def tail_of(model: Sequential, total: Array) -> tuple[float, float, float, float]:
    """The summed buffer's scalars, on the host: loss x n, n, hits, stop."""
    loss_sum, weight, hits, stop = (float(v) for v in _backend.to_host(
        total[n_grads(model):]))
    return loss_sum, weight, hits, stop


def global_gradients(model: Sequential, params: list[Array], total: Array, loss_sum: float,
                     weight: float, l2: float, clip_norm: float | None
                     ) -> tuple[float, list[Array], Any]:
    """The global batch's loss (l2 term included), its (clipped) gradients, and whether
    their norm is finite (True without clipping), from the summed buffer."""
    xp = model.xp
    grads, start = [], 0
    for p in params:
        size = math.prod(p.shape)
        grads.append(xp.reshape(total[start:start + size], p.shape) / weight)
        start += size
    grads = grad.add_l2_gradient(model, params, grads, weight, l2)
    loss = loss_sum / weight + float(grad.l2_penalty(model, params, weight, l2))
    grads, norm_ok = steps.clipped(model.placement, grads, clip_norm)
    return loss, grads, norm_ok
