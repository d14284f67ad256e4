"""How far a shuffled float64 ``fit`` on marray and on ndonnx lands from NumPy's.

    python scripts/generic_parity.py

Prints, per library, the largest absolute difference of the trained parameters and of the
predictions from NumPy's (the figures in docs/backends.md); needs ``pip install .[generic]``.
"""

from __future__ import annotations

import numpy as np

import portable_mlp as pm
from portable_mlp import _backend


def trained(backend: str, X: np.ndarray, Y: np.ndarray) -> pm.Sequential:
    model = pm.MLP([2, 16, 3], activation="tanh", seed=3, backend=backend, dtype="float64")
    pm.fit(model, X, Y, optimizer="adam", epochs=5, batch_size=32, shuffle=True, seed=5,
           progress=False)
    return model


def main() -> None:
    X, y = pm.datasets.spirals(n=96, n_classes=3, seed=0)
    Y = np.asarray(pm.one_hot(y, 3))
    reference = trained("numpy", X, Y)
    for name in ("marray", "ndonnx"):
        model = trained(name, X, Y)
        params = max(float(np.max(np.abs(_backend.to_host(p) - q)))
                     for p, q in zip(model.params, reference.params))
        out = float(np.max(np.abs(_backend.to_host(model.predict(X)) - reference.predict(X))))
        print(f"{name}: parameters {params:.2e}, predictions {out:.2e} "
              f"({len(reference.params)} arrays, 15 shuffled Adam steps)")


if __name__ == "__main__":
    main()
