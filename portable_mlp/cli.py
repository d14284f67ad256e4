"""The ``portable-mlp`` command: train small MLPs on 2-D data and show how they learn.

  portable-mlp xor                      the seed's XOR network (300 points)
  portable-mlp train --dataset spirals  moons, circles, spirals or xor
  portable-mlp info                     each backend: installed?, version, devices, dtype

``--plot FILE.png`` draws accuracy, the decision boundary and the loss; ``--gif FILE.gif``
animates them over training (both need ``pip install 'portable_mlp[plot]'``).
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import portable_mlp as pm
from portable_mlp import _backend
from portable_mlp.train import shows_progress

PROG = "portable-mlp"
DATASETS = ("xor", "moons", "circles", "spirals")
ACTIVATIONS = ("sigmoid", "tanh", "relu")
INITS = ("uniform", "glorot", "he")

# the seed's network, made to learn XOR reliably in well under a second: 2-8-2 sigmoid, MSE
XOR_DEFAULTS = {"hidden": [8], "activation": "sigmoid", "init": "uniform", "loss": "mse",
                "optimizer": "sgd", "lr": 2.0, "momentum": 0.9, "epochs": 1000}
# the other data sets want more capacity: 2-16-16-k tanh, softmax cross-entropy, Adam
TRAIN_DEFAULTS = {"hidden": [16, 16], "activation": "tanh", "init": "glorot",
                  "loss": "cross_entropy", "optimizer": "adam", "lr": 0.02, "momentum": 0.9,
                  "epochs": 500}


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line that points to the help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind: Callable[[str], Any], test: Callable[[Any], bool], what: str
            ) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not (math.isfinite(value) and test(value)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_count = _number(int, lambda v: v >= 2, "an integer >= 2")
_non_negative_int = _number(int, lambda v: v >= 0, "a non-negative integer")
_positive_float = _number(float, lambda v: v > 0, "a positive number")
_non_negative_float = _number(float, lambda v: v >= 0, "a non-negative number")
_momentum = _number(float, lambda v: 0 <= v < 1, "a momentum in [0, 1)")


def _add_training_flags(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    d = defaults
    model = parser.add_argument_group("model")
    model.add_argument("--backend", default="numpy", choices=pm.BACKENDS,
                       help="array library to train on (default numpy; see `portable-mlp info`)")
    model.add_argument("--device", default=None, help="device on the backend (default: its own)")
    model.add_argument("--dtype", default=None, choices=_backend.FLOAT_DTYPES,
                       help="float dtype (default: the backend's)")
    model.add_argument("--hidden", type=_positive_int, nargs="+", default=d["hidden"],
                       metavar="N", help="hidden layer sizes (default "
                       f"{' '.join(map(str, d['hidden']))}; the seed's network: 3 with --no-bias)")
    model.add_argument("--activation", choices=ACTIVATIONS, default=d["activation"],
                       help=f"hidden activation (default {d['activation']})")
    model.add_argument("--init", choices=INITS, default=d["init"],
                       help=f"weight initializer (default {d['init']})")
    model.add_argument("--no-bias", action="store_true", help="no bias terms, as in the seed")
    model.add_argument("--seed", type=_non_negative_int, default=2017,
                       help="weight seed (default the seed's 2017)")
    fit = parser.add_argument_group("training")
    fit.add_argument("--loss", choices=("mse", "cross_entropy"), default=d["loss"],
                     help=f"mse (sigmoid outputs, the seed's) or cross_entropy (softmax on "
                     f"logits); default {d['loss']}")
    fit.add_argument("--optimizer", choices=("sgd", "adam"), default=d["optimizer"],
                     help=f"default {d['optimizer']}")
    fit.add_argument("--lr", type=_positive_float, default=d["lr"],
                     help=f"learning rate (default {d['lr']})")
    fit.add_argument("--momentum", type=_momentum, default=d["momentum"],
                     help=f"SGD momentum (default {d['momentum']})")
    fit.add_argument("--l2", type=_non_negative_float, default=0.0,
                     help="ridge penalty l2 * sum(W^2) / 2N (default 0)")
    fit.add_argument("--epochs", type=_positive_int, default=d["epochs"],
                     help=f"passes over the data (default {d['epochs']})")
    fit.add_argument("--batch-size", type=_positive_int, default=None,
                     help="mini-batch size (default: the whole data set)")
    out = parser.add_argument_group("output")
    out.add_argument("--quiet", action="store_true", help="print only the final result")
    out.add_argument("--plot", type=Path, metavar="FILE.png",
                     help="write accuracy, decision boundary and loss to this image")
    out.add_argument("--gif", type=Path, metavar="FILE.gif",
                     help="write an animation of training to this GIF")
    out.add_argument("--frames", type=_count, default=40,
                     help="frames in the GIF (default 40)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    xor = sub.add_parser("xor", help="train the seed's XOR network (300 points)",
                         description="Train an MLP on the seed's 300 XOR points: by default "
                         "2-8-2 sigmoid, MSE, SGD lr 2.0 momentum 0.9, 1000 epochs.")
    _add_training_flags(xor, XOR_DEFAULTS)
    train = sub.add_parser("train", help="train on a 2-D data set: moons, circles, spirals, xor",
                           description="Train an MLP on a seeded 2-D data set: by default "
                           "2-16-16-k tanh, softmax cross-entropy, Adam lr 0.02, 500 epochs.")
    data = train.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="moons", help="default moons")
    data.add_argument("--samples", type=_count, default=300, help="points (default 300)")
    data.add_argument("--noise", type=_non_negative_float, default=None,
                      help="noise (default: the data set's; not for xor)")
    data.add_argument("--classes", type=_count, default=None,
                      help="spiral arms (spirals only; default 3)")
    data.add_argument("--data-seed", type=_non_negative_int, default=0,
                      help="data seed (default 0)")
    _add_training_flags(train, TRAIN_DEFAULTS)
    sub.add_parser("info", help="list each backend: installed or not, version, devices, dtype")
    return parser


# --- commands ------------------------------------------------------------------

def load_data(args: argparse.Namespace) -> tuple[Any, Any, str]:
    name = getattr(args, "dataset", "xor")
    n = getattr(args, "samples", 300)
    noise = getattr(args, "noise", None)
    classes = getattr(args, "classes", None)
    seed = getattr(args, "data_seed", 0)
    if classes is not None and name != "spirals":
        raise ValueError("--classes applies to --dataset spirals only")
    if noise is not None and name == "xor":
        raise ValueError("--noise does not apply to xor (its points are standard normal)")
    kwargs: dict[str, Any] = {} if noise is None else {"noise": noise}
    if classes is not None:
        kwargs["n_classes"] = classes
    X, y = getattr(pm.datasets, name)(n, seed=seed, **kwargs)
    return X, y, f"{name.upper() if name == 'xor' else name} ({n} points)"


def check_writable(path: Path, flag: str, suffixes: tuple[str, ...]) -> None:
    """Refuse an output path before training rather than after."""
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{flag} {path}: expected a file name ending in {' or '.join(suffixes)}")
    if path.is_dir():
        raise ValueError(f"{flag} {path}: is a directory, expected a file name")
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot write there ({exc.strerror})") from None
    if not existed:
        path.unlink()


def title_of(args: argparse.Namespace, sizes: list[int], data: str, model: pm.Sequential
             ) -> str:
    """One line that names the run: network, data, loss, optimizer and placement."""
    net = "-".join(map(str, sizes)) + f" {args.activation}" + (" no bias" if args.no_bias else "")
    opt = (f"SGD lr {args.lr:g} momentum {args.momentum:g}" if args.optimizer == "sgd"
           else f"Adam lr {args.lr:g}")
    extra = f", l2 {args.l2:g}" if args.l2 else ""
    where = f"{model.backend} {model.placement.device} {model.placement.dtype}"
    return f"{net} MLP on {data}: {args.loss}, {opt}{extra} [{where}]"


def run_training(args: argparse.Namespace) -> int:
    if args.plot:
        check_writable(args.plot, "--plot", (".png", ".svg", ".pdf", ".jpg", ".jpeg"))
    if args.gif:
        check_writable(args.gif, "--gif", (".gif",))
    plot: Any = None
    if args.plot or args.gif:
        plot = importlib.import_module("portable_mlp.plot")  # explains how to install it

    X, y, data = load_data(args)
    n_classes = int(y.max()) + 1
    Y = pm.one_hot(y, n_classes)
    sizes = [2, *args.hidden, n_classes]
    model = pm.MLP(sizes, activation=args.activation,
                   output="sigmoid" if args.loss == "mse" else "identity",
                   bias=not args.no_bias, seed=args.seed, backend=args.backend,
                   device=args.device, dtype=args.dtype, init=args.init)
    optimizer = (pm.SGD(lr=args.lr, momentum=args.momentum) if args.optimizer == "sgd"
                 else pm.Adam(lr=args.lr))
    trainer = pm.Trainer(model, loss=args.loss, optimizer=optimizer, l2=args.l2)
    title = title_of(args, sizes, data, model)

    bar = shows_progress(not args.quiet)
    callbacks: list[Any] = []
    if not args.quiet and not bar:
        every = max(1, args.epochs // 10)

        def report(trainer: pm.Trainer, epoch: int, logs: dict[str, float]) -> None:
            if (epoch + 1) % every == 0 or epoch == 0:
                print(f"epoch {epoch + 1:>6}  loss {logs['loss']:.6f}  "
                      f"accuracy {logs['accuracy']:.3f}", flush=True)

        callbacks.append(report)
    snapshots = None
    if args.gif:
        snapshots = plot.Snapshots(every=max(1, math.ceil(args.epochs / args.frames)))
        callbacks.append(snapshots)

    if not args.quiet:
        print(f"training {title}", flush=True)
    start = time.perf_counter()
    history = trainer.fit(X, Y, epochs=args.epochs, batch_size=args.batch_size,
                          callbacks=callbacks, progress=bar)
    seconds = time.perf_counter() - start
    print(f"final accuracy {history['accuracy'][-1]:.3f}  loss {history['loss'][-1]:.6f}  "
          f"({len(history['loss'])} epochs in {seconds:.2f} s)")
    if args.plot:
        plot.plot_training(model, history, X, y, args.plot, title=title)
        print(f"wrote {args.plot}")
    if args.gif:
        frames = plot.animate_training(model, snapshots, X, y, args.gif, title=title)
        print(f"wrote {args.gif} ({frames} frames)")
    return 0


def run_info(args: argparse.Namespace) -> int:
    rows = [("backend", "installed", "version", "default dtype", "devices", "pip extra")]
    notes = []
    for name in pm.BACKENDS:
        found = _backend.describe(name)
        extra = found["extra"]
        rows.append((name, "yes" if found["installed"] else "no", found["version"] or "-",
                     found["default_dtype"] or "-", ", ".join(found["devices"]) or "-",
                     "(core)" if extra is None else "[" + extra.replace(" or ", "|") + "]"))
        if not found["installed"]:
            notes.append(f"{name}: {_backend.install_hint(name)}")
        elif found["problem"]:
            notes.append(f"{name}: installed, but {found['problem']}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    for note in notes:
        print(note)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_info(args) if args.command == "info" else run_training(args)
    except (ValueError, TypeError, ImportError, OSError, pm.DivergenceError) as exc:
        message = " ".join(str(exc).split())
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
