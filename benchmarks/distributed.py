"""Training across Dask: epoch time on a 2-worker LocalCluster and on the threaded
scheduler, against NumPy in one process, with the tasks per step and the bytes sent to
the client per step.

    python -m benchmarks.distributed                      # N = 1e4, 1e5, 2e5, 4e5
    python -m benchmarks.distributed --sizes 10000,1000000 --epochs 2
    python -m benchmarks.distributed --parity-only        # the float64 parity check alone
    python -m benchmarks.distributed --sizes 400000 --parity-rows 0 --profile 400000

Each configuration trains the same network (64-128-2 relu, softmax cross-entropy, SGD,
float32) full batch on X of N x 64 in 4 row blocks. On the cluster, X is made on the
workers (``dask.array.random``), as data read with Dask would be; NumPy and the threaded
scheduler get the same values in memory. An epoch is one step plus the read of its loss
(``fit(..., epoch_loss="steps")``): the time is the mean over ``--epochs`` after one
warm-up epoch. "tasks/step" counts the tasks run (worker task counters on the cluster, a
scheduler callback on threads); "client B/step" the bytes the client gathered. BLAS runs
one thread per process unless ``--blas-threads`` says otherwise, so NumPy uses one core,
and the threaded scheduler (two threads) and the cluster (two workers) two. The run also
checks float64 parity (a cluster fit and a NumPy fit, 100 full-batch steps, same seed and
data) and counts Dask's large-graph warnings.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

import portable_mlp as pm

FEATURES, HIDDEN, CHUNKS = 64, 128, 4


def _model(backend: str, dtype: str) -> pm.Sequential:
    return pm.MLP([FEATURES, HIDDEN, 2], activation="relu", output="identity", seed=0,
                  backend=backend, dtype=dtype)


def _dask_data(n: int, dtype: str) -> tuple[Any, Any]:
    import dask.array as da

    X = da.random.default_rng(0).standard_normal((n, FEATURES), chunks=(-(-n // CHUNKS), -1),
                                                 dtype=dtype)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype("int64")
    return X, pm.one_hot(y, 2, dtype=dtype)


def _epoch_seconds(model: pm.Sequential, X: Any, Y: Any, epochs: int) -> float:
    trainer = pm.Trainer(model, loss="cross_entropy", optimizer=pm.SGD(lr=0.1, momentum=0.9))
    trainer.fit(X, Y, epochs=1, progress=False, epoch_loss="steps")  # warm-up (and placing)
    start = time.perf_counter()
    trainer.fit(X, Y, epochs=epochs, progress=False, epoch_loss="steps")
    return (time.perf_counter() - start) / epochs


class _Counts:
    """Tasks run and bytes gathered to the client while it is active."""

    def __init__(self, tasks: Callable[[], int]) -> None:
        self._tasks, self.tasks, self.bytes = tasks, 0, 0

    @contextmanager
    def measuring(self) -> Iterator[_Counts]:
        import distributed
        from dask.sizeof import sizeof

        gather = distributed.Client.gather

        def counted(client: Any, *args: Any, **kwargs: Any) -> Any:
            result = gather(client, *args, **kwargs)
            self.bytes += sizeof(result)
            return result

        distributed.Client.gather = counted  # type: ignore[method-assign]
        before = self._tasks()
        try:
            yield self
        finally:
            distributed.Client.gather = gather  # type: ignore[method-assign]
            self.tasks = self._tasks() - before


def _threaded_tasks() -> tuple[Any, list[int]]:
    from dask.callbacks import Callback

    seen = [0]

    class Count(Callback):
        def _posttask(self, *args: Any) -> None:
            seen[0] += 1

    return Count(), seen


def run_cluster(client: Any, n: int, epochs: int) -> dict[str, float]:
    X, Y = _dask_data(n, "float32")
    model = _model("dask", "float32")
    X, Y = model.placement.persist_rows(X, Y)
    seconds = _epoch_seconds(model, X, Y, 1)  # warm-up inside, then one timed epoch
    counts = _Counts(lambda: sum(client.run(lambda dask_worker: dask_worker.state
                                            .executed_count).values()))
    with counts.measuring():
        seconds = _epoch_seconds(model, X, Y, epochs)
    steps = epochs + 1  # the warm-up epoch ran inside the counts too
    return {"seconds": seconds, "tasks_per_step": counts.tasks / steps,
            "client_bytes_per_step": counts.bytes / steps}


def run_threaded(Xh: np.ndarray, Yh: np.ndarray, epochs: int) -> dict[str, float]:
    import dask
    import dask.array as da

    rows = -(-Xh.shape[0] // CHUNKS)
    X, Y = da.from_array(Xh, chunks=(rows, -1)), da.from_array(Yh, chunks=(rows, -1))
    model = _model("dask", "float32")
    X, Y = model.placement.persist_rows(X, Y)
    counter, seen = _threaded_tasks()
    with dask.config.set(scheduler="threads"), counter:
        seconds = _epoch_seconds(model, X, Y, epochs)
    return {"seconds": seconds, "tasks_per_step": seen[0] / (epochs + 1)}


def profile(client: Any, n: int, epochs: int = 3) -> dict[str, Any]:
    """Where a cluster epoch's time goes: the tasks' compute on the workers, the transfers
    between them (in total and by the three task groups that transfer most), the rest
    (the scheduler, latency, idle workers), and, timed apart, building a step's graph on
    the client; per epoch (one full-batch step), from Dask's task stream."""
    import distributed

    X, Y = _dask_data(n, "float32")
    model = _model("dask", "float32")
    X, Y = model.placement.persist_rows(X, Y)
    trainer = pm.Trainer(model, loss="cross_entropy", optimizer=pm.SGD(lr=0.1, momentum=0.9))
    trainer.fit(X, Y, epochs=1, progress=False, epoch_loss="steps")
    with distributed.get_task_stream(client) as stream:
        start = time.perf_counter()
        trainer.fit(X, Y, epochs=epochs, progress=False, epoch_loss="steps")
        wall = time.perf_counter() - start
    build = 0.0
    for _ in range(epochs):
        begin = time.perf_counter()
        trainer.step(X, Y)
        build += time.perf_counter() - begin
        pm._backend.to_host(model.params[0])
    compute, transfer = 0.0, 0.0
    by_group: dict[str, float] = {}
    for task in stream.data:
        key = task["key"][0] if isinstance(task["key"], tuple) else task["key"]
        group = str(key).rsplit("-", 1)[0]
        for part in task["startstops"]:
            span = part["stop"] - part["start"]
            if part["action"] == "compute":
                compute += span
            elif part["action"] == "transfer":
                transfer += span
                by_group[group] = by_group.get(group, 0.0) + span
    top = sorted(by_group.items(), key=lambda kv: -kv[1])[:3]
    return {"wall_s": wall / epochs, "graph_build_s": build / epochs,
            "worker_compute_s": compute / epochs, "transfer_s": transfer / epochs,
            "tasks": len(stream.data) / epochs,
            "transfer_by_group_s": {g: t / epochs for g, t in top}}


def parity(client: Any, n: int, steps: int = 100) -> float:
    """The largest difference between the parameters of a float64 cluster fit and a NumPy
    fit: same seed, same data, ``steps`` full-batch steps."""
    X, Y = _dask_data(n, "float64")
    models = {}
    for backend, data in (("dask", (X, Y)), ("numpy", (X.compute(), Y.compute()))):
        models[backend] = _model(backend, "float64")
        pm.fit(models[backend], *data, loss="cross_entropy",
               optimizer=pm.SGD(lr=0.1, momentum=0.9), epochs=steps, progress=False,
               epoch_loss="steps")
    return max(float(np.max(np.abs(a - b))) for a, b in
               zip(models["dask"].host_params(), models["numpy"].host_params()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,200000,400000",
                        help="rows N, comma-separated (add 1000000 on a machine with the time)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per configuration")
    parser.add_argument("--parity-rows", type=int, default=10000, help="0 skips the check")
    parser.add_argument("--parity-only", action="store_true")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="also break a cluster step down on N rows (0: no)")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads per process, here and on the workers (default 1: "
                             "on a shared machine, more stall; 0 leaves them as they are)")
    parser.add_argument("--out", default="benchmarks/results/distributed.json")
    args = parser.parse_args(argv)
    import dask
    import distributed

    if args.blas_threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.blas_threads)
        dask.config.set({f"distributed.nanny.pre-spawn-environ.{var}": args.blas_threads
                         for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                     "MKL_NUM_THREADS")})

    sizes = [int(float(s)) for s in args.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    spent: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught, \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     dashboard_address=":0") as cluster, \
            distributed.Client(cluster) as client:
        warnings.simplefilter("always")
        max_diff = parity(client, args.parity_rows) if args.parity_rows else float("nan")
        print(f"float64 parity, 2-worker cluster vs NumPy, 100 full-batch steps, "
              f"N={args.parity_rows}: max |difference| of the parameters {max_diff:.3g}")
        for n in [] if args.parity_only else sizes:
            cluster_row = run_cluster(client, n, args.epochs)
            X, Y = (a.compute() for a in _dask_data(n, "float32"))
            with dask.config.set(scheduler="threads"):  # NumPy and threads: no Client
                numpy_s = _epoch_seconds(_model("numpy", "float32"), X, Y, args.epochs)
                threaded = run_threaded(X, Y, args.epochs)
            rows.append({"n": n, "numpy_s": numpy_s, "threaded_s": threaded["seconds"],
                         "threaded_tasks_per_step": threaded["tasks_per_step"],
                         "cluster_s": cluster_row["seconds"],
                         "cluster_tasks_per_step": cluster_row["tasks_per_step"],
                         "client_bytes_per_step": cluster_row["client_bytes_per_step"]})
            _print(rows[-1])
        if args.profile:
            spent = profile(client, args.profile)
            print(f"cluster epoch on N={args.profile:,}, per epoch: "
                  + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in spent.items()))
    large = [w for w in caught if "large graph" in str(w.message).lower()]
    print(f"large-graph warnings: {len(large)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"parity_max_abs_diff": max_diff, "large_graph_warnings":
                               len(large), "rows": rows, "profile": spent}, indent=2))
    print(f"wrote {out}")


def _print(row: dict[str, Any]) -> None:
    print(f"N={row['n']:>9,}  numpy {row['numpy_s'] * 1e3:9.1f} ms   "
          f"threaded {row['threaded_s'] * 1e3:9.1f} ms ({row['threaded_s'] / row['numpy_s']:.2f}x,"
          f" {row['threaded_tasks_per_step']:.0f} tasks)   "
          f"cluster {row['cluster_s'] * 1e3:9.1f} ms ({row['cluster_s'] / row['numpy_s']:.2f}x, "
          f"{row['cluster_tasks_per_step']:.0f} tasks, "
          f"{row['client_bytes_per_step']:.0f} B to the client)")


if __name__ == "__main__":
    main()
