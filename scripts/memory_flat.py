"""1,000,000 XOR training steps on NumPy: does memory stay flat?

Trains the scratch_mlp article's 2-3-2 sigmoid network (full batch, SGD lr 0.5) and reads the
process's resident memory (RSS, from /proc/self/statm) and, with --tracemalloc,
the bytes Python has allocated, every --every steps. Prints a table and the
growth between the first reading after warm-up and the last.

    python scripts/memory_flat.py --steps 1000000 --every 100000
    python scripts/memory_flat.py --mode fit      # through Trainer.fit, in chunks of epochs
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import sys
import time
import tracemalloc

import portable_mlp as pm


def rss_mib() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: the peak is the best we have
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--every", type=int, default=100_000)
    parser.add_argument("--mode", choices=("step", "fit"), default="step")
    parser.add_argument("--tracemalloc", action="store_true")
    args = parser.parse_args()
    X, y = pm.datasets.xor(n=300, seed=0)
    Y = pm.one_hot(y, 2)
    model = pm.MLP([2, 3, 2], activation="sigmoid", output="sigmoid", bias=False, seed=2017)
    trainer = pm.Trainer(model, loss="mse", optimizer=pm.SGD(lr=0.5))
    if args.tracemalloc:
        tracemalloc.start()
    rows = []
    start = time.perf_counter()
    done = 0
    while done < args.steps:
        chunk = min(args.every, args.steps - done)
        if args.mode == "fit":
            trainer.fit(X, Y, epochs=chunk, progress=False)
        else:
            for _ in range(chunk):
                trainer.step(X, Y)
        done += chunk
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0] / 2**20 if args.tracemalloc else float("nan")
        loss = trainer.evaluate(*[model.placement.from_host(a) for a in (X, Y)])["loss"]
        rows.append((done, rss_mib(), traced, len(gc.get_objects()), loss))
        print(f"{done:>9d} steps  {time.perf_counter() - start:7.1f} s  RSS {rows[-1][1]:8.2f} MiB"
              f"  traced {traced:7.3f} MiB  gc objects {rows[-1][3]:7d}  loss {loss:.6f}",
              flush=True)
    first, last = rows[0], rows[-1]
    print(f"\n{args.steps} steps ({args.mode}) in {time.perf_counter() - start:.0f} s; from "
          f"{first[0]} to {last[0]} steps: RSS {first[1]:.2f} -> {last[1]:.2f} MiB "
          f"({last[1] - first[1]:+.2f}), traced {first[2]:.3f} -> {last[2]:.3f} MiB, "
          f"gc objects {first[3]} -> {last[3]} ({last[3] - first[3]:+d}), "
          f"steps counted by the trainer: {trainer.steps}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
