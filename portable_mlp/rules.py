"""The optimizers' elementwise update rules, written once over lists of arrays.

Each rule takes every parameter of a model at once (``ps``, ``gs`` and one list per
slot) and a few list operations (``portable_mlp.backends.list_ops``): NumPy's ufuncs
with ``out=``, torch's ``_foreach_`` kernels, and the standard's expressions (new arrays)
on JAX, dask and array-api-strict. A backend's ``Ops`` holds each rule bound to its
list operations (``Ops.sgd``, ``Ops.sgd_momentum``, ``Ops.adam``, ``Ops.adamw``,
``Ops.decay``); on CuPy each rule is one fused kernel of the same math instead.

The double-buffer contract:

- ``out``: where the new values go. None makes new arrays (the functional path: JAX,
  ``train_step``). Else a tuple of lists of spare arrays, one list for the parameters
  and one per slot, shaped as the inputs: the rule writes the new values into them
  (where the library writes in place; elsewhere it returns new arrays, so always use
  what the rule returns). The caller swaps: the returned arrays become the state, the
  old state becomes the next step's spares.
- The parameters and slots passed in are never modified: a step found non-finite later
  is dropped by going back to them. ``out`` never aliases them.
- The gradients ``gs`` are the rule's own: overwritten (they serve as scratch).
- A term added to a rule follows the same contract. Decoupled weight decay (``decay``)
  is added after the rule, ``new_p - lr * wd * p``, from the parameters passed in, with
  the consumed gradients as scratch: before the rule it would need ``out``'s parameters,
  which Adam uses as scratch, and ``sub_ratio_into`` cannot write over its input.

The arithmetic is the same, rounding included, on every backend but torch (whose
``_foreach_add_(alpha=...)`` and ``addcmul``/``addcdiv`` round once where the standard's
expression rounds twice).
"""

from __future__ import annotations

from typing import Any

Array = Any
Lists = list[Array]


def sgd(ops: Any, ps: Lists, gs: Lists, lr: Any, out: tuple[Lists] | None) -> Lists:
    """``p - lr * g`` for each parameter; returns the new parameters."""
    return ops.axpy_into(out and out[0], ps, gs, -lr)


def sgd_momentum(ops: Any, ps: Lists, gs: Lists, vs: Lists, lr: Any, momentum: float,
                 nesterov: bool, out: tuple[Lists, Lists] | None) -> tuple[Lists, Lists]:
    """``v = momentum * v - lr * g``, then ``p + v`` or (Nesterov) ``p + momentum * v
    - lr * g``; returns the new parameters and velocities."""
    out_p, out_v = out or (None, None)
    gs = ops.scale(gs, gs, lr)
    vs = ops.axpy(ops.scale(out_v, vs, momentum), gs, -1.0, None)
    if nesterov:
        gs = ops.axpy(gs, vs, -momentum, None)
        return ops.axpy_into(out_p, ps, gs, -1.0), vs
    return ops.axpy_into(out_p, ps, vs, 1.0), vs


def adam(ops: Any, ps: Lists, gs: Lists, ms: Lists, vs: Lists, beta1: float, beta2: float,
         eps: float, step: Any, out: tuple[Lists, Lists, Lists] | None
         ) -> tuple[Lists, Lists, Lists]:
    """``m = beta1 * m + (1 - beta1) * g``, ``v = beta2 * v + (1 - beta2) * g**2``, then
    ``p - step * m / (sqrt(v) + eps)`` (``step``: the bias-corrected rate); returns the
    new parameters, first and second moments."""
    out_p, out_m, out_v = out or (None, None, None)
    vs = ops.add_square(ops.scale(out_v, vs, beta2), gs, 1.0 - beta2, out_p)
    ms = ops.axpy(ops.scale(out_m, ms, beta1), gs, 1.0 - beta1, gs)
    denominators = ops.sqrt_plus(gs, vs, eps)
    return ops.sub_ratio_into(out_p, ps, ms, denominators, step), ms, vs


def decay(ops: Any, new_ps: Lists, ps: Lists, rate: Any, scratch: Lists) -> Lists:
    """Decoupled weight decay (Loshchilov & Hutter) after a rule's update: ``new_p - rate
    * p`` with ``rate = lr * weight_decay`` and ``p`` the parameters before the update
    (``torch.optim.AdamW``'s ``p * (1 - rate)`` then its step: the same math); written
    into ``new_ps``, ``scratch`` (the rule's consumed gradients) overwritten."""
    return ops.axpy(new_ps, ps, -rate, scratch)


def adamw(ops: Any, ps: Lists, gs: Lists, ms: Lists, vs: Lists, beta1: float, beta2: float,
          eps: float, step: Any, rate: Any, out: tuple[Lists, Lists, Lists] | None
          ) -> tuple[Lists, Lists, Lists]:
    """AdamW: ``adam``'s update, then ``decay`` at ``rate``; returns the new parameters,
    first and second moments."""
    new_ps, ms, vs = adam(ops, ps, gs, ms, vs, beta1, beta2, eps, step, out)
    return decay(ops, new_ps, ps, rate, gs), ms, vs
