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
from hypothesis import settings

import portable_mlp as pm
from portable_mlp import _backend

# CI runs hypothesis derandomized: the same examples every run, so a red run means a change
# broke something, not that this run drew a new example (those are found locally)
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

REQUESTED = [b for b in os.environ.get("PORTABLE_MLP_BACKEND", "").split(",") if b]
ALL = list(pm.BACKENDS)


def _setup(name: str) -> None:
    """Per-backend setup: JAX's float64 (x64) mode for the float64 tests; torch's default
    device from PORTABLE_MLP_TORCH_DEVICE (e.g. cuda: scripts/gpu_check.sh)."""
    if name == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    if name == "torch" and os.environ.get("PORTABLE_MLP_TORCH_DEVICE"):
        import torch

        torch.set_default_device(os.environ["PORTABLE_MLP_TORCH_DEVICE"])


def _missing(name: str) -> str | None:
    """Why the backend's library cannot be imported, or None."""
    try:
        _backend.namespace(name)
    except _backend.BackendUnavailable as exc:
        return str(exc)
    return None


def _no_gpu(name: str) -> str | None:
    """Why an installed GPU backend cannot run here (no device), or None."""
    if name != "cupy":
        return None
    import cupy

    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy is installed but no GPU is present"
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        return f"CuPy is installed but no GPU is usable ({exc})"
    return None


@pytest.fixture(params=REQUESTED or ALL)
def backend(request: pytest.FixtureRequest) -> str:
    """A requested backend that fails to import fails; one that is absent, or a GPU
    backend on a machine without a GPU, skips with the reason."""
    name = request.param
    missing = _missing(name)
    if missing and name in REQUESTED:
        pytest.fail(f"backend {name!r} was requested but cannot be imported: {missing}")
    why = missing or _no_gpu(name)
    if why:
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
