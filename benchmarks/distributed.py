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


def _moved_bytes(client: Any, reset: bool = False) -> int:
    """Bytes the workers have received from each other since the last reset (Dask's
    transfer log, which keeps its latest entries: cleared first, it holds them all)."""

    def received(dask_worker: Any) -> int:
        total = sum(entry["total"] for entry in dask_worker.transfer_incoming_log)
        if reset:
            dask_worker.transfer_incoming_log.clear()
        return total

    return sum(client.run(received).values())


def run_spmd(client: Any, X: Any, Y: Any, epochs: int, batch_size: int | None
             ) -> dict[str, float]:
    """A whole ``fit_spmd`` call on the cluster (placement and rendezvous included), and
    rank 0's mean step split into its gradients, allreduce, update and the rest."""
    from portable_mlp.distributed import fit_spmd

    timings: dict[str, Any] = {}
    _moved_bytes(client, reset=True)
    start = time.perf_counter()
    fit_spmd(_model("numpy", "float32"), X, Y, client=client, loss="cross_entropy",
             optimizer=pm.SGD(lr=0.1, momentum=0.9), epochs=epochs, batch_size=batch_size,
             progress=False, timings=timings)
    seconds = time.perf_counter() - start
    rank = timings["ranks"][0]
    per_step = {key: value / rank["steps_taken"] for key, value in rank["seconds"].items()}
    rest = per_step["steps"] - per_step["gradients"] - per_step["allreduce"] - per_step["update"]
    return {"fit_s": seconds, "step_s": per_step["steps"], "allreduce_s": per_step["allreduce"],
            "rest_s": rest, "buffer_bytes": rank["buffer_bytes"],
            "rank_rows": [r["rows"] for r in timings["ranks"]],
            "dask_bytes_moved": _moved_bytes(client)}


def run_numpy(X: np.ndarray, Y: np.ndarray, epochs: int, batch_size: int | None
              ) -> dict[str, float]:
    """The same fit in this process on NumPy: the whole call, and its mean step (the
    call's time less a 1-epoch call's, over the steps of the other epochs: no setup)."""
    seconds = []
    for n_epochs in (1, 1, epochs):  # the first call warms up, untimed
        start = time.perf_counter()
        pm.fit(_model("numpy", "float32"), X, Y, loss="cross_entropy",
               optimizer=pm.SGD(lr=0.1, momentum=0.9), epochs=n_epochs,
               batch_size=batch_size, progress=False)
        seconds.append(time.perf_counter() - start)
    steps = (epochs - 1) * (1 if batch_size is None else -(-X.shape[0] // batch_size))
    return {"fit_s": seconds[2], "step_s": (seconds[2] - seconds[1]) / steps}


def compare_spmd(client: Any, n: int, epochs: int, batch_size: int | None, rounds: int
                 ) -> dict[str, Any]:
    """SPMD against one-process NumPy on the same data (made on the workers), in
    alternating rounds; the medians, and the ratios of each round."""
    import distributed

    Xd, Yd = _dask_data(n, "float32")
    Xd, Yd = client.persist([Xd, Yd])
    client.rebalance(distributed.futures_of(Xd))  # the blocks as a user balances them
    X, Y = Xd.compute(), Yd.compute()
    spmd, numpy = [], []
    for _ in range(rounds):
        numpy.append(run_numpy(X, Y, epochs, batch_size))
        spmd.append(run_spmd(client, Xd, Yd, epochs, batch_size))
    median: dict[str, Any] = {f"spmd_{key}": float(np.median([r[key] for r in spmd]))
                              for key in spmd[0] if key != "rank_rows"}
    median["spmd_rank_rows"] = spmd[0]["rank_rows"]
    median.update({f"numpy_{key}": float(np.median([r[key] for r in numpy]))
                   for key in numpy[0]})
    return {"n": n, "batch_size": batch_size, "epochs": epochs, **median,
            "fit_ratios": [s["fit_s"] / m["fit_s"] for s, m in zip(spmd, numpy)],
            "step_ratios": [s["step_s"] / m["step_s"] for s, m in zip(spmd, numpy)]}


def _print_spmd(row: dict[str, Any]) -> None:
    batch = "full batch" if row["batch_size"] is None else f"batch {row['batch_size']}"
    ratios = ", ".join(f"{r:.2f}" for r in row["fit_ratios"])
    steps = ", ".join(f"{r:.2f}" for r in row["step_ratios"])
    print(f"SPMD N={row['n']:>9,} {batch}, {row['epochs']} epochs: fit {row['spmd_fit_s']:.3f} s "
          f"vs numpy {row['numpy_fit_s']:.3f} s (rounds: {ratios}x); step "
          f"{row['spmd_step_s'] * 1e3:.3f} ms vs {row['numpy_step_s'] * 1e3:.3f} ms "
          f"(rounds: {steps}x); allreduce {row['spmd_allreduce_s'] * 1e3:.3f} ms "
          f"({row['spmd_allreduce_s'] / row['spmd_step_s']:.0%} of the step) of "
          f"{row['spmd_buffer_bytes']:,.0f} B; beyond gradients, allreduce and update "
          f"{row['spmd_rest_s'] * 1e3:.3f} ms; dask moved {row['spmd_dask_bytes_moved']:,.0f} B; "
          f"rows per rank {row['spmd_rank_rows']}")


def _allreduce_times(name: str, rank: int, world: int, nbytes: int, repeats: int
                     ) -> list[float]:
    """On a worker: join the collective as ``fit_spmd``'s ranks do, time ``repeats``
    allreduces of ``nbytes``."""
    import distributed

    from portable_mlp import collective

    worker = distributed.get_worker()
    comm = collective.connect("gloo", rank, world, distributed.Variable(name),
                              distributed.comm.get_address_host(worker.address), 60.0)
    buffer = np.ones(nbytes // 4, dtype=np.float32)
    times = []
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            comm.allreduce_sum(buffer)
            times.append(time.perf_counter() - start)
    finally:
        comm.close()
    return times


def allreduce_latency(client: Any, nbytes: int, repeats: int = 1000) -> dict[str, float]:
    """gloo's allreduce alone between the 2 workers: the floor of an SPMD step."""
    import uuid

    import distributed

    workers = sorted(client.scheduler_info()["workers"])
    name = f"allreduce-bench-{uuid.uuid4().hex}"
    futures = [client.submit(_allreduce_times, name, rank, len(workers), nbytes, repeats,
                             workers=[w], allow_other_workers=False, pure=False)
               for rank, w in enumerate(workers)]
    times = np.asarray(client.gather(futures)[0])
    distributed.Variable(name, client=client).delete()
    return {"bytes": nbytes, "median_s": float(np.median(times)), "mean_s": float(times.mean())}


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


def pipelined_step(n: int, steps: int = 20) -> float:
    """Seconds a graph-path step takes when steps follow each other (``Trainer.step``
    ``steps`` times, then one read), as a user's loop runs them; on the current client."""
    X, Y = _dask_data(n, "float32")
    model = _model("dask", "float32")
    X, Y = model.placement.persist_rows(X, Y)
    trainer = pm.Trainer(model, loss="cross_entropy", optimizer=pm.SGD(lr=0.1, momentum=0.9))
    for _ in range(3):  # warm-up: the slots are made on the first step
        trainer.step(X, Y)
    pm._backend.to_host(model.params[0])
    start = time.perf_counter()
    for _ in range(steps):
        trainer.step(X, Y)
    pm._backend.to_host(model.params[0])
    return (time.perf_counter() - start) / steps


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
    parser.add_argument("--spmd-sizes", default="100000,400000",
                        help="rows N of the full-batch SPMD comparison ('' skips it)")
    parser.add_argument("--spmd-epochs", type=int, default=5, help="at least 2")
    parser.add_argument("--minibatch-rows", type=int, default=50000,
                        help="rows N of the minibatch SPMD comparison (0 skips it)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="alternating SPMD/NumPy rounds")
    parser.add_argument("--graph", action=argparse.BooleanOptionalAction, default=True,
                        help="the graph path's rows (--sizes); --no-graph skips them")
    parser.add_argument("--kill", action="store_true",
                        help="last: SIGKILL a worker mid-fit, time the error (the nanny "
                             "restarts it)")
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
        spmd_rows = _spmd_rows(client, args) if not args.parity_only else []
        for n in [] if args.parity_only or not args.graph else sizes:
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
            spent["pipelined_step_s"] = pipelined_step(args.profile)
            print(f"cluster epoch on N={args.profile:,}, per epoch: "
                  + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                              for k, v in spent.items()))
    large = [w for w in caught if "large graph" in str(w.message).lower()]
    print(f"large-graph warnings: {len(large)}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"parity_max_abs_diff": max_diff, "large_graph_warnings":
                               len(large), "rows": rows, "spmd": spmd_rows,
                               "profile": spent}, indent=2))
    print(f"wrote {out}")


class _Kill(pm.Callback):
    """SIGKILLs the last worker at the end of ``epoch``; notes when."""

    def __init__(self, client: Any, epoch: int) -> None:
        self.client, self.epoch, self.at = client, epoch, 0.0

    def on_epoch_end(self, trainer: Any, epoch: int, logs: dict[str, float]) -> None:
        if epoch == self.epoch:
            import os
            import signal

            address = sorted(self.client.scheduler_info()["workers"])[-1]
            os.kill(self.client.run(os.getpid)[address], signal.SIGKILL)
            self.at = time.perf_counter()


def kill_seconds(client: Any, n: int = 40000) -> float:
    """Seconds from a worker's SIGKILL (after epoch 2) to ``fit_spmd``'s WorkerLostError."""
    import distributed

    from portable_mlp.distributed import fit_spmd

    X, Y = client.persist(list(_dask_data(n, "float32")))
    client.rebalance(distributed.futures_of(X))  # both workers hold rows: both are ranks
    killer = _Kill(client, epoch=1)
    try:
        fit_spmd(_model("numpy", "float32"), X, Y, client=client, loss="cross_entropy",
                 epochs=1000, callbacks=[killer], progress=False)
    except pm.WorkerLostError:
        return time.perf_counter() - killer.at
    raise RuntimeError("the fit ended without noticing the killed worker")


def _spmd_rows(client: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    # the buffer of a step: every gradient and 4 scalars, in float32
    latency = allreduce_latency(client, (_model("numpy", "float32").n_params + 4) * 4)
    print(f"gloo allreduce of {latency['bytes']:,} B between the 2 workers, 1000 times: median "
          f"{latency['median_s'] * 1e3:.3f} ms, mean {latency['mean_s'] * 1e3:.3f} ms")
    rows = [{"allreduce": latency}]
    rows += [compare_spmd(client, int(float(n)), args.spmd_epochs, None, args.rounds)
            for n in args.spmd_sizes.split(",") if n]
    if args.minibatch_rows:
        rows.append(compare_spmd(client, args.minibatch_rows, 2, args.batch, args.rounds))
    for row in rows[1:]:
        _print_spmd(row)
    if args.kill:
        rows.append({"kill_to_error_s": kill_seconds(client)})
        print(f"SPMD fit with a worker SIGKILLed after epoch 2: WorkerLostError "
              f"{rows[-1]['kill_to_error_s']:.2f} s after the kill")
    return rows


def _print(row: dict[str, Any]) -> None:
    print(f"N={row['n']:>9,}  numpy {row['numpy_s'] * 1e3:9.1f} ms   "
          f"threaded {row['threaded_s'] * 1e3:9.1f} ms ({row['threaded_s'] / row['numpy_s']:.2f}x,"
          f" {row['threaded_tasks_per_step']:.0f} tasks)   "
          f"cluster {row['cluster_s'] * 1e3:9.1f} ms ({row['cluster_s'] / row['numpy_s']:.2f}x, "
          f"{row['cluster_tasks_per_step']:.0f} tasks, "
          f"{row['client_bytes_per_step']:.0f} B to the client)")


if __name__ == "__main__":
    main()
