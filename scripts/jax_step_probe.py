"""What a compiled JAX step of ``fit`` costs beyond a hand-written one, and a scan beyond a
loop. On the ``mnist`` fit configuration (784-512-10 relu, cross-entropy, Adam 1e-3, batch
256, float32), interleaved rounds, medians:

- one step under ``jax.jit``: ``pm``'s guarded step (the update kept only where it is
  finite), the same step without the guard, and a step written by hand (``jax.grad``,
  Adam as optax writes it);
- one epoch of 32 steps: ``Trainer.fit`` (one ``lax.scan``), a loop of jitted hand steps
  (the benchmark's hand loop) and a ``lax.scan`` over the hand step. ``fit``'s epoch is
  the difference of ``fit(epochs=4)`` and ``fit(epochs=1)`` over 3; what ``fit(epochs=1)``
  takes beyond one epoch is its per-call setup (checking, casting and placing the data).

    python scripts/jax_step_probe.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import portable_mlp as pm
from benchmarks import _fit_loops as fl
from portable_mlp import steps


def _hand_step(config: fl.FitConfig) -> Callable[..., Any]:
    def loss_fn(params: list[Any], X: Any, Y: Any) -> Any:
        hidden = jax.nn.relu(X @ params[0] + params[1])
        out = hidden @ params[2] + params[3]
        return -jnp.sum(Y * jax.nn.log_softmax(out, axis=1)) / X.shape[0]

    def step(params: list[Any], opt: Any, X: Any, Y: Any) -> Any:
        loss, grads = jax.value_and_grad(loss_fn)(params, X, Y)
        params, opt = fl._jax_update(config, params, grads, opt)
        return params, opt, loss

    return step


def _timed(runs: dict[str, Callable[[], Any]], rounds: int, per_call: int) -> dict[str, float]:
    for run in runs.values():
        jax.block_until_ready(run())
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            jax.block_until_ready(run())
            times[name].append((time.perf_counter() - start) / per_call)
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    config = fl.FIT_CONFIGS["mnist"]
    X, Y = (a.astype(np.float32) for a in fl.fit_data(config))
    model = pm.MLP(list(config.sizes), activation="relu", output="identity", seed=0,
                   backend="jax", dtype="float32")
    opt = pm.Adam(lr=config.lr)
    trainer = pm.Trainer(model, loss="cross_entropy", optimizer=opt)
    settings = steps.Settings(model, opt, trainer._loss_fn, 0.0, None)
    params = model.params
    state = {"step": jnp.asarray(0), "slots": opt.init_state(jnp, params)["slots"]}
    hand_opt = (jnp.asarray(0), [jnp.zeros_like(p) for p in params],
                [jnp.zeros_like(p) for p in params])
    Xd, Yd = jnp.asarray(X), jnp.asarray(Y)
    Xb, Yb = Xd[:256], Yd[:256]
    labels = model.classes_of(Yb)

    def unguarded(params: list[Any], state: dict[str, Any]) -> Any:
        loss, grads, _, out = steps.gradients(model, params, Xb, Yb, settings.loss_fn, 0.0,
                                              None, None)
        new_params, new_state = opt.update(jnp, params, grads, state, config.lr)
        return new_params, new_state, loss, steps.weighted_hits(model, out, labels, None)

    guarded = jax.jit(functools.partial(steps.guarded_step, settings))
    plain = jax.jit(unguarded)
    hand = _hand_step(config)
    hand_jit = jax.jit(hand)
    guard = steps.fresh_guard(model.placement)
    one = _timed({"pm guarded step": lambda: guarded(params, state, guard, Xb, Yb, labels,
                                                      None, config.lr),
                  "pm step, no guard": lambda: plain(params, state),
                  "hand step": lambda: hand_jit(params, hand_opt, Xb, Yb)}, rounds, 1)

    # the data and the row indices as arguments, as fit and the benchmark's hand loop pass them
    rows = np.random.default_rng(0).permutation(len(X)).reshape(-1, 256).astype(np.int32)
    gathered = jax.jit(lambda p, o, X, Y, r: hand(p, o, X[r], Y[r]))

    @jax.jit
    def hand_scan(p: list[Any], o: Any, X: Any, Y: Any, rows: Any) -> Any:
        return lax.scan(lambda c, r: (hand(*c, X[r], Y[r])[:2], None), (p, o), rows)[0]

    def hand_loop() -> Any:
        p, o = params, hand_opt
        for r in rows:
            p, o, _ = gathered(p, o, Xd, Yd, r)
        return p

    def fit(epochs: int) -> Callable[[], Any]:
        return lambda: trainer.fit(X, Y, epochs=epochs, batch_size=256, progress=False)["loss"]

    epoch = _timed({"fit(epochs=1)": fit(1), "fit(epochs=4)": fit(4),
                    "hand loop epoch": hand_loop,
                    "hand scan epoch": lambda: hand_scan(params, hand_opt, Xd, Yd, rows)},
                   max(3, rounds // 3), 1)
    fit_epoch = (epoch.pop("fit(epochs=4)") - epoch["fit(epochs=1)"]) / 3
    epoch["fit's setup per call"] = epoch.pop("fit(epochs=1)") - fit_epoch
    epoch["pm fit epoch"] = fit_epoch
    for name, seconds in [*one.items(), *epoch.items()]:
        print(f"{name:22s} {seconds * 1e3:9.2f} ms")


if __name__ == "__main__":
    main()
