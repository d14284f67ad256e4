"""Training: ``Trainer.step`` (forward, backward, update) and ``Trainer.fit`` (epochs).

The hot path reads nothing back to the host: the loss stays a 0-d device array.
Divergence is caught without a per-step sync where a sync costs something: the
update is then skipped on the device when the loss or gradient is not finite,
and a sticky "healthy" flag is read back every ``check_every`` steps. On backends
where reading a value is free (NumPy, torch on CPU), ``step`` checks the loss and the
updated parameters and slots every step; ``fit`` checks lazily: the loss every step
(a non-finite parameter shows in the next step's loss), and every parameter and slot
at each epoch's end, before the callbacks see the model, and when a loss is not finite.
It then goes back to the latest state found finite: the current one, the one before the
last step, or the last verified one. Its updates are double-buffered: written into the
arrays of the state before the last step (``portable_mlp.rules``), arrays the trainer
made itself; a callback that keeps parameters copies them (``model.host_params()``).
"""

from __future__ import annotations

import contextlib
import functools
import math
import signal
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from portable_mlp import _backend, batches, counter_rng, grad, losses, optim, steps, validation
from portable_mlp.callback_base import as_callbacks, train_end
from portable_mlp.progress import Silent, check_verbose, progress_report
from portable_mlp.threads import check_threads, limited

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

    Parameters
    ----------
    step : int
        The (1-based) step that went non-finite.
    last_loss : float or None
        The last finite loss; None if there was none.
    history : dict or None, default None
        The per-epoch history so far (set by ``fit``).
    detail : str or None, default None
        What went non-finite and what was kept, instead of the default sentence.
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

    Parameters
    ----------
    step : int
        The last completed step.
    history : dict of str to list of float
        The completed epochs' history.
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


class _Kept(NamedTuple):  # a tuple: made every step, at a tenth of a dataclass's cost
    """A training state that ``fit`` can go back to: the parameters and slots, the step
    counts (the trainer's, the optimizer's) and the loss of the last step that made it
    (None: none yet), reported as the last finite loss."""

    params: list[Array]
    slots: list[list[Array]]
    steps: int
    opt_step: int
    loss: Array | None


class Trainer:
    """Holds a model, a loss, an optimizer (and its state) and trains the model.

    Parameters
    ----------
    model : Sequential
        The model to train; ``fit`` and ``step`` replace its ``params``.
    loss : str, default "mse"
        ``"mse"`` (``sum((out - Y)**2) / (2N)``), ``"cross_entropy"`` and
        ``"binary_cross_entropy"`` (on logits: end the model with ``output="identity"``),
        or ``"poisson"`` (half the Poisson deviance of ``exp(output)``).
    optimizer : Optimizer or str, default "sgd"
        ``pm.SGD(...)``, ``pm.Adam(...)``, or the name ``"sgd"`` / ``"adam"`` for one
        with its default settings. The trainer keeps its state across ``fit`` calls.
    l2 : float, default 0.0
        Adds ``l2 * sum(W**2) / (2N)`` over the weight matrices (not the biases).
    clip_norm : float or None, default None
        Clips the gradients to this global norm; None does not clip.
    check_every : int, default 100
        Where reading a value back costs a device sync (GPU, JAX, Dask), the steps
        between two reads of the deferred divergence check.
    compile : bool or None, default None
        Where the backend compiles (JAX), ``step`` runs as one compiled function and
        ``fit`` runs each epoch as one (``lax.scan`` over the batches of the data kept
        on the device): one compilation per fit. None compiles where the backend can;
        False runs eagerly, one operation at a time.
    threads : int or None, default None
        Limits torch's and the BLAS library's threads to this many during ``fit`` and
        ``evaluate`` (``portable_mlp.threads``), and puts them back after. None keeps
        the libraries' settings (one thread per core), and warns once per process where
        they outnumber the idle cores: on a busy machine, ``threads=1`` is often several
        times faster (``step`` alone runs with the process's settings).
    """

    def __init__(self, model: Sequential, loss: str = "mse", optimizer: Any = "sgd",
                 l2: float = 0.0, clip_norm: float | None = None, check_every: int = 100,
                 compile: bool | None = None, threads: int | None = None) -> None:
        self._loss_fn = grad.check_loss(model, loss)
        self.model, self.loss = model, loss
        self._draws = model.random  # a piece draws in training (Dropout): steps need a key
        self.optimizer = optim.get(optimizer)
        self.l2 = validation.non_negative("l2", l2)
        self.clip_norm = validation.positive("clip_norm", clip_norm, allow_none=True)
        self.check_every = validation.positive("check_every", check_every, integer=True)
        self.compiled = _check_compile(model, compile)
        self.threads = check_threads(threads)
        self.steps = 0                      # completed steps
        self.log_keys: tuple[str, ...] | None = None  # set by fit: what each epoch logs
        self.stop_training = False          # a callback may set it to end fit
        self._guard: tuple[Array, Array, Array] | None = None  # deferred check, on device
        self._last_loss: Array | None = None
        self._state: dict[str, Any] | None = None  # the optimizer state and the params
        self._params: list[Array] | None = None     # the last step made (checked already)
        self._unchecked = 0
        # fit's lazy check (where reading back is free): the state before the last step,
        # the last state verified finite, and whether the current arrays are the
        # trainer's own (made by its updates: the next-but-one step may write into them)
        self._lazy = False
        self._previous: _Kept | None = None
        self._verified: _Kept | None = None
        self._owned = self._previous_owned = False
        self._vault: tuple[list[Array], list[list[Array]]] | None = None
        # the last batch trained on, or a function that makes it (a compiled epoch's)
        self._last_batch: Any = None
        self._interrupted = False           # set by the SIGINT handler during fit
        self._functions: dict[tuple[Any, ...], Callable[..., Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_functions"] = {}  # compiled functions do not pickle; they are made again
        # the states to go back to and the last batch: training's, not the model's
        state.update(_previous=None, _verified=None, _vault=None, _last_batch=None,
                     _owned=False, _previous_owned=False)
        return state

    # --- one step ----------------------------------------------------------
    def step(self, Xb: Any, Yb: Any) -> Array:
        """One forward + backward + update on a batch; returns the loss (0-d, on device).

        Parameters
        ----------
        Xb : array of shape (b, n_features)
            One batch of features (host data is moved to the model's device).
        Yb : array of shape (b, n_outputs) or (b,)
            Its targets, or 1-D integer class labels.
        """
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
            self._forget()
        previous = _Kept(model.params, state["slots"], self.steps, state["step"],
                         self._last_loss)
        if self._lazy:
            params, state, loss, hits = self._lazy_update(X, Y, labels, w, state)
        elif placement.host_reads_are_free and not self.compiled:
            params, state, loss, hits = self._checked_update(X, Y, labels, w, state)
        else:
            params, state, loss, hits = self._guarded_update(X, Y, labels, w, state)
        model.params, self.optimizer.state = params, state
        self._state, self._params = state, params
        self._previous, self._previous_owned = previous, self._owned
        self._owned = self._lazy and placement.ops.writes_in_place
        self._last_batch = (X, Y, w)
        self.steps += 1
        self._last_loss = loss
        return loss, hits

    def _forget(self) -> None:
        """The model's parameters or the optimizer's state were set from outside: no
        state to go back to, and no array of the trainer's own to write into."""
        self._previous = self._verified = None
        self._owned = self._previous_owned = False

    def _gradients(self, X: Array, Y: Array, w: Array | None, state: dict[str, Any]
                   ) -> tuple[Any, list[Array], Any, Array]:
        """``steps.gradients`` of the model now; the step's Dropout key only where the
        model draws (no key object made per step otherwise)."""
        model = self.model
        key = counter_rng.Key(state["step"]) if self._draws else None
        return steps.gradients(model, model.params, X, Y, self._loss_fn, self.l2, w,
                               self.clip_norm, key)

    def _checked_update(self, X: Array, Y: Array, labels: Array | None, w: Array | None,
                        state: dict[str, Any]
                        ) -> tuple[list[Array], dict[str, Any], Array, Any]:
        """Where reading a value back is free: check the loss on the host, update (into
        new arrays), and check the new parameters and slots: a step whose update is not
        finite is dropped whole."""
        model = self.model
        loss, grads, norm_ok, out = self._gradients(X, Y, w, state)
        if not (math.isfinite(loss) and norm_ok):
            raise DivergenceError(self.steps + 1, self._last_finite_loss())
        params, state = self.optimizer.update(model.xp, model.params, grads, state)
        if not steps.all_finite_on_host(model.placement, params, state["slots"]):
            raise DivergenceError(self.steps + 1, self._last_finite_loss())
        hits = None if labels is None else steps.weighted_hits(model, out, labels, w)
        return params, state, loss, hits

    def _lazy_update(self, X: Array, Y: Array, labels: Array | None, w: Array | None,
                     state: dict[str, Any]
                     ) -> tuple[list[Array], dict[str, Any], Array, Any]:
        """``fit``'s step where reading back is free: the loss checked on the host (it
        shows a non-finite parameter of the step before), the update written into the
        spare arrays (the state before the last step) and checked only at the epoch's
        end (``_verify``) or when a later loss is not finite (``_roll_back``)."""
        model = self.model
        loss, grads, norm_ok, out = self._gradients(X, Y, w, state)
        if not (math.isfinite(loss) and norm_ok):
            self._roll_back(include_current=True)
        params, state = self.optimizer.update(model.xp, model.params, grads, state,
                                              out=self._spares())
        hits = None if labels is None else steps.weighted_hits(model, out, labels, w)
        return params, state, loss, hits

    def _spares(self) -> tuple[list[Array], list[list[Array]]] | None:
        """The arrays the next update may write into: those of the state before the
        last step, where they are the trainer's own (never a user's) and the backend
        writes in place. The last verified state is copied aside first (once an epoch)
        if its arrays are about to be written over."""
        previous = self._previous
        if not self._previous_owned or previous is None:
            return None
        verified = self._verified
        if verified is not None and verified.params[0] is previous.params[0]:
            self._verified = self._vaulted(verified)
        return previous.params, previous.slots

    def _vaulted(self, kept: _Kept) -> _Kept:
        """``kept`` copied into arrays kept for it (made once, reused every epoch)."""
        if self._vault is None or self._vault[0][0].shape != kept.params[0].shape:
            xp = self.model.xp
            self._vault = ([xp.asarray(p, copy=True) for p in kept.params],
                           [[xp.asarray(s, copy=True) for s in ss] for ss in kept.slots])
        else:
            for dst, src in zip(self._vault[0], kept.params):
                dst[...] = src
            for dsts, srcs in zip(self._vault[1], kept.slots):
                for dst, src in zip(dsts, srcs):
                    dst[...] = src
        return _Kept(self._vault[0], self._vault[1], kept.steps, kept.opt_step, kept.loss)

    def _current(self) -> _Kept:
        state = self.optimizer.state
        assert state is not None
        return _Kept(self.model.params, state["slots"], self.steps, state["step"],
                     self._last_loss)

    def _finite(self, kept: _Kept) -> bool:
        return kept is self._verified or steps.all_finite_on_host(
            self.model.placement, kept.params, kept.slots)

    def _verify(self) -> None:
        """The lazy check: every parameter and slot finite, at an epoch's end and before
        anything outside training sees the model; else back to the last finite state
        (``DivergenceError``)."""
        if self.optimizer.state is None:
            return
        current = self._current()
        if not self._finite(current):
            self._roll_back(include_current=False)
        self._verified = current

    def _roll_back(self, include_current: bool) -> None:
        """Back to the latest finite state and raise ``DivergenceError``: the current
        state (where ``include_current``: only the loss it gives was found not finite),
        else the one before the last step, else the last verified one."""
        candidates = [self._current()] if include_current else []
        candidates += [k for k in (self._previous, self._verified) if k is not None]
        for kept in candidates:
            if self._finite(kept):
                break
        else:
            raise DivergenceError(self.steps + 1, None, detail=(
                "the parameters or the optimizer's slots were not finite before this fit's "
                "first step"))
        detail = None
        if kept is self._verified and kept is not candidates[0] and self.steps > kept.steps + 1:
            detail = (f"a parameter or slot went non-finite between steps {kept.steps + 1} and "
                      f"{self.steps} without showing in the loss; the model and the optimizer "
                      f"are back at step {kept.steps}, the last state verified finite")
        self._restore(kept)
        raise DivergenceError(kept.steps + 1, self._last_finite_loss(), detail=detail)

    def _restore(self, kept: _Kept) -> None:
        state = {"step": kept.opt_step, "slots": kept.slots}
        self.model.params, self.optimizer.state = kept.params, state
        self._params, self._state = kept.params, state
        self.steps, self._last_loss = kept.steps, kept.loss
        self._previous, self._verified, self._vault = None, kept, None
        self._owned = self._previous_owned = False

    def check_saveable(self) -> None:
        """Before a checkpoint saves the model: ``check_divergence``, and the loss of the
        current parameters on the last batch trained on must be finite. A loss there that
        is not finite raises ``DivergenceError`` with the model and the optimizer back
        at the state before the last step, whose loss was finite: a checkpoint holds only
        parameters whose loss is known to be finite (the loss ``fit`` logs by default is
        the one before each step's update)."""
        self.check_divergence()
        if self._lazy:
            self._verify()
        batch = self._last_batch
        if batch is None or self.optimizer.state is None:
            return
        # a loss that overflows is this check's to report, not a warning (dask computes
        # in worker threads, outside NumPy's error state: their warnings are filtered)
        with self.model.placement.quiet(), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            loss = self.evaluate(*(batch() if callable(batch) else batch))["loss"]
        if math.isfinite(loss) or self._previous is None:
            return
        kept, step = self._previous, self.steps
        self._restore(kept)
        raise DivergenceError(step, self._last_finite_loss(), detail=(
            f"the parameters after step {step} give a non-finite loss ({loss}) on the last "
            f"batch; the model and the optimizer are back at step {kept.steps}, whose loss "
            "was finite"))

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
            sample_weight: Any = None, epoch_loss: str = "steps", verbose: int = 0,
            validation_split: float = 0.0) -> dict[str, list[float]]:
        """Train for ``epochs`` passes over (X, Y); return the per-epoch history.

        Data is validated (NaN/inf included) and moved to the model's device once;
        any bad argument raises before the model or the optimizer is touched.
        Calling fit again continues training: the optimizer's state is kept.

        Parameters
        ----------
        X : array of shape (n, n_features)
            The features: NumPy (host) data, or arrays of the model's backend and device.
            Another float dtype is cast to the model's.
        Y : array of shape (n, n_outputs) or (n,)
            The targets, or 1-D integer class labels ``0..k-1`` (NumPy, a pandas or dask
            Series, or the model's own arrays), one-hot encoded on the model's backend
            (a model with one output takes 0/1 labels). Other labels (strings,
            categories): ``classes, Y = np.unique(Y, return_inverse=True)`` first.
        epochs : int, default 1000
            Passes over the data.
        batch_size : int or None, default None
            Rows per step; None trains on all the rows at once (full batch). The last
            batch of an epoch may be shorter.
        shuffle : bool, default True
            Draw a new order of the rows for every epoch (from ``seed``); False keeps
            the rows' order.
        seed : int or None, default 0
            The random seed of the shuffling: the same seed gives the same batches on
            every backend. None draws a fresh one.
        callbacks : iterable of Callback or callables, default ()
            Called after every epoch (``on_epoch_end(trainer, epoch, logs)``) and at the
            start and end of training: ``pm.EarlyStopping``, ``pm.Checkpoint``, or any
            function ``fn(trainer, epoch, logs)``. At the end, callbacks that change the
            model (EarlyStopping's restore) run before those that save it (Checkpoint),
            whatever their order in the list.
        progress : bool, default True
            Draw a progress bar on a terminal (tqdm); elsewhere nothing, unless
            ``verbose``.
        validation_data : (X_val, Y_val) or None, default None
            Evaluate the model on this pair after every epoch: ``val_loss`` and
            ``val_accuracy`` in the history.
        sample_weight : array of shape (n,) or None, default None
            Non-negative weights per row: every loss becomes a weighted mean; a batch
            whose weights are all zero is skipped.
        epoch_loss : {"steps", "evaluate"}, default "steps"
            How the history's ``loss`` and ``accuracy`` are computed (below).
        verbose : int, default 0
            Print a line every ``verbose`` epochs (and after the last) where no
            progress bar is drawn: in a log, a notebook's captured output or a CI job.
            0 prints nothing.
        validation_split : float, default 0.0
            The fraction of the rows, taken from the end of (X, Y) before any shuffling,
            held out as ``validation_data`` (as Keras does; ``sample_weight`` is split
            alike). 0.0 holds out nothing; it cannot be combined with ``validation_data``.

        Returns
        -------
        dict of str to list of float
            The history, one value per epoch:

            - ``loss``: with ``epoch_loss="steps"`` (the default), the mean of the
              epoch's step losses (l2 term included), each computed by its step's forward
              pass, before that step's update, and weighted by its batch's size or total
              sample weight: a running mean, as Keras and scikit-learn report, at no extra
              cost. With ``epoch_loss="evaluate"``, the loss of the model after the
              epoch, on all of (X, Y): one more forward pass over the data per epoch.
            - ``accuracy``: the (weighted) fraction of samples whose class the model got
              right, read off the same forward passes as ``loss``.
            - ``val_loss``, ``val_accuracy`` (with ``validation_data`` or
              ``validation_split``): the model after the epoch, on the validation data.

        Raises
        ------
        DivergenceError
            A non-finite loss or gradient (the model and the optimizer keep their last
            finite state; ``exc.history`` holds the history).
        TrainingInterrupted
            Ctrl-C (SIGINT, main thread only) stops at the next step boundary (compiled:
            epoch boundary); a KeyboardInterrupt whose ``.history`` holds the completed
            epochs. The model holds the last completed step's parameters.

        Notes
        -----
        Where reading back is free, the check is lazy (the module's docstring) and the
        updates are written into arrays the trainer reuses, never into arrays a
        callback was shown at an epoch's end or that ``fit`` returns with. Elsewhere
        per-step values stay on the device and are read back once per epoch. With the
        trainer's ``threads``, torch's and the BLAS library's threads are limited for
        the call and put back after.
        """
        X, Y, sample_weight, validation_data = split_validation(
            X, Y, sample_weight, validation_data, validation_split)
        with limited(self.threads):
            return self._fit(X, Y, epochs, batch_size, shuffle, seed, callbacks, progress,
                             validation_data, sample_weight, epoch_loss, verbose)

    def _fit(self, X: Any, Y: Any, epochs: int, batch_size: int | None, shuffle: bool,
             seed: int | None, callbacks: Iterable[Any], progress: bool,
             validation_data: tuple[Any, Any] | None, sample_weight: Any, epoch_loss: str,
             verbose: int) -> dict[str, list[float]]:
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
        with self._defer_sigint(), self._forget_last_batch():
            for cb in cbs:
                cb.on_train_begin(self)
            bar = progress_report(epochs, progress, verbose)
            try:
                data = _Data(Xd, Yd, labels, wd, None if wd is None else _backend.to_host(wd))
                run_epoch = functools.partial(self._epoch, data, batch_size, shuffle, rng, val,
                                              epoch_loss)
                self._start_lazy_check()
                self._epochs(run_epoch, epochs, cbs, history, bar, ends)
                self.check_divergence()
            except DivergenceError as exc:
                # the deferred check finds a divergence late: drop the epochs after it
                kept = sum(1 for end in ends if end < exc.step)
                exc.history = {key: values[:kept] for key, values in history.items()}
                raise
            except BaseException:
                self._settle()  # no unverified state is left behind
                raise
            finally:
                # the model's arrays are the caller's from here on: never written into
                self._lazy = self._owned = False
                bar.close()
            if not self._interrupted:
                train_end(cbs, self)
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
            if cbs:  # arrays a callback sees may be kept: never written into again
                self._owned = False
            for cb in cbs:
                cb.on_epoch_end(self, epoch, logs)
            if self.stop_training:
                return

    def _start_lazy_check(self) -> None:
        """Where reading back is free and nothing compiles, ``fit`` checks lazily: the
        state it starts from is verified once here."""
        placement = self.model.placement
        if not placement.host_reads_are_free or self.compiled:
            return
        state = self.optimizer.state
        if state is None or state is not self._state or self.model.params is not self._params:
            self._state = self.optimizer.ensure_state(placement.xp, self.model.params)
            self._params = self.model.params
            self._forget()
        self._lazy = True
        if self._verified is None or self._verified.params is not self.model.params:
            self._verify()

    def _settle(self) -> None:
        """On an error within ``fit`` (not a divergence): the lazy check, so that the
        model is left in a finite state; the error itself goes on."""
        if self._lazy:
            with contextlib.suppress(DivergenceError):
                self._verify()

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
    def _forget_last_batch(self) -> Iterator[None]:
        """The last batch (``check_saveable`` reads it) is dropped when ``fit`` ends: a
        compiled epoch's holds all the data, which the trainer must not keep alive."""
        try:
            yield
        finally:
            self._last_batch = None

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
            logs = self._evaluate(data.X, data.Y, data.w)
        if val is not None:
            val_logs = self._evaluate(*val)
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
        complete = True
        arrays = [data.X, data.Y, data.labels if track else None, data.w]
        with placement.quiet():
            for (Xb, Yb, lb, wb), count in batches.minibatches(placement, arrays, data.w_host,
                                                                batch_size, shuffle, rng):
                if self._interrupted:
                    complete = False
                    break
                loss, hits = self._step(Xb, Yb, labels=lb, w=wb)
                if track:
                    loss_sum = loss_sum + loss * count
                    hit_sum = hit_sum + hits
                seen += count
            if self._lazy:
                self._verify()  # the epoch's end: before the logs and the callbacks
        if not complete:
            return None
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
        self._previous = _Kept(model.params, state["slots"], self.steps, step0, self._last_loss)
        self._last_batch = functools.partial(_last_batch_of, placement, data, plan)
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

    def evaluate(self, X: Any, Y: Any, sample_weight: Any = None) -> dict[str, float]:
        """The loss (with the l2 term) and accuracy of the model as it is now.

        Parameters
        ----------
        X : array of shape (n, n_features)
            Features, as ``fit`` takes them (host data is moved to the model's device).
        Y : array of shape (n, n_outputs) or (n,)
            Targets or 1-D integer class labels, as ``fit`` takes them.
        sample_weight : array of shape (n,) or None, default None
            Per-row weights: the loss and the accuracy become weighted means.

        Returns
        -------
        dict of str to float
            ``{"loss": ..., "accuracy": ...}``.
        """
        model = self.model
        Xd = validation.features(model, X, check_values=True)
        Yd = validation.targets(model, Y, Xd.shape[0], check_values=True)
        wd = validation.sample_weights(model, sample_weight, Xd.shape[0])
        losses.check_targets(self.loss, model.xp, Yd)
        with limited(self.threads):
            return self._evaluate(Xd, Yd, wd)

    def _evaluate(self, X: Array, Y: Array, w: Array | None = None) -> dict[str, float]:
        """``evaluate`` on data already checked and placed on the model."""
        loss, accuracy = self._function(steps.evaluation)(self.model.params, X, Y, w)
        loss, accuracy = self.model.placement.read_scalars([loss, accuracy])
        return {"loss": loss, "accuracy": accuracy}


def split_validation(X: Any, Y: Any, sample_weight: Any, validation_data: Any,
                     fraction: float) -> tuple[Any, Any, Any, Any]:
    """``fit``'s ``validation_split``: the last ``fraction`` of the rows of X, Y (and
    ``sample_weight``) held out as ``validation_data``, as Keras takes them."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_split must be a fraction in [0, 1), got {fraction!r}")
    if fraction == 0.0:
        return X, Y, sample_weight, validation_data
    if validation_data is not None:
        raise ValueError("pass validation_data or validation_split, not both")
    X, Y = validation.sliceable(X, "X"), validation.sliceable(Y, "Y")
    n = int(X.shape[0])
    held = int(n * fraction)
    if held < 1 or held >= n:
        raise ValueError(f"validation_split={fraction} of {n} rows holds out {held}; it must "
                         "leave at least one row on each side")
    cut = n - held
    if sample_weight is not None:
        sample_weight = validation.sliceable(sample_weight, "sample_weight")[:cut]
    return X[:cut], Y[:cut], sample_weight, (X[cut:], Y[cut:])


def _last_batch_of(placement: _backend.Placement, data: _Data, plan: steps.EpochPlan
                   ) -> tuple[Array, Array, Array | None]:
    """The last batch of a compiled epoch that held samples in effect: its rows of X
    and Y, and their weights (None: each row counts once)."""
    if plan.single:
        return data.X, data.Y, data.w
    k = int(np.flatnonzero(plan.counts > 0)[-1])
    rows = placement.indices(plan.indices[k])
    xp = placement.xp
    X, Y = (xp.take(a, rows, axis=0) for a in (data.X, data.Y))
    w = None if plan.weights is None else placement.from_host(plan.weights[k])
    return X, Y, w


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
        l2: float = 0.0, clip_norm: float | None = None, epochs: int = 1000,
        batch_size: int | None = None, shuffle: bool = True, seed: int | None = 0,
        callbacks: Iterable[Any] = (), progress: bool = True,
        validation_data: tuple[Any, Any] | None = None, sample_weight: Any = None,
        epoch_loss: str = "steps", verbose: int = 0, validation_split: float = 0.0,
        threads: int | None = None) -> dict[str, list[float]]:
    """Train ``model`` on (X, Y): ``Trainer(model, loss, optimizer, ...).fit(X, Y, ...)``.

    Parameters
    ----------
    model : Sequential
        The model to train (``pm.MLP(...)`` or ``pm.Sequential([...])``).
    X : array of shape (n, n_features)
        The features (see ``Trainer.fit``).
    Y : array of shape (n, n_outputs) or (n,)
        The targets, or 1-D integer class labels (see ``Trainer.fit``).
    loss : str, default "mse"
        The loss's name (see ``Trainer``).
    optimizer : Optimizer or str, default "sgd"
        ``pm.SGD(...)``, ``pm.Adam(...)``, or ``"sgd"`` / ``"adam"``.
    l2 : float, default 0.0
        The weight decay (see ``Trainer``).
    clip_norm : float or None, default None
        Clip the gradients to this global norm; None does not clip.
    epochs : int, default 1000
        Passes over the data.
    batch_size : int or None, default None
        Rows per step; None: all of them (full batch).
    shuffle : bool, default True
        A new order of the rows every epoch (from ``seed``).
    seed : int or None, default 0
        The random seed of the shuffling.
    callbacks : iterable of Callback or callables, default ()
        ``pm.EarlyStopping``, ``pm.Checkpoint`` or ``fn(trainer, epoch, logs)``.
    progress : bool, default True
        A progress bar on a terminal.
    validation_data : (X_val, Y_val) or None, default None
        Evaluated after every epoch (``val_loss``, ``val_accuracy``).
    sample_weight : array of shape (n,) or None, default None
        Non-negative per-row weights of the loss.
    epoch_loss : {"steps", "evaluate"}, default "steps"
        How the history's loss is computed (see ``Trainer.fit``).
    verbose : int, default 0
        Print a line every ``verbose`` epochs where no bar is drawn; 0: never.
    validation_split : float, default 0.0
        The last fraction of the rows held out as validation data, as Keras does.
    threads : int or None, default None
        Limit torch's and the BLAS library's threads for this call (see ``Trainer``).

    Returns
    -------
    dict of str to list of float
        The per-epoch history (see ``Trainer.fit``).
    """
    trainer = Trainer(model, loss=loss, optimizer=optimizer, l2=l2, clip_norm=clip_norm,
                      threads=threads)
    return trainer.fit(X, Y, epochs=epochs, batch_size=batch_size, shuffle=shuffle, seed=seed,
                       callbacks=callbacks, progress=progress, validation_data=validation_data,
                       sample_weight=sample_weight, epoch_loss=epoch_loss, verbose=verbose,
                       validation_split=validation_split)
