"""Serving: onnxruntime on ``pm.export_onnx``'s graph against ``model.predict``, per 10,000 rows.

    python -m benchmarks.serving                       # 64-100-10 sigmoid, float32 and float64
    python -m benchmarks.serving --sizes 64,256,256,10 --rounds 50 --threads 1

Both compute labels for the same 10,000 rows of the same weights (onnxruntime asked for its
``label`` output only). The two are timed in turns, round after round, so that a busy
machine slows both alike; the table gives each one's median and the ratio of the medians.
``--threads`` sets onnxruntime's intra-op threads and the BLAS threads NumPy uses (default:
each library's own).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import portable_mlp as pm

ROWS = 10_000


def timed(call: Callable[[], Any]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def measure(sizes: list[int], dtype: str, rounds: int, threads: int | None
            ) -> dict[str, float]:
    """Median seconds per ROWS rows: onnxruntime and ``predict``, interleaved."""
    import onnxruntime as ort

    model = pm.MLP(sizes, dtype=dtype, seed=0)
    X = np.random.default_rng(0).normal(size=(ROWS, sizes[0])).astype(dtype)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.onnx"
        pm.export_onnx(model, path, label=True)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        sess = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    serve = lambda: sess.run(["label"], {"input": X})  # noqa: E731
    ours = lambda: model.predict(X)  # noqa: E731
    assert np.array_equal(serve()[0], ours()), "onnxruntime and predict disagree"
    times: dict[str, list[float]] = {"onnxruntime": [], "predict": []}
    for _ in range(rounds):
        times["onnxruntime"].append(timed(serve))
        times["predict"].append(timed(ours))
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64,100,10", help="layer sizes (default 64,100,10)")
    parser.add_argument("--rounds", type=int, default=30, help="timed turns each (default 30)")
    parser.add_argument("--threads", type=int, default=None,
                        help="onnxruntime's and BLAS's threads (default: theirs)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    from threadpoolctl import threadpool_limits

    print(f"{'-'.join(map(str, sizes))} sigmoid MLP, {ROWS:,} rows, median of {args.rounds}")
    print(f"{'dtype':<8} {'onnxruntime':>12} {'predict':>10} {'ratio':>7}")
    with threadpool_limits(limits=args.threads):
        for dtype in ("float32", "float64"):
            t = measure(sizes, dtype, args.rounds, args.threads)
            print(f"{dtype:<8} {t['onnxruntime'] * 1e3:>9.2f} ms {t['predict'] * 1e3:>7.2f} ms "
                  f"{t['predict'] / t['onnxruntime']:>6.2f}x")


if __name__ == "__main__":
    main()
