"""The portable-mlp command: train small MLPs on 2-D data and show how they learn.

  portable-mlp xor                      the XOR network of the scratch_mlp article (300 points)
  portable-mlp train --dataset spirals  moons, circles, spirals or xor
  portable-mlp info                     each backend: installed?, version, devices, dtype

--plot FILE.png draws accuracy, the decision boundary and the loss; --gif FILE.gif animates
them over training (both need matplotlib: the plot extra). --onnx FILE.onnx writes the trained
model for onnxruntime (needs onnx: the onnx extra).
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import json
import math
import os
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import portable_mlp as pm
from portable_mlp import _backend, _install, backends, export
from portable_mlp.threads import ThreadOversubscriptionWarning

PROG = "portable-mlp"
DATASETS = ("xor", "moons", "circles", "spirals")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu", "silu", "leaky_relu", "elu", "softplus")
INITS = ("uniform", "glorot", "he")
ARTICLE = "the scratch_mlp article (https://github.com/omar-florez/scratch_mlp)"

# the article's network, made to learn XOR reliably in well under a second: 2-8-2 sigmoid, MSE
XOR_DEFAULTS = {"hidden": [8], "activation": "sigmoid", "init": "uniform", "loss": "mse",
                "optimizer": "sgd", "lr": 2.0, "momentum": 0.9, "epochs": 1000}
# the other data sets want more capacity: 2-16-16-k tanh, softmax cross-entropy, Adam
TRAIN_DEFAULTS = {"hidden": [16, 16], "activation": "tanh", "init": "glorot",
                  "loss": "cross_entropy", "optimizer": "adam", "lr": 0.02, "momentum": 0.9,
                  "epochs": 500}
GRID_POINTS = 200 * 200  # where --plot evaluates the model (plot_training's resolution)
SMALL_STEP_FLOP = 1e8    # below this, a step costs NumPy about 10 ms or less


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line that starts ``portable-mlp: error:`` (a
    subcommand's too, as every other error of the command) and points to the help."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{PROG}: error: {message} (see {self.prog} --help)\n")


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
_rate = _number(float, lambda v: 0.0 <= v < 1.0, "a number in [0, 1)")
_positive_float = _number(float, lambda v: v > 0, "a positive number")
_non_negative_float = _number(float, lambda v: v >= 0, "a non-negative number")
_momentum = _number(float, lambda v: 0 <= v <= 1, "a momentum in [0, 1]")
# more threads than a few per core only wait for each other; torch crashes on 99999
MAX_THREADS = 4 * (os.cpu_count() or 1)
_threads = _number(int, lambda v: 1 <= v <= MAX_THREADS,
                   f"a thread count from 1 to {MAX_THREADS} (4 per CPU core)")


def _file_name(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a file name, got {text!r}")
    return Path(text)


def _add_training_flags(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    d = defaults
    model = parser.add_argument_group("model")
    model.add_argument("--backend", default="numpy", choices=backends.names(),
                       help="array library to train on (default numpy; see `portable-mlp info`)")
    model.add_argument("--device", default=None,
                       help="device on the backend, e.g. cpu or cuda:0 (default: its own)")
    model.add_argument("--dtype", default=None, choices=_backend.FLOAT_DTYPES,
                       help="float dtype (default: the backend's)")
    model.add_argument("--hidden", type=_positive_int, nargs="+", default=d["hidden"],
                       metavar="N", help="hidden layer sizes (default "
                       f"{' '.join(map(str, d['hidden']))}; the article's network: 3 with "
                       "--no-bias)")
    model.add_argument("--activation", choices=ACTIVATIONS, default=d["activation"],
                       help=f"hidden activation (default {d['activation']})")
    model.add_argument("--dropout", type=_rate, default=0.0, metavar="RATE",
                       help="Dropout of this rate after each hidden layer (default 0: none)")
    model.add_argument("--init", choices=INITS, default=d["init"],
                       help=f"weight initializer (default {d['init']})")
    model.add_argument("--no-bias", action="store_true",
                       help="no bias terms, as in the article's network")
    model.add_argument("--seed", type=_non_negative_int, default=2017,
                       help="random seed of the initial weights (default 2017)")
    fit = parser.add_argument_group("training")
    fit.add_argument("--loss", choices=("mse", "cross_entropy"), default=d["loss"],
                     help=f"mse (sigmoid outputs, as in the article) or cross_entropy (softmax "
                     f"on logits); default {d['loss']}")
    fit.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default=d["optimizer"],
                     help=f"default {d['optimizer']}")
    fit.add_argument("--lr", type=_positive_float, default=d["lr"],
                     help=f"learning rate (default {d['lr']})")
    fit.add_argument("--momentum", type=_momentum, default=d["momentum"],
                     help=f"SGD momentum (default {d['momentum']})")
    fit.add_argument("--l2", type=_non_negative_float, default=0.0,
                     help="ridge penalty l2 * sum(W^2) / 2N (default 0)")
    fit.add_argument("--clip-norm", type=_positive_float, default=None, metavar="NORM",
                     help="clip the gradients to this global norm (default: no clipping)")
    fit.add_argument("--epochs", type=_positive_int, default=d["epochs"],
                     help=f"passes over the data (default {d['epochs']})")
    fit.add_argument("--batch-size", type=_positive_int, default=None,
                     help="mini-batch size (default: the whole data set)")
    fit.add_argument("--threads", type=_threads, default=None,
                     help="threads for torch and the BLAS library (default: theirs; 1 is "
                     "often faster for small networks on a busy machine)")
    out = parser.add_argument_group("output")
    out.add_argument("--quiet", action="store_true", help="print only the final result")
    out.add_argument("--plot", type=_file_name, metavar="FILE.png",
                     help="write accuracy, decision boundary and loss to this image")
    out.add_argument("--gif", type=_file_name, metavar="FILE.gif",
                     help="write an animation of training to this GIF")
    out.add_argument("--frames", type=_count, default=40,
                     help="frames in the GIF (default 40)")
    out.add_argument("--onnx", type=_file_name, metavar="FILE.onnx",
                     help="after training, write the model as ONNX (outputs: output, "
                     "probabilities, label) for onnxruntime (needs onnx: the onnx extra)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__,
                     epilog=f"The plot extra: {_install.pip_install('plot')}",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {pm.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    xor = sub.add_parser("xor", help="train the scratch_mlp article's XOR network (300 points)",
                         description=f"Train an MLP on the 300 XOR points of {ARTICLE}: by "
                         "default 2-8-2 sigmoid, MSE, SGD lr 2.0 momentum 0.9, 1000 epochs.")
    _add_training_flags(xor, XOR_DEFAULTS)
    train = sub.add_parser("train", help="train on a 2-D data set: moons, circles, spirals, xor",
                           description="Train an MLP on a seeded 2-D data set: by default "
                           "2-16-16-k tanh, softmax cross-entropy, Adam lr 0.02, 500 epochs.")
    data = train.add_argument_group("data")
    data.add_argument("--dataset", choices=DATASETS, default="moons", help="default moons")
    data.add_argument("--samples", type=_count, default=300,
                      help="points (default 300; spirals: at least one per arm)")
    data.add_argument("--noise", type=_non_negative_float, default=None,
                      help="noise (default: the data set's; not for xor)")
    data.add_argument("--classes", type=_count, default=None,
                      help="spiral arms (spirals only; default 3)")
    data.add_argument("--data-seed", type=_non_negative_int, default=0,
                      help="random seed of the data (default 0)")
    _add_training_flags(train, TRAIN_DEFAULTS)
    sub.add_parser("info", help="list each backend: installed or not, version, devices, dtype")
    return parser


# --- checks before any training --------------------------------------------------

def load_data(args: argparse.Namespace) -> tuple[Any, Any, str]:
    name, n = getattr(args, "dataset", "xor"), getattr(args, "samples", 300)
    noise, classes = getattr(args, "noise", None), getattr(args, "classes", None)
    if classes is not None and name != "spirals":
        raise ValueError("--classes applies to --dataset spirals only")
    if noise is not None and name == "xor":
        raise ValueError("--noise does not apply to xor (its points are standard normal)")
    kwargs: dict[str, Any] = {} if noise is None else {"noise": noise}
    if name == "spirals":
        kwargs["n_classes"] = arms = n_classes(args)
        if n < arms:
            raise ValueError(f"--samples {n}: spirals with {arms} arms need at least {arms} "
                             "samples (one per arm)")
    X, y = getattr(pm.datasets, name)(n, seed=getattr(args, "data_seed", 0), **kwargs)
    return X, y, f"{name.upper() if name == 'xor' else name} ({n} points)"


def n_classes(args: argparse.Namespace) -> int:
    if getattr(args, "dataset", "xor") != "spirals":
        return 2
    return 3 if args.classes is None else int(args.classes)


def check_writable(path: Path, flag: str, suffixes: tuple[str, ...]) -> None:
    """Refuse an output path before training rather than after: it must be a regular file
    that can be written, or a new name in a folder that can be written."""
    if path.suffix.lower() not in suffixes:
        raise ValueError(f"{flag} {path}: expected a file name ending in {' or '.join(suffixes)}")
    try:
        kind = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():  # writing would create the link's missing target
            raise ValueError(f"{flag} {path}: is a symbolic link to a missing file; expected "
                             "a regular file or a new file name") from None
        kind = None
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot write there ({exc.strerror})") from None
    if kind is not None and stat.S_ISDIR(kind):
        raise ValueError(f"{flag} {path}: is a directory, expected a file name")
    if kind is not None and not stat.S_ISREG(kind):  # a FIFO would block, a device...
        raise ValueError(f"{flag} {path}: is not a regular file (a pipe, socket or device); "
                         "expected a regular file or a new file name")
    # open as the picture will be opened, without truncating; O_NONBLOCK: never wait on a FIFO
    # put there since; O_EXCL: a new name stays new
    flags = os.O_WRONLY | os.O_NONBLOCK | (os.O_APPEND if kind else os.O_CREAT | os.O_EXCL)
    try:
        os.close(os.open(path, flags, 0o666))
    except OSError as exc:
        raise ValueError(f"{flag} {path}: cannot write there ({exc.strerror})") from None
    if kind is None:
        path.unlink()


def memory_needed(sizes: list[int], n_samples: int, args: argparse.Namespace,
                  itemsize: int) -> int:
    """A rough count of the bytes a run allocates, to refuse one that cannot fit (MemoryError
    halfway, or the system's out-of-memory killer) before it starts."""
    bias = 0 if args.no_bias else 1
    n_params = sum((fan_in + bias) * fan_out for fan_in, fan_out in itertools.pairwise(sizes))
    slots = 2 if args.optimizer in ("adam", "adamw") else int(args.momentum > 0)
    # drawn in float64 on the host; then params, gradients, and the update's new params
    # and slots beside the old ones
    params = n_params * (8 + itemsize * (3 + 2 * slots))
    # every epoch's forward pass over all the data (and --plot's grid) keeps each layer's
    # output, its input and, going back, its delta
    rows = max(n_samples, GRID_POINTS if args.plot or args.gif else 0)
    activations = rows * sum(sizes) * itemsize * 3
    data = n_samples * (sizes[0] + sizes[-1] + 1) * (8 + 2 * itemsize)  # host, device, shuffled
    return params + activations + data


def available_memory() -> int | None:
    """Bytes of memory free for a new program (Linux: MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(sizes: list[int], n_samples: int, args: argparse.Namespace,
                 placement: _backend.Placement) -> None:
    itemsize = 4 if placement.dtype == "float32" else 8
    need, have = memory_needed(sizes, n_samples, args, itemsize), available_memory()
    if have is not None and need > have:
        raise ValueError(f"this run needs about {_gigabytes(need)} of memory "
                         f"(network {'-'.join(map(str, sizes))}, {n_samples} samples), more "
                         f"than the {_gigabytes(have)} available; use smaller --hidden sizes"
                         f"{' or fewer --samples' if 'samples' in args else ''}")


def _gigabytes(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (NumPy and CuPy raise MemoryError; torch and
    JAX raise RuntimeError subclasses that say so)."""
    text = str(exc)
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and any(
        s in text for s in ("out of memory", "can't allocate memory", "RESOURCE_EXHAUSTED")))


def slow_note(sizes: list[int], n_samples: int, args: argparse.Namespace) -> str | None:
    """One line for a backend that cannot beat NumPy at this size, or None."""
    batch = min(n_samples, args.batch_size or n_samples)
    flop = 6 * batch * sum(a * b for a, b in itertools.pairwise(sizes))  # 3 matmuls a layer
    if not backends.get(args.backend).small_steps_cost_more or flop >= SMALL_STEP_FLOP:
        return None
    return (f"note: a step here is about {flop / 1e6:.2g} MFLOP: at this size {args.backend}'s "
            f"fixed cost per step outweighs its speed, and --backend numpy is faster")


def title_of(args: argparse.Namespace, sizes: list[int], data: str, model: pm.Sequential
             ) -> str:
    """One line that names the run: network, data, loss, optimizer and placement."""
    net = "-".join(map(str, sizes)) + f" {args.activation}" + (" no bias" if args.no_bias else "")
    opt = (f"SGD lr {args.lr:g} momentum {args.momentum:g}" if args.optimizer == "sgd"
           else f"{'AdamW' if args.optimizer == 'adamw' else 'Adam'} lr {args.lr:g}")
    extra = f", dropout {args.dropout:g}" if args.dropout else ""
    extra += f", l2 {args.l2:g}" if args.l2 else ""
    extra += f", clip norm {args.clip_norm:g}" if args.clip_norm else ""
    where = f"{model.backend} {model.placement.device} {model.placement.dtype}"
    return f"{net} MLP on {data}: {args.loss}, {opt}{extra} [{where}]"


# --- commands ------------------------------------------------------------------

class _Run:
    """One training run of ``xor`` or ``train``: data, model, trainer and what it writes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        if args.plot:
            check_writable(args.plot, "--plot", (".png", ".svg", ".pdf", ".jpg", ".jpeg"))
        if args.gif:
            check_writable(args.gif, "--gif", (".gif",))
        if args.onnx:
            check_writable(args.onnx, "--onnx", (".onnx",))
            export._onnx()  # says how to install onnx, before training
        self.plot: Any = None
        if args.plot or args.gif:
            self.plot = importlib.import_module("portable_mlp.plot")  # says how to install it
        placement = _backend.Placement.create(args.backend, args.device, args.dtype)
        n_samples = getattr(args, "samples", 300)
        self.sizes = [2, *args.hidden, n_classes(args)]
        check_memory(self.sizes, n_samples, args, placement)
        self.X, self.y, data = load_data(args)
        self.model = pm.MLP(self.sizes, activation=args.activation,
                            output="sigmoid" if args.loss == "mse" else "identity",
                            bias=not args.no_bias, seed=args.seed, backend=placement.backend,
                            device=placement.device, dtype=placement.dtype, init=args.init,
                            dropout=args.dropout)
        optimizer = {"sgd": lambda: pm.SGD(lr=args.lr, momentum=args.momentum),
                     "adam": lambda: pm.Adam(lr=args.lr),
                     "adamw": lambda: pm.AdamW(lr=args.lr)}[args.optimizer]()
        self.trainer = pm.Trainer(self.model, loss=args.loss, optimizer=optimizer, l2=args.l2,
                                  threads=args.threads,
                                  clip_norm=args.clip_norm)
        self.title = title_of(args, self.sizes, data, self.model)
        self.snapshots = None
        if args.gif:
            self.snapshots = self.plot.Snapshots(every=max(1, math.ceil(args.epochs /
                                                                        args.frames)))

    def train(self) -> dict[str, list[float]]:
        args = self.args
        if not args.quiet:
            note = slow_note(self.sizes, self.X.shape[0], args)
            if note:
                print(f"{PROG}: {note}", file=sys.stderr, flush=True)
            print(f"training {self.title}", flush=True)
        # a bar on a terminal; elsewhere a line every tenth of the run; --quiet: neither
        verbose = 0 if args.quiet else max(1, args.epochs // 10)
        callbacks = [] if self.snapshots is None else [self.snapshots]
        start = time.perf_counter()
        with warnings.catch_warnings():  # the CLI's advice on threads is --threads' help
            warnings.simplefilter("ignore", ThreadOversubscriptionWarning)
            history = self.trainer.fit(self.X, self.y, epochs=args.epochs,
                                       batch_size=args.batch_size, callbacks=callbacks,
                                       progress=not args.quiet, verbose=verbose)
        seconds = time.perf_counter() - start
        print(f"final accuracy {history['accuracy'][-1]:.3f}  loss {history['loss'][-1]:.6f}  "
              f"({len(history['loss'])} epochs in {seconds:.2f} s)")
        return history

    def write_pictures(self, history: dict[str, list[float]]) -> None:
        """Write what --plot and --gif ask for, of the model as it is now."""
        args = self.args
        if not history["loss"]:
            if args.plot or args.gif:
                print("no epoch completed: nothing to draw", file=sys.stderr)
            return
        if args.plot:
            self.plot.plot_training(self.model, history, self.X, self.y, args.plot,
                                    title=self.title)
            print(f"wrote {args.plot}")
        if self.snapshots is not None:
            self.snapshots.on_train_end(self.trainer)  # a last frame, if interrupted
            frames = self.plot.animate_training(self.model, self.snapshots, self.X, self.y,
                                                args.gif, title=self.title)
            print(f"wrote {args.gif} ({frames} frames)")

    def write_onnx(self) -> None:
        """Write what --onnx asks for: the model as it is now."""
        if self.args.onnx:
            pm.export_onnx(self.model, self.args.onnx, probabilities=True, label=True)
            print(f"wrote {self.args.onnx}")

    def diverged(self, exc: pm.DivergenceError) -> str:
        """The DivergenceError's message, with remedies worded as this command's flags."""
        args = self.args
        last = "none" if exc.last_loss is None else f"{exc.last_loss:.6g}"
        clip = (f"a smaller --clip-norm (now {args.clip_norm:g})" if args.clip_norm
                else "--clip-norm 1.0 to clip the gradients")
        fewer = ", or fewer --hidden layers" if len(args.hidden) > 1 else ""
        return (f"training diverged at step {exc.step}: the loss or a gradient became NaN or "
                f"inf (last finite loss: {last}). Try a lower --lr (now {args.lr:g}), "
                f"{clip}{fewer}")

    def interrupted(self, exc: pm.TrainingInterrupted) -> str:
        done = len(exc.history["loss"])
        where = (f"in epoch {done + 1} of {self.args.epochs} (step {exc.step}); last loss "
                 f"{exc.history['loss'][-1]:.6f}, accuracy {exc.history['accuracy'][-1]:.3f}"
                 if done else f"in epoch 1 of {self.args.epochs} (step {exc.step})")
        return f"interrupted {where}"


def run_training(args: argparse.Namespace) -> int:
    run = _Run(args)
    try:
        history = run.train()
    except pm.DivergenceError as exc:
        raise ValueError(run.diverged(exc)) from None
    except pm.TrainingInterrupted as exc:
        print(f"{PROG}: {run.interrupted(exc)}", file=sys.stderr, flush=True)
        run.write_pictures(exc.history)
        return 130
    run.write_pictures(history)
    run.write_onnx()
    return 0


# describes one backend in a process of its own (see ``describe_all``)
DESCRIBE = ("import json, sys; from portable_mlp import _backend; "
            "print(json.dumps(_backend.describe(sys.argv[1])))")


def describe_all(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``_backend.describe`` of every backend, each in its own process, all at once:
    importing torch, JAX and Dask one after the other took most of ``info``'s time. A
    library already imported (NumPy) is described here; a process that fails is done
    again here."""
    package_root = str(Path(pm.__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [package_root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    procs = {name: subprocess.Popen([sys.executable, "-c", DESCRIBE, name], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    text=True)
             for name in names if backends.get(name).library not in sys.modules}
    found = {}
    for name in names:
        proc = procs.get(name)
        out = proc.communicate(timeout=300)[0] if proc else ""
        found[name] = (json.loads(out) if proc and proc.returncode == 0
                       else _backend.describe(name))
    return found


def run_info(args: argparse.Namespace) -> int:
    rows = [("backend", "installed", "version", "default dtype", "devices", "pip extra")]
    notes = []
    described = describe_all(backends.names())
    for name in backends.names():
        found = described[name]
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
    print("(--device takes either spelling of a first device: cpu or cpu:0, cuda or cuda:0)")
    for note in notes:
        print(note)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_info(args) if args.command == "info" else run_training(args)
    except (ValueError, TypeError, ImportError, OSError, MemoryError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and not _out_of_memory(exc):
            raise
        message = " ".join(str(exc).split())
        if _out_of_memory(exc):
            message = (f"out of memory ({message}); use smaller --hidden sizes, fewer "
                       "--samples or a --batch-size")
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
