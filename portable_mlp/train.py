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
import math
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from portable_mlp import _backend, batches, counter_rng, grad, losses, optim, steps, validation
from portable_mlp.callback_base import as_callbacks
from portable_mlp.progress import Silent, check_verbose, progress_report

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


@dataclass(frozen=True)
class _Data:
    """A fit's data, validated and placed on the model once."""

    X: Array
    Y: Array
    labels: Array            # the class of each row of Y (``model.classes_of``), for accuracy
    w: Array | None          # per-sample weights on the model, or None
    w_host: np.ndarray | None  # the same on the host (batch weights are counted there)

    @property
    def n(self) -> int:
        return int(self.X.shape[0])


class Trainer:
    """Holds a model, a loss, an optimizer (and its state) and trains the model.

    ``compile``: where the backend compiles (JAX), ``step`` runs as one compiled
    function and ``fit`` runs each epoch as one (``lax.scan`` over the batches of the
    data kept on the device): one compilation per fit. None (the default) compiles
    where the backend can; False runs eagerly, one operation at a time.
    """

    def __init__(self, model: Sequential, loss: str = "mse", optimizer: Any = "sgd",
                 l2: float = 0.0, clip_norm: float | None = None, check_every: int = 100,
                 compile: bool | None = None) -> None:
        self._loss_fn = grad.check_loss(model, loss)
        self.model, self.loss = model, loss
        self.optimizer = optim.get(optimizer)
        self.l2 = validation.non_negative("l2", l2)
        self.clip_norm = validation.positive("clip_norm", clip_norm, allow_none=True)
        self.check_every = validation.positive("check_every", check_every, integer=True)
        self.compiled = _check_compile(model, compile)
        self.steps = 0                      # completed steps
        self.log_keys: tuple[str, ...] | None = None  # set by fit: what each epoch logs
        self.stop_training = False          # a callback may set it to end fit
        self._guard: tuple[Array, Array, Array] | None = None  # deferred check, on device
        self._last_loss: Array | None = None
        self._state: dict[str, Any] | None = None  # the optimizer state and the params
        self._params: list[Array] | None = None     # the last step made (checked already)
        self._unchecked = 0
        self._interrupted = False           # set by the SIGINT handler during fit
        self._functions: dict[tuple[Any, ...], Callable[..., Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_functions"] = {}  # compiled functions do not pickle; they are made again
        return state

    # --- one step ----------------------------------------------------------
    def step(self, Xb: Any, Yb: Any) -> Array:
        """One forward + backward + update on a batch; returns the loss (0-d, on device)."""
        X, Y = validation.batch(self.model, Xb, Yb)
        with self.model.placement.quiet():
            return self._step(X, Y)[0]

    def _step(self, X: Array, Y: Array, *, labels: Array | None = None,
              w: Array | None = None) -> tuple[Array, Array | None]:
        """One step; the caller enters ``placement.quiet()`` (a non-finite value is the
        divergence check's to report). Returns the loss and (given the ``labels`` of Y's
        classes) the batch's correctly classified samples (weighted), both from the
        step's own forward pass."""
        model = self.model
        placement = model.placement
        state = self.optimizer.state
        if state is None or state is not self._state or model.params is not self._params:
            state = self.optimizer.ensure_state(placement.xp, model.params)  # not ours
        if placement.host_reads_are_free and not self.compiled:
            params, state, loss, hits = self._checked_update(X, Y, labels, w, state)
        else:
            params, state, loss, hits = self._guarded_update(X, Y, labels, w, state)
        model.params, self.optimizer.state = params, state
        self._state, self._params = state, params
        self.steps += 1
        self._last_loss = loss
        return loss, hits

    def _checked_update(self, X: Array, Y: Array, labels: Array | None, w: Array | None,
                        state: dict[str, Any]
                        ) -> tuple[list[Array], dict[str, Any], Array, Any]:
        """Where reading a value back is free: check the loss on the host, update (into
        new arrays), and check the new parameters and slots: a step whose update is not
        finite is dropped whole."""
        model = self.model
        loss, grads, norm_ok, out = steps.gradients(model, model.params, X, Y, self._loss_fn,
                                                    self.l2, w, self.clip_norm,
                                                    counter_rng.Key(state["step"]))
        if not (math.isfinite(loss) and norm_ok):
            raise DivergenceError(self.steps + 1, self._last_finite_loss())
        params, state = self.optimizer.update(model.xp, model.params, grads, state)
        if not steps.all_finite_on_host(model.placement, params, state["slots"]):
            raise DivergenceError(self.steps + 1, self._last_finite_loss())
        hits = None if labels is None else steps.weighted_hits(model, out, labels, w)
        return params, state, loss, hits

    def _guarded_update(self, X: Array, Y: Array, labels: Array | None, w: Array | None,
                        state: dict[str, Any]
                        ) -> tuple[list[Array], dict[str, Any], Array, Any]:
        """Apply the update only while every step so far was finite, its update included
        (no host sync)."""
        placement = self.model.placement
        guard = self._guard or steps.fresh_guard(placement)
        step, lr = state["step"], self.optimizer.learning_rate(state["step"])
        run = self._function(placement.guarded_step)
        params, state, guard, loss, hits = run(self.model.params, state, guard, X, Y, labels,
                                               w, lr)
        extra = [loss, *guard] if hits is None else [loss, *guard, hits]
        params, slots, (loss, *rest) = steps.materialized(placement, params, state["slots"], extra)
        self._guard = (rest[0], rest[1], rest[2])
        self._unchecked += 1
        if self._unchecked >= self.check_every:
            self._check(pending=1)  # this step is not counted yet
        hits = rest[3] if len(rest) > 3 else None
        # the step count stays a host int (compiled code hands back an array)
        return params, {"step": step + 1, "slots": slots}, loss, hits

    def _function(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` bound to this trainer's settings, compiled where the trainer compiles:
        once per distinct setting, reused across steps and fits. The learning rate is
        no setting: it is passed in, so a schedule compiles once."""
        key = (fn.__name__, self.loss, self.l2, self.clip_norm,
               repr(self.optimizer.rule_settings()), id(self.optimizer), id(self.model))
        found = self._functions.get(key)
        if found is None:
            settings = steps.Settings(self.model, self.optimizer, self._loss_fn, self.l2,
                                      self.clip_norm)
            found = functools.partial(fn, settings)
            if self.compiled:
                found = self.model.placement.jit(found)
            self._functions[key] = found
        return found

    def check_divergence(self) -> None:
        """Read the deferred finite flag back; raise if a step was skipped as non-finite.

        The skipped steps left the parameters and the optimizer's slots untouched; the
        step counts are put back to the last finite step, and the flag is reset so that
        training can go on (e.g. with a lower learning rate).
        """
        self._check(pending=0)

    def _check(self, pending: int) -> None:
        self._unchecked = 0
        if self._guard is None:
            return
        healthy, good_loss, n_skipped = self.model.placement.read_scalars(list(self._guard))
        if healthy:
            return
        skipped = int(n_skipped) - pending
        last = good_loss if math.isfinite(good_loss) else None
        self.steps -= skipped
        if self.optimizer.state is not None:
            self.optimizer.state["step"] -= skipped
        self._guard = None
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
            sample_weight: Any = None, epoch_loss: str = "steps", verbose: int = 0
            ) -> dict[str, list[float]]:
        """Train for ``epochs`` passes over (X, Y); return the per-epoch history.

        Data is validated (NaN/inf included) and moved to the model's device once;
        any bad argument raises before the model or the optimizer is touched.
        Calling fit again continues training: the optimizer's state is kept.
        ``sample_weight`` (``(n,)``, non-negative) makes every loss a weighted mean; a
        batch whose weights are all zero holds no sample in effect and is skipped.

        The history's keys, one value per epoch:

        - ``loss``: with ``epoch_loss="steps"`` (the default), the mean of the epoch's
          step losses (l2 term included), each computed by its step's forward pass,
          before that step's update, and weighted by its batch's size or total sample
          weight: a running mean, as Keras and scikit-learn report, at no extra cost.
          With ``epoch_loss="evaluate"``, the loss of the model after the epoch, on all
          of (X, Y): one more forward pass over the data per epoch.
        - ``accuracy``: the (weighted) fraction of samples whose class the model got
          right, read off the same forward passes as ``loss``.
        - ``val_loss``, ``val_accuracy`` (with ``validation_data``): the model after the
          epoch, evaluated on the validation data.

        Per-step values stay on the device and are read back once per epoch.
        ``progress`` draws a bar on a terminal (tqdm); ``verbose=k`` prints a line every
        ``k`` epochs (and after the last) where no bar is drawn: in a log, a notebook's
        captured output or a CI job.

        A non-finite loss or gradient raises ``DivergenceError`` (the model and the
        optimizer keep their last finite state; ``exc.history`` holds the history).
        Ctrl-C (SIGINT, main thread only) stops at the next step boundary (compiled:
        epoch boundary) and raises ``TrainingInterrupted``, a KeyboardInterrupt whose
        ``.history`` holds the completed epochs; the model holds the last completed
        step's parameters.
        """
        model = self.model
        epochs = validation.positive("epochs", epochs, integer=True)
        batch_size = validation.positive("batch_size", batch_size, integer=True, allow_none=True)
        verbose = check_verbose(verbose)
        Xd = validation.features(model, X, check_values=True)
        Yd = validation.targets(model, Y, Xd.shape[0], check_values=True)
        wd = validation.sample_weights(model, sample_weight, Xd.shape[0])
        # dask: once, in X's blocks
        Xd, Yd, labels, wd = model.placement.persist_rows(Xd, Yd, model.classes_of(Yd), wd)
        losses.check_targets(self.loss, model.xp, Yd)
        if epoch_loss not in ("evaluate", "steps"):
            raise ValueError(f"epoch_loss must be 'steps' or 'evaluate', got {epoch_loss!r}")
        val = validation_pair(model, validation_data)
        cbs = as_callbacks(callbacks)
        rng = np.random.default_rng(validation.check_seed(seed))
        history: dict[str, list[float]] = {"loss": [], "accuracy": []}
        if val is not None:
            history.update(val_loss=[], val_accuracy=[])
        self.stop_training = self._interrupted = False
        ends: list[int] = []  # the step count at the end of each epoch in history
        self.log_keys = tuple(history)  # what each epoch logs: callbacks check against it
        with self._defer_sigint():
            for cb in cbs:
                cb.on_train_begin(self)
            bar = progress_report(epochs, progress, verbose)
            try:
                data = _Data(Xd, Yd, labels, wd, None if wd is None else _backend.to_host(wd))
                run_epoch = functools.partial(self._epoch, data, batch_size, shuffle, rng, val,
                                              epoch_loss)
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
                cbs: list[Any], history: dict[str, list[float]], bar: Silent,
                ends: list[int]) -> None:
        for epoch in range(epochs):
            if self._interrupted:
                return
            logs = run_epoch()
            if logs is None:  # interrupted within the epoch
                return
            self._refuse_non_finite(epoch, logs)
            for key, value in logs.items():
                history[key].append(value)
            ends.append(self.steps)
            bar.update(logs)
            for cb in cbs:
                cb.on_epoch_end(self, epoch, logs)
            if self.stop_training:
                return

    def _refuse_non_finite(self, epoch: int, logs: dict[str, float]) -> None:
        """An epoch whose logs are not finite (a loss summed past float's range, a model
        that overflows on the validation data) is a divergence: it is not logged, and no
        callback sees it as a good epoch."""
        bad = [key for key, value in logs.items() if not math.isfinite(value)]
        if not bad:
            return
        self.check_divergence()  # a skipped step is named exactly
        raise DivergenceError(self.steps, self._last_finite_loss(), detail=(
            f"epoch {epoch + 1} logged non-finite {', '.join(bad)}; the model holds its "
            f"parameters after step {self.steps}, the last one applied"))

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

    def _epoch(self, data: _Data, batch_size: int | None, shuffle: bool,
               rng: np.random.Generator, val: tuple[Array, Array] | None,
               epoch_loss: str) -> dict[str, float] | None:
        track = epoch_loss == "steps"
        run = self._compiled_epoch if self.compiled else self._eager_epoch
        sums = run(data, batch_size, shuffle, rng, track)
        if sums is None:  # interrupted within the epoch
            return None
        if track:
            loss, hits, seen = sums
            logs = {"loss": loss / seen, "accuracy": hits / seen}
        else:
            logs = self.evaluate(data.X, data.Y, data.w)
        if val is not None:
            val_logs = self.evaluate(*val)
            logs.update(val_loss=val_logs["loss"], val_accuracy=val_logs["accuracy"])
        return logs

    def _eager_epoch(self, data: _Data, batch_size: int | None, shuffle: bool,
                     rng: np.random.Generator, track: bool
                     ) -> tuple[float, float, float] | None:
        """The epoch step by step; returns the summed losses and hits (read back once)
        and what the batches weigh in all."""
        placement = self.model.placement
        loss_sum: Any = 0.0
        hit_sum: Any = 0.0
        seen = 0.0
        arrays = [data.X, data.Y, data.labels if track else None, data.w]
        with placement.quiet():
            for (Xb, Yb, lb, wb), count in batches.minibatches(placement, arrays, data.w_host,
                                                                batch_size, shuffle, rng):
                if self._interrupted:
                    return None
                loss, hits = self._step(Xb, Yb, labels=lb, w=wb)
                if track:
                    loss_sum = loss_sum + loss * count
                    hit_sum = hit_sum + hits
                seen += count
        if not track:
            return math.nan, math.nan, seen
        loss_total, hit_total = placement.read_scalars([loss_sum, hit_sum])
        return loss_total, hit_total, seen

    def _compiled_epoch(self, data: _Data, batch_size: int | None, shuffle: bool,
                        rng: np.random.Generator, track: bool
                        ) -> tuple[float, float, float] | None:
        """The epoch as one compiled call: a scan over the batches of the data on the
        device. The last, shorter batch is padded with zero-weight rows, so that every
        epoch has the same shapes (one compilation per fit)."""
        model, optimizer = self.model, self.optimizer
        placement = model.placement
        plan = steps.EpochPlan.draw(data, batch_size, shuffle, rng)
        state = optimizer.ensure_state(placement.xp, model.params)
        step0 = state["step"]
        lrs = [optimizer.learning_rate(step0 + k) for k in plan.steps_before]
        run = self._function(steps.scan_epoch)
        guard = self._guard or steps.fresh_guard(placement)
        with placement.quiet():  # a rate beyond the dtype's range is cast to inf: diverges
            params, slots, guard, summary = run(model.params, state["slots"], step0, guard,
                                                data.X, data.Y, data.labels,
                                                *plan.arguments(placement, lrs))
        model.params = self._params = params
        optimizer.state = self._state = {"step": step0 + plan.n_steps, "slots": slots}
        self.steps += plan.n_steps
        self._guard = guard
        loss_total, hit_total, healthy = (float(v) for v in _backend.to_host(summary))
        if not healthy:
            self._check(pending=0)
        return loss_total, hit_total, plan.weight

    def evaluate(self, X: Array, Y: Array, w: Array | None = None) -> dict[str, float]:
        """Loss (with the l2 term) and accuracy of the current model on placed data
        (weighted means with per-sample weights ``w``)."""
        loss, accuracy = self._function(steps.evaluation)(self.model.params, X, Y, w)
        loss, accuracy = self.model.placement.read_scalars([loss, accuracy])
        return {"loss": loss, "accuracy": accuracy}


def validation_pair(model: Sequential, validation_data: Any) -> tuple[Array, Array] | None:
    """``fit``'s ``validation_data`` checked and placed on ``model`` (None: none)."""
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise TypeError("validation_data must be a pair (X_val, Y_val), got "
                        f"{type(validation_data).__name__}")
    Xv = validation.features(model, validation_data[0], "validation X", True)
    return Xv, validation.targets(model, validation_data[1], Xv.shape[0], "validation Y", True)


def _check_compile(model: Sequential, compile: Any) -> bool:
    if compile is not None and not isinstance(compile, bool):
        raise TypeError(f"compile must be True, False or None, got {compile!r}")
    if compile and not model.placement.compiles:
        raise ValueError(f"compile=True needs a backend that compiles (jax); the model is on "
                         f"{model.backend!r}")
    return model.placement.compiles if compile is None else compile


def fit(model: Sequential, X: Any, Y: Any, loss: str = "mse", optimizer: Any = "sgd",
        l2: float = 0.0, clip_norm: float | None = None, **fit_kwargs: Any
        ) -> dict[str, list[float]]:
    """Shorthand for ``Trainer(model, loss, optimizer, l2, clip_norm).fit(X, Y, ...)``."""
    return Trainer(model, loss=loss, optimizer=optimizer, l2=l2,
                   clip_norm=clip_norm).fit(X, Y, **fit_kwargs)
