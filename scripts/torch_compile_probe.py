"""Is ``torch.compile`` of the pure step worth it on CPU? Times the guarded step eager and
compiled on a digits-sized batch (64-100-10 relu, cross-entropy, Adam, batch 200, 1 thread).

    python scripts/torch_compile_probe.py

Measured once here (2026-11-29, 2-core VM under load): 122 s to compile, then 10.0 ms a
step against 4.1 ms eager; so Trainer does not use it.
"""

from __future__ import annotations

import functools
import time

import numpy as np
import torch
from sklearn.datasets import load_digits

import portable_mlp as pm
from portable_mlp import steps


def main() -> None:
    torch.set_num_threads(1)
    X, y = load_digits(return_X_y=True)
    model = pm.MLP([64, 100, 10], activation="relu", output="identity", seed=0,
                   backend="torch", dtype="float32")
    trainer = pm.Trainer(model, loss="cross_entropy", optimizer=pm.Adam(lr=1e-3))
    Xd = model.placement.from_host(X[:200] / 16.0)
    Yd = model.placement.from_host(np.asarray(pm.one_hot(y[:200], 10)))
    settings = steps.Settings(model, trainer.optimizer, trainer._loss_fn, 0.0, None)
    state = trainer.optimizer.ensure_state(model.xp, model.params)
    guard = steps.fresh_guard(model.placement)
    eager = functools.partial(steps.guarded_step, settings)
    labels = model.classes_of(Yd)
    start = time.perf_counter()
    compiled = torch.compile(eager)
    compiled(model.params, state, guard, Xd, Yd, labels, None, 1e-3)
    print(f"compile: {time.perf_counter() - start:.1f} s")
    for name, step in (("eager", eager), ("compiled", compiled)) * 2:
        params = [p.clone() for p in model.params]
        st = {"step": 0, "slots": [[s.clone() for s in ss] for ss in state["slots"]]}
        start = time.perf_counter()
        for k in range(300):
            params, st, guard, _, _ = step(params, st, guard, Xd, Yd, labels, None, 1e-3)
            st = {"step": k + 1, "slots": st["slots"]}
        print(f"{name}: {(time.perf_counter() - start) / 300 * 1e6:.0f} us/step")


if __name__ == "__main__":
    main()
