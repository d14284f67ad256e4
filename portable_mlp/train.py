"""Training: ``Trainer.step`` (forward, backward, update) and ``Trainer.fit`` (epochs).

The hot path reads nothing back to the host: the loss stays a 0-d device array.
Divergence is caught without a per-step sync where a sync costs something: the
update is then skipped on the device when the loss or gradient is not finite,
and a sticky "healthy" flag is read back every ``check_every`` steps. On backends
where reading a value is free (NumPy, torch on CPU), it is read every step.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from portable_mlp import _backend, grad, optim, validation
from portable_mlp.callbacks import as_callbacks

if TYPE_CHECKING:
    from portable_mlp.model import Sequential

Array = Any

REMEDIES = ("lower the learning rate, set clip_norm (e.g. clip_norm=1.0) to clip the gradients, "
            "or use fewer layers")


class DivergenceError(FloatingPointError):
    """The loss, a gradient or the update became NaN or inf; the model keeps its last
    finite state (the parameters and the optimizer's slots from before that step).

    ``step`` is the (1-based) step that went non-finite, ``last_loss`` the last finite
    loss (None if there was none), ``history`` the per-epoch history so far (set by fit).
    ``detail``, if given, says what went non-finite and what was kept instead of the
    default sentence (a callback that finds an epoch's logged loss non-finite).
    """

    def __init__(self, step: int, last_loss: float | None, history: dict | None = None,
                 detail: str | None = None) -> None:
        self.step, self.last_loss, self.history, self.detail = step, last_loss, history, detail
        last = "none yet" if last_loss is None else f"{last_loss:.6g}"
        if detail is None:
            detail = (f"the loss, a gradient or the updated parameters are not finite (last "
                      f"finite loss: {last}). The model and the optimizer keep their last "
                      "finite state")
        super().__init__(f"training diverged at step {step}: {detail}. Try: {REMEDIES}.")

    def __reduce__(self) -> tuple[Any, ...]:  # pickles across processes (Dask workers)
        return type(self), (self.step, self.last_loss, self.history, self.detail)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during ``fit``: training stopped at a step boundary.

    The model holds the parameters of the last completed step (``step``); ``history``
    holds the epochs completed so far. It is a KeyboardInterrupt, so code that does
    not catch it stops as on any Ctrl-C.
    """

    def __init__(self, step: int, history: dict[str, list[float]]) -> None:
        self.step, self.history = step, history
        super().__init__(f"training interrupted after step {step}; "
                         f"{len(history['loss'])} epochs are in .history")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.step, self.history)


class Trainer:
    """Holds a model, a loss, an optimizer (and its state) and trains the model."""

    def __init__(self, model: Sequential, loss: str = "mse", optimizer: Any = "sgd",
                 l2: float = 0.0, clip_norm: float | None = None, check_every: int = 100) -> None:
        self._loss_fn = grad.check_loss(model, loss)
        self.model, self.loss = model, loss
        self.optimizer = optim.get(optimizer)
        self.l2 = validation.non_negative("l2", l2)
        self.clip_norm = validation.positive("clip_norm", clip_norm, allow_none=True)
        self.check_every = validation.positive("check_every", check_every, integer=True)
        self.steps = 0                      # completed steps
        self.stop_training = False          # a callback may set it to end fit
        self._healthy: Array | None = None  # device flag, on the deferred-check path
        self._last_loss: Array | None = None
        self._good_loss: Array | None = None  # deferred path: last finite loss, on device
        self._skipped: Array | None = None    # deferred path: steps skipped as non-finite
        self._state: dict[str, Any] | None = None  # the optimizer state and the params
        self._params: list[Array] | None = None     # the last step made (checked already)
        self._unchecked = 0
        self._interrupted = False           # set by the SIGINT handler during fit

    # --- one step ----------------------------------------------------------
    def step(self, Xb: Any, Yb: Any) -> Array:
        """One forward + backward + update on a batch; returns the loss (0-d, on device)."""
        X, Y = validation.batch(self.model, Xb, Yb)
        return self._step(X, Y)

    def _step(self, X: Array, Y: Array, w: Array | None = None) -> Array:
        model = self.model
        placement = model.placement
        xp, state = placement.xp, self.optimizer.state
        if state is None or state is not self._state or model.params is not self._params:
            state = self.optimizer.ensure_state(xp, model.params)  # not what our step made
        with placement.quiet():  # a non-finite value is the divergence check's to report
            loss, grads, sq_norm = _gradients(model, model.params, X, Y, self._loss_fn, self.l2,
                                              w, self.clip_norm)
            if placement.host_reads_are_free:  # read back: cheaper than device ops
                if not (math.isfinite(loss) and math.isfinite(sq_norm)):
                    raise DivergenceError(self.steps + 1, self._last_finite_loss())
                params, state = _update_copy(placement, self.optimizer, model.params, grads,
                                             state)
                if not _all_finite_on_host(placement, params, state["slots"]):
                    raise DivergenceError(self.steps + 1, self._last_finite_loss())
            else:
                finite = xp.isfinite(loss) & xp.isfinite(sq_norm)
                params, state, loss = self._guarded_update(grads, state, finite, loss)
        model.params, self.optimizer.state = params, state
        self._state, self._params = state, params
        self.steps += 1
        self._last_loss = loss
        return loss

    def _guarded_update(self, grads: list[Array], state: dict[str, Any], finite: Array,
                        loss: Array) -> tuple[list[Array], dict[str, Any], Array]:
        """Apply the update only while every step so far was finite, its update included
        (no host sync)."""
        placement = self.model.placement
        xp = placement.xp
        healthy = finite if self._healthy is None else self._healthy & finite
        params, state, healthy = _update_where(healthy, placement, self.optimizer,
                                               self.model.params, grads, state)
        good_loss = loss if self._good_loss is None else xp.where(healthy, loss, self._good_loss)
        skip = xp.astype(~healthy, placement.int_dtype)
        skipped = skip if self._skipped is None else self._skipped + skip
        params, state["slots"], (loss, healthy, self._good_loss, self._skipped) = _materialized(
            placement, params, state["slots"], [loss, healthy, good_loss, skipped])
        self._healthy = healthy
        self._unchecked += 1
        if self._unchecked >= self.check_every:
            self._check(pending=1)  # this step is not counted yet
        return params, state, loss

    def check_divergence(self) -> None:
        """Read the deferred finite flag back; raise if a step was skipped as non-finite.

        The skipped steps left the parameters and the optimizer's slots untouched; the
        step counts are put back to the last finite step, and the flag is reset so that
        training can go on (e.g. with a lower learning rate).
        """
        self._check(pending=0)

    def _check(self, pending: int) -> None:
        self._unchecked = 0
        if self._healthy is None or bool(self._healthy):
            return
        skipped = int(_backend.to_host(self._skipped)) - pending
        last = self._last_finite_loss(self._good_loss)
        self.steps -= skipped
        if self.optimizer.state is not None:
            self.optimizer.state["step"] -= skipped
        self._healthy = self._good_loss = self._skipped = None
        raise DivergenceError(self.steps + 1, last)

    def _last_finite_loss(self, loss: Array | None = None) -> float | None:
        loss = self._last_loss if loss is None else loss
        if loss is None:
            return None
        value = float(_backend.to_host(loss))
        return value if math.isfinite(value) else None

    # --- epochs --------------------------------------------------------------
    def fit(self, X: Any, Y: Any, epochs: int = 1000, batch_size: int | None = None,
            shuffle: bool = True, seed: int | None = 0, callbacks: Iterable[Any] = (),
            progress: bool = True, validation_data: tuple[Any, Any] | None = None,
            sample_weight: Any = None, epoch_loss: str = "evaluate"
            ) -> dict[str, list[float]]:
        """Train for ``epochs`` passes over (X, Y); return the per-epoch history.

        Data is validated (NaN/inf included) and moved to the model's device once;
        any bad argument raises before the model or the optimizer is touched.
        Calling fit again continues training: the optimizer's state is kept.
        ``sample_weight`` (``(n,)``, non-negative) makes every loss a weighted mean; a
        batch whose weights are all zero holds no sample in effect and is skipped.
        ``epoch_loss``: "evaluate" logs the loss and accuracy of the model after each
        epoch (one more forward pass over the data); "steps" logs the mean of the
        epoch's batch losses instead, each weighted by its batch's size, or by its total
        sample weight (scikit-learn's ``loss_curve_``, which weights by size even then; no
        extra pass, no accuracy).

        A non-finite loss or gradient raises ``DivergenceError`` (the model and the
        optimizer keep their last finite state; ``exc.history`` holds the history).
        Ctrl-C (SIGINT, main thread only) stops at the next step boundary and raises
        ``TrainingInterrupted``, a KeyboardInterrupt whose ``.history`` holds the
        completed epochs; the model holds the last completed step's parameters.
        """
        model = self.model
        epochs = validation.positive("epochs", epochs, integer=True)
        batch_size = validation.positive("batch_size", batch_size, integer=True, allow_none=True)
        Xd = validation.features(model, X, check_values=True)
        Yd = validation.targets(model, Y, Xd.shape[0], check_values=True)
        wd = validation.sample_weights(model, sample_weight, Xd.shape[0])
        if epoch_loss not in ("evaluate", "steps"):
            raise ValueError(f"epoch_loss must be 'evaluate' or 'steps', got {epoch_loss!r}")
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("validation_data must be a pair (X_val, Y_val), got "
                                f"{type(validation_data).__name__}")
            Xv = validation.features(model, validation_data[0], "validation X", True)
            val = (Xv, validation.targets(model, validation_data[1], Xv.shape[0],
                                          "validation Y", True))
        cbs = as_callbacks(callbacks)
        rng = np.random.default_rng(validation.check_seed(seed))
        history: dict[str, list[float]] = {"loss": [], "accuracy": []}
        if val is not None:
            history.update(val_loss=[], val_accuracy=[])
        self.stop_training = self._interrupted = False
        ends: list[int] = []  # the step count at the end of each epoch in history
        with self._defer_sigint():
            for cb in cbs:
                cb.on_train_begin(self)
            bar = _progress_bar(epochs, progress)
            try:
                w_host = None if wd is None else _backend.to_host(wd)  # one read per fit
                run_epoch = functools.partial(self._epoch, Xd, Yd, batch_size, shuffle, rng, val,
                                              wd, w_host, epoch_loss)
                self._epochs(run_epoch, epochs, cbs, history, bar, ends)
                self.check_divergence()
            except DivergenceError as exc:
                # the deferred check finds a divergence late: drop the epochs after it
                kept = sum(1 for end in ends if end < exc.step)
                exc.history = {key: values[:kept] for key, values in history.items()}
                raise
            finally:
                bar.close()
            if not self._interrupted:
                for cb in cbs:
                    cb.on_train_end(self)
        if self._interrupted:
            raise TrainingInterrupted(self.steps, history)
        return history

    def _epochs(self, run_epoch: Callable[[], dict[str, float] | None], epochs: int,
                cbs: list[Any], history: dict[str, list[float]], bar: _NoBar,
                ends: list[int]) -> None:
        for epoch in range(epochs):
            if self._interrupted:
                return
            logs = run_epoch()
            if logs is None:  # interrupted within the epoch
                return
            for key, value in logs.items():
                history[key].append(value)
            ends.append(self.steps)
            bar.update(logs)
            for cb in cbs:
                cb.on_epoch_end(self, epoch, logs)
            if self.stop_training:
                return

    @contextlib.contextmanager
    def _defer_sigint(self) -> Iterator[None]:
        """Turn Ctrl-C into a flag read at step boundaries (main thread, default handler)."""
        if (threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            self._interrupted = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _epoch(self, X: Array, Y: Array, batch_size: int | None, shuffle: bool,
               rng: np.random.Generator, val: tuple[Array, Array] | None,
               w: Array | None = None, w_host: np.ndarray | None = None,
               epoch_loss: str = "evaluate") -> dict[str, float] | None:
        xp, n = self.model.xp, X.shape[0]
        if batch_size is None or batch_size >= n:
            total, seen = self._step(X, Y, w), 1.0
        else:
            starts = list(range(0, n, batch_size))
            if shuffle:
                permutation = rng.permutation(n)
                order = self.model.placement.indices(permutation)
                X, Y = xp.take(X, order, axis=0), xp.take(Y, order, axis=0)
                if w_host is not None:
                    w, w_host = xp.take(w, order, axis=0), w_host[permutation]
            # what each batch counts for in the epoch: its size, or its weight; a batch of
            # zero weight holds no sample in effect and is skipped (its mean would be 0/0)
            counts = (np.diff([*starts, n]) if w_host is None
                      else np.add.reduceat(w_host, starts, dtype=np.float64))
            total, seen = 0.0, float(np.sum(counts))
            for start, count in zip(starts, counts):
                if self._interrupted:
                    return None
                if count == 0:
                    continue
                stop = min(start + batch_size, n)  # out-of-bounds stops are not standard
                loss = self._step(X[start:stop, ...], Y[start:stop, ...],
                                  None if w is None else w[start:stop])
                if epoch_loss == "steps":
                    total = total + loss * float(count)
        if epoch_loss == "steps":  # the mean of the batch losses, weighted as their batches
            logs = {"loss": float(_backend.to_host(total)) / seen}
        else:
            logs = self.evaluate(X, Y, w)
        if val is not None:
            val_logs = self.evaluate(*val)
            logs.update(val_loss=val_logs["loss"], val_accuracy=val_logs["accuracy"])
        return logs

    def evaluate(self, X: Array, Y: Array, w: Array | None = None) -> dict[str, float]:
        """Loss (with the l2 term) and accuracy of the current model on placed data
        (weighted means with per-sample weights ``w``)."""
        model, xp = self.model, self.model.xp
        out, _ = model.forward(X)
        value, _, n = grad.output_loss(model, model.params, out, Y, self._loss_fn, self.l2, w)
        hits = xp.astype(model.classes_of(out) == model.classes_of(Y), out.dtype)
        accuracy = xp.mean(hits) if w is None else xp.sum(hits * w) / n
        return {"loss": float(_backend.to_host(value)),
                "accuracy": float(_backend.to_host(accuracy))}


def train_step(model: Sequential, params: list[Array], state: dict[str, Any], X: Array,
               Y: Array, optimizer: optim.Optimizer, loss: str = "mse", l2: float = 0.0,
               clip_norm: float | None = None
               ) -> tuple[list[Array], dict[str, Any], Array, Array]:
    """Pure: one step of ``model``'s network from ``params`` and the optimizer ``state``
    (``optimizer.init_state(xp, params)`` to start) on arrays placed on the model.

    Returns ``(params, state, loss, finite)``. Nothing is read back to the host and
    nothing is stored, so ``jax.jit`` compiles it whole, e.g.
    ``jax.jit(functools.partial(pm.train_step, model, optimizer=opt))``. Where the loss,
    a gradient or the updated parameters or slots are not finite, the ``params`` and
    slots passed in come back (selected with ``where``) and ``finite`` is False;
    ``state["step"]`` counts steps taken, finite or not. The arguments are checked as
    ``Trainer`` checks its own (metadata only, so under ``jax.jit`` once, when traced);
    ``l2`` and ``clip_norm`` must be Python numbers. The inputs are never modified. On
    dask the results are persisted, as in ``Trainer``, so that the graph stays bounded.
    Under ``jax.jit`` the step count comes back as an array: start from
    ``state["step"] = jnp.asarray(0)`` to compile once, not twice; a learning-rate
    schedule other than the constant one needs it as a Python int (the optimizer reads
    it on the host), so use ``Trainer`` for those.
    """
    loss_fn = grad.check_loss(model, loss)
    params, state, X, Y, l2, clip_norm = validation.step_arguments(
        model, params, state, X, Y, optimizer, l2, clip_norm)
    placement = model.placement
    xp = placement.xp
    with placement.quiet():
        value, grads, sq_norm = _gradients(model, params, X, Y, loss_fn, l2, None, clip_norm)
        finite = xp.isfinite(value) & xp.isfinite(sq_norm)
        new_params, new_state, finite = _update_where(finite, placement, optimizer, params,
                                                      grads, state)
        new_params, new_state["slots"], (value, finite) = _materialized(
            placement, new_params, new_state["slots"], [value, finite])
    return new_params, new_state, value, finite


def _gradients(model: Sequential, params: list[Array], X: Array, Y: Array, loss_fn: Any,
               l2: float, w: Array | None, clip_norm: float | None
               ) -> tuple[Array, list[Array], Array]:
    """The loss, the (clipped) gradients and the squared norm of the unclipped ones."""
    loss, grads = grad.loss_and_grads(model, params, X, Y, loss_fn, l2, w)
    sq_norm, square_sum = 0.0, model.placement.ops.sum_of_squares
    for g in grads:
        sq_norm = sq_norm + square_sum(g)
    if clip_norm is not None:
        xp = model.placement.xp
        scale = xp.minimum(clip_norm / (xp.sqrt(sq_norm) + 1e-12), 1.0)
        grads = [g * scale for g in grads]
    return loss, grads, sq_norm


def _update_copy(placement: _backend.Placement, optimizer: optim.Optimizer,
                 params: list[Array], grads: list[Array], state: dict[str, Any]
                 ) -> tuple[list[Array], dict[str, Any]]:
    """The optimizer's update, leaving ``params`` and the slots of ``state`` intact: where
    arrays are writable the update writes into copies, so that a step whose update is not
    finite can be dropped whole."""
    if placement.writable:
        xp = placement.xp
        params = [xp.asarray(p, copy=True) for p in params]
        state = {"step": state["step"],
                 "slots": [[xp.asarray(s, copy=True) for s in slots] for slots in state["slots"]]}
    return optimizer.update(placement.xp, params, grads, state)


def _update_where(ok: Array, placement: _backend.Placement, optimizer: optim.Optimizer,
                  params: list[Array], grads: list[Array], state: dict[str, Any]
                  ) -> tuple[list[Array], dict[str, Any], Array]:
    """The optimizer's update where ``ok`` (a 0-d bool array) holds and the update is
    finite, else ``params`` and the slots of ``state`` (kept intact); and that flag."""
    xp, old_slots = placement.xp, state["slots"]
    new_params, new_state = _update_copy(placement, optimizer, params, grads, state)
    for new in (*new_params, *(s for slots in new_state["slots"] for s in slots)):
        ok = ok & xp.all(xp.isfinite(new))
    new_params = [xp.where(ok, new, old) for new, old in zip(new_params, params)]
    new_state["slots"] = [[xp.where(ok, n, o) for n, o in zip(ns, os)]
                          for ns, os in zip(new_state["slots"], old_slots)]
    return new_params, new_state, ok


def _all_finite_on_host(placement: _backend.Placement, params: list[Array],
                        slots: list[list[Array]]) -> bool:
    """Whether every array is finite, read back at once (the host-read path).

    A finite sum of squares proves it in one fast pass per array; only where that sum
    is not finite (a NaN or inf, or squares too large for the dtype) is each array
    checked exactly."""
    arrays = [*params, *(s for ss in slots for s in ss)]
    square_sum, total = placement.ops.sum_of_squares, 0.0
    for a in arrays:
        total = total + square_sum(a)
    if math.isfinite(total):
        return True
    xp = placement.xp
    return all(bool(xp.all(xp.isfinite(a))) for a in arrays)


def _materialized(placement: _backend.Placement, params: list[Array],
                  slots: list[list[Array]], extra: list[Array]
                  ) -> tuple[list[Array], list[list[Array]], list[Array]]:
    """``params``, ``slots`` and ``extra`` computed into memory together (dask: one
    persist, so the graph stays bounded); the same arrays elsewhere."""
    flat = placement.materialize([*params, *[s for ss in slots for s in ss], *extra])
    n, m = len(params), len(flat) - len(extra)
    rest = iter(flat[n:m])
    return flat[:n], [[next(rest) for _ in ss] for ss in slots], flat[m:]


def fit(model: Sequential, X: Any, Y: Any, loss: str = "mse", optimizer: Any = "sgd",
        l2: float = 0.0, clip_norm: float | None = None, **fit_kwargs: Any
        ) -> dict[str, list[float]]:
    """Shorthand for ``Trainer(model, loss, optimizer, l2, clip_norm).fit(X, Y, ...)``."""
    return Trainer(model, loss=loss, optimizer=optimizer, l2=l2,
                   clip_norm=clip_norm).fit(X, Y, **fit_kwargs)


class _NoBar:
    def update(self, logs: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class _Bar(_NoBar):
    def __init__(self, epochs: int) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=epochs, unit="epoch", leave=False)

    def update(self, logs: dict[str, float]) -> None:
        shown = {"loss": f"{logs['loss']:.4g}"}
        if "accuracy" in logs:
            shown["acc"] = f"{logs['accuracy']:.3f}"
        self._bar.set_postfix(shown, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def shows_progress(progress: bool = True) -> bool:
    """Whether ``fit(progress=progress)`` draws a bar: wanted, on a terminal (stderr), and
    tqdm (the 'progress' extra) installed."""
    return bool(progress) and sys.stderr.isatty() and importlib.util.find_spec("tqdm") is not None


def _progress_bar(epochs: int, progress: bool) -> _NoBar:
    """A tqdm bar on a terminal; nothing when output is redirected or not wanted."""
    return _Bar(epochs) if shows_progress(progress) else _NoBar()

