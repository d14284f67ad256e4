"""What dropout costs a training step: the ``mnist`` configuration with Dropout(0.2) after
each hidden layer, side by side with the same step without it, on NumPy.

    python -m benchmarks.dropout                      # mnist, 7 rounds of 20 steps
    python -m benchmarks.dropout --rounds 3 --steps 10
    OMP_NUM_THREADS=1 python -m benchmarks.dropout --clock cpu   # on a shared machine

Rows, timed interleaved in one run (round-robin, each round the same steps of every
row; the figure is the median over rounds of seconds per step):

- ``pm``: ``Trainer.step`` of ``benchmarks._workloads``' mnist network (sigmoid, MSE,
  SGD), without dropout, and ``pm dropout``: the same with ``MLP(dropout=0.2)``;
- ``hand`` and ``hand dropout``: the hand-written NumPy step of the benchmark report
  (``seed_style_step``), and the same step with the library's masks applied by hand
  (``portable_mlp.counter_rng``, the same bits as the library's: the hand step pays
  for drawing them too);
- ``torch`` and ``torch dropout``: ``torch.nn.Sequential`` of the same network on the
  CPU, ``loss.backward()`` and ``torch.optim.SGD``, without and with ``nn.Dropout(0.2)``
  (torch's own generator).

The ratios printed are each ``dropout`` row over its own row without dropout.
``--clock cpu`` times the process's CPU time instead of the wall clock: on a machine
that others load, with one BLAS thread, it counts this process's work only.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import portable_mlp as pm
from benchmarks import _workloads as w
from portable_mlp import counter_rng

RATE = 0.2


def network(config: w.Config, dropout: float) -> pm.Sequential:
    """The benchmark report's network, with ``Dropout(dropout)`` after each hidden layer."""
    return pm.MLP(list(config.sizes), activation="sigmoid", output="sigmoid", bias=False,
                  seed=2017, dtype=config.dtype, dropout=dropout)


def pm_step(model: pm.Sequential, config: w.Config) -> Callable[[], Any]:
    X, Y = w.data(config)
    Xd, Yd = model.placement.from_host(X), model.placement.from_host(Y)
    trainer = pm.Trainer(model, loss="mse", optimizer=pm.SGD(lr=config.lr))
    return lambda: trainer.step(Xd, Yd)


def hand_step(ws: list[np.ndarray], config: w.Config, dropout: float) -> Callable[[], Any]:
    """``seed_style_step`` on the weights ``ws`` (updated in place) with the library's
    masks after each hidden sigmoid: the same steps as ``pm_step`` of ``network``."""
    dtype = np.dtype(config.dtype)
    X, Y = (a.astype(dtype) for a in w.data(config))
    lr, n, step = config.lr, config.batch, itertools.count()
    threshold, scale = counter_rng.threshold(dropout), dtype.type(1.0 / (1.0 - dropout))

    def run() -> Any:
        key = counter_rng.Key(next(step))
        acts, sigmoids, masks = [X], [X], []
        for i, wi in enumerate(ws):
            a = 1.0 / (1.0 + np.exp(-(acts[-1] @ wi)))
            sigmoids.append(a)
            if dropout and i < len(ws) - 1:
                # pm.MLP(seed=2017)'s Dropout: seed 2017, piece 2 and 5
                bits = counter_rng.uniform_bits(np, a.shape, 2017, 3 * i + 2, key)
                mask = (bits >= threshold).astype(dtype)
                mask *= scale
                masks.append(mask)
                a = a * mask
            acts.append(a)
        out = acts[-1]
        loss = np.sum((out - Y) ** 2) / (2.0 * n)
        delta = (out - Y) * out * (1.0 - out) / n
        for i in range(len(ws) - 1, -1, -1):
            g = acts[i].T @ delta
            if i:
                delta = delta @ ws[i].T
                if dropout:
                    delta *= masks[i - 1]
                delta *= sigmoids[i] * (1.0 - sigmoids[i])
            ws[i] -= lr * g
        return loss

    return run


def torch_step(config: w.Config, dropout: float) -> Callable[[], Any]:
    import torch

    dtype = getattr(torch, config.dtype)
    mods: list[Any] = []
    for i, (a, b) in enumerate(itertools.pairwise(config.sizes)):
        mods += [torch.nn.Linear(a, b, bias=False, dtype=dtype), torch.nn.Sigmoid()]
        if dropout and i < len(config.sizes) - 2:
            mods.append(torch.nn.Dropout(dropout))
    net = torch.nn.Sequential(*mods).train()
    opt = torch.optim.SGD(net.parameters(), lr=config.lr)
    X, Y = (torch.as_tensor(a, dtype=dtype) for a in w.data(config))

    def run() -> Any:
        opt.zero_grad()
        loss = ((net(X) - Y) ** 2).sum() / (2.0 * config.batch)
        loss.backward()
        opt.step()
        return loss

    return run


def measure(config: w.Config, rounds: int, steps: int,
            clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    def hand(dropout: float) -> Callable[[], Any]:
        return hand_step([p.copy() for p in network(config, 0.0).params], config, dropout)

    rows = {"pm": pm_step(network(config, 0.0), config),
            "pm dropout": pm_step(network(config, RATE), config),
            "hand": hand(0.0), "hand dropout": hand(RATE)}
    if importlib.util.find_spec("torch") is not None:  # its rows where torch is installed
        rows |= {"torch": torch_step(config, 0.0), "torch dropout": torch_step(config, RATE)}
    for fn in rows.values():  # warm up
        fn()
    times: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(rounds):
        for name, fn in rows.items():
            start = clock()
            for _ in range(steps):
                fn()
            times[name].append((clock() - start) / steps)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="mnist", choices=w.CPU_CONFIGS)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    args = parser.parse_args(argv)
    config = w.CONFIGS[args.config]
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    med = measure(config, args.rounds, args.steps, clock)
    print(f"{config.name} {config.sizes} batch {config.batch} {config.dtype}, dropout {RATE}"
          f" after each hidden layer; median of {args.rounds} rounds x {args.steps} steps, "
          f"{args.clock} clock")
    for name, seconds in med.items():
        print(f"  {name:<14} {seconds * 1e3:8.2f} ms/step")
    for base in (b for b in ("pm", "hand", "torch") if b in med):
        print(f"  {base + ' dropout / ' + base:<24} {med[base + ' dropout'] / med[base]:.3f}x")
    print(f"  pm dropout / hand dropout {med['pm dropout'] / med['hand dropout']:.3f}x")


if __name__ == "__main__":
    main()
