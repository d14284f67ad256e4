"""A real Dask cluster for the tests: two worker processes, as users run it, always
closed with no process left behind; and the tools to kill a worker mid-fit."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import distributed
import psutil

import portable_mlp as pm

HANG = 120  # seconds: a fit that takes longer after a worker is killed is taken as hung


@contextlib.contextmanager
def local_cluster() -> Iterator[distributed.Client]:
    """A 2-process LocalCluster and its client; always closed, no process left behind.
    Dask's large-graph warning (an error under pytest) fires above 1 MB."""
    import dask

    ours = psutil.Process()
    before = {p.pid for p in ours.children(recursive=True)}
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0")  # any free port: no clash
    try:
        with distributed.Client(cluster) as client, dask.config.set(
                {"distributed.admin.large-graph-warning-threshold": "1MB"}):
            yield client
    finally:
        cluster.close()
        left = [p for p in ours.children(recursive=True) if p.pid not in before
                and "resource_tracker" not in " ".join(p.cmdline())]  # multiprocessing's own
        _, alive = psutil.wait_procs(left, timeout=20)
        assert not alive, f"processes left behind by the cluster: {alive}"


class KillAfter(pm.Callback):
    """Kills a worker process (SIGKILL: no goodbye to the scheduler) at an epoch's end."""

    def __init__(self, client: distributed.Client, epoch: int,
                 pick: Callable[[distributed.Client], str]) -> None:
        self.client, self.epoch, self.pick, self.killed = client, epoch, pick, False
        self.at: float | None = None  # when it killed (time.perf_counter)

    def on_epoch_end(self, trainer, epoch: int, logs) -> None:
        if epoch == self.epoch:
            address = self.pick(self.client)
            os.kill(self.client.run(os.getpid)[address], signal.SIGKILL)
            self.killed, self.at = True, time.perf_counter()


def fit_in_thread(fit: Callable[[], dict]) -> dict:
    """Run ``fit`` in a thread; fail the test if it has not ended within HANG seconds.
    Returns the history or the error, and when it ended (time.perf_counter)."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["history"] = fit()
        except BaseException as exc:  # handed back to the test
            outcome["error"] = exc
        outcome["ended"] = time.perf_counter()

    thread = threading.Thread(target=run, daemon=True)
    start = time.perf_counter()
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), f"fit still running {HANG} s after a worker was killed"
    outcome["seconds"] = time.perf_counter() - start
    return outcome
