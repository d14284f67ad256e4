"""One ``backend`` / ``xp`` fixture over every backend.

PORTABLE_MLP_BACKEND (comma-separated names) selects backends: a requested
backend that cannot be imported fails the run. Without it, every installed
CPU backend runs and absent ones skip with the reason.
"""

from __future__ import annotations

import os

# scikit-learn's array API dispatch needs this set before scipy is imported
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend

REQUESTED = [b for b in os.environ.get("PORTABLE_MLP_BACKEND", "").split(",") if b]
ALL = list(pm.BACKENDS)


def _setup(name: str) -> None:
    """Per-backend setup: JAX's float64 (x64) mode for the float64 tests."""
    if name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)


def _available(name: str) -> tuple[bool, str]:
    try:
        _backend.namespace(name)
    except _backend.BackendUnavailable as exc:
        return False, str(exc)
    if name == "cupy":
        import cupy

        try:
            if cupy.cuda.runtime.getDeviceCount() < 1:
                return False, "CuPy is installed but no GPU is present"
        except cupy.cuda.runtime.CUDARuntimeError as exc:
            return False, f"CuPy is installed but no GPU is usable ({exc})"
    return True, ""


@pytest.fixture(params=REQUESTED or ALL)
def backend(request: pytest.FixtureRequest) -> str:
    name = request.param
    ok, why = _available(name)
    if not ok:
        if name in REQUESTED and name != "cupy":
            pytest.fail(f"backend {name!r} was requested but cannot be used: {why}")
        pytest.skip(why)
    _setup(name)
    return name


@pytest.fixture
def xp(backend: str):
    return _backend.namespace(backend)


@pytest.fixture
def xor_data() -> tuple[np.ndarray, np.ndarray]:
    X, y = pm.datasets.xor(n=300, seed=0)
    return X, np.asarray(pm.one_hot(y, 2))
