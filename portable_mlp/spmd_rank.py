"""One rank of SPMD training: the loop each Dask worker runs on its own rows.

``run_rank`` is the long-lived task that ``portable_mlp.distributed.fit_spmd`` pins to a
worker. It trains a replica of the model with the same pieces as ``Trainer`` (the
forward and backward pass, the optimizers and their schedules, l2, clipping, sample
weights) on its own backend, and talks to the other ranks once per step: one
allreduce of its batch's flat buffer (``portable_mlp.batch_sums``). The sum is the
global batch's, so every rank applies the same update and the replicas stay equal with
no broadcast, and a divergence on any rank is seen by all at the same step. The
buffer's ``stop`` is rank 0's: the client asked the fit to end (a callback, Ctrl-C, an
error), and every rank ends before applying that step.
"""

from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from portable_mlp import _backend, batch_sums, collective, grad, optim, steps
from portable_mlp.train import DivergenceError

if TYPE_CHECKING:
    from portable_mlp.model import Sequential

Array = Any
POLL_SECONDS = 1.0  # how often rank 0 asks whether the client wants the fit stopped


@dataclass(frozen=True)
class Job:
    """What every rank runs, sent once to each."""

    model: Sequential           # the starting parameters, on the host
    backend: str                # the backend each rank trains on
    device: Any
    loss: str
    optimizer: optim.Optimizer  # with its state when the fit continues one
    l2: float
    clip_norm: float | None
    epochs: range               # the epochs to run (a resumed fit starts later)
    steps_per_epoch: int
    shuffle: bool
    seed: int
    collective: str
    timeout: float
    name: str                   # this fit's id: it names its Variable, Queue and Event
    state_every: int            # send the parameters every k epochs (0: only at the end)
    wait_for_client: bool       # callbacks may stop the fit after each epoch


def local_batches(n: int, steps_per_epoch: int, shuffle: bool, seed: int, epoch: int,
                  rank: int) -> list[np.ndarray] | None:
    """The rows of each of this rank's batches in ``epoch`` (None: all rows, in order).

    A rank takes ``ceil(n / steps_per_epoch)`` rows a step, so that every rank takes
    the same number of steps and its share of a global batch follows its share of the
    rows; a rank out of rows takes an empty batch (it weighs 0 in the sum). The order
    is drawn from ``(seed, epoch, rank)``: any rank's batches can be drawn anywhere.
    """
    if steps_per_epoch == 1:
        return None
    size = -(-n // steps_per_epoch)
    rng = np.random.default_rng((seed, epoch, rank))
    order = rng.permutation(n) if shuffle else np.arange(n)
    return [order[k * size:(k + 1) * size] for k in range(steps_per_epoch)]


class Summed(NamedTuple):
    """A global step's loss (times its weight), hits and weight, on every rank alike."""

    loss: float
    hits: float
    weight: float


class _Replica:
    """A rank's model, optimizer state and rows, and its step."""

    def __init__(self, job: Job, X: np.ndarray, Y: np.ndarray, w: np.ndarray | None,
                 validation: tuple[np.ndarray, np.ndarray] | None,
                 comm: collective.Collective) -> None:
        self.job, self.comm, self.validation = job, comm, validation
        self.model = model = job.model.to(job.backend, job.device, job.model.placement.dtype)
        place = self.placement = model.placement
        self.X, self.Y = place.from_host(X), place.from_host(Y)
        self.labels = model.classes_of(self.Y)
        self.w_host = w
        self.w = None if w is None else place.from_host(w)
        self.loss_fn = grad.check_loss(model, job.loss)
        self.optimizer = job.optimizer
        state = self.optimizer.state
        if state is not None:  # continuing a fit: its slots on this rank's backend
            state = {"step": state["step"],
                     "slots": [[place.from_host(_backend.to_host(s)) for s in ss]
                               for ss in state["slots"]]}
            self.optimizer.state = state
        self.optimizer.ensure_state(place.xp, model.params)
        self.stop_requested = False
        self.diverged: DivergenceError | None = None  # found in rank 0's epoch logs
        self.last_loss: float | None = None
        # where the rank's time went: the whole steps, and in them the local gradients,
        # the allreduce and the update
        self.seconds = dict.fromkeys(("steps", "gradients", "allreduce", "update"), 0.0)
        self.n_steps = 0

    @property
    def state(self) -> dict[str, Any]:
        """The optimizer's state: the step count and the slots."""
        return self.optimizer.state  # type: ignore[return-value]

    def step(self, rows: np.ndarray | None) -> Summed | None:
        """One global step on this rank's ``rows`` (None: all); returns the global
        loss, hits and weight of the batch, or None when the client asked to stop."""
        start = time.perf_counter()
        try:
            return self._step(rows)
        finally:
            self.seconds["steps"] += time.perf_counter() - start
            self.n_steps += 1

    def _step(self, rows: np.ndarray | None) -> Summed | None:
        total = self._summed(rows)
        loss_sum, weight, hits, stop = batch_sums.tail_of(self.model, total)
        if stop:
            return None
        if weight == 0.0:  # every rank's batch weighed 0: no step, as in Trainer.fit
            return Summed(0.0, 0.0, 0.0)
        start = time.perf_counter()
        self._apply(total, loss_sum, weight)
        self.seconds["update"] += time.perf_counter() - start
        return Summed(self.last_loss * weight, hits, weight)  # type: ignore[operator]

    def _summed(self, rows: np.ndarray | None) -> Array:
        """This rank's buffer (``batch_sums``), summed over the ranks (in place)."""
        start = time.perf_counter()
        X, Y, labels, w = self._rows(rows)
        buffer = batch_sums.shard_sums(self.model, self.model.params, X, Y, labels, w,
                                       self.loss_fn, self._weight(rows),
                                       1.0 if self.stop_requested else 0.0)
        self.seconds["gradients"] += time.perf_counter() - start
        start = time.perf_counter()
        self.comm.allreduce_sum(buffer)
        self.seconds["allreduce"] += time.perf_counter() - start
        return buffer

    def _weight(self, rows: np.ndarray | None) -> float:
        """What this rank's batch weighs: its rows, or their summed sample weights."""
        if self.w_host is None:
            return float(self.X.shape[0] if rows is None else rows.shape[0])
        picked = self.w_host if rows is None else self.w_host[rows]
        return float(np.sum(picked, dtype=np.float64))

    def _rows(self, rows: np.ndarray | None) -> tuple[Array, Array, Array, Array | None]:
        arrays = (self.X, self.Y, self.labels, self.w)
        if rows is None:
            return arrays
        index = self.placement.indices(rows)
        xp = self.placement.xp
        return tuple(None if a is None else xp.take(a, index, axis=0)  # type: ignore[return-value]
                     for a in arrays)

    def _apply(self, total: Array, loss_sum: float, weight: float) -> None:
        """The optimizer's update from the summed buffer; DivergenceError (on every rank
        alike) if the loss, the gradients or the update is not finite."""
        model, job = self.model, self.job
        loss, grads, norm_ok = batch_sums.global_gradients(
            model, model.params, total, loss_sum, weight, job.l2, job.clip_norm)
        step = self.state["step"] + 1
        if not (math.isfinite(loss) and bool(norm_ok)):
            raise DivergenceError(step, self.last_loss)
        new_params, state = self.optimizer.update(self.placement.xp, model.params, grads,
                                                  self.state)
        if not steps.all_finite_on_host(self.placement, new_params, state["slots"]):
            raise DivergenceError(step, self.last_loss)
        model.params, self.optimizer.state = new_params, state
        self.last_loss = loss

    def host_state(self) -> dict[str, Any]:
        """The parameters and the optimizer's state, on the host."""
        state = self.state
        return {"params": self.model.host_params(), "step": state["step"],
                "slots": [[_backend.to_host(s) for s in ss] for ss in state["slots"]]}

    def result(self, error: DivergenceError | None = None) -> dict[str, Any]:
        """What the rank hands back: its final state, its error, where its time went."""
        entries = batch_sums.n_grads(self.model) + batch_sums.TAIL
        itemsize = np.dtype(_backend.dtype_name(self.placement.dtype_obj)).itemsize
        return {**self.host_state(), "error": error, "steps_taken": self.n_steps,
                "rows": int(self.X.shape[0]), "seconds": self.seconds,
                "buffer_bytes": entries * itemsize}

    def evaluate(self) -> dict[str, float]:
        """The validation loss and accuracy of the replica (rank 0's logs)."""
        if self.validation is None:
            return {}
        place = self.placement
        Xv, Yv = (place.from_host(a) for a in self.validation)
        settings = steps.Settings(self.model, self.optimizer, self.loss_fn, self.job.l2, None)
        loss, accuracy = place.read_scalars(list(steps.evaluation(
            settings, self.model.params, Xv, Yv, None)))
        return {"val_loss": loss, "val_accuracy": accuracy}


class Channels:
    """One fit's Dask channels, opened by name on the client and on rank 0: the epoch
    reports (rank 0 to the client), the callbacks' verdicts (back), the stop and wake
    events, and the rendezvous variable."""

    def __init__(self, name: str, client: Any = None, queues: bool = True) -> None:
        """``queues``: open the queues too (the client and rank 0, which use them: a
        queue lives while a side holds it, and a killed worker never lets go)."""
        import distributed

        self.queues = [distributed.Queue(f"{name}-{kind}", client=client)
                       for kind in ("reports", "verdicts")] if queues else []
        self.stop = distributed.Event(f"{name}-stop", client=client)
        self.wake = distributed.Event(f"{name}-wake", client=client)
        self.rendezvous = distributed.Variable(f"{name}-rendezvous", client=client)

    @property
    def reports(self) -> Any:
        return self.queues[0]

    @property
    def verdicts(self) -> Any:
        return self.queues[1]

    def close(self) -> None:
        """Release this side's hold on the queues."""
        for queue in self.queues:
            queue.close()

    def forget(self) -> None:
        """Remove the events and the variable from the scheduler (cleared events are
        deleted there)."""
        self.close()
        self.stop.clear()
        self.wake.clear()
        self.rendezvous.delete()


class _ClientLine:
    """Rank 0's line to the client: epoch reports out, stop requests in."""

    def __init__(self, channels: Channels, timeout: float) -> None:
        self.channels, self.timeout = channels, timeout
        self._next_poll = time.monotonic() + POLL_SECONDS

    def wants_stop(self) -> bool:
        """Whether the client set the stop event (asked at most every POLL_SECONDS)."""
        now = time.monotonic()
        if now < self._next_poll:
            return False
        self._next_poll = now + POLL_SECONDS
        return bool(self.channels.stop.is_set())

    def report(self, message: dict[str, Any], wait: bool) -> bool:
        """Send an epoch's report; with ``wait``, return whether the client (its
        callbacks) said to stop."""
        self.channels.reports.put(message)
        self.channels.wake.set()
        if not wait:
            return False
        try:
            return self.channels.verdicts.get(timeout=self.timeout) == "stop"
        except TimeoutError:
            raise collective.CollectiveError(
                f"the client did not answer rank 0 within timeout={self.timeout:g} s after "
                "an epoch: callbacks slower than that, or the client is gone") from None


def run_epochs(job: Job, rank: int, replica: _Replica, client: _ClientLine | None
               ) -> dict[str, Any]:
    """The epochs of ``job`` on this rank; the final state (and why it ended)."""
    n = int(replica.X.shape[0])
    for epoch in job.epochs:
        batches = local_batches(n, job.steps_per_epoch, job.shuffle, job.seed, epoch, rank)
        try:
            sums = _epoch(replica, batches if batches is not None else [None], client)
        except DivergenceError as exc:
            return replica.result(exc)
        if sums is None:  # stopped
            return replica.result(replica.diverged)
        if client is not None:
            _report(job, epoch, replica, client, sums)
    return replica.result()


def _epoch(replica: _Replica, batches: list[Any], client: _ClientLine | None
           ) -> tuple[float, float, float] | None:
    """The steps of one epoch: the summed (weighted) losses, hits and weights; None
    when the fit was asked to stop."""
    loss_sum = hit_sum = seen = 0.0
    for rows in batches:
        if client is not None and client.wants_stop():
            replica.stop_requested = True
        summed = replica.step(rows)
        if summed is None:
            return None
        loss_sum, hit_sum, seen = (loss_sum + summed.loss, hit_sum + summed.hits,
                                   seen + summed.weight)
    return loss_sum, hit_sum, seen


def _report(job: Job, epoch: int, replica: _Replica, client: _ClientLine,
            sums: tuple[float, float, float]) -> None:
    """Rank 0's end of an epoch: its logs to the client, or, where they are not finite
    (a loss summed past float's range, a model that overflows on the validation data),
    a divergence that stops every rank at the next step, as ``fit`` refuses such an
    epoch (not logged, no callback sees it)."""
    loss_sum, hit_sum, seen = sums
    logs = {"loss": loss_sum / seen, "accuracy": hit_sum / seen, **replica.evaluate()}
    bad = [key for key, value in logs.items() if not math.isfinite(value)]
    last = epoch == job.epochs[-1]
    if bad:
        replica.diverged = DivergenceError(replica.state["step"], replica.last_loss, detail=(
            f"epoch {epoch + 1} logged non-finite {', '.join(bad)}; the model holds its "
            f"parameters after step {replica.state['step']}, the last one applied"))
        replica.stop_requested = True
        if last:  # no step follows: the others have ended
            raise replica.diverged
        return
    send = job.state_every and (epoch + 1) % job.state_every == 0
    message = {"epoch": epoch, "logs": logs, "steps": replica.state["step"],
               "state": replica.host_state() if send else None}
    replica.stop_requested = client.report(message, job.wait_for_client and not last)


def run_rank(job: Job, rank: int, world: int, X_blocks: list[np.ndarray],
             Y_blocks: list[np.ndarray], w_blocks: list[np.ndarray] | None,
             validation: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """The task pinned to one worker: join the collective, train, leave.

    ``X_blocks`` are this worker's own row blocks of X (Dask passes the data of the
    futures the worker holds: no row of X crosses the network), ``Y_blocks`` and
    ``w_blocks`` the matching blocks of Y and the sample weights; ``validation``, rank
    0's alone, the validation data it evaluates after each epoch."""
    import distributed
    from threadpoolctl import threadpool_limits

    began = time.perf_counter()
    worker = distributed.get_worker()
    X, Y = _joined(X_blocks), _joined(Y_blocks)
    w = None if w_blocks is None else _joined(w_blocks)
    del X_blocks, Y_blocks, w_blocks
    with threadpool_limits(limits=worker.state.nthreads):
        try:
            return _train(job, rank, world, (X, Y, w, validation), began)
        except collective.CollectiveError as exc:
            failure = str(exc)
    # here the failed call's frames are released: a full collection closes the group's
    # sockets (it costs 0.2-0.4 s on a worker, so only after a failure). A new error,
    # with the message alone: its traceback must not hold the failed call's frames
    gc.collect()
    raise collective.CollectiveError(failure)


def _train(job: Job, rank: int, world: int, data: tuple[Any, Any, Any, Any], began: float
           ) -> dict[str, Any]:
    """Join the collective, run the epochs, leave the collective."""
    import distributed

    worker = distributed.get_worker()
    channels = Channels(job.name, queues=rank == 0)
    try:
        comm = collective.connect(job.collective, rank, world, channels.rendezvous,
                                  distributed.comm.get_address_host(worker.address),
                                  job.timeout)
        try:
            replica = _Replica(job, *data, comm)
            replica.seconds["setup"] = time.perf_counter() - began  # joining, placing
            client = _ClientLine(channels, job.timeout) if rank == 0 else None
            return run_epochs(job, rank, replica, client)
        finally:
            comm.close()
    finally:
        channels.close()
        channels.wake.set()  # the client looks at once


def _joined(blocks: list[np.ndarray]) -> np.ndarray:
    """A worker's blocks as one array: the block itself when there is one (no copy)."""
    return blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=0)
