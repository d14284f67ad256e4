"""Losses: each ``loss(ops, out, y, w=None)`` returns ``(value, delta)`` where
``delta`` is d value / d output (``ops``: the model's ``_backend.Ops``).

Every loss is a mean over samples. Given ``w`` (an ``(n, 1)`` column of per-sample
weights that sum to one), it is the weighted mean instead: sample ``i``'s term is
scaled by ``w[i]`` rather than by ``1/n``. Without ``w`` nothing extra is computed.

``value`` is a 0-d array on the model's device (never read back here).
The cross-entropies take logits (an Identity or Linear output layer) and fuse
the final softmax/sigmoid into the loss, which is what makes them stable and
their delta simple: ``(softmax(z) - Y) / N`` and ``(sigmoid(z) - Y) / N``. The
Poisson loss takes the log of the predicted mean the same way (its output link is
``exp``, as in scikit-learn's MLPRegressor): delta ``(exp(z) - Y) / N``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from portable_mlp._backend import Ops

Array = Any
Loss = Callable[..., tuple[Array, Array]]


def mse(ops: Ops, out: Array, y: Array, w: Array | None = None) -> tuple[Array, Array]:
    """The scratch_mlp article's squared error: ``sum((out - y)**2) / (2N)``.

    Parameters
    ----------
    ops : Ops
        The backend's operations (``model.placement.ops``).
    out : array of shape (n, k)
        The model's outputs.
    y : array of shape (n, k)
        The targets.
    w : array of shape (n,) or None, default None
        Per-sample weights: a weighted mean instead of the mean over N.
    """
    delta = out - y
    if w is None:
        n = out.shape[0]
        value = ops.sum_of_squares(delta) / (2.0 * n)
        delta *= 1.0 / n
    else:
        weighted = delta * w
        value = ops.xp.sum(weighted * delta) / 2.0
        delta = weighted
    return value, delta


def cross_entropy(ops: Ops, z: Array, y: Array, w: Array | None = None
                  ) -> tuple[Array, Array]:
    """``-sum(y * log_softmax(z)) / N`` for logits ``z``, stable for any finite logits.

    Parameters
    ----------
    ops : Ops
        The backend's operations (``model.placement.ops``).
    z : array of shape (n, k)
        The logits (the model ends with ``Identity``).
    y : array of shape (n, k)
        One-hot (or probability) targets.
    w : array of shape (n,) or None, default None
        Per-sample weights: a weighted mean instead of the mean over N.
    """
    xp = ops.xp
    scale = 1.0 / z.shape[0] if w is None else w
    shifted = z - xp.max(z, axis=1, keepdims=True)
    log_p = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    terms = y * log_p
    value = -xp.sum(terms) * scale if w is None else -xp.sum(terms * w)
    delta = xp.exp(log_p)
    delta -= y
    delta *= scale
    return value, delta


def binary_cross_entropy(ops: Ops, z: Array, y: Array, w: Array | None = None
                         ) -> tuple[Array, Array]:
    """Sigmoid + binary cross-entropy on logits, summed over outputs, divided by N.

    Uses ``max(z, 0) - z*y + log1p(exp(-|z|))``, which never overflows.

    Parameters
    ----------
    ops : Ops
        The backend's operations (``model.placement.ops``).
    z : array of shape (n, k)
        The logits, one per independent binary output.
    y : array of shape (n, k)
        0/1 targets.
    w : array of shape (n,) or None, default None
        Per-sample weights: a weighted mean instead of the mean over N.
    """
    xp = ops.xp
    scale = 1.0 / z.shape[0] if w is None else w
    terms = xp.maximum(z, 0.0) - z * y + xp.log1p(xp.exp(-xp.abs(z)))
    value = xp.sum(terms) * scale if w is None else xp.sum(terms * w)
    delta = _stable_sigmoid(xp, z)
    delta -= y
    delta *= scale
    return value, delta


def poisson(ops: Ops, z: Array, y: Array, w: Array | None = None) -> tuple[Array, Array]:
    """Half the Poisson deviance of the mean ``exp(z)``, summed over outputs, over N.

    ``y * log(y / exp(z)) - y + exp(z)`` per entry (``0 * log 0`` is 0), as
    scikit-learn's ``poisson_loss``: 0 where ``exp(z) == y``. Needs ``y >= 0``
    (``check_targets`` says so up front; a negative target makes the value NaN).

    Parameters
    ----------
    ops : Ops
        The backend's operations (``model.placement.ops``).
    z : array of shape (n, k)
        The log of the predicted means.
    y : array of shape (n, k)
        Non-negative counts or rates.
    w : array of shape (n,) or None, default None
        Per-sample weights: a weighted mean instead of the mean over N.
    """
    xp = ops.xp
    scale = 1.0 / z.shape[0] if w is None else w
    mean = xp.exp(z)
    positive = y > 0.0
    # y log y: 0 at y = 0, NaN below (outside the loss's domain: never a silent fit)
    y_log_y = xp.where(positive, y * xp.log(xp.where(positive, y, 1.0)),
                       xp.where(y < 0.0, y * xp.nan, 0.0))
    terms = y_log_y - y * z - y + mean
    value = xp.sum(terms) * scale if w is None else xp.sum(terms * w)
    delta = mean - y
    delta *= scale
    return value, delta


def check_targets(loss: str, xp: Any, y: Array) -> None:
    """Refuse targets outside the loss's domain (the Poisson loss needs ``y >= 0``).

    Reads one boolean back: call it once per fit, not per step.

    Parameters
    ----------
    loss : str
        The loss's name.
    xp : array namespace
        The targets' namespace.
    y : array
        The targets.
    """
    if loss == "poisson" and not bool(xp.all(y >= 0)):
        raise ValueError("Some value(s) of y are negative which is not allowed for "
                         "Poisson regression.")


def _stable_sigmoid(xp: Any, z: Array) -> Array:
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))


LOSSES: dict[str, Loss] = {
    "mse": mse, "cross_entropy": cross_entropy, "binary_cross_entropy": binary_cross_entropy,
    "poisson": poisson,
}
LOGIT_LOSSES = ("cross_entropy", "binary_cross_entropy", "poisson")  # take the raw output


def get(name: str) -> Loss:
    """The loss function of that name (``LOSSES``).

    Parameters
    ----------
    name : {"mse", "cross_entropy", "binary_cross_entropy", "poisson"}
        The loss's name.
    """
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
    return LOSSES[name]
