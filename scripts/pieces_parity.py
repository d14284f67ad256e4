"""The figures of docs/pieces.md: dropout masks and a dropout fit across backends, and AdamW
against torch.optim.AdamW.

    python scripts/pieces_parity.py

1. Masks: ``counter_rng.uniform_bits`` of a (512, 512) array, 10 steps x 2 layers, on
   each CPU backend, compared bit for bit with NumPy's.
2. Trajectory: a float64 fit with two Dropout(0.3) pieces, GELU and LayerNorm (3-32-32-2,
   cross-entropy, AdamW, batch 16, 5 epochs of 200 rows, shuffled) on each backend (JAX:
   compiled epochs; dask: its graph path, rows in blocks of 50, unshuffled, against
   NumPy unshuffled); the largest |difference| of the parameters and of the epoch losses
   from NumPy's.
3. AdamW: 100 steps of the same gradients through ``pm.AdamW`` and
   ``torch.optim.AdamW`` (float64); the largest |difference| of the parameters.
"""

from __future__ import annotations

import numpy as np

import portable_mlp as pm
from portable_mlp import _backend, counter_rng

BACKENDS = ("numpy", "array_api_strict", "torch", "jax", "dask")


def _available() -> list[str]:
    names = []
    for name in BACKENDS:
        try:
            _backend.namespace(name)
        except _backend.BackendUnavailable:
            continue
        names.append(name)
    if "jax" in names:
        import jax

        jax.config.update("jax_enable_x64", True)
    return names


def masks(name: str) -> bool:
    xp = _backend.namespace(name)
    for step in range(10):
        for layer in (2, 5):
            key = counter_rng.Key(step)
            got = _backend.to_host(counter_rng.uniform_bits(xp, (512, 512), 0, layer, key))
            if not np.array_equal(got, counter_rng.uniform_bits(np, (512, 512), 0, layer, key)):
                return False
    return True


def fit(name: str, shuffle: bool = True, blocks: bool = False
        ) -> tuple[list[np.ndarray], list[float]]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    Y = np.eye(2)[(X[:, 0] * X[:, 1] > 0).astype(int)]
    if blocks:
        import dask.array as da

        X = da.from_array(X, chunks=(50, 3))
    model = pm.Sequential([pm.Linear(3, 32), pm.GELU(), pm.Dropout(0.3), pm.Linear(32, 32),
                           pm.LayerNorm(32), pm.SiLU(), pm.Dropout(0.3), pm.Linear(32, 2),
                           pm.Identity()], seed=1, backend=name, dtype="float64")
    history = pm.fit(model, X, Y, loss="cross_entropy", optimizer=pm.AdamW(lr=0.01),
                     epochs=5, batch_size=16, shuffle=shuffle, progress=False)
    return model.host_params(), history["loss"]


def difference(a: tuple[list[np.ndarray], list[float]],
               b: tuple[list[np.ndarray], list[float]]) -> tuple[float, float]:
    params = max(float(np.max(np.abs(x - y))) for x, y in zip(a[0], b[0], strict=True))
    return params, float(np.max(np.abs(np.subtract(a[1], b[1]))))


def adamw() -> float:
    import torch

    rng = np.random.default_rng(0)
    p = rng.standard_normal((64, 32))
    grads = [rng.standard_normal((64, 32)) for _ in range(100)]
    opt = pm.AdamW(lr=1e-2, weight_decay=0.1)
    params, state = [p.copy()], opt.init_state(np, [p])
    tp = torch.tensor(p, requires_grad=True)
    topt = torch.optim.AdamW([tp], lr=1e-2, weight_decay=0.1)
    for g in grads:
        params, state = opt.update(np, params, [g.copy()], state)
        tp.grad = torch.tensor(g)
        topt.step()
    return float(np.max(np.abs(params[0] - tp.detach().numpy())))


def main() -> None:
    names = _available()
    print("1. masks bit-identical to NumPy's (512x512, 10 steps x 2 layers):")
    for name in names:
        print(f"   {name:<17} {masks(name)}")
    print("2. dropout fit, float64: max |param - NumPy's|, max |epoch loss - NumPy's|:")
    ref = fit("numpy")
    for name in names:
        params, losses = difference(fit(name), ref)
        print(f"   {name:<17} {params:.2e}  {losses:.2e}")
    if "dask" in names:  # dask shuffles within blocks: both in order here
        params, losses = difference(fit("dask", shuffle=False, blocks=True),
                                    fit("numpy", shuffle=False))
        print(f"   {'dask, 4 blocks':<17} {params:.2e}  {losses:.2e}  (unshuffled)")
    print(f"3. AdamW vs torch.optim.AdamW, 100 steps, float64: max |diff| {adamw():.2e}")


if __name__ == "__main__":
    main()
