"""Your network on every installed backend: ``python -m benchmarks.report --sizes ...``.

    python -m benchmarks.report --sizes 30,64,2 --batch 200 --optimizer adam \\
        --loss cross_entropy --activation relu

Times ``Trainer.step`` of that network (random data of the batch's size, placed on the
backend once) on each backend, the backends interleaved round by round as the report's
variants are, each sample K steps synchronized once. Prints the median step time per
backend and ends with one line naming the fastest and how much faster it is than the next.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

# the backends a user's network is timed on, where installed (GPU rows where a GPU is)
ROWS = ("numpy", "torch", "jax", "array_api_strict", "dask", "cupy", "torch-cuda")
CLASSIFYING = ("cross_entropy", "binary_cross_entropy")


@dataclass(frozen=True)
class Network:
    """The user's configuration, from the report's flags."""

    sizes: tuple[int, ...]
    batch: int
    optimizer: str
    loss: str
    activation: str
    dtype: str
    bias: bool

    def describe(self) -> str:
        return (f"{'-'.join(map(str, self.sizes))} {self.activation}, {self.loss}, "
                f"{self.optimizer}, batch {self.batch}, {self.dtype}"
                f"{'' if self.bias else ', no bias'}")


def parse_sizes(text: str) -> tuple[int, ...]:
    """``30,64,2`` as (30, 64, 2): at least an input and an output size, all positive."""
    try:
        sizes = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ValueError(f"expected comma-separated layer sizes such as 30,64,2, got "
                         f"{text!r}") from None
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"expected at least two positive layer sizes, got {text!r}")
    return sizes


def _data(net: Network) -> tuple[Any, Any]:
    import numpy as np  # here, not above: the report limits the threads before NumPy loads

    rng = np.random.default_rng(0)
    X = rng.standard_normal((net.batch, net.sizes[0]))
    k = net.sizes[-1]
    if net.loss == "cross_entropy":
        Y = np.eye(k)[rng.integers(0, k, net.batch)]
    elif net.loss == "poisson":
        Y = rng.poisson(1.0, (net.batch, k)).astype(float)
    elif net.loss == "binary_cross_entropy":
        Y = rng.integers(0, 2, (net.batch, k)).astype(float)
    else:
        Y = rng.standard_normal((net.batch, k))
    return X, Y


def workload(row: str, net: Network) -> Any:
    """The row's Workload of one variant, ``portable_mlp`` (raises UnavailableError)."""
    import portable_mlp as pm
    from benchmarks import _workloads as w

    config = w.Config("yours", net.sizes, net.batch, net.dtype)
    why = w.availability(row, config) if row not in w.XOR_ONLY else _installed(row)
    if why:
        raise w.UnavailableError(why)
    name, device = w.BACKEND_ROWS[row]
    output = "identity" if net.loss in (*CLASSIFYING, "poisson") else "sigmoid"
    try:
        model = pm.MLP(list(net.sizes), activation=net.activation, output=output,
                       bias=net.bias, seed=0, backend=name, device=device, dtype=net.dtype)
    except ValueError as exc:  # a dtype the backend lacks (float64 on JAX without x64)
        raise w.UnavailableError(str(exc)) from None
    trainer = pm.Trainer(model, loss=net.loss, optimizer=net.optimizer)
    X, Y = (model.placement.from_host(a.astype(net.dtype)) for a in _data(net))
    lazy = name == "dask"
    from portable_mlp import _backend

    return w.Workload(row, config, {"portable_mlp": lambda: trainer.step(X, Y)},
                      sync=lambda out: _backend.synchronize(name, out), keep_outputs=lazy,
                      info={"device": str(model.device)})


def _installed(row: str) -> str | None:
    from benchmarks import _workloads as w
    from portable_mlp import _backend

    try:
        _backend.namespace(w.BACKEND_ROWS[row][0])
    except _backend.BackendUnavailable as exc:
        return str(exc)
    return None


def measure(net: Network, rows: list[str], rounds: int, sample_s: float
            ) -> list[dict[str, Any]]:
    """Per backend: the median step time and every round's, the backends interleaved."""
    from benchmarks import _workloads as w

    works, results = {}, []
    for row in rows:
        try:
            works[row] = workload(row, net)
        except w.UnavailableError as exc:
            results.append({"backend": row, "skipped": str(exc)})
    ks = {}
    for row, work in works.items():  # warm up (and compile), then size K
        w.time_steps(work, "portable_mlp", 2)
        once = w.time_steps(work, "portable_mlp", 2)
        ks[row] = max(2, round(sample_s / max(once, 1e-7)))
    samples: dict[str, list[float]] = {row: [] for row in works}
    for _ in range(rounds):
        for row, work in works.items():
            samples[row].append(w.time_steps(work, "portable_mlp", ks[row]))
    for row, seconds in samples.items():
        results.append({"backend": row, "seconds": seconds, "steps_per_sample": ks[row],
                        "median_s": statistics.median(seconds), "info": works[row].info})
    return results


def fastest_line(times: dict[str, float], what: str) -> str:
    """One line: the backend of the least time, and how much faster than the next."""
    if not times:
        return f"fastest for {what}: nothing was measured"
    ranked = sorted(times.items(), key=lambda item: item[1])
    best, t = ranked[0]
    if len(ranked) == 1:
        return f"fastest for {what}: {best} (the only backend measured)"
    runner, t2 = ranked[1]
    return (f"fastest for {what}: {best}, {t2 / t:.2f}x faster than {runner} (the next), "
            f"median step {t * 1e3:.3f} ms against {t2 * 1e3:.3f} ms")


def table(net: Network, results: list[dict[str, Any]]) -> str:
    lines = [f"your network: {net.describe()}", f"{'backend':<18}{'step (median)':>15}"
             f"{'rounds':>40}"]
    notes = []
    for r in results:
        if "skipped" in r:
            notes.append(f"{r['backend']}: skipped ({r['skipped']})")
            continue
        rounds = ", ".join(f"{s * 1e3:.3f}" for s in r["seconds"])
        lines.append(f"{r['backend']:<18}{r['median_s'] * 1e3:>12.3f} ms    {rounds} ms")
    times = {r["backend"]: r["median_s"] for r in results if "median_s" in r}
    return "\n".join([*lines, *notes, "", fastest_line(times, "your network")])
