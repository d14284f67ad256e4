"""Where a NumPy ``Trainer.step`` spends its time, from a profile.

    python -m benchmarks.profile_step                  # mnist, wide, deep
    python -m benchmarks.profile_step --configs deep --steps 200

cProfile times ``Trainer.step`` on a configuration of the benchmark report and
groups the time by what the step does. The NumPy backend's operations are named
functions (``_backend.Ops``), so each group is one place in the code: the matmuls,
the sigmoid forward and backward, the loss, the optimizer's update, the check that the
update is finite and NumPy's error-state contexts. What remains is Python: calls,
closures, checks. The GEMM floor (the step's matmuls alone, as the report times it) is
printed beside the matmul group.
On ``xor`` the profiler's own cost per call is as large as the work: ``--pieces``
times the step's parts one by one with ``timeit`` instead (the best of repeats), beside
the whole step and the report's hand-written step::

    python -m benchmarks.profile_step --configs xor --pieces
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import pstats
import time
import timeit
from collections.abc import Callable

import numpy as np

from benchmarks import _workloads as w
from portable_mlp import grad, steps, validation

# group -> the functions whose own time it sums: (file suffix, name, lines or None)
GROUPS: dict[str, list[tuple[str, str, range | None]]] = {
    "matmuls (ndarray.dot or @)": [("numpy.py", "numpy_matmul", None),
                                   ("~", "<method 'dot' of 'numpy.ndarray' objects>", None)],
    "sigmoid forward (4 passes, 1 buffer)": [("numpy.py", "numpy_sigmoid", None)],
    "loss: mse (delta, its sum of squares, scale)": [("losses.py", "mse", None)],
    "sigmoid backward (2 passes, in place)": [("standard.py", "standard_sigmoid_backward",
                                               None)],
    "SGD update (2 passes, into a new array)": [("rules.py", "sgd", None),
                                                ("_backend.py", "axpy_into", None)],
    "finite check of the update (np.vdot)": [("steps.py", "all_finite_on_host", None),
                                             ("numpy.py", "numpy_sum_of_squares", None)],
    "errstate (quiet, overflow_is_fine)": [("_ufunc_config.py", "__enter__", None),
                                           ("_ufunc_config.py", "__exit__", None)],
}


def profile(config_name: str, steps: int) -> tuple[dict[str, float], float, float]:
    """Seconds per step in each group, the step's total, and the floor's time."""
    work = w.build("numpy", w.CONFIGS[config_name])
    step, floor = work.steps["portable_mlp"], work.steps["floor"]
    for _ in range(3):  # warm up (allocator, BLAS threads)
        step()
        floor()
    start = time.perf_counter()
    for _ in range(steps):
        floor()
    floor_s = (time.perf_counter() - start) / steps
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(tottime for _, _, tottime, _, _ in stats.values()) / steps
    groups = dict.fromkeys(GROUPS, 0.0)
    for (filename, line, function), (_, _, tottime, _, _) in stats.items():
        for name, matchers in GROUPS.items():
            if any(function == wanted and filename.endswith(suffix)
                   and (lines is None or line in lines) for suffix, wanted, lines in matchers):
                groups[name] += tottime / steps
    return groups, total, floor_s


FIT_EPOCHS = 50  # epochs of the timed fit (full batch: one step each)


def pieces(config_name: str) -> dict[str, float]:
    """Seconds of each part of a NumPy ``Trainer.step``, timed alone (best of repeats),
    and of one full-batch epoch of ``fit`` (one step, with ``fit``'s lazy check: the
    argument checks once per fit, one error-state context and one finite check per
    epoch, the update into spare arrays)."""
    work = w.build("numpy", w.CONFIGS[config_name])
    trainer, X, Y = w._trainer(w.CONFIGS[config_name], "numpy", None)
    model, optimizer = trainer.model, trainer.optimizer
    placement = model.placement
    trainer.step(X, Y)  # the optimizer's state exists from here on
    state = optimizer.state
    spares = ([p.copy() for p in model.params], [[s.copy() for s in ss] for ss in state["slots"]])
    fitted, X_host, Y_host = w._trainer(w.CONFIGS[config_name], "numpy", None)
    X_host, Y_host = np.asarray(X_host), np.asarray(Y_host)
    _, grads, _ = grad.loss_grads_and_output(model, model.params, X, Y, trainer._loss_fn, 0.0)

    def quiet() -> None:
        with placement.quiet():
            pass

    parts: dict[str, Callable[[], object]] = {
        "argument checks (validation.batch)": lambda: validation.batch(model, X, Y),
        "one errstate context (placement.quiet)": quiet,
        "forward pass (Sequential.forward)": lambda: model.forward(X),
        "loss and gradients (forward included)": lambda: grad.loss_grads_and_output(
            model, model.params, X, Y, trainer._loss_fn, 0.0),
        "update (new arrays; copies the grads it eats)": lambda: optimizer.update(
            np, model.params, [g.copy() for g in grads], state),
        "update into spares (fit's; copies the grads)": lambda: optimizer.update(
            np, model.params, [g.copy() for g in grads], state, out=spares),
        "finite check of the update": lambda: steps.all_finite_on_host(
            placement, model.params, state["slots"]),
        "the whole Trainer.step": lambda: trainer.step(X, Y),
        "the report's hand-written step": work.steps["hand"],
    }
    number = max(1, int(0.05 / _once(parts["the whole Trainer.step"])))
    timed = {name: min(timeit.repeat(part, number=number, repeat=7)) / number
             for name, part in parts.items()}
    fit = functools.partial(fitted.fit, X_host, Y_host, epochs=FIT_EPOCHS, progress=False)
    timed[f"one epoch of fit (of {FIT_EPOCHS}, full batch)"] = min(
        timeit.repeat(fit, number=1, repeat=7)) / FIT_EPOCHS
    return timed


def _once(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="mnist,wide,deep")
    parser.add_argument("--steps", type=int, default=50, help="profiled steps (default 50)")
    parser.add_argument("--pieces", action="store_true",
                        help="time the step's parts one by one (timeit) instead of profiling")
    args = parser.parse_args(argv)
    for config in args.configs.split(","):
        if args.pieces:
            print(f"\nnumpy {config}: parts of a Trainer.step, each timed alone")
            for name, seconds in pieces(config).items():
                print(f"  {name:46s} {seconds * 1e6:9.2f} us")
            continue
        groups, total, floor_s = profile(config, args.steps)
        print(f"\nnumpy {config}: step {total * 1e3:.3f} ms under the profiler, "
              f"GEMM floor {floor_s * 1e3:.3f} ms (timed apart)")
        rest = total - sum(groups.values())
        for name, seconds in [*groups.items(), ("Python and the rest", rest)]:
            print(f"  {name:46s} {seconds * 1e3:9.3f} ms  {100 * seconds / total:5.1f}%")


if __name__ == "__main__":
    main()
