"""5-fold cross-validation of breast_cancer with MLPClassifier, per backend, with the
libraries' default threads and with ``threads=1``, timed in turns (docs/guide/threads.md).

    python scripts/threads_cv.py [--backends numpy,torch] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

from sklearn.datasets import load_breast_cancer
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from portable_mlp.sklearn import MLPClassifier
from portable_mlp.threads import ThreadOversubscriptionWarning, pool_threads


def one(backend: str, threads: int | None) -> tuple[float, float]:
    """Seconds and mean accuracy of one 5-fold cross-validation."""
    X, y = load_breast_cancer(return_X_y=True)
    clf = make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=200, random_state=0,
                                                        backend=backend, threads=threads))
    start = time.perf_counter()
    scores = cross_val_score(clf, X, y, cv=5)
    return time.perf_counter() - start, float(scores.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backends", default="numpy,torch")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    warnings.simplefilter("ignore", ConvergenceWarning)
    warnings.simplefilter("ignore", ThreadOversubscriptionWarning)
    backends = args.backends.split(",")
    for backend in backends:  # import and warm up once, outside the timing
        one(backend, 1)
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
          f"default threads {pool_threads()}")
    for r in range(args.rounds):
        for backend in backends:
            for threads in (None, 1):
                seconds, score = one(backend, threads)
                print(f"round {r + 1}  {backend:6s} threads={threads!s:4s}  {seconds:6.2f} s  "
                      f"accuracy {score:.4f}", flush=True)


if __name__ == "__main__":
    main()
