"""Training on a real Dask cluster: two worker processes, as users run it.

These start a ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)``; they run
where dask is among the backends tested (``PORTABLE_MLP_BACKEND=dask``, the dask nox
session) and skip elsewhere. Dask's large-graph warning is an error here (pytest turns
warnings into errors) with its threshold lowered to 1 MB, below the size of the data.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend

_SELECTED = [b for b in os.environ.get("PORTABLE_MLP_BACKEND", "").split(",") if b]
if _SELECTED and "dask" not in _SELECTED:
    pytest.skip("cluster tests run with the dask backend (PORTABLE_MLP_BACKEND=dask)",
                allow_module_level=True)

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
psutil = pytest.importorskip("psutil")

from cluster_helpers import KillAfter, fit_in_thread, local_cluster  # noqa: E402

N, FEATURES, CHUNKS = 16_000, 16, 4   # 2 MB of float64 features: above the 1 MB threshold


@pytest.fixture(scope="module")
def client() -> Iterator[distributed.Client]:
    with local_cluster() as c:
        yield c


@pytest.fixture
def own_client() -> Iterator[distributed.Client]:
    """A cluster of its own, for a test that kills one of its workers."""
    with local_cluster() as c:
        yield c


def _data(seed: int = 0) -> tuple[da.Array, da.Array]:
    """Features made on the workers (a dask graph: lost blocks can be recomputed) in
    CHUNKS row blocks, and one-hot targets of a linear rule, block by block."""
    rng = da.random.default_rng(seed)
    X = rng.standard_normal((N, FEATURES), chunks=(N // CHUNKS, FEATURES))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype("int64")
    return X, pm.one_hot(y, 2, dtype="float64")


def _model(backend: str) -> pm.Sequential:
    return pm.MLP([FEATURES, 32, 2], activation="tanh", output="identity", seed=0,
                  backend=backend, dtype="float64")


def _assert_params_close(model: pm.Sequential, reference: pm.Sequential, atol: float) -> None:
    for got, want in zip(model.host_params(), reference.host_params()):
        np.testing.assert_allclose(got, want, rtol=0, atol=atol)


def _scheduler_tasks(client: distributed.Client) -> int:
    return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


def test_cluster_fit_matches_numpy_in_float64(client):
    X, Y = _data()
    model = _model("dask")
    pm.fit(model, X, Y, loss="cross_entropy", optimizer=pm.SGD(lr=0.5, momentum=0.9),
           epochs=30, progress=False, epoch_loss="steps")
    reference = _model("numpy")
    Xh, Yh = X.compute(), Y.compute()
    pm.fit(reference, Xh, Yh, loss="cross_entropy", optimizer=pm.SGD(lr=0.5, momentum=0.9),
           epochs=30, progress=False, epoch_loss="steps")
    _assert_params_close(model, reference, atol=1e-9)


def test_host_data_is_scattered_not_embedded_in_graphs(client):
    # 2 MB of host data: placed with from_array it would travel inside every step's graph
    X, Y = (a.compute() for a in _data())
    model = _model("dask")
    history = pm.fit(model, X, Y, loss="cross_entropy", optimizer=pm.Adam(lr=0.01),
                     epochs=3, batch_size=4000, progress=False)
    assert history["accuracy"][-1] > 0.8


def test_dask_dataframe_trains_where_it_lies(client):
    dd = pytest.importorskip("dask.dataframe")
    X, Y = _data()
    frame = dd.from_dask_array(X, columns=[f"f{i}" for i in range(FEATURES)])
    model = _model("dask")
    history = pm.fit(model, frame, Y, loss="cross_entropy", optimizer=pm.Adam(lr=0.01),
                     epochs=2, batch_size=1000, progress=False)
    assert history["accuracy"][-1] > 0.9


def test_a_step_is_one_task_per_block_and_a_few_more(client):
    """The graph path's step (dask_step): a task per row block, one for the update, and
    one per array it hands back: 4 + 1 + 13 for SGD with momentum on 4 blocks (it was
    about 135 in dask.array operations)."""
    X, Y = _data()
    model = _model("dask")
    trainer = pm.Trainer(model, loss="cross_entropy", optimizer=pm.SGD(lr=0.1, momentum=0.9))
    X, Y = model.placement.persist_rows(X, Y)
    trainer.step(X, Y)  # the optimizer's slots are made on the first step

    def executed() -> int:
        return sum(client.run(lambda dask_worker: dask_worker.state.executed_count).values())

    _backend.to_host(model.params[0])
    before = executed()
    for _ in range(5):
        trainer.step(X, Y)
    _backend.to_host(model.params[0])
    per_step = (executed() - before - 1) / 5  # less the read of params[0]
    assert CHUNKS + 1 <= per_step <= 17, f"{per_step} tasks a step on {CHUNKS} blocks"


@pytest.mark.slow
def test_scheduler_state_stays_bounded(client):
    # one block: the chain of persisted steps is what grows, not the data's tasks
    X, Y = _data()
    X, Y = X[:2000].rechunk(-1), Y[:2000].rechunk(-1)
    model = _model("dask")
    trainer = pm.Trainer(model, loss="cross_entropy", optimizer=pm.SGD(lr=0.1, momentum=0.9))
    X, Y = model.placement.persist_rows(X, Y)
    counts = {}
    for step in range(1, 221):
        trainer.step(X, Y)
        if step in (20, 220):
            _backend.to_host(model.params[0])  # let the queued steps finish
            time.sleep(0.5)                    # and the scheduler forget what was released
            counts[step] = _scheduler_tasks(client)
    trainer.check_divergence()
    assert counts[220] <= 1.2 * counts[20], f"scheduler tasks after 20 and 220 steps: {counts}"


def _any_worker(client: distributed.Client) -> str:
    return sorted(client.scheduler_info()["workers"])[0]


def _worker_of_largest_key(client: distributed.Client) -> str:
    holders, sizes = client.who_has(), client.nbytes(summary=False)
    largest = max((key for key in sizes if holders.get(key)), key=sizes.get)
    return holders[largest][0]


def test_killed_worker_never_hangs_the_fit(own_client):
    """Data with lineage (made by Dask): the fit either ends as it would have without the
    kill (the lost blocks recomputed) or raises WorkerLostError, and never hangs."""
    X, Y = _data()
    kwargs = dict(loss="cross_entropy", epochs=6, batch_size=4000, progress=False,
                  epoch_loss="steps", seed=3)
    undisturbed = _model("dask")
    expected = pm.fit(undisturbed, X, Y, optimizer=pm.SGD(lr=0.1, momentum=0.9), **kwargs)
    model = _model("dask")
    killer = KillAfter(own_client, epoch=2, pick=_any_worker)
    outcome = fit_in_thread(lambda: pm.fit(model, X, Y, optimizer=pm.SGD(lr=0.1, momentum=0.9),
                                            callbacks=[killer], **kwargs))
    assert killer.killed, repr(outcome.get("error"))
    if "error" in outcome:
        assert isinstance(outcome["error"], _backend.WorkerLostError), repr(outcome["error"])
        return
    np.testing.assert_allclose(outcome["history"]["loss"], expected["loss"], rtol=1e-12)
    _assert_params_close(model, undisturbed, atol=1e-12)


def test_killed_worker_holding_scattered_data_raises_a_clear_error(own_client):
    X, Y = (a.compute() for a in _data())  # host data: scattered, with no lineage
    model = _model("dask")
    killer = KillAfter(own_client, epoch=1, pick=_worker_of_largest_key)
    outcome = fit_in_thread(lambda: pm.fit(model, X, Y, loss="cross_entropy", epochs=50,
                                            batch_size=4000, progress=False, callbacks=[killer]))
    assert killer.killed, repr(outcome.get("error"))
    error = outcome.get("error")
    assert isinstance(error, _backend.WorkerLostError), f"expected WorkerLostError, got {error!r}"
    assert "Load the data with dask" in str(error)
