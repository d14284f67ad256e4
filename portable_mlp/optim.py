"""Optimizers over a flat list of parameters, and learning-rate schedules.

``update(xp, params, grads, state, out=None)`` returns ``(params, state)``: the new
parameters and slots, written into the spares ``out`` where the backend writes in place
(new arrays otherwise), the ones passed in left intact, so that a step whose update is
not finite can be dropped whole at no cost (``Trainer`` double-buffers: see
``portable_mlp.rules``). The elementwise math of each rule is in ``portable_mlp.rules``,
reached through the backend's ``Ops`` (one fused kernel each on CuPy). Never reuse a
gradient after passing it to ``update``.

An optimizer object holds its hyper-parameters and, once training starts, its
state; passing the same optimizer to ``fit`` again continues from that state.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from portable_mlp import _backend, validation

Array = Any
Schedule = Callable[[int], float]


# --- learning-rate schedules: step (0-based) -> multiplier of the base lr ---

class _Schedule:
    """A schedule's repr names its settings (checkpoints store it: no memory addresses)."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __call__(self, step: int) -> float:
        """The multiplier of the base learning rate at ``step``.

        Parameters
        ----------
        step : int
            The (0-based) step.
        """
        raise NotImplementedError


class constant(_Schedule):  # noqa: N801 - used like a function
    """The base learning rate at every step."""

    def __call__(self, step: int) -> float:
        return 1.0


class step_decay(_Schedule):  # noqa: N801
    """Multiply by ``factor`` every ``every`` steps.

    Parameters
    ----------
    every : int
        Steps between two decays.
    factor : float, default 0.5
        The multiplier applied at each decay.
    """

    def __init__(self, every: int, factor: float = 0.5) -> None:
        self.every = validation.positive("every", every, integer=True)
        self.factor = validation.positive("factor", factor)

    def __call__(self, step: int) -> float:
        return float(self.factor ** (step // self.every))


class exponential_decay(_Schedule):  # noqa: N801
    """``rate ** (step / every)``.

    Parameters
    ----------
    rate : float
        The multiplier after ``every`` steps.
    every : int, default 1
        The steps over which the rate applies once.
    """

    def __init__(self, rate: float, every: int = 1) -> None:
        self.rate = validation.positive("rate", rate)
        self.every = validation.positive("every", every, integer=True)

    def __call__(self, step: int) -> float:
        return float(self.rate ** (step / self.every))


class inverse_scaling(_Schedule):  # noqa: N801
    """scikit-learn's 'invscaling': ``1 / (step + 1) ** power``.

    Parameters
    ----------
    power : float, default 0.5
        The exponent of ``1 / (step + 1) ** power``.
    """

    def __init__(self, power: float = 0.5) -> None:
        self.power = validation.positive("power", power)

    def __call__(self, step: int) -> float:
        return float(1.0 / (step + 1) ** self.power)


class cosine(_Schedule):  # noqa: N801
    """Cosine decay from 1 to ``floor`` over ``steps`` steps, then ``floor``.

    Parameters
    ----------
    steps : int
        The steps of the decay.
    floor : float, default 0.0
        The multiplier at and after ``steps``.
    """

    def __init__(self, steps: int, floor: float = 0.0) -> None:
        self.steps = validation.positive("steps", steps, integer=True)
        self.floor = validation.non_negative("floor", floor)

    def __call__(self, step: int) -> float:
        t = min(step, self.steps) / self.steps
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * t))


class Optimizer:
    """Base: holds ``lr``, a schedule and the state; subclasses give the rule.

    Parameters
    ----------
    lr : float
        The base learning rate.
    schedule : callable or None, default None
        ``step -> multiplier`` of ``lr`` (``pm.optim.step_decay(...)``, ...); None: constant.
    """

    def __init__(self, lr: float, schedule: Schedule | None = None) -> None:
        self.lr = validation.positive("lr", lr)
        if schedule is not None and not callable(schedule):
            raise TypeError(f"schedule must be callable (step -> multiplier), got {schedule!r}")
        self.schedule = schedule or constant()
        self.state: dict[str, Any] | None = None

    def learning_rate(self, step: int) -> float:
        """The learning rate of (0-based) ``step``, computed on the host. A schedule that
        grows past float's range gives inf, so that the step diverges (DivergenceError).

        Parameters
        ----------
        step : int
            The (0-based) step.
        """
        if not isinstance(step, numbers.Integral):  # a traced array under jax.jit
            raise TypeError(f"the schedule {self.schedule!r} needs the step count as a Python "
                            f"int, got {type(step).__name__}; under jax.jit pass the learning "
                            "rate in (train_step's lr=...), or train with Trainer")
        try:
            return self.lr * float(self.schedule(step))
        except OverflowError:
            return math.inf

    def rule_settings(self) -> tuple[tuple[str, Any], ...]:
        """The settings the update rule reads (momentum, betas ...): compiled code holds
        them as constants. Not the rate nor the schedule: those are computed on the host
        and passed in, so that changing them needs no new compilation."""
        return tuple((k, v) for k, v in sorted(vars(self).items())
                     if k not in ("lr", "schedule", "state"))

    def init_state(self, xp: Any, params: list[Array]) -> dict[str, Any]:
        """A fresh state for ``params``: the step count and each parameter's slots.

        Parameters
        ----------
        xp : array namespace
            The parameters' namespace.
        params : list of arrays
            The parameters the state is for.
        """
        return {"step": 0, "slots": [[] for _ in params]}

    def ensure_state(self, xp: Any, params: list[Array]) -> dict[str, Any]:
        """The current state, created for ``params`` on first use and checked after.

        Parameters
        ----------
        xp : array namespace
            The parameters' namespace.
        params : list of arrays
            The parameters the state is for.
        """
        state = self.state
        if state is None:
            state = self.state = self.init_state(xp, params)
            return state
        mismatch = len(state["slots"]) != len(params)
        if not mismatch:
            for slots, p in zip(state["slots"], params):
                for s in slots:  # a plain loop: no generator to build on every step
                    mismatch = (mismatch or tuple(s.shape) != tuple(p.shape)
                                or type(s) is not type(p) or s.dtype != p.dtype)
        if mismatch:
            raise ValueError(f"{type(self).__name__} holds state for other parameters (shapes, "
                             "backend or dtype differ); use a new optimizer for a different "
                             "model (or call reset())")
        return state

    def reset(self) -> None:
        """Forget the state (moments, step count): the next update starts afresh."""
        self.state = None

    def update(self, xp: Any, params: list[Array], grads: list[Array],
               state: dict[str, Any], lr: Any = None,
               out: tuple[list[Array], list[list[Array]]] | None = None
               ) -> tuple[list[Array], dict[str, Any]]:
        """One update (``params`` and the slots of ``state`` are left intact; ``grads``
        are consumed); ``lr`` (a float or a 0-d array) overrides the schedule's rate for
        this step: compiled code computes the schedule on the host and passes it in.

        Parameters
        ----------
        xp : array namespace
            The parameters' namespace.
        params : list of arrays
            The parameters.
        grads : list of arrays
            Their gradients, aligned with ``params``.
        state : dict
            The state (``init_state``): ``{"step": int, "slots": [[...], ...]}``.
        lr : float, 0-d array or None, default None
            This step's rate; None: the schedule's.
        out : tuple of (list of arrays, list of lists of arrays) or None, default None
            Spare parameters and slots, laid out as ``params`` and ``state["slots"]``
            and sharing no array with them, that the new values are written into where
            the backend writes in place (``Ops.writes_in_place``); None makes new
            arrays. Use what this returns either way (``portable_mlp.rules``).
        """
        step = state["step"]
        if lr is None:
            lr = self.lr if type(self.schedule) is constant else self.learning_rate(step)
        elif isinstance(lr, (numbers.Real, np.ndarray)):
            lr = float(lr)  # a NumPy scalar or array would promote float32 updates to float64
        elif params:  # the backend's 0-d array (compiled code passes the rate in)
            lr = xp.astype(lr, params[0].dtype)
        t, ops, slots = step + 1, _backend.ops_of(xp), state["slots"]
        targets = None if out is None else (out[0], *_by_kind(out[1]))
        new_params, new_kinds = self.rule(ops, params, grads, _by_kind(slots), lr, t, targets)
        if new_kinds:
            slots = [list(row) for row in zip(*new_kinds)]
        return new_params, {"step": t, "slots": slots}  # no kind of slot: the same lists

    def rule(self, ops: _backend.Ops, ps: list[Array], gs: list[Array],
             slots: list[list[Array]], lr: Any, t: Any, out: tuple[list[Array], ...] | None
             ) -> tuple[list[Array], list[list[Array]]]:
        """The new parameters and slots (one list per kind of slot, e.g. Adam's ``[ms,
        vs]``) from the gradients ``gs`` at rate ``lr``, step ``t`` (1-based), written
        into ``out`` (the parameters' spares, then each kind's; None: new arrays);
        ``ps`` and ``slots`` untouched, ``gs`` may be overwritten (``rules``).

        Parameters
        ----------
        ops : Ops
            The backend's operations.
        ps : list of arrays
            The parameters.
        gs : list of arrays
            Their gradients.
        slots : list of lists of arrays
            The slots, one list per kind (moments, velocity).
        lr : float or 0-d array
            The rate of this step.
        t : int or 0-d array
            The (1-based) step.
        out : tuple of lists of arrays or None
            The spares to write into (parameters first, then each kind of slot); None:
            new arrays.
        """
        raise NotImplementedError


def _by_kind(slots: list[list[Array]]) -> list[list[Array]]:
    """Per-parameter slot lists (``[[m0, v0], [m1, v1]]``) as one list per kind of slot
    (``[[m0, m1], [v0, v1]]``): what the rules take."""
    return [list(kind) for kind in zip(*slots)]


class SGD(Optimizer):
    """Stochastic gradient descent, with optional (Nesterov) momentum.

    Parameters
    ----------
    lr : float, default 0.1
        The learning rate (the base rate of ``schedule``).
    momentum : float, default 0.0
        The momentum, in ``[0, 1]`` (0: plain SGD).
    nesterov : bool, default False
        Nesterov's momentum (needs ``momentum > 0``).
    schedule : callable or None, default None
        Step (0-based) -> multiplier of ``lr`` (None: constant).
    weight_decay : float, default 0.0
        Decoupled weight decay: ``lr * weight_decay * p`` is taken off every parameter
        ``p`` beside the step (SGDW, Loshchilov & Hutter). Without momentum that is
        ``torch.optim.SGD``'s ``weight_decay``; with momentum the decay stays out of the
        velocity. Unlike the trainer's ``l2``, it reaches the biases too.
    """

    def __init__(self, lr: float = 0.1, momentum: float = 0.0, nesterov: bool = False,
                 schedule: Schedule | None = None, weight_decay: float = 0.0) -> None:
        super().__init__(lr, schedule)
        self.weight_decay = validation.non_negative("weight_decay", weight_decay)
        self.momentum = validation.non_negative("momentum", momentum)
        if self.momentum > 1.0:  # 1: no decay, as scikit-learn allows
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        if nesterov and not self.momentum:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.nesterov = bool(nesterov)

    def init_state(self, xp: Any, params: list[Array]) -> dict[str, Any]:
        if not self.momentum:
            return super().init_state(xp, params)
        return {"step": 0, "slots": [[xp.zeros_like(p)] for p in params]}

    def rule(self, ops: _backend.Ops, ps: list[Array], gs: list[Array],
             slots: list[list[Array]], lr: Any, t: Any, out: tuple[list[Array], ...] | None
             ) -> tuple[list[Array], list[list[Array]]]:
        if self.momentum:
            new_ps, vs = ops.sgd_momentum(ps, gs, slots[0], lr, self.momentum, self.nesterov,
                                          out)
            slots = [vs]
        else:
            new_ps = ops.sgd(ps, gs, lr, out)
        if self.weight_decay:  # the gradients, consumed, are the scratch
            new_ps = ops.decay(new_ps, ps, lr * self.weight_decay, gs)
        return new_ps, slots

    def __repr__(self) -> str:
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, nesterov={self.nesterov}, "
                f"weight_decay={self.weight_decay})")


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction.

    Parameters
    ----------
    lr : float, default 1e-3
        The learning rate.
    beta1 : float, default 0.9
        The decay of the first moment, in [0, 1).
    beta2 : float, default 0.999
        The decay of the second moment, in [0, 1).
    eps : float, default 1e-8
        Added to the second moment's root.
    schedule : callable or None, default None
        ``step -> multiplier`` of ``lr``; None: constant.
    """

    def __init__(self, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, schedule: Schedule | None = None) -> None:
        super().__init__(lr, schedule)
        for name, beta in (("beta1", beta1), ("beta2", beta2)):
            if validation.non_negative(name, beta) >= 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {beta!r}")
        self.beta1, self.beta2 = float(beta1), float(beta2)
        self.eps = validation.positive("eps", eps)

    def init_state(self, xp: Any, params: list[Array]) -> dict[str, Any]:
        return {"step": 0, "slots": [[xp.zeros_like(p), xp.zeros_like(p)] for p in params]}

    def rule(self, ops: _backend.Ops, ps: list[Array], gs: list[Array],
             slots: list[list[Array]], lr: Any, t: Any, out: tuple[list[Array], ...] | None
             ) -> tuple[list[Array], list[list[Array]]]:
        # ** 0.5, not math.sqrt: t may be a traced array under jax.jit (train_step)
        step = lr * (1.0 - self.beta2 ** t) ** 0.5 / (1.0 - self.beta1 ** t)
        ps, ms, vs = ops.adam(ps, gs, *slots, self.beta1, self.beta2, self.eps, step, out)
        return ps, [ms, vs]

    def __repr__(self) -> str:
        return f"Adam(lr={self.lr}, beta1={self.beta1}, beta2={self.beta2}, eps={self.eps})"


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (Loshchilov & Hutter), step for step
    ``torch.optim.AdamW``.

    Every parameter ``p`` takes Adam's step and loses ``lr * weight_decay * p`` (torch
    multiplies by ``1 - lr * weight_decay`` first: the same math), with ``eps`` added
    where torch adds it (to ``sqrt(v / (1 - beta2**t))``; ``Adam`` here adds it to
    ``sqrt(v)``, as scikit-learn does). The decay is not a gradient term:
    it does not pass through the moments, which is what makes it regularize better than
    Adam's ``l2``.

    Parameters
    ----------
    lr : float, default 1e-3
        The learning rate (the base rate of ``schedule``; the decay scales with it).
    weight_decay : float, default 0.01
        The decoupled decay's strength (torch's default).
    beta1, beta2 : float, default 0.9, 0.999
        The moments' decay rates, in ``[0, 1)``.
    eps : float, default 1e-8
        Added to the bias-corrected ``sqrt(v)``.
    schedule : callable or None, default None
        Step (0-based) -> multiplier of ``lr`` (None: constant).
    """

    def __init__(self, lr: float = 1e-3, weight_decay: float = 0.01, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8,
                 schedule: Schedule | None = None) -> None:
        super().__init__(lr, beta1, beta2, eps, schedule)
        self.weight_decay = validation.non_negative("weight_decay", weight_decay)

    def rule(self, ops: _backend.Ops, ps: list[Array], gs: list[Array],
             slots: list[list[Array]], lr: Any, t: Any, out: tuple[list[Array], ...] | None
             ) -> tuple[list[Array], list[list[Array]]]:
        root = (1.0 - self.beta2 ** t) ** 0.5  # torch's eps is outside this correction
        step = lr * root / (1.0 - self.beta1 ** t)
        ps, ms, vs = ops.adamw(ps, gs, *slots, self.beta1, self.beta2, self.eps * root, step,
                               lr * self.weight_decay, out)
        return ps, [ms, vs]

    def __repr__(self) -> str:
        return (f"AdamW(lr={self.lr}, weight_decay={self.weight_decay}, beta1={self.beta1}, "
                f"beta2={self.beta2}, eps={self.eps})")


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get(optimizer: Any) -> Optimizer:
    """An Optimizer instance, or one by name with default settings.

    Parameters
    ----------
    optimizer : Optimizer or str
        An optimizer (returned as it is) or a name: ``"sgd"``, ``"adam"``.
    """
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in OPTIMIZERS:
        return OPTIMIZERS[optimizer.lower()]()  # type: ignore[call-arg]
    if callable(getattr(optimizer, "minimize", None)):  # pm.LBFGS: no steps to take
        raise TypeError(f"{optimizer!r} is a full-batch solver, not an optimizer that steps "
                        "on batches: train with its minimize(model, X, Y, loss=...), or give "
                        f"Trainer one of {', '.join(OPTIMIZERS)}")
    raise ValueError(f"unknown optimizer {optimizer!r}; expected an Optimizer instance or one of "
                     f"{', '.join(OPTIMIZERS)}")
