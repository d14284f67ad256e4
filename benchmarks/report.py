"""Side-by-side report: the GEMM floor, a hand-written step, portable_mlp's step.

    python -m benchmarks.report          # numpy, torch, jax, jax-jit x xor, mnist, wide, deep
    python -m benchmarks.report --backends numpy --configs wide,xor --rounds 5
    python -m benchmarks.report --sizes 30,64,2 --batch 200 --optimizer adam \
        --loss cross_entropy --activation relu      # your network, on every installed backend

For each backend and configuration the three steps are timed in one run,
interleaved (floor, hand, portable_mlp, floor, hand, portable_mlp, ...), each
sample K steps synchronized once; a noisy machine then drifts on all three alike.
The ratios are those of the medians printed beside them; the per-round times and
ratios are kept in the JSON. Each configuration ends with a line naming the backend whose
portable_mlp step is fastest. Writes benchmarks/results/report.json and report.png.
With --sizes, only your network's portable_mlp step is timed, on every installed backend.

The table's columns:
  floor, hand, portable_mlp   median time of one training step: the step's matmuls
                              alone (the GEMM floor), a step hand-written in the
                              backend's own API, portable_mlp's Trainer.step
  GFLOP/s f/h/pm              the step's matmul FLOPs per second, for each of the three
  pm/hand, pm/floor           portable_mlp's step time over the hand-written step's and
                              over the floor's (1.00: as fast; lower is better)
  hand/floor                  the hand-written step over the floor: what the
                              elementwise work and the framework add to the matmuls
The chart (report.png) shows hand/floor and pm/floor per row; its solid line is the
floor (1.0), its dashed line 1.10x the floor, the ratio portable_mlp aims to stay under
on the large configurations.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

from benchmarks import yours

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_BACKENDS = "numpy,torch,jax,jax-jit"


def _limit_threads(n: int) -> None:
    """Pin every library's thread pool to ``n`` threads (before any is imported)."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    flags = os.environ.get("XLA_FLAGS", "")
    if n == 1:
        flags += " --xla_cpu_multi_thread_eigen=false"
    os.environ["XLA_FLAGS"] = flags.strip()


def _keep_memory() -> bool:
    """Ask glibc to keep freed memory (no trimming; arrays up to 32 MiB from the heap).

    On a VM every fresh page of a large temporary costs a fault; how many a step
    takes depends on the order of frees, not on the work. Keeping freed memory
    takes that noise out of all three variants alike. Returns whether it applied.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_trim_threshold, 2**30)
                    and libc.mallopt(m_mmap_threshold, 32 * 2**20))
    except (OSError, AttributeError):
        return False


def measure(row: str, config_name: str, rounds: int, sample_s: float) -> dict[str, Any]:
    from benchmarks import _workloads as w

    config = w.CONFIGS[config_name]
    try:
        work = w.build(row, config)
    except w.UnavailableError as exc:
        return {"backend": row, "config": config_name, "skipped": str(exc)}
    ks = {}
    for variant in w.VARIANTS:  # warm up, then size K so one sample takes ~sample_s
        w.time_steps(work, variant, 2)
        once = w.time_steps(work, variant, 2)
        ks[variant] = max(2, round(sample_s / max(once, 1e-7)))
    samples: dict[str, list[float]] = {v: [] for v in w.VARIANTS}
    for _ in range(rounds):
        for variant in w.VARIANTS:
            samples[variant].append(w.time_steps(work, variant, ks[variant]))
    timed = summarize(row, config_name, samples, ks, rounds)
    med = timed["median_s"]
    return {**timed, "gflops": {v: config.flops / t / 1e9 for v, t in med.items()},
            "compile_s": work.compile_s, "info": work.info}


def summarize(row: str, config_name: str, samples: dict[str, list[float]],
              ks: dict[str, int], rounds: int) -> dict[str, Any]:
    """Medians and ratios of one row. The table's ratios are those of the medians it prints
    beside them (with few rounds, a median of per-round ratios can contradict them); each
    round's times and ratios are kept for the JSON."""
    med = {v: statistics.median(s) for v, s in samples.items()}

    def per_round(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(samples[a], samples[b], strict=True)]

    return {
        "backend": row, "config": config_name, "steps_per_sample": ks, "rounds": rounds,
        "seconds": samples, "median_s": med,
        "pm_over_hand": med["portable_mlp"] / med["hand"],
        "pm_over_floor": med["portable_mlp"] / med["floor"],
        "hand_over_floor": med["hand"] / med["floor"],
        "per_round_ratios": {"pm_over_hand": per_round("portable_mlp", "hand"),
                             "pm_over_floor": per_round("portable_mlp", "floor"),
                             "hand_over_floor": per_round("hand", "floor")},
    }


def _fmt_time(s: float) -> str:
    return f"{s * 1e3:9.3f} ms" if s >= 1e-3 else f"{s * 1e6:9.1f} us"


def table(results: list[dict[str, Any]]) -> str:
    head = (f"{'backend':<17}{'config':<8}{'floor':>13}{'hand':>13}{'portable_mlp':>13}"
            f"{'GFLOP/s f/h/pm':>22}{'pm/hand':>9}{'pm/floor':>9}{'hand/floor':>11}")
    lines = [head, "-" * len(head)]
    notes = []
    for r in results:
        if "skipped" in r:
            notes.append(f"{r['backend']} {r['config']}: skipped ({r['skipped']})")
            continue
        m, g = r["median_s"], r["gflops"]
        gf = "/".join(f"{g[v]:.3g}" for v in ("floor", "hand", "portable_mlp"))
        lines.append(f"{r['backend']:<17}{r['config']:<8}{_fmt_time(m['floor']):>13}"
                     f"{_fmt_time(m['hand']):>13}{_fmt_time(m['portable_mlp']):>13}{gf:>22}"
                     f"{r['pm_over_hand']:>9.3f}{r['pm_over_floor']:>9.3f}"
                     f"{r['hand_over_floor']:>11.3f}")
        if r["compile_s"]:
            c = ", ".join(f"{k} {v:.2f}s" for k, v in r["compile_s"].items())
            notes.append(f"{r['backend']} {r['config']}: compile (excluded) {c}")
    precisions = {f"{r['backend']}": r["info"]["matmul_precision"].split(";", 1)[-1].strip()
                  for r in results if "info" in r}
    notes += [f"matmul precision, {b}: {p}" for b, p in precisions.items()]
    fastest = []
    for config in dict.fromkeys(r["config"] for r in results):
        times = {r["backend"]: r["median_s"]["portable_mlp"] for r in results
                 if r["config"] == config and "median_s" in r}
        if times:
            fastest.append(yours.fastest_line(times, config))
    return "\n".join([*lines, "", *notes, *([""] if fastest else []), *fastest])


def chart(results: list[dict[str, Any]], path: Path, title: str) -> str | None:
    """Draw the measured rows to ``path``; return why nothing was drawn, or None."""
    rows = [r for r in results if "skipped" not in r]
    if not rows:
        return "nothing was measured"
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed (it comes with the bench extra)"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")  # 2, 0.5: not 2x10^0 on a log axis
    # between the powers of ten, label 2, 3 and 5 only (their multiples by powers of ten)
    sparse = FuncFormatter(lambda value, _: f"{value:g}" if f"{value:.0e}"[0] in "235" else "")

    labels = [f"{r['backend']} {r['config']}" for r in rows]
    hand = [r["hand_over_floor"] for r in rows]
    pm = [r["pm_over_floor"] for r in rows]
    x = range(len(rows))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(8, 1.1 * len(rows) + 2), 8))
    width = 0.38
    ax1.bar([i - width / 2 for i in x], hand, width, label="hand-written step", color="#8da0cb")
    ax1.bar([i + width / 2 for i in x], pm, width, label="portable_mlp Trainer.step",
            color="#fc8d62")
    ax1.axhline(1.0, color="black", lw=1, label="GEMM floor (= 1)")
    ax1.axhline(1.10, color="grey", lw=1, ls="--", label="1.10x floor (the aim)")
    ax1.set_yscale("log")
    ax1.set_ylabel("step time / GEMM floor (log; lower is better)")
    ax1.set_xticks(list(x), labels, fontsize=9, rotation=30, ha="right")
    for i, (r, p) in enumerate(zip(rows, pm, strict=True)):  # the table's paired ratio
        ax1.annotate(f"{r['pm_over_hand']:.2f}x", (i + width / 2, p), ha="center", va="bottom",
                     fontsize=7)
    ax1.legend(fontsize=8)
    ax1.set_title(title + "\n(label above each orange bar: portable_mlp / hand-written)",
                  fontsize=10)
    for j, (variant, color) in enumerate((("floor", "#66c2a5"), ("hand", "#8da0cb"),
                                          ("portable_mlp", "#fc8d62"))):
        ax2.bar([i + (j - 1) * 0.27 for i in x], [r["gflops"][variant] for r in rows], 0.27,
                label=variant, color=color)
    ax2.set_yscale("log")
    ax2.set_ylabel("GFLOP/s (matmul FLOPs / step time)")
    ax2.set_xticks(list(x), labels, fontsize=9, rotation=30, ha="right")
    ax2.set_xlabel("backend and configuration")
    for ax in (ax1, ax2):
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(sparse)
        ax.tick_params(axis="y", which="minor", labelsize=7)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (portable_mlp.cli's parser does the same, but
    importing portable_mlp here would load NumPy before --threads can apply)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _at_least(low: float, kind: type) -> Any:
    what = f"{'an integer' if kind is int else 'a finite number'} >= {low:g}"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not value >= low or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def _names(text: str, known: Any, flag: str, parser: _Parser) -> list[str]:
    """The comma-separated names of ``text``, each one of ``known``; else a one-line error."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        what = f"unknown {', '.join(map(repr, unknown))}" if unknown else "no name given"
        parser.error(f"{flag}: {what}; expected a comma-separated list of {', '.join(known)}")
    return names


def build_parser() -> _Parser:
    parser = _Parser(prog="python -m benchmarks.report", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default=None,
                        help="comma-separated rows: numpy, torch, jax, jax-jit, "
                             "array_api_strict, dask, cupy, torch-cuda, torch-cuda-tf32 "
                             f"(default: {DEFAULT_BACKENDS}; with --sizes, every installed "
                             "backend)")
    parser.add_argument("--configs", default="xor,mnist,wide,deep",
                        help="comma-separated: xor, mnist, wide, deep, wide4096 (GPU)")
    parser.add_argument("--rounds", type=_at_least(1, int), default=7,
                        help="interleaved rounds (default 7)")
    parser.add_argument("--sample-s", type=_at_least(1e-3, float), default=0.25,
                        help="target seconds per sample of K steps (default 0.25)")
    parser.add_argument("--threads", type=_at_least(1, int), default=None,
                        help="pin BLAS/torch/XLA thread pools to this many threads")
    parser.add_argument("--keep-memory", action="store_true",
                        help="glibc keeps freed memory (mallopt): no page-fault noise")
    parser.add_argument("--fit-configs", default="xor,digits,mnist",
                        help="whole-training rows (benchmarks.fit): comma-separated xor, "
                             "digits, mnist, or 'none' (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for report.json/png")
    mine = parser.add_argument_group("your network (--sizes: only it is timed, on every "
                                     "installed backend)")
    mine.add_argument("--sizes", type=_sizes, default=None,
                      help="layer sizes, inputs first: 30,64,2")
    mine.add_argument("--batch", type=_at_least(1, int), default=200,
                      help="rows per step (default 200)")
    mine.add_argument("--optimizer", choices=("sgd", "adam"), default="adam")
    mine.add_argument("--loss", default="cross_entropy",
                      choices=("mse", "cross_entropy", "binary_cross_entropy", "poisson"))
    mine.add_argument("--activation", choices=("sigmoid", "tanh", "relu"), default="relu")
    mine.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    mine.add_argument("--no-bias", action="store_true", help="Linear layers without bias")
    return parser


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return yours.parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_yours(args: argparse.Namespace, rows: list[str], argv: list[str]) -> int:
    """--sizes: your network's step on every installed backend; report.json, no chart."""
    net = yours.Network(args.sizes, args.batch, args.optimizer, args.loss, args.activation,
                        args.dtype, not args.no_bias)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    results = yours.measure(net, rows, args.rounds, args.sample_s)
    print(f"# python -m benchmarks.report {' '.join(argv)}\n# {started}, {os.cpu_count()} "
          f"CPUs, {args.rounds} rounds, step times are medians\n")
    print(yours.table(net, results))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(
        {"started": started, "argv": argv, "network": vars(net), "yours": results},
        indent=1, default=str))
    (args.out / "report.png").unlink(missing_ok=True)  # a chart of another run
    print(f"\nwrote {args.out / 'report.json'}")
    return 0


def fit_rows(configs: list[str], rows: list[str], rounds: int) -> list[dict[str, Any]]:
    """The whole-training rows: ``pm.fit`` against the hand loop, per epoch, for the
    backends among ``rows`` that benchmarks.fit knows (jax-jit is jax there)."""
    from benchmarks import fit

    backends = [b for b in fit.BACKENDS
                if (b in rows or (b == "jax" and "jax-jit" in rows)) and fit.available(b) is None]
    if not backends:
        return []
    if "jax" in backends:
        import jax

        jax.config.update("jax_enable_x64", True)  # fit's xor trains in float64
    found = []
    for config in configs:
        print(f"measuring fit {config} ...", file=sys.stderr, flush=True)
        found += fit.measure(config, backends, rounds)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"--out {args.out}: is not a folder")
    if args.threads:
        _limit_threads(args.threads)
        try:
            import torch

            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    if args.sizes is not None:
        rows = (list(yours.ROWS) if args.backends is None
                else _names(args.backends, yours.ROWS, "--backends", parser))
        return run_yours(args, rows, argv if argv is not None else sys.argv[1:])
    from benchmarks import _workloads as w  # after the thread limits: it imports NumPy

    configs = _names(args.configs, w.CONFIGS, "--configs", parser)
    rows = _names(args.backends or DEFAULT_BACKENDS, w.BACKEND_ROWS, "--backends", parser)
    from benchmarks._fit_loops import FIT_CONFIGS

    fit_configs = ([] if args.fit_configs == "none"
                   else _names(args.fit_configs, FIT_CONFIGS, "--fit-configs", parser))
    if args.keep_memory and not _keep_memory():
        print("--keep-memory: mallopt is not available here; ignored", file=sys.stderr)
    results = []
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    for config in configs:
        for row in rows:
            print(f"measuring {row} {config} ...", file=sys.stderr, flush=True)
            results.append(measure(row, config, args.rounds, args.sample_s))
    fits = fit_rows(fit_configs, rows, args.rounds)
    text = table(results)
    if fits:
        from benchmarks import fit

        text += "\n\nwhole training, per epoch (python -m benchmarks.fit):\n" + fit.table(fits)
    print(f"# python -m benchmarks.report {' '.join(argv if argv is not None else sys.argv[1:])}"
          f"\n# {started}, {os.cpu_count()} CPUs, {args.rounds} rounds, step times are medians\n")
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(
        {"started": started, "argv": argv if argv is not None else sys.argv[1:],
         "results": results, "fit": fits}, indent=1, default=str))
    png = args.out / "report.png"
    png.unlink(missing_ok=True)  # never leave a chart of another run beside this JSON
    why_not = chart(results, png, f"portable_mlp training step vs hand-written and GEMM floor "
                    f"({started})")
    print(f"\nwrote {args.out / 'report.json'}" + (f" and {png}" if why_not is None else
                                                    f"; no chart: {why_not}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
