"""SPMD data-parallel training on Dask workers: ``fit_spmd``.

Every worker that holds rows of the data runs one long-lived task (a rank,
``portable_mlp.spmd_rank``) that trains a replica of the model on its own rows; the
ranks sum their gradients with one allreduce per step (``portable_mlp.collective``:
``torch.distributed``, gloo on CPU). The scheduler sees one task per worker for the
whole fit, where ``fit`` on dask arrays builds a graph per step. The design, and when
to use which, are in docs/distributed.md.
"""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import numpy as np

from portable_mlp import backends, collective, losses, spmd_rank, validation
from portable_mlp._backend import WorkerLostError
from portable_mlp.callback_base import as_callbacks, train_end
from portable_mlp.checkpoint import check_target, load_optimizer, save
from portable_mlp.progress import check_verbose, progress_report
from portable_mlp.train import Trainer, TrainingInterrupted, validation_pair

if TYPE_CHECKING:
    from portable_mlp.model import Sequential

WAKE = 1.0  # seconds the client waits for the ranks' news before it looks anyway
POLL = 0.02  # seconds between its looks once a rank has ended


def fit_spmd(model: Sequential, X: Any, Y: Any, *, client: Any = None, backend: str = "numpy",
             device: Any = None, collective_name: str = "gloo", loss: str = "mse",
             optimizer: Any = "sgd", l2: float = 0.0, clip_norm: float | None = None,
             epochs: int = 1, batch_size: int | None = None, shuffle: bool = True,
             seed: int = 0, sample_weight: Any = None,
             validation_data: tuple[Any, Any] | None = None, callbacks: Iterable[Any] = (),
             checkpoint: str | os.PathLike[str] | None = None, checkpoint_every: int = 1,
             resume: str | os.PathLike[str] | None = None, timeout: float = 60.0,
             progress: bool = True, verbose: int = 0, timings: dict[str, Any] | None = None
             ) -> dict[str, list[float]]:
    """Train ``model`` on dask arrays (or DataFrames) chunked by rows, one rank per worker
    that holds rows; return the per-epoch history, as ``Trainer.fit`` does.

    The history and ``callbacks`` are those of ``Trainer.fit``: rank 0 reports each
    epoch to this process, where the callbacks run (they see a ``Trainer`` holding the
    model after that epoch) and may stop the fit. The parameters (and the optimizer's
    state) come back into ``model`` on its own backend. A worker that dies raises
    ``WorkerLostError`` naming the last checkpoint; a rank that raises stops every rank
    with its error. Ctrl-C ends every rank at a step and raises ``TrainingInterrupted``
    (its ``history``: the epochs so far), the model holding the last step's parameters,
    as ``fit`` does. One SPMD fit at a time per worker (a process group is global to its
    process). The design: docs/distributed.md.

    Parameters
    ----------
    model : Sequential
        The model to train, on any backend; its parameters are the ranks' start.
    X, Y : dask array or DataFrame
        Features and targets (or 1-D integer labels), chunked by rows. X must be held by
        Dask; Y may be a host array, then cut into X's row blocks.
    client : distributed.Client, optional
        The cluster's client. Default: ``distributed.default_client()``.
    backend : {"numpy", "torch", "cupy"}, default "numpy"
        What each rank trains on.
    device : optional
        The ranks' device (each worker's own, e.g. "cuda"). Default: the backend's.
    collective_name : {"gloo", "nccl"}, default "gloo"
        The allreduce's library: gloo on CPU, NCCL on CUDA GPUs.
    loss, optimizer, l2, clip_norm
        As in ``Trainer`` (default "mse", "sgd", 0.0, None).
    epochs : int, default 1
        The epochs to train (with ``resume``: the total, counting those already run).
    batch_size : int, optional
        Global: every step trains on ``batch_size`` rows across the ranks, each rank
        taking its share in proportion to its rows; an epoch has ``ceil(n /
        batch_size)`` steps on every rank. None (the default): the full batch, one step
        an epoch, the same rows (and float64 trajectory) as ``fit`` in one process.
    shuffle : bool, default True
        Shuffle each rank's rows every epoch, from ``(seed, epoch, rank)``.
    seed : int, default 0
        The seed of the ranks' shuffles (an integer: None is refused).
    sample_weight : dask or host array, optional
        Per-row weights (``(n,)``, non-negative), as in ``fit``.
    validation_data : (X_val, Y_val), optional
        Evaluated by rank 0 after each epoch (``val_loss``, ``val_accuracy``).
    callbacks : iterable of Callback or callable, default ()
        Run here after each epoch; ``trainer.stop_training = True`` ends the fit.
    checkpoint : path, optional
        Written here (``pm.save``, atomically) every ``checkpoint_every`` epochs and at
        the end. Default: none.
    checkpoint_every : int, default 1
        Epochs between checkpoints.
    resume : path, optional
        A checkpoint of this model written with the same ``batch_size``: training
        continues from the epoch its step count ends, up to ``epochs``.
    timeout : float, default 60.0
        Seconds any wait in a collective may last (a peer's death is seen at once; a
        hung peer, or callbacks slower than this, fail the fit after it).
    progress : bool, default True
        A progress bar on a terminal, as in ``fit``.
    verbose : int, default 0
        A line every ``verbose`` epochs where no bar is drawn (0: none).
    timings : dict, optional
        Receives ``"ranks"``: per rank, its rows, the steps it took, the seconds spent
        in them (and in their gradients, allreduce and update), and the allreduce's
        buffer size in bytes.
    """
    if model.random:  # each rank would draw the same masks for its own rows
        raise ValueError("fit_spmd does not train models with Dropout yet: its ranks would "
                         "draw correlated masks; train with pm.fit on dask arrays (the graph "
                         "path draws the same masks as one process), or remove the Dropout")
    trainer = Trainer(model, loss=loss, optimizer=optimizer, l2=l2, clip_norm=clip_norm)
    path = _check_arguments(X, client, backend, collective_name, epochs, batch_size, seed,
                            timeout, checkpoint, checkpoint_every, verbose)
    client = _client(client)
    cbs = as_callbacks(callbacks)
    host = model.to("numpy", dtype=model.placement.dtype)  # the ranks' starting point
    val = _host_validation(host, validation_data)
    data = _persisted_data(client, model, loss, X, Y, sample_weight)
    n = int(data[0].shape[0])
    steps_per_epoch = 1 if batch_size is None else -(-n // batch_size)
    first = 0 if resume is None else _resume(trainer, resume, steps_per_epoch, epochs)
    parts = rank_parts(client, data)
    trainer.log_keys = ("loss", "accuracy", *(("val_loss", "val_accuracy") if val else ()))
    for cb in cbs:
        cb.on_train_begin(trainer)
    if resume is not None:  # the parameters it loaded
        host.load_params(model.host_params())
    job = spmd_rank.Job(
        model=host, backend=backend,
        device=device, loss=loss, optimizer=trainer.optimizer, l2=trainer.l2,
        clip_norm=trainer.clip_norm, epochs=range(first, epochs),
        steps_per_epoch=steps_per_epoch, shuffle=bool(shuffle), seed=seed,
        collective=collective_name, timeout=float(timeout),
        name=f"portable-mlp-spmd-{uuid.uuid4().hex}",
        state_every=1 if cbs else (checkpoint_every if path is not None else 0),
        wait_for_client=bool(cbs))
    history: dict[str, list[float]] = {key: [] for key in trainer.log_keys}
    follower = _Follower(trainer, cbs, history, path, checkpoint_every)
    results = _run(client, job, parts, val, follower,
                   progress_report(len(job.epochs), progress, verbose))
    if timings is not None:
        timings["ranks"] = [{key: r[key] for key in ("rows", "steps_taken", "seconds",
                                                      "buffer_bytes")} for r in results]
    follower.train_end(_same_replicas(results) if results else None)
    return history


def _run(client: Any, job: spmd_rank.Job, parts: list[tuple[str, list[list[Any] | None]]],
         validation: Any, follower: _Follower, bar: Any) -> list[dict[str, Any]]:
    """Run the ranks, following their epochs; their results (none for no epoch).
    Ctrl-C ends every rank at a step, and raises ``TrainingInterrupted``."""
    if not job.epochs:
        return []
    try:
        with _running(client, job, parts, validation) as ranks:
            try:
                while (report := ranks.next_report()) is not None:
                    bar.update(report["logs"])
                    ranks.reply(follower.epoch_end(report))
                return ranks.results()
            except KeyboardInterrupt:
                ranks.stop()
                follower.interrupted(ranks.first_result())
                raise  # not reached: interrupted raises
    except WorkerLostError as exc:
        raise WorkerLostError(f"{exc}. {follower.resume_hint()}") from exc
    finally:
        bar.close()


def _check_arguments(X: Any, client: Any, backend: str, collective_name: str, epochs: int,
                     batch_size: int | None, seed: int, timeout: float, checkpoint: Any,
                     checkpoint_every: int, verbose: int) -> str | None:
    """Refuse a bad plain argument before anything runs; the checkpoint's path."""
    if not backends.get(backend).sums_in_place:
        ranks = [name for name in backends.names() if backends.get(name).sums_in_place]
        raise ValueError(f"SPMD ranks train on one of {', '.join(ranks)} (arrays a "
                         f"collective sums in place), got backend={backend!r}")
    if not type(X).__module__.startswith("dask."):
        raise TypeError(f"fit_spmd trains on data that Dask holds: X must be a dask array "
                        f"or DataFrame chunked by rows, got {type(X).__name__}; for data in "
                        "memory use pm.fit, or dask.array.from_array(X, chunks=...)")
    if client is not None and not hasattr(client, "who_has"):
        raise TypeError(f"client must be a distributed.Client, got {type(client).__name__} "
                        "(for a LocalCluster, pass distributed.Client(cluster))")
    collective.check_name(collective_name)
    validation.positive("epochs", epochs, integer=True)
    validation.positive("batch_size", batch_size, integer=True, allow_none=True)
    validation.positive("checkpoint_every", checkpoint_every, integer=True)
    validation.positive("timeout", timeout)
    if validation.check_seed(seed) is None:
        raise ValueError("fit_spmd needs an integer seed: every rank draws its batches "
                         "from (seed, epoch, rank)")
    check_verbose(verbose)
    return None if checkpoint is None else check_target(checkpoint)


def _client(client: Any) -> Any:
    """``client``, or the default ``distributed`` client (ValueError if there is none)."""
    import distributed

    return client if client is not None else distributed.default_client()


def _persisted_data(client: Any, model: Sequential, loss: str, X: Any, Y: Any,
                    sample_weight: Any) -> list[Any]:
    """X, Y and the weights (or None) checked as ``fit`` checks them and persisted in X's
    row blocks, one block of columns each."""
    twin = model.to("dask", dtype=model.placement.dtype)
    with client.as_current():
        Xd = validation.features(twin, X, check_values=True)
        Yd = validation.targets(twin, Y, Xd.shape[0], check_values=True)
        wd = validation.sample_weights(twin, sample_weight, Xd.shape[0])
        data = twin.placement.persist_rows(Xd, Yd, wd)
        losses.check_targets(loss, twin.xp, data[1])
    return data


def rank_parts(client: Any, data: list[Any]) -> list[tuple[str, list[list[Any] | None]]]:
    """Per rank, ``(worker address, [the futures of its row blocks of each array])``.

    X's blocks stay where they are (``client.who_has``); a block held by several workers
    (replicas) goes to the holder with the fewest rows so far, so that ranks balance.
    The blocks of Y and the weights follow X's (persisted with X, they are mostly on
    the same worker; those that are not move once, at the start).

    Parameters
    ----------
    client : distributed.Client
        The client of the cluster that holds the blocks.
    data : list of dask arrays
        X, Y (and the weights), persisted, chunked alike by rows.
    """
    from distributed import futures_of, wait

    X = data[0]
    wait(futures_of(X))  # computed: then each block has its holders
    blocks = [None if a is None else _block_futures(a) for a in data]
    x_blocks = _block_futures(X)
    who_has = client.who_has(x_blocks)
    rows: dict[str, int] = {}
    owned: dict[str, list[int]] = {}
    for i, (future, length) in enumerate(zip(x_blocks, X.chunks[0])):
        holders = sorted(who_has[future.key])
        if not holders:
            raise WorkerLostError(f"no worker holds row block {i} of the data")
        holder = min(holders, key=lambda a: rows.get(a, 0))
        rows[holder] = rows.get(holder, 0) + length
        owned.setdefault(holder, []).append(i)
    return [(address, [None if futures is None else [futures[i] for i in indices]
                       for futures in blocks])
            for address, indices in sorted(owned.items())]


def _block_futures(array: Any) -> list[Any]:
    """The futures of a persisted array's row blocks, in order (one block of columns)."""
    from distributed import futures_of

    by_key = {f.key: f for f in futures_of(array)}
    keys = array.__dask_keys__()
    return [by_key[row[0] if array.ndim == 2 else row] for row in keys]


def _resume(trainer: Trainer, path: Any, steps_per_epoch: int, epochs: int) -> int:
    """Load the checkpoint at ``path`` into the trainer's model and optimizer (checked
    whole first); the epoch it continues from."""
    from portable_mlp.checkpoint import load

    model, where = trainer.model, os.fspath(path)
    saved = load(path, dtype=model.placement.dtype)
    if saved.pieces != model.pieces:
        raise ValueError(f"resume={where!r} holds another architecture than the model's")
    optimizer = load_optimizer(path, model, copy.deepcopy(trainer.optimizer))
    step = 0 if optimizer.state is None else int(optimizer.state["step"])
    first, rest = divmod(step, steps_per_epoch)
    if rest or first >= epochs:
        raise ValueError(
            f"resume={where!r} holds step {step}, which is not the end of an epoch before "
            f"epoch {epochs} at {steps_per_epoch} steps an epoch: resume with the "
            "batch_size of the fit that wrote it, and more epochs than it ran")
    model.load_params(saved.host_params())
    trainer.optimizer.state = optimizer.state
    return first


def _host_validation(host: Sequential, validation_data: Any
                     ) -> tuple[np.ndarray, np.ndarray] | None:
    """``validation_data`` checked as ``fit`` checks it, on the host (NumPy ``host``)."""
    if validation_data is None:
        return None
    pair = validation_pair(host, validation_data)
    assert pair is not None
    return np.asarray(pair[0]), np.asarray(pair[1])


class _Ranks:
    """The running ranks of one fit: their futures and this fit's channels."""

    def __init__(self, client: Any, job: spmd_rank.Job,
                 parts: list[tuple[str, list[list[Any] | None]]], validation: Any) -> None:
        self.client, self.job = client, job
        self.addresses = [address for address, _ in parts]
        self._pending: list[dict[str, Any]] = []
        self.channels = spmd_rank.Channels(job.name, client)
        if validation is not None:  # to rank 0's worker alone, outside the task's graph
            validation = client.scatter(validation, workers=[self.addresses[0]], hash=False)
        self.futures = [
            client.submit(spmd_rank.run_rank, job, rank, len(parts), *blocks,
                          validation if rank == 0 else None, workers=[address],
                          allow_other_workers=False, pure=False, key=f"{job.name}-rank-{rank}")
            for rank, (address, blocks) in enumerate(parts)]

    def next_report(self) -> dict[str, Any] | None:
        """Rank 0's next epoch report, or None once every rank has ended; raises the
        ranks' error (a lost worker as ``WorkerLostError``).

        Between looks it waits on the ranks' wake event (set after each report and at
        each rank's end), not in a tight loop: a get with a timeout would log an error
        on the scheduler at each timeout, and polling costs the ranks' cores."""
        patience = WAKE
        while not self._pending:
            self.channels.wake.clear()  # before the look: a later report sets it again
            ended = all(f.status == "finished" for f in self.futures)
            self._pending.extend(self.channels.reports.get(batch=True))  # after: none lost
            if self._pending:
                break
            if ended:
                return None
            self._raise_failure()
            if self.channels.wake.wait(timeout=patience):
                patience = POLL  # a rank ended: its status follows within moments
        return self._pending.pop(0)

    def _raise_failure(self) -> None:
        """Raise what went wrong, if anything has: a rank's own error first, then a lost
        worker, then a failed collective (a peer that hung, or is late)."""
        errors = [f.exception() for f in self.futures if f.status == "error"]
        own = [e for e in errors if not isinstance(e, collective.CollectiveError)]
        if own:
            raise own[0]
        alive = self.client.nthreads()
        lost = [a for a in self.addresses if a not in alive]
        if lost:
            raise WorkerLostError(f"the SPMD fit lost worker {', '.join(lost)}"
                                  + (f" ({errors[0]})" if errors else ""))
        if errors:
            raise collective.CollectiveError(
                f"{errors[0]}; no worker was lost: a rank did not answer within "
                f"timeout={self.job.timeout:g} s (a busy or stopped worker, slow callbacks, "
                "or another SPMD fit on the same workers)")

    def reply(self, stop: bool) -> None:
        """Tell rank 0 whether to go on, where it waits for the callbacks' verdict."""
        if self.job.wait_for_client:
            self.channels.verdicts.put("stop" if stop else "go")

    def results(self) -> list[dict[str, Any]]:
        return [f.result() for f in self.futures]

    def stop(self) -> None:
        """Ask the ranks to stop (they end within a second) and wait for those whose
        worker lives (a lost worker's rank would wait in Dask's no-worker state)."""
        import distributed

        self.channels.stop.set()
        self.channels.verdicts.put("stop")  # to a rank 0 waiting for the callbacks
        alive = self.client.nthreads()
        running = [f for f, a in zip(self.futures, self.addresses) if a in alive]
        with suppress(distributed.TimeoutError):
            distributed.wait(running, timeout=self.job.timeout)

    def first_result(self) -> dict[str, Any] | None:
        """Rank 0's result, if it ended with one."""
        first = self.futures[0]
        return first.result() if first.status == "finished" else None

    def close(self) -> None:
        """Stop the ranks, then forget them and this fit's channels, whatever happens
        on the way (a second Ctrl-C, a lost scheduler)."""
        try:
            self.stop()
        finally:
            try:
                self.client.cancel(self.futures, force=True)
            finally:
                self.channels.forget()


@contextmanager
def _running(client: Any, job: spmd_rank.Job, parts: list[tuple[str, list[list[Any] | None]]],
             validation: Any) -> Iterator[_Ranks]:
    """The ranks of ``job`` running; stopped and forgotten on the way out, however it
    is left (the end, an error, Ctrl-C)."""
    ranks = _Ranks(client, job, parts, validation)
    try:
        yield ranks
    finally:
        ranks.close()


class _Follower:
    """The client's side of each epoch: the history, the model and optimizer as rank 0
    reports them, the checkpoint and the callbacks."""

    def __init__(self, trainer: Trainer, cbs: list[Any], history: dict[str, list[float]],
                 checkpoint: str | None, every: int) -> None:
        self.trainer, self.cbs, self.history = trainer, cbs, history
        self.checkpoint, self.every = checkpoint, every
        self.saved_epoch: int | None = None

    def epoch_end(self, report: dict[str, Any]) -> bool:
        """Take one epoch's report; whether a callback asked to stop."""
        trainer, epoch, logs = self.trainer, report["epoch"], report["logs"]
        trainer.steps = report["steps"]
        for key, value in logs.items():
            self.history[key].append(value)
        if report["state"] is not None:
            self._load(report["state"])
            if self.checkpoint is not None and (epoch + 1) % self.every == 0:
                save(trainer.model, self.checkpoint, trainer.optimizer)
                self.saved_epoch = epoch
        for cb in self.cbs:
            cb.on_epoch_end(trainer, epoch, logs)
        return trainer.stop_training

    def _load(self, state: dict[str, Any]) -> None:
        """Rank 0's parameters and optimizer state into the model, on its own backend."""
        model = self.trainer.model
        model.load_params(state["params"])
        place = model.placement
        self.trainer.optimizer.state = {
            "step": state["step"],
            "slots": [[place.from_host(s) for s in ss] for ss in state["slots"]]}

    def train_end(self, final: dict[str, Any] | None) -> None:
        """The final state into the model (the last finite one after a divergence),
        the last checkpoint, and the callbacks' ``on_train_end``."""
        if final is not None:
            self._load(final)
            self.trainer.steps = final["step"]
            if final["error"] is not None:
                final["error"].history = self.history
                raise final["error"]
        if self.checkpoint is not None:
            save(self.trainer.model, self.checkpoint, self.trainer.optimizer)
        train_end(self.cbs, self.trainer)

    def interrupted(self, final: dict[str, Any] | None) -> None:
        """Raise ``TrainingInterrupted`` with the epochs so far, the model holding rank
        0's last step (or its last report, if rank 0 did not end in time)."""
        if final is not None:
            self._load(final)
            self.trainer.steps = final["step"]
        raise TrainingInterrupted(self.trainer.steps, self.history)

    def resume_hint(self) -> str:
        if self.checkpoint is None:
            return ("No checkpoint was written (pass checkpoint=path to write one every "
                    "checkpoint_every epochs)")
        if self.saved_epoch is None:
            return f"No epoch ended before the failure: {self.checkpoint!r} was not written"
        return (f"The last checkpoint, {self.checkpoint!r}, holds epoch "
                f"{self.saved_epoch + 1}: continue with fit_spmd(..., resume="
                f"{self.checkpoint!r})")


def _same_replicas(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Rank 0's final state, after checking that every rank holds the same parameters
    and optimizer state, bit for bit (they apply the same summed update)."""
    first = results[0]
    flat = [*first["params"], *(s for ss in first["slots"] for s in ss)]
    for rank, other in enumerate(results[1:], start=1):
        theirs = [*other["params"], *(s for ss in other["slots"] for s in ss)]
        if other["step"] != first["step"] or not all(
                np.array_equal(a, b) for a, b in zip(flat, theirs)):
            raise RuntimeError(f"rank {rank}'s replica differs from rank 0's after the fit "
                               f"(step {other['step']} against {first['step']}): the ranks "
                               "did not apply the same updates")
    return first
