"""SPMD training (``portable_mlp.distributed.fit_spmd``) on a real 2-process LocalCluster,
with torch.distributed's gloo for the allreduce.

They run where dask is among the backends tested (the dask nox session, which installs
torch) and skip elsewhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np
import pytest

import portable_mlp as pm

_SELECTED = [b for b in os.environ.get("PORTABLE_MLP_BACKEND", "").split(",") if b]
if _SELECTED and "dask" not in _SELECTED:
    pytest.skip("SPMD tests run with the dask backend (PORTABLE_MLP_BACKEND=dask)",
                allow_module_level=True)

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
pytest.importorskip("psutil")
pytest.importorskip("torch.distributed")

from cluster_helpers import KillAfter, fit_in_thread, local_cluster  # noqa: E402

from portable_mlp.distributed import fit_spmd, rank_parts  # noqa: E402
from portable_mlp.spmd_rank import local_batches  # noqa: E402

BLOCK, FEATURES = 500, 6


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    with local_cluster() as c:
        yield c


def _workers(client: distributed.Client) -> list[str]:
    return sorted(client.scheduler_info()["workers"])


def _host_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, FEATURES))
    y = (X[:, 0] - X[:, 1] + 0.3 * rng.standard_normal(n) > 0).astype("int64")
    return X, np.asarray(pm.one_hot(y, 2, dtype="float64"))


def _placed(client: distributed.Client, host: np.ndarray, owners: list[str]) -> da.Array:
    """``host`` as a dask array whose i-th row block lives on the worker ``owners[i]``."""
    parts = []
    for block, owner in zip(np.array_split(host, len(owners)), owners):
        future = client.scatter(block, workers=[owner], hash=False)
        parts.append(da.from_delayed(future, shape=block.shape, dtype=block.dtype))
    return da.concatenate(parts)


def _uneven(client: distributed.Client, *host: np.ndarray) -> list[da.Array]:
    """Three row blocks on the first worker, one on the second."""
    a, b = _workers(client)
    return [_placed(client, h, [a, a, a, b]) for h in host]


def _model() -> pm.Sequential:
    return pm.MLP([FEATURES, 8, 2], activation="tanh", output="identity", dtype="float64",
                  seed=1)


def _max_difference(a: pm.Sequential, b: pm.Sequential) -> float:
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a.host_params(), b.host_params()))


def test_uneven_blocks_make_uneven_ranks(client):
    X, Y = _host_data(4 * BLOCK)
    Xd, _ = _uneven(client, X, Y)
    Xd = client.persist(Xd)
    parts = rank_parts(client, [Xd, None])
    assert [len(blocks[0]) for _, blocks in parts] == [3, 1]
    assert [address for address, _ in parts] == _workers(client)


def test_full_batch_float64_parity_with_numpy_on_uneven_ranks(client):
    X, Y = _host_data(4 * BLOCK)
    Xd, Yd = _uneven(client, X, Y)
    kwargs = dict(loss="cross_entropy", l2=1e-3, clip_norm=0.5, epochs=50)
    spmd, alone = _model(), _model()
    history = fit_spmd(spmd, Xd, Yd, optimizer=pm.Adam(lr=1e-2), progress=False, **kwargs)
    optimizer = pm.Adam(lr=1e-2)
    expected = pm.fit(alone, X, Y, optimizer=optimizer, progress=False, **kwargs)
    assert _max_difference(spmd, alone) <= 1e-12
    np.testing.assert_allclose(history["loss"], expected["loss"], rtol=1e-12)
    np.testing.assert_allclose(history["accuracy"], expected["accuracy"], rtol=1e-12)


def test_ranks_on_torch_train_as_numpy_ranks_and_a_torch_model_stays_torch(client):
    """backend="torch": the ranks train on torch tensors (they go to the allreduce as
    they are). A torch model gets its parameters and Adam's state back as tensors."""
    import torch

    X, Y = _host_data(4 * BLOCK)
    Xd, Yd = _uneven(client, X, Y)
    on_torch, on_numpy = _model().to("torch", dtype="float64"), _model()
    adam = pm.Adam()
    fit_spmd(on_torch, Xd, Y, backend="torch", loss="cross_entropy", optimizer=adam,
             epochs=5, batch_size=700, progress=False)  # Y on the host: cut as X is
    fit_spmd(on_numpy, Xd, Yd, loss="cross_entropy", optimizer="adam", epochs=5,
             batch_size=700, progress=False)
    assert all(isinstance(p, torch.Tensor) for p in on_torch.params)
    assert all(isinstance(s, torch.Tensor) for ss in adam.state["slots"] for s in ss)
    assert _max_difference(on_torch, on_numpy) <= 1e-12


def test_minibatch_steps_equal_numpy_steps_on_the_same_global_batches(client):
    """Each step's global batch is rank 0's batch then rank 1's (local_batches): one
    process stepping on those rows follows the same trajectory."""
    X, Y = _host_data(4 * BLOCK)
    Xd, Yd = _uneven(client, X, Y)
    epochs, batch, seed = 2, 300, 7
    spmd, alone = _model(), _model()
    fit_spmd(spmd, Xd, Yd, loss="cross_entropy", optimizer=pm.SGD(lr=0.1, momentum=0.9),
             epochs=epochs, batch_size=batch, seed=seed, progress=False)
    trainer = pm.Trainer(alone, loss="cross_entropy", optimizer=pm.SGD(lr=0.1, momentum=0.9))
    ranks = [(X[:3 * BLOCK], Y[:3 * BLOCK]), (X[3 * BLOCK:], Y[3 * BLOCK:])]
    steps = -(-len(X) // batch)
    for epoch in range(epochs):
        plans = [local_batches(len(Xr), steps, True, seed, epoch, rank)
                 for rank, (Xr, _) in enumerate(ranks)]
        for k in range(steps):
            rows = [plan[k] for plan in plans]
            trainer.step(np.concatenate([Xr[r] for (Xr, _), r in zip(ranks, rows)]),
                         np.concatenate([Yr[r] for (_, Yr), r in zip(ranks, rows)]))
    assert _max_difference(spmd, alone) <= 1e-12


def test_sample_weights_weigh_as_in_one_process(client):
    X, Y = _host_data(4 * BLOCK)
    w = np.random.default_rng(3).uniform(0.0, 2.0, len(X))
    Xd, Yd, wd = _uneven(client, X, Y, w)
    spmd, alone = _model(), _model()
    kwargs = dict(loss="cross_entropy", optimizer="adam", l2=1e-2, clip_norm=0.3, epochs=20,
                  progress=False)
    fit_spmd(spmd, Xd, Yd, sample_weight=wd, **kwargs)
    pm.fit(alone, X, Y, sample_weight=w, **kwargs)
    assert _max_difference(spmd, alone) <= 1e-12


def test_the_optimizer_state_comes_back_equal_to_one_process(client):
    """Adam's moments on the client equal NumPy's: the replicas applied the same updates
    (``fit_spmd`` also checks every rank's final state against rank 0's, bit for bit)."""
    X, Y = _host_data(4 * BLOCK)
    Xd, Yd = _uneven(client, X, Y)
    ours, theirs = pm.Adam(lr=1e-2), pm.Adam(lr=1e-2)
    fit_spmd(_model(), Xd, Yd, loss="cross_entropy", optimizer=ours, epochs=10, progress=False)
    pm.fit(_model(), X, Y, loss="cross_entropy", optimizer=theirs, epochs=10, progress=False)
    assert ours.state["step"] == theirs.state["step"] == 10
    for mine, expected in zip(ours.state["slots"], theirs.state["slots"]):
        for a, b in zip(mine, expected):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_replicas_that_differ_are_refused():
    from portable_mlp.distributed import _same_replicas

    state = {"params": [np.zeros(3)], "slots": [[np.ones(3)]], "step": 4, "error": None}
    other = {**state, "slots": [[np.array([1.0, 1.0, 1.0 + 1e-16 * 2])]]}
    assert _same_replicas([state, dict(state)]) is state
    with pytest.raises(RuntimeError, match="rank 1's replica differs"):
        _same_replicas([state, other])


def test_no_row_crosses_the_network(client):
    X, Y = _host_data(8 * BLOCK)
    Xd, Yd = _uneven(client, X, Y)
    Xd, Yd = client.persist([Xd, Yd])
    distributed.wait([Xd, Yd])

    def incoming(dask_worker) -> int:  # since the last call (the log keeps its latest)
        total = sum(entry["total"] for entry in dask_worker.transfer_incoming_log)
        dask_worker.transfer_incoming_log.clear()
        return total

    client.run(incoming)
    fit_spmd(_model(), Xd, Yd, loss="cross_entropy", epochs=3, batch_size=500, progress=False)
    moved = sum(client.run(incoming).values())
    assert moved < 0.01 * (X.nbytes + Y.nbytes), f"{moved} bytes moved between workers"


def test_a_dask_dataframe_trains_as_its_array(client):
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    X, Y = _host_data(4 * BLOCK)
    frame = dd.from_pandas(pd.DataFrame(X, columns=[f"f{i}" for i in range(FEATURES)]),
                           npartitions=2)
    labels = da.from_array(np.argmax(Y, axis=1), chunks=2 * BLOCK)  # the partitions' rows
    spmd, alone = _model(), _model()
    fit_spmd(spmd, frame, labels, loss="cross_entropy", optimizer="adam", epochs=5,
             progress=False)
    pm.fit(alone, X, np.argmax(Y, axis=1), loss="cross_entropy", optimizer="adam", epochs=5,
           progress=False)
    assert _max_difference(spmd, alone) <= 1e-12


def test_divergence_on_one_rank_stops_every_rank_with_the_last_finite_model(client):
    X, Y = _host_data(4 * BLOCK)
    X[3 * BLOCK:] *= 1e200  # the second rank's rows overflow the loss; the first's do not
    Xd, Yd = _uneven(client, X, Y)
    model = pm.MLP([FEATURES, 8, 2], activation="relu", output="identity", dtype="float64")
    before = model.host_params()
    with pytest.raises(pm.DivergenceError) as caught:
        fit_spmd(model, Xd, Yd, loss="mse", optimizer="sgd", epochs=3, progress=False)
    assert caught.value.step == 1
    assert caught.value.history == {"loss": [], "accuracy": []}
    for p, q in zip(model.host_params(), before):
        np.testing.assert_array_equal(p, q)
    _assert_nothing_left(client)


def test_a_divergence_after_some_steps_keeps_the_model_fit_keeps(client):
    X, Y = _host_data(4 * BLOCK)
    Xd, Yd = _uneven(client, X, Y)
    errors, models = [], []
    for train in (lambda m, **kw: fit_spmd(m, Xd, Yd, progress=False, **kw),
                  lambda m, **kw: pm.fit(m, X, Y, progress=False, **kw)):
        models.append(pm.MLP([FEATURES, 8, 2], activation="relu", output="identity",
                             dtype="float64"))
        with pytest.raises(pm.DivergenceError) as caught:
            train(models[-1], loss="mse", optimizer=pm.SGD(lr=3.0), epochs=100)
        errors.append(caught.value)
    assert errors[0].step == errors[1].step > 1
    assert len(errors[0].history["loss"]) == len(errors[1].history["loss"])
    for p, q in zip(*(m.host_params() for m in models)):  # large: compared relatively
        np.testing.assert_allclose(p, q, rtol=1e-9)
    _assert_nothing_left(client)


def test_a_validation_set_that_overflows_is_a_divergence_with_the_epochs_model(client):
    """Rank 0's logs not finite: the epoch is refused as fit refuses it, every rank
    stops, and the model holds the parameters of that epoch's last step."""
    X, Y = _host_data(4 * BLOCK)
    Xd, Yd = _uneven(client, X, Y)
    val = (np.full((10, FEATURES), 1e300), Y[:10])
    spmd, alone = (pm.MLP([FEATURES, 8, 2], activation="relu", output="identity",
                          dtype="float64") for _ in range(2))
    with pytest.raises(pm.DivergenceError, match="epoch 1 logged non-finite val_loss"):
        fit_spmd(spmd, Xd, Yd, loss="mse", epochs=3, validation_data=val, progress=False)
    with pytest.raises(pm.DivergenceError, match="epoch 1 logged non-finite val_loss"):
        pm.fit(alone, X, Y, loss="mse", epochs=3, validation_data=val, progress=False)
    assert _max_difference(spmd, alone) <= 1e-12
    _assert_nothing_left(client)


def test_callbacks_see_each_epoch_and_can_stop_the_fit(client, tmp_path):
    X, Y = _host_data(4 * BLOCK)
    Xd, Yd = _uneven(client, X, Y)
    seen: list[tuple[int, int]] = []

    def record(trainer, epoch, logs):
        seen.append((epoch, trainer.steps))
        if epoch == 2:
            trainer.stop_training = True

    path = tmp_path / "spmd.safetensors"
    model = _model()
    history = fit_spmd(model, Xd, Yd, loss="cross_entropy", epochs=10, batch_size=1000,
                       callbacks=[record, pm.Checkpoint(path)], progress=False)
    assert seen == [(0, 2), (1, 4), (2, 6)]
    assert len(history["loss"]) == 3
    saved = pm.load(path)
    assert _max_difference(saved, model) == 0.0
    _assert_nothing_left(client)


def test_ctrl_c_on_the_client_stops_every_rank_and_keeps_the_last_step(client):
    X, Y = _host_data(4 * BLOCK)
    Xd, Yd = _uneven(client, X, Y)

    def ctrl_c(trainer, epoch, logs):
        if epoch == 1:
            raise KeyboardInterrupt

    model, alone = _model(), _model()
    with pytest.raises(pm.TrainingInterrupted) as caught:
        fit_spmd(model, Xd, Yd, loss="cross_entropy", epochs=50, callbacks=[ctrl_c],
                 progress=False)
    # the ranks stop before the first step after epoch 2: the model is epoch 2's
    assert caught.value.step == 2 and len(caught.value.history["loss"]) == 2
    pm.fit(alone, X, Y, loss="cross_entropy", epochs=2, progress=False)
    assert _max_difference(model, alone) <= 1e-12
    _assert_nothing_left(client)


def test_ctrl_c_without_callbacks_stops_the_ranks_through_the_stop_event(client):
    import _thread
    import threading

    X, Y = _host_data(4 * BLOCK)
    Xd, Yd = _uneven(client, X, Y)
    timer = threading.Timer(3.0, _thread.interrupt_main)  # Ctrl-C, 3 s into the fit
    timer.start()
    try:
        with pytest.raises(pm.TrainingInterrupted) as caught:
            fit_spmd(_model(), Xd, Yd, loss="cross_entropy", epochs=100_000, batch_size=100,
                     progress=False)
    finally:
        timer.cancel()
    assert caught.value.step > 0
    _assert_nothing_left(client)


def test_bad_arguments_fail_before_any_task(client):
    X, Y = _host_data(4 * BLOCK)
    Xd, Yd = _uneven(client, X, Y)
    with pytest.raises(ValueError, match="SPMD ranks train on one of numpy"):
        fit_spmd(_model(), Xd, Yd, backend="jax")
    with pytest.raises(ValueError, match="unknown collective 'mpi'"):
        fit_spmd(_model(), Xd, Yd, collective_name="mpi")
    with pytest.raises(ValueError, match="integer seed"):
        fit_spmd(_model(), Xd, Yd, seed=None)
    with pytest.raises(TypeError, match="X must be a dask array or DataFrame"):
        fit_spmd(_model(), X, Y)
    with pytest.raises(TypeError, match=r"client must be a distributed\.Client"):
        fit_spmd(_model(), Xd, Yd, client=client.cluster)
    _assert_nothing_left(client)


def test_a_resume_file_that_does_not_fit_is_refused_before_any_task(client, tmp_path):
    X, Y = _host_data(4 * BLOCK)
    Xd, Yd = _uneven(client, X, Y)
    path = tmp_path / "ckpt.safetensors"
    model = _model()
    fit_spmd(model, Xd, Yd, epochs=2, batch_size=500, checkpoint=path, progress=False)
    before = model.host_params()
    for kwargs in (dict(batch_size=2000, epochs=4),   # 8 steps: 8 epochs of 1 step
                   dict(batch_size=300, epochs=4),    # 8 steps: not the end of an epoch
                   dict(batch_size=500, epochs=2)):   # nothing left to run
        with pytest.raises(ValueError, match="resume with the batch_size"):
            fit_spmd(model, Xd, Yd, resume=path, progress=False, **kwargs)
    for p, q in zip(model.host_params(), before):
        np.testing.assert_array_equal(p, q)
    pm.save(model, path, optimizer=pm.Adam())  # an optimizer that never stepped: epoch 0
    fit_spmd(model, Xd, Yd, epochs=1, optimizer=pm.Adam(), resume=path, progress=False)
    _assert_nothing_left(client)


def _assert_nothing_left(client: distributed.Client) -> None:
    """No SPMD task, queue, event or variable on the scheduler, no process group in a
    worker."""

    def spmd_tasks(dask_scheduler) -> list[str]:
        ext = dask_scheduler.extensions
        names = [*dask_scheduler.tasks, *ext["queues"].queues, *ext["events"]._events,
                 *ext["variables"].variables]
        return [str(name) for name in names if "portable-mlp-spmd" in str(name)]

    deadline = time.monotonic() + 10
    while client.run_on_scheduler(spmd_tasks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.run_on_scheduler(spmd_tasks) == []

    def in_group() -> bool:
        import torch.distributed as dist

        return dist.is_initialized()

    assert not any(client.run(in_group).values())


def test_a_killed_worker_raises_promptly_and_resume_finishes_the_fit(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    kwargs = dict(loss="cross_entropy", optimizer=pm.SGD(lr=0.1, momentum=0.9), epochs=8,
                  progress=False)
    with local_cluster() as own:
        X = da.random.default_rng(0).standard_normal((4 * BLOCK, FEATURES), chunks=(BLOCK, -1))
        Y = pm.one_hot((X[:, 0] > 0).astype("int64"), 2, dtype="float64")
        X, Y = own.persist([X, Y])  # blocks with lineage: recomputed after the kill
        model = _model()
        survivor = _workers(own)[0]
        listening = own.run(_listening, workers=[survivor])
        killer = KillAfter(own, epoch=2, pick=lambda c: _workers(c)[1])
        outcome = fit_in_thread(lambda: fit_spmd(model, X, Y, callbacks=[killer],
                                                 checkpoint=path, **kwargs))
        error = outcome.get("error")
        assert isinstance(error, pm.WorkerLostError), repr(error)
        assert f"resume={str(path)!r}" in str(error) and "holds epoch 3" in str(error)
        assert outcome["ended"] - killer.at < 30, "the fit took too long to notice the kill"
        assert own.run(_listening, workers=[survivor]) == listening, "gloo ports left open"
        fit_spmd(model, X, Y, resume=path, **{**kwargs, "optimizer": pm.SGD(lr=0.1,
                                                                             momentum=0.9)})
        expected = _model()
        pm.fit(expected, X.compute(), Y.compute(), **{**kwargs, "optimizer": pm.SGD(
            lr=0.1, momentum=0.9)})
        assert _max_difference(model, expected) <= 1e-12
        _assert_nothing_left(own)


def _listening() -> int:
    """How many TCP ports this process listens on."""
    import psutil

    return sum(c.status == "LISTEN" for c in psutil.Process().net_connections(kind="tcp"))


def test_the_benchmark_rows_run_on_this_cluster(client):
    """benchmarks.distributed's SPMD rows and allreduce probe, on a small size."""
    from benchmarks.distributed import allreduce_latency, compare_spmd

    row = compare_spmd(client, 2000, epochs=2, batch_size=500, rounds=1)
    assert row["spmd_step_s"] > row["spmd_allreduce_s"] > 0 and row["numpy_fit_s"] > 0
    assert sum(row["spmd_rank_rows"]) == 2000
    latency = allreduce_latency(client, 1024, repeats=10)
    assert latency["median_s"] > 0
    _assert_nothing_left(client)
