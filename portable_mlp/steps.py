"""The pure training step, and the compiled epoch built from it.

Pure: these functions hold nothing and modify none of their inputs (the optimizer's update
makes new arrays), so ``jax.jit`` compiles them whole.
``Trainer`` (``portable_mlp.train``) drives them: step by step, or an epoch at a time as
one compiled ``scan`` where the backend compiles.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from portable_mlp import _backend, batches, counter_rng, grad, optim, validation

if TYPE_CHECKING:
    from portable_mlp.model import Sequential

Array = Any


@dataclass(frozen=True)
class Settings:
    """What a pure step needs besides arrays: fixed while a compiled function lives."""

    model: Sequential
    optimizer: optim.Optimizer
    loss_fn: Any
    l2: float
    clip_norm: float | None


@dataclass(frozen=True)
class EpochPlan:
    """One epoch's batches, drawn on the host: row indices ``(batches, size)``, per-row
    weights (None when every row counts once), and what each batch weighs."""

    indices: np.ndarray
    weights: np.ndarray | None
    counts: np.ndarray

    def arguments(self, placement: _backend.Placement, lrs: list[float]) -> tuple[Any, ...]:
        """``indices, weights, lrs, counts`` for ``scan_epoch``, as host arrays (compiled
        code takes them as they are); one full batch in order needs no indices, and its
        rate and count go in as plain numbers."""
        if self.single:
            return None, None, lrs[0], float(self.counts[0])
        dtype = np.dtype(placement.dtype)
        weights = None if self.weights is None else self.weights.astype(dtype)
        return (self.indices.astype(_backend.dtype_name(placement.int_dtype)), weights,
                np.asarray(lrs, dtype=dtype), self.counts.astype(dtype))

    @property
    def single(self) -> bool:
        """One full batch, in order, every row weighing 1: train on the data as it is."""
        return self.indices.shape[0] == 1 and self.weights is None

    @functools.cached_property
    def active(self) -> np.ndarray:
        """Batches that hold samples in effect (a batch of zero weight is skipped)."""
        return (self.counts > 0).astype(np.int64)

    @functools.cached_property
    def steps_before(self) -> list[int]:
        """How many steps the epoch has taken before each batch."""
        return (np.cumsum(self.active) - self.active).tolist()

    @functools.cached_property
    def n_steps(self) -> int:
        return int(self.active.sum())

    @functools.cached_property
    def weight(self) -> float:
        """What the epoch's batches weigh in all."""
        return float(self.counts.sum())

    @classmethod
    def draw(cls, data: Any, batch_size: int | None, shuffle: bool,
             rng: np.random.Generator) -> EpochPlan:
        """The same order as the eager epoch's (``batches.minibatches``) for the same
        ``rng``; the last batch padded with weight-0 copies of row 0."""
        n = data.n
        size = n if batch_size is None or batch_size >= n else batch_size
        if size == n and data.w_host is None:
            return _full_batch(n)
        order = rng.permutation(n) if shuffle and size < n else np.arange(n)
        n_batches = -(-n // size)
        pad = n_batches * size - n
        indices = np.concatenate([order, np.zeros(pad, dtype=order.dtype)])
        ordered = None if data.w_host is None else data.w_host[order]
        weights = None
        if ordered is not None or pad:
            rows = np.ones(n) if ordered is None else ordered
            weights = np.concatenate([rows, np.zeros(pad)]).reshape(n_batches, size)
        counts = batches.batch_counts(n, size, ordered)
        return cls(indices.reshape(n_batches, size), weights, counts)


@functools.lru_cache(maxsize=4)
def _full_batch(n: int) -> EpochPlan:
    """The plan of every epoch that is one full batch in order: made once per size (the
    few sizes last used), not per epoch, where it costs a full-batch JAX epoch of a small
    network a tenth of its time."""
    return EpochPlan(np.arange(n).reshape(1, n), None, np.array([float(n)]))


def fresh_guard(placement: _backend.Placement) -> tuple[Array, Array, Array]:
    """The deferred check's state: every step finite so far, the last finite loss (none
    yet: NaN) and the steps skipped since the first non-finite one."""
    xp, device = placement.xp, placement.device_obj
    return (xp.asarray(True, device=device),
            xp.asarray(math.nan, dtype=placement.dtype_obj, device=device),
            xp.asarray(0, dtype=placement.int_dtype, device=device))


def guarded_step(settings: Settings, params: list[Array], state: dict[str, Any],
                 guard: tuple[Array, Array, Array], X: Array, Y: Array, labels: Array | None,
                 w: Array | None, lr: Any
                 ) -> tuple[list[Array], dict[str, Any], tuple[Array, Array, Array], Array,
                            Array | None]:
    """Pure: one step that updates only while every step so far was finite, its update
    included (``guard``); returns the params, state, guard, loss and (given the
    ``labels`` of Y's classes) the weighted hits."""
    model = settings.model
    loss, grads, norm_ok, out = gradients(model, params, X, Y, settings.loss_fn, settings.l2,
                                          w, settings.clip_norm, counter_rng.Key(state["step"]))
    params, state, guard = guarded_update(settings, params, state, guard, loss, grads,
                                          norm_ok, lr)
    return params, state, guard, loss, (None if labels is None
                                        else weighted_hits(model, out, labels, w))


def guarded_update(settings: Settings, params: list[Array], state: dict[str, Any],
                   guard: tuple[Array, Array, Array], loss: Array, grads: list[Array],
                   norm_ok: Any, lr: Any
                   ) -> tuple[list[Array], dict[str, Any], tuple[Array, Array, Array]]:
    """Pure: the update of ``guarded_step`` from its loss and (clipped) gradients."""
    placement = settings.model.placement
    xp = placement.xp
    healthy = guard[0] & xp.isfinite(loss) & norm_ok
    params, state, healthy = _update_where(healthy, placement, settings.optimizer, params,
                                           grads, state, lr)
    guard = (healthy, xp.where(healthy, loss, guard[1]),
             guard[2] + xp.astype(~healthy, placement.int_dtype))
    return params, state, guard


def scan_epoch(settings: Settings, params: list[Array], slots: list[list[Array]], step: Any,
               guard: tuple[Array, Array, Array], X: Array, Y: Array, labels: Array,
               indices: Array | None, weights: Array | None, lrs: Any, counts: Any
               ) -> tuple[list[Array], list[list[Array]], tuple[Array, Array, Array], Array]:
    """Pure: the epoch's guarded steps as one scan over its batches (compiled code).

    A batch whose count is 0 (all its weights zero) changes nothing and counts no step.
    Returns the params, slots, guard, and a summary to read back in one transfer: the
    summed (count-weighted) losses, the summed hits, and 1 if every step was finite.
    """
    placement = settings.model.placement
    xp = placement.xp
    zero = xp.asarray(0.0, dtype=placement.dtype_obj, device=placement.device_obj)

    def train(carry: Any, Xb: Array, Yb: Array, lb: Array, w: Array | None, lr: Array,
              count: Array) -> Any:
        params, slots, step, guard, loss_sum, hit_sum = carry
        state = {"step": step, "slots": slots}
        new = guarded_step(settings, params, state, guard, Xb, Yb, lb, w, lr)
        new_carry = (new[0], new[1]["slots"], new[1]["step"], new[2],
                     loss_sum + new[3] * count, hit_sum + new[4])
        if w is None:  # no batch of zero weight
            return new_carry
        return _tree_where(xp, count > 0, new_carry, carry)

    def body(carry: Any, batch: Any) -> tuple[Any, None]:
        rows, lr, count, w = batch if weights is not None else (*batch, None)
        Xb, Yb, lb = (xp.take(a, rows, axis=0) for a in (X, Y, labels))
        return train(carry, Xb, Yb, lb, w, lr, count), None

    carry = (params, slots, step, guard, zero, zero)
    if indices is None:  # one full batch, in order (EpochPlan.single): no loop, no gather
        carry = train(carry, X, Y, labels, None, lrs, counts)
    else:
        xs = (indices, lrs, counts) if weights is None else (indices, lrs, counts, weights)
        carry = placement.scan(body, carry, xs)[0]
    params, slots, _, guard, loss_sum, hit_sum = carry
    summary = xp.stack([loss_sum, hit_sum, xp.astype(guard[0], loss_sum.dtype)])
    return params, slots, guard, summary


def _tree_where(xp: Any, cond: Array, new: Any, old: Any) -> Any:
    """``where(cond, new, old)`` over matching nests of tuples and lists of arrays."""
    if isinstance(new, (tuple, list)):
        return type(new)(_tree_where(xp, cond, n, o) for n, o in zip(new, old))
    return xp.where(cond, new, old)


def evaluation(settings: Settings, params: list[Array], X: Array, Y: Array,
               w: Array | None) -> tuple[Array, Array]:
    """Pure: the loss (with the l2 term) and the (weighted) accuracy of ``params``."""
    model = settings.model
    out, _ = model.forward(X, params)
    value, _, n = grad.output_loss(model, params, out, Y, settings.loss_fn, settings.l2, w)
    return value, weighted_hits(model, out, model.classes_of(Y), w) / n


def weighted_hits(model: Sequential, out: Array, labels: Array, w: Array | None) -> Array:
    """How many samples ``out`` puts in their class ``labels`` (the sum of their
    weights); ``labels``: ``model.classes_of`` the targets."""
    right = model.classes_of(out) == labels
    if w is None:
        return model.placement.ops.count_true(right, out.dtype)
    return model.xp.sum(model.xp.where(right, w, 0.0))


def train_step(model: Sequential, params: list[Array], state: dict[str, Any], X: Array,
               Y: Array, optimizer: optim.Optimizer, loss: str = "mse", l2: float = 0.0,
               clip_norm: float | None = None, lr: Any = None
               ) -> tuple[list[Array], dict[str, Any], Array, Array]:
    """Pure: one step of ``model``'s network from ``params`` and the optimizer ``state``
    (``optimizer.init_state(xp, params)`` to start) on arrays placed on the model.

    Returns ``(params, state, loss, finite)``. Nothing is read back to the host and
    nothing is stored, so ``jax.jit`` compiles it whole, e.g.
    ``jax.jit(functools.partial(pm.train_step, model, optimizer=opt))``. Where the loss,
    a gradient or the updated parameters or slots are not finite, the ``params`` and
    slots passed in come back (selected with ``where``) and ``finite`` is False;
    ``state["step"]`` counts steps taken, finite or not, and keys the step's Dropout
    masks (``portable_mlp.counter_rng``): the step counter is the pure step's key. The
    arguments are checked as ``Trainer`` checks its own (metadata only, so under
    ``jax.jit`` once, when traced); ``l2`` and ``clip_norm`` must be Python numbers.
    The inputs are never modified. On dask the results are persisted, as in
    ``Trainer``, so that the graph stays bounded.
    Under ``jax.jit`` the step count comes back as an array: start from
    ``state["step"] = jnp.asarray(0)`` to compile once, not twice; a learning-rate
    schedule other than the constant one needs it as a Python int (the optimizer reads
    it on the host): under ``jax.jit`` pass this step's rate as ``lr``
    (``optimizer.learning_rate(k)``, an argument, so the rate changes without a new
    compilation), or train with ``Trainer``, which does that.

    Parameters
    ----------
    model : Sequential
        The model whose network is stepped (its ``params`` are not used nor changed).
    params : list of arrays
        The parameters to step from, on the model's backend.
    state : dict
        The optimizer's state (``optimizer.init_state(model.xp, params)``).
    X : array of shape (n, n_features)
        Features placed on the model.
    Y : array of shape (n, n_outputs)
        Targets placed on the model.
    optimizer : Optimizer
        The optimizer whose rule updates ``params``.
    loss : str, default "mse"
        The loss's name.
    l2 : float, default 0.0
        The weight decay (a Python number).
    clip_norm : float or None, default None
        Clip the gradients to this global norm (a Python number); None does not clip.
    lr : float, 0-d array or None, default None
        This step's learning rate; None: the optimizer's schedule.
    """
    loss_fn = grad.check_loss(model, loss)
    if not isinstance(optimizer, optim.Optimizer):
        raise TypeError(f"optimizer must be a portable_mlp Optimizer (pm.SGD(...), "
                        f"pm.Adam(...)), the one whose init_state made state; got "
                        f"{type(optimizer).__name__} {optimizer!r}"[:300])
    params, state, X, Y, l2, clip_norm = validation.step_arguments(
        model, params, state, X, Y, optimizer, l2, clip_norm, lr)
    placement = model.placement
    xp = placement.xp
    with placement.quiet():
        value, grads, norm_ok, _ = gradients(model, params, X, Y, loss_fn, l2, None,
                                             clip_norm, counter_rng.Key(state["step"]))
        finite = xp.isfinite(value) & norm_ok
        new_params, new_state, finite = _update_where(finite, placement, optimizer, params,
                                                      grads, state, lr)
        new_params, new_state["slots"], (value, finite) = materialized(
            placement, new_params, new_state["slots"], [value, finite])
    return new_params, new_state, value, finite


def gradients(model: Sequential, params: list[Array], X: Array, Y: Array, loss_fn: Any,
              l2: float, w: Array | None, clip_norm: float | None,
              key: counter_rng.Key | None = None) -> tuple[Array, list[Array], Any, Array]:
    """The loss, the (clipped) gradients, whether their norm is finite where clipping
    needs it (True without ``clip_norm``; else a 0-d flag) and the forward pass's
    output. ``key``: the step's draws (Dropout); None: no draws.

    Only clipping needs the gradients' norm: without it, a non-finite gradient shows
    in the updated parameters or slots, which every caller checks. Every caller runs in
    ``placement.quiet()``: the forward pass opens no error-state context of its own."""
    loss, grads, out = grad.loss_grads_and_output(model, params, X, Y, loss_fn, l2, w,
                                                  silenced=True, key=key)
    grads, norm_ok = clipped(model.placement, grads, clip_norm)
    return loss, grads, norm_ok, out


def clipped(placement: _backend.Placement, grads: list[Array], clip_norm: float | None
            ) -> tuple[list[Array], Any]:
    """``grads`` scaled so that their global norm is at most ``clip_norm`` (None: as
    they are), and whether that norm is finite (True without ``clip_norm``)."""
    if clip_norm is None:
        return grads, True
    xp, square_sum = placement.xp, placement.ops.sum_of_squares
    sq_norm = 0.0
    for g in grads:
        sq_norm = sq_norm + square_sum(g)
    scale = xp.minimum(clip_norm / (xp.sqrt(sq_norm) + 1e-12), 1.0)
    return [g * scale for g in grads], xp.isfinite(sq_norm)


def _update_where(ok: Array, placement: _backend.Placement, optimizer: optim.Optimizer,
                  params: list[Array], grads: list[Array], state: dict[str, Any],
                  lr: Any = None) -> tuple[list[Array], dict[str, Any], Array]:
    """The optimizer's update (at rate ``lr``, None: the schedule's) where ``ok`` (a 0-d
    bool array) holds and the update is finite, else ``params`` and the slots of
    ``state`` (kept intact); and that flag."""
    xp, old_slots = placement.xp, state["slots"]
    new_params, new_state = optimizer.update(xp, params, grads, state, lr)
    for new in (*new_params, *(s for slots in new_state["slots"] for s in slots)):
        ok = ok & xp.all(xp.isfinite(new))
    new_params = [xp.where(ok, new, old) for new, old in zip(new_params, params)]
    new_state["slots"] = [[xp.where(ok, n, o) for n, o in zip(ns, os)]
                          for ns, os in zip(new_state["slots"], old_slots)]
    return new_params, new_state, ok


def all_finite_on_host(placement: _backend.Placement, params: list[Array],
                       slots: list[list[Array]]) -> bool:
    """Whether every array is finite, read back at once (the host-read path).

    A finite sum of squares proves it in one fast pass per array; only where that sum
    is not finite (a NaN or inf, or squares too large for the dtype) is each array
    checked exactly."""
    arrays = [*params, *(s for ss in slots for s in ss)]
    square_sum, total = placement.ops.sum_of_squares, 0.0
    for a in arrays:
        total += float(square_sum(a))  # summed on the host: reads are free here
    if math.isfinite(total):
        return True
    xp = placement.xp
    return all(bool(xp.all(xp.isfinite(a))) for a in arrays)


def materialized(placement: _backend.Placement, params: list[Array],
                 slots: list[list[Array]], extra: list[Array]
                 ) -> tuple[list[Array], list[list[Array]], list[Array]]:
    """``params``, ``slots`` and ``extra`` computed into memory together (dask: one
    persist, so the graph stays bounded); the same arrays elsewhere."""
    flat = placement.materialize([*params, *[s for ss in slots for s in ss], *extra])
    n, m = len(params), len(flat) - len(extra)
    rest = iter(flat[n:m])
    return flat[:n], [[next(rest) for _ in ss] for ss in slots], flat[m:]
