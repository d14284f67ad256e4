"""The ``portable-mlp`` command: train the seed's XOR network and show how it learns."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import portable_mlp as pm


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portable-mlp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    xor = sub.add_parser("xor", help="train an MLP on the seed's XOR data (300 points)")
    xor.add_argument("--backend", default="numpy", choices=pm.BACKENDS)
    xor.add_argument("--device", default=None, help="device on the backend (default: its default)")
    xor.add_argument("--dtype", default=None, choices=("float32", "float64"))
    xor.add_argument("--hidden", type=_positive_int, default=8, help="hidden neurons (default 8)")
    xor.add_argument("--lr", type=_positive_float, default=2.0, help="learning rate (default 2.0)")
    xor.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    xor.add_argument("--epochs", type=_positive_int, default=500, help="full-batch epochs")
    xor.add_argument("--seed", type=int, default=2017, help="weight seed (the seed's 2017)")
    xor.add_argument("--no-bias", action="store_true",
                     help="no bias terms, as in the seed (try --hidden 3 --no-bias)")
    xor.add_argument("--quiet", action="store_true", help="print only the final result")
    return parser


def run_xor(args: argparse.Namespace) -> int:
    X, y = pm.datasets.xor(n=300, seed=0)
    Y = pm.one_hot(y, 2)
    model = pm.MLP([2, args.hidden, 2], activation="sigmoid", output="sigmoid",
                   bias=not args.no_bias, seed=args.seed, backend=args.backend,
                   device=args.device, dtype=args.dtype)
    trainer = pm.Trainer(model, loss="mse", optimizer=pm.SGD(lr=args.lr, momentum=args.momentum))
    report_every = max(1, args.epochs // 10)

    def report(trainer: pm.Trainer, epoch: int, logs: dict[str, float]) -> None:
        if not args.quiet and ((epoch + 1) % report_every == 0 or epoch == 0):
            print(f"epoch {epoch + 1:>6}  loss {logs['loss']:.6f}  accuracy {logs['accuracy']:.3f}")

    print(f"training {model} on XOR (300 points)")
    start = time.perf_counter()
    history = trainer.fit(X, Y, epochs=args.epochs, callbacks=[report], progress=False)
    seconds = time.perf_counter() - start
    print(f"final accuracy {history['accuracy'][-1]:.3f}  loss {history['loss'][-1]:.6f}  "
          f"({len(history['loss'])} epochs in {seconds:.2f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run_xor(args)
    except (ValueError, TypeError, ImportError, pm.DivergenceError) as exc:
        print(f"portable-mlp: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
