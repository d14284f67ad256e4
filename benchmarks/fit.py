"""Fit-level report: epoch time of ``pm.fit`` against each backend's best hand loop.

    python -m benchmarks.fit                      # numpy, torch, jax x xor, digits, mnist
    python -m benchmarks.fit --configs digits --rounds 9 --threads 1

Per configuration, every (backend, variant) runs once per round, interleaved
(numpy hand, numpy portable_mlp, torch hand, torch lean, ...), so that a busy machine
slows all alike; the order is reversed every other round. Ratios are those of the
medians printed beside them (each round's times and ratios are kept in the JSON);
``pm/lean``'s range over the rounds is printed beside it.

``pm/hand``: against the loop most users of the backend write (torch: autograd and
``torch.optim``). ``pm/lean``: against the fastest loop written by hand (torch: a manual
forward and backward with in-place ``_foreach_`` Adam; NumPy and JAX: the hand loop
itself), the honest anchor (``benchmarks._fit_loops``). Each variant is warmed up
first (JAX compiles there, outside the timing).
``--threads N`` sets torch's intra-op threads and the BLAS pools (threadpoolctl)
for the run; the thread count in force is printed with the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._fit_loops import FIT_CONFIGS, available, build

BACKENDS = ("numpy", "torch", "jax")
RESULTS = Path(__file__).parent / "results"


def _set_threads(n: int | None) -> str:
    """Pin torch's and the BLAS thread pools to ``n`` (None: leave them); describe them."""
    described = []
    try:
        import torch

        if n is not None:
            torch.set_num_threads(n)
        described.append(f"torch {torch.get_num_threads()}")
    except ImportError:
        pass
    if n is not None:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    from threadpoolctl import threadpool_info

    described += [f"{p['internal_api']} {p['num_threads']}" for p in threadpool_info()]
    return ", ".join(described)


def measure(config_name: str, backends: list[str], rounds: int,
            clock: Any = time.perf_counter) -> list[dict[str, Any]]:
    config = FIT_CONFIGS[config_name]
    works = {b: build(b, config) for b in backends}
    runs = [(b, v) for b in backends for v in ("hand", "lean", "portable_mlp")
            if v != "lean" or works[b].lean is not None]
    times: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    last: dict[tuple[str, str], tuple[float, float]] = {}
    for b, v in runs:  # warm-up: compile, fault pages in
        last[b, v] = getattr(works[b], v)()
        works[b].sync()
    for r in range(rounds):
        for b, v in (runs if r % 2 == 0 else runs[::-1]):
            start = clock()
            last[b, v] = getattr(works[b], v)()
            works[b].sync()
            times[b, v].append((clock() - start) / config.epochs)
    rows = []
    for b in backends:
        hand, ours = times[b, "hand"], times[b, "portable_mlp"]
        lean = times.get((b, "lean"), hand)  # None: the hand loop is the leanest
        over_lean = [o / h for o, h in zip(ours, lean)]
        row = {"backend": b, "config": config_name, "epochs_per_call": config.epochs,
               "hand_s": statistics.median(hand), "lean_s": statistics.median(lean),
               "pm_s": statistics.median(ours),
               # the table's ratios are those of the medians beside them; each round's in
               # the JSON
               "pm_over_hand": statistics.median(ours) / statistics.median(hand),
               "pm_over_lean": statistics.median(ours) / statistics.median(lean),
               "pm_over_lean_range": [min(over_lean), max(over_lean)],
               "per_round": {"hand_s": hand, "lean_s": lean, "pm_s": ours,
                             "pm_over_hand": [o / h for o, h in zip(ours, hand)],
                             "pm_over_lean": over_lean},
               "hand_last": last[b, "hand"], "pm_last": last[b, "portable_mlp"],
               **works[b].info}
        if "numpy" in backends and b != "numpy":
            numpy_pm = times["numpy", "portable_mlp"]
            row["pm_over_numpy_pm"] = statistics.median(ours) / statistics.median(numpy_pm)
        rows.append(row)
    return rows


def _fmt(s: float) -> str:
    return f"{s * 1e3:9.3f} ms" if s >= 1e-3 else f"{s * 1e6:9.1f} us"


def table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'backend':8} {'config':7} {'hand/epoch':>12} {'lean/epoch':>12} "
             f"{'pm/epoch':>12} {'pm/hand':>8} {'pm/lean':>8} {'(rounds)':>13} "
             f"{'pm/numpy-pm':>11}  last epoch: hand loss/acc | pm loss/acc"]
    for r in rows:
        vs_numpy = f"{r['pm_over_numpy_pm']:11.3f}" if "pm_over_numpy_pm" in r else f"{'':11}"
        (hl, ha), (pl, pa) = r["hand_last"], r["pm_last"]
        low, high = r["pm_over_lean_range"]
        lines.append(f"{r['backend']:8} {r['config']:7} {_fmt(r['hand_s']):>12} "
                     f"{_fmt(r['lean_s']):>12} {_fmt(r['pm_s']):>12} {r['pm_over_hand']:8.3f} "
                     f"{r['pm_over_lean']:8.3f} {f'{low:.2f}-{high:.2f}':>13} {vs_numpy}  "
                     f"{hl:.4g}/{ha:.3f} | {pl:.4g}/{pa:.3f}")
    return "\n".join(lines)


def _names(text: str, known: Any, what: str) -> list[str]:
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(unknown) or '(none)'}; "
                                         f"expected some of {', '.join(known)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", type=lambda t: _names(t, BACKENDS, "backend"),
                        default=list(BACKENDS))
    parser.add_argument("--configs", type=lambda t: _names(t, FIT_CONFIGS, "configuration"),
                        default=list(FIT_CONFIGS))
    parser.add_argument("--rounds", type=int, default=5, choices=range(1, 1000),
                        metavar="N (1-999)")
    parser.add_argument("--threads", type=int, default=None, choices=range(1, 1025),
                        metavar="N")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with this process's CPU time, not the wall clock: steadier "
                             "on a busy machine for single-threaded runs (NumPy with "
                             "--threads 1); not for JAX or torch, whose threads it adds up")
    args = parser.parse_args(argv)
    threads = _set_threads(args.threads)
    backends = []
    for b in args.backends:
        why = available(b)
        if why:
            print(f"skipping {b}: {why}", file=sys.stderr)
        else:
            backends.append(b)
    if "jax" in backends:
        import jax

        jax.config.update("jax_enable_x64", True)  # xor trains in float64, as NumPy does
    if not backends:
        print("nothing measured: none of the backends is installed", file=sys.stderr)
        return 1
    clock = time.process_time if args.cpu_time else time.perf_counter
    rows = [row for c in args.configs for row in measure(c, backends, args.rounds, clock)]
    kind = "CPU" if args.cpu_time else "wall-clock"
    print(f"threads: {threads}; {args.rounds} rounds, medians; {kind} epoch times")
    print(table(rows))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "fit.json"
    out.write_text(json.dumps({"threads": threads, "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
