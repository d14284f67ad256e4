"""No host synchronization inside a training step on a GPU: each step only queues work,
and the divergence flag is read back every ``check_every`` steps. Checked with CuPy's
``cupyx.allow_synchronize(False)`` and torch's ``torch.cuda.set_sync_debug_mode``;
both tests skip where no GPU is present (CI has none)."""

from __future__ import annotations

import numpy as np
import pytest

import portable_mlp as pm

STEPS = 5


def _trainer(backend: str, device: str | None, optimizer: pm.Optimizer):
    """A trainer that has taken its first step (which makes the optimizer's state and
    the divergence guard on the device), and its data placed on the model."""
    X, y = pm.datasets.xor(n=256, seed=0)
    model = pm.MLP([2, 16, 2], backend=backend, device=device, dtype="float32", seed=0)
    trainer = pm.Trainer(model, optimizer=optimizer, check_every=1000)
    Xd = model.placement.from_host(X)
    Yd = model.placement.from_host(np.asarray(pm.one_hot(y, 2)))
    trainer.step(Xd, Yd)
    return trainer, Xd, Yd


every_optimizer = pytest.mark.parametrize(
    "make", [lambda: pm.SGD(lr=0.5), lambda: pm.SGD(lr=0.5, momentum=0.9),
             lambda: pm.Adam(lr=1e-2)], ids=["sgd", "momentum", "adam"])


@every_optimizer
def test_cupy_steps_never_synchronize(make):
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("CuPy is installed but no GPU is present")
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        pytest.skip(f"CuPy is installed but no GPU is usable ({exc})")
    import cupyx

    trainer, Xd, Yd = _trainer("cupy", None, make())
    with cupyx.allow_synchronize(False):
        for _ in range(STEPS):
            trainer.step(Xd, Yd)
    trainer.check_divergence()  # the deferred read, outside
    assert trainer.steps == STEPS + 1


@every_optimizer
def test_torch_cuda_steps_never_synchronize(make):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device here")
    trainer, Xd, Yd = _trainer("torch", "cuda", make())
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(STEPS):
            trainer.step(Xd, Yd)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    trainer.check_divergence()
    assert trainer.steps == STEPS + 1
