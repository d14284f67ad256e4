"""The loss and its gradient by the chain rule, and a finite-difference check."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from portable_mlp import _backend, counter_rng, layers, losses, validation
from portable_mlp.model import Sequential, check_model

Array = Any


def check_loss(model: Sequential, loss: str) -> losses.Loss:
    """The loss function, refusing a logit loss on a model that does not output logits."""
    check_model(model)
    fn = losses.get(loss)
    if loss in losses.LOGIT_LOSSES and not isinstance(model.pieces[-1],
                                                       (layers.Identity, layers.Linear)):
        raise ValueError(f"loss {loss!r} takes logits: end the model with Identity "
                         f"(MLP(..., output='identity')), not {type(model.pieces[-1]).__name__}")
    return fn


def loss_and_grads(model: Sequential, params: list[Array], X: Array, Y: Array,
                   loss_fn: losses.Loss, l2: float, sample_weight: Array | None = None,
                   key: counter_rng.Key | None = None) -> tuple[Array, list[Array]]:
    """Pure: the loss and gradients of ``params`` on placed arrays ``X``, ``Y``.

    With ``sample_weight`` (``(n,)``, non-negative) the loss is the weighted mean over
    samples and the l2 term is divided by the sum of the weights instead of ``n``
    (scikit-learn's convention: integer weights act as repeated samples). ``key``: the
    training step's draws (Dropout); None: the random pieces pass their input through.
    """
    value, grads, _ = loss_grads_and_output(model, params, X, Y, loss_fn, l2, sample_weight,
                                            key=key)
    return value, grads


def loss_grads_and_output(model: Sequential, params: list[Array], X: Array, Y: Array,
                          loss_fn: losses.Loss, l2: float, sample_weight: Array | None = None,
                          silenced: bool = False, key: counter_rng.Key | None = None
                          ) -> tuple[Array, list[Array], Array]:
    """``loss_and_grads`` and the forward pass's output (training logs its accuracy);
    ``silenced``: the caller has silenced NumPy's float warnings (``placement.quiet()``),
    so the forward pass enters no error-state context of its own; ``key``: a training
    step's Dropout key (None: Dropout passes its input through)."""
    forward = model.forward_silenced if silenced else model.forward
    out, backprops = forward(X, params, key)
    value, delta, n = output_loss(model, params, out, Y, loss_fn, l2, sample_weight)
    grads = model.backward(delta, backprops)
    return value, add_l2_gradient(model, params, grads, n, l2), out


def add_l2_gradient(model: Sequential, params: list[Array], grads: list[Array], n: Any,
                    l2: float) -> list[Array]:
    """``grads`` with the l2 term's gradient, ``(l2 / N) * W``, added to each weight
    matrix's (in place where the backend allows)."""
    if l2:
        for i, decayed in enumerate(model.decayed):
            if decayed:
                grads[i] += (l2 / n) * params[i]
    return grads


def output_loss(model: Sequential, params: list[Array], out: Array, Y: Array,
                loss_fn: losses.Loss, l2: float, sample_weight: Array | None = None
                ) -> tuple[Array, Array, Any]:
    """The loss of the outputs ``out`` (with the l2 term), its delta, and N (the number
    of samples, or the sum of ``sample_weight``)."""
    ops = model.placement.ops
    if sample_weight is None:
        n = out.shape[0]
        value, delta = loss_fn(ops, out, Y)
    else:
        n = ops.xp.sum(sample_weight)
        value, delta = loss_fn(ops, out, Y, (sample_weight / n)[:, None])
    if l2:
        value = value + l2_penalty(model, params, n, l2)
    return value, delta, n


def l2_penalty(model: Sequential, params: list[Array], n: Any, l2: float) -> Array | float:
    """``l2 * sum(W**2) / (2N)`` over the weight matrices (not the biases)."""
    if not l2:
        return 0.0
    square_sum = model.placement.ops.sum_of_squares
    total = sum(square_sum(p) for p, d in zip(params, model.decayed) if d)
    return (l2 / (2.0 * n)) * total


def value_and_grad(model: Sequential, X: Any, Y: Any, loss: str = "mse",
                   l2: float = 0.0, sample_weight: Any = None,
                   dropout_step: int | None = None) -> tuple[Array, list[Array]]:
    """The loss (a 0-d array) and its gradients, aligned with ``model.params``.

    Parameters
    ----------
    model : Sequential
        The model, at its current parameters.
    X : array of shape (n, n_features)
        Features, host or the model's arrays.
    Y : array of shape (n, n_outputs) or (n,)
        Targets, or 1-D integer class labels.
    loss : str, default "mse"
        The loss's name (see ``Trainer``).
    l2 : float, default 0.0
        The weight decay ``l2 * sum(W**2) / (2N)``, with its gradient ``l2 * W / N``.
    sample_weight : array of shape (n,) or None, default None
        Per-sample weights of the loss.
    dropout_step : int or None, default None
        Draw the Dropout masks of this (0-based) training step, as ``Trainer`` does at
        that step (None: Dropout passes its input through, as in inference).
    """
    fn = check_loss(model, loss)
    l2 = validation.non_negative("l2", l2)
    Xp = validation.features(model, X, check_values=True)
    Yp = validation.targets(model, Y, Xp.shape[0], check_values=True)
    w = validation.sample_weights(model, sample_weight, Xp.shape[0])
    return loss_and_grads(model, model.params, Xp, Yp, fn, l2, w, _key(dropout_step))


def _key(dropout_step: int | None) -> counter_rng.Key | None:
    """The draws of a (0-based) training step, checked (None: no draws)."""
    if dropout_step is None:
        return None
    if (isinstance(dropout_step, bool) or not isinstance(dropout_step, numbers.Integral)
            or dropout_step < 0):
        raise ValueError(f"dropout_step must be a non-negative integer or None, "
                         f"got {dropout_step!r}")
    return counter_rng.Key(int(dropout_step))


class GradcheckError(AssertionError):
    """Analytic and numerical gradients disagree."""


def gradcheck(model: Sequential, X: Any, Y: Any, loss: str = "mse", l2: float = 0.0,
              eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-8,
              dropout_step: int | None = None) -> float:
    """Compare ``value_and_grad`` with central differences, in float64 on the model's backend.

    Returns the largest error relative to the tolerance, ``|analytic - numeric| /
    (atol + rtol * |numeric|)`` over every parameter entry (<= 1 passes); raises
    ``GradcheckError`` naming the worst entry otherwise. A NaN or inf gradient, analytic
    or numeric, fails. ``eps`` must be positive, ``rtol`` and ``atol`` finite and
    non-negative (both 0: the two must agree exactly).

    Parameters
    ----------
    model : Sequential
        The model to check (a float64 copy is made; the model is left as it is).
    X : array of shape (n, n_features)
        Features.
    Y : array of shape (n, n_outputs) or (n,)
        Targets, or 1-D integer class labels.
    loss : str, default "mse"
        The loss's name.
    l2 : float, default 0.0
        The weight decay, checked with the rest.
    eps : float, default 1e-6
        The step of the central differences.
    rtol : float, default 1e-5
        The relative tolerance.
    atol : float, default 1e-8
        The absolute tolerance.
    dropout_step : int or None, default None
        Check the network with the Dropout masks of that training step held fixed (None:
        Dropout off).
    """
    l2 = validation.non_negative("l2", l2)
    eps = validation.positive("eps", eps)
    rtol, atol = validation.non_negative("rtol", rtol), validation.non_negative("atol", atol)
    m64 = model.to(dtype="float64")
    fn = check_loss(m64, loss)
    Xp = validation.features(m64, X, check_values=True)
    Yp = validation.targets(m64, Y, Xp.shape[0], check_values=True)
    key = _key(dropout_step)
    _, grads = loss_and_grads(m64, list(m64.params), Xp, Yp, fn, l2, key=key)
    host = m64.host_params()
    worst, where = 0.0, ""
    for i, (p, g) in enumerate(zip(host, grads)):
        g = _backend.to_host(g)
        for idx in np.ndindex(p.shape):
            numeric = _central_difference(m64, host, i, idx, eps, Xp, Yp, fn, l2, key)
            analytic = float(g[idx])
            err = _error(analytic, numeric, rtol, atol)
            if not err <= worst and not math.isnan(worst):  # NaN: the worst of all
                worst = err
                where = f"params[{i}]{list(idx)}: analytic {analytic!r}, numeric {numeric!r}"
    if not worst <= 1.0:
        how = ("a gradient is NaN or inf" if math.isnan(worst)
               else f"error {worst:.3g}x the tolerance")
        raise GradcheckError(f"gradient check failed for loss {loss!r} at {where} ({how})")
    return worst


def _error(analytic: float, numeric: float, rtol: float, atol: float) -> float:
    """How many tolerances apart the two are: NaN where either is NaN or inf."""
    if not (math.isfinite(analytic) and math.isfinite(numeric)):
        return math.nan
    tolerance = atol + rtol * abs(numeric)
    difference = abs(numeric - analytic)
    if tolerance == 0.0:  # atol 0 and a numeric gradient of exactly 0
        return 0.0 if difference == 0.0 else math.inf
    return difference / tolerance


def _central_difference(model: Sequential, host: list[np.ndarray], i: int, idx: tuple[int, ...],
                        eps: float, X: Array, Y: Array, fn: losses.Loss, l2: float,
                        key: counter_rng.Key | None) -> float:
    values = []
    for sign in (1.0, -1.0):
        shifted = [p.copy() for p in host]
        shifted[i][idx] += sign * eps
        params = [model.placement.from_host(p) for p in shifted]
        value = output_loss(model, params, model.forward(X, params, key)[0], Y, fn, l2)[0]
        values.append(float(_backend.to_host(value)))
    return (values[0] - values[1]) / (2.0 * eps)
