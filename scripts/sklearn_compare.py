"""scikit-learn's MLPs against portable_mlp.sklearn's.

``--solver adam`` (the default): MLPClassifier on digits (ships with scikit-learn)
and two moons; the same architecture, solver, batch size and number of epochs for
both (early stopping off: every fit runs exactly ``--epochs`` epochs). Prints test
accuracy (mean over seeds) and fit time (median over seeds) per backend.

``--solver lbfgs``: the full-batch solver on digits, iris (classifiers) and a
regression set, with the same ``random_state`` (so the same first weights) for
both: test score, ``n_iter_`` and fit time (median over seeds) per backend.

    python scripts/sklearn_compare.py [--solver adam|lbfgs] [--epochs 200]
                                      [--seeds 0 1 2] [--backends ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn.datasets import load_digits, load_iris, make_moons, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SkMLP
from sklearn.neural_network import MLPRegressor as SkRegressor
from sklearn.preprocessing import StandardScaler

from portable_mlp.sklearn import MLPClassifier, MLPRegressor

RUNS = [  # label, backend, dtype
    ("numpy float64", "numpy", "float64"),
    ("torch float64", "torch", "float64"),
    ("torch float32", "torch", "float32"),
    ("jax float64", "jax", "float64"),
    ("jax float32", "jax", "float32"),
]


def datasets() -> dict[str, tuple[np.ndarray, ...]]:
    X, y = load_digits(return_X_y=True)
    digits = train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=0)
    X, y = make_moons(n_samples=1000, noise=0.2, random_state=0)
    moons = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    scaler = StandardScaler().fit(moons[0])
    moons = [scaler.transform(moons[0]), scaler.transform(moons[1]), moons[2], moons[3]]
    return {"digits": tuple(digits), "moons": tuple(moons)}


def lbfgs_datasets() -> dict[str, tuple[np.ndarray, ...]]:
    X, y = load_digits(return_X_y=True)
    digits = train_test_split(X / 16.0, y, test_size=0.25, stratify=y, random_state=0)
    X, y = load_iris(return_X_y=True)
    iris = train_test_split(StandardScaler().fit_transform(X), y, test_size=0.25,
                            stratify=y, random_state=0)
    X, y = make_regression(n_samples=500, n_features=10, noise=10.0, random_state=0)
    regression = train_test_split(StandardScaler().fit_transform(X), y / np.std(y),
                                  test_size=0.25, random_state=0)
    return {"digits": tuple(digits), "iris": tuple(iris), "regress": tuple(regression)}


def run(make, data, seeds) -> tuple[float, float, float]:
    """Mean test score, median fit seconds and mean n_iter_ over ``seeds``."""
    X_train, X_test, y_train, y_test = data
    scores, times, iters = [], [], []
    make(0).set_params(max_iter=2).fit(X_train, y_train)  # warm up: imports, kernels, jit
    for seed in seeds:
        est = make(seed)
        start = time.perf_counter()
        est.fit(X_train, y_train)
        times.append(time.perf_counter() - start)
        scores.append(est.score(X_test, y_test))
        iters.append(est.n_iter_)
    return float(np.mean(scores)), statistics.median(times), float(np.mean(iters))


def compare_lbfgs(args: argparse.Namespace) -> None:
    common = dict(hidden_layer_sizes=(50,), activation="relu", solver="lbfgs", alpha=1e-4,
                  max_iter=args.epochs)
    print(f"lbfgs, hidden (50,), relu, alpha 1e-4, max_iter {args.epochs}, seeds {args.seeds}")
    print(f"{'data':8} {'estimator':28} {'score':>7} {'n_iter_':>8} {'fit s':>8} "
          f"{'vs sklearn':>11}")
    for name, data in lbfgs_datasets().items():
        ours, theirs = (MLPRegressor, SkRegressor) if name == "regress" else (
            MLPClassifier, SkMLP)
        score, secs, iters = run(lambda s, t=theirs: t(**common, random_state=s), data,
                                 args.seeds)
        print(f"{name:8} {'scikit-learn (numpy f64)':28} {score:7.4f} {iters:8.1f} "
              f"{secs:8.3f} {'1.00x':>11}")
        for label, backend, dtype in RUNS:
            if label not in args.backends:
                continue
            s2, t2, i2 = run(lambda s, b=backend, d=dtype, o=ours: o(
                **common, random_state=s, backend=b, dtype=d), data, args.seeds)
            print(f"{name:8} {'portable_mlp ' + label:28} {s2:7.4f} {i2:8.1f} {t2:8.3f} "
                  f"{t2 / secs:10.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--solver", choices=("adam", "lbfgs"), default="adam")
    parser.add_argument("--epochs", type=int, default=200, help="max_iter")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--backends", nargs="+", default=[label for label, _, _ in RUNS])
    args = parser.parse_args()
    if any(label.startswith("jax") for label in args.backends):
        import jax

        jax.config.update("jax_enable_x64", True)
    common = dict(hidden_layer_sizes=(100,), activation="relu", solver="adam",
                  learning_rate_init=1e-3, alpha=1e-4, batch_size=200, max_iter=args.epochs,
                  n_iter_no_change=np.inf, shuffle=True)
    warnings.simplefilter("ignore", ConvergenceWarning)
    if args.solver == "lbfgs":
        compare_lbfgs(args)
        return
    print(f"{args.epochs} epochs, hidden (100,), relu, adam lr 1e-3, batch 200, "
          f"seeds {args.seeds}")
    print(f"{'data':8} {'estimator':28} {'test acc':>9} {'fit s':>8} {'vs sklearn':>11}")
    for name, data in datasets().items():
        acc, secs, _ = run(lambda s: SkMLP(**common, random_state=s), data, args.seeds)
        print(f"{name:8} {'scikit-learn (numpy f64)':28} {acc:9.4f} {secs:8.3f} {'1.00x':>11}")
        for label, backend, dtype in RUNS:
            if label not in args.backends:
                continue
            ours_acc, ours_secs, _ = run(
                lambda s, b=backend, d=dtype: MLPClassifier(**common, random_state=s,
                                                            backend=b, dtype=d),
                data, args.seeds)
            print(f"{name:8} {'portable_mlp ' + label:28} {ours_acc:9.4f} {ours_secs:8.3f} "
                  f"{ours_secs / secs:10.2f}x")


if __name__ == "__main__":
    main()
