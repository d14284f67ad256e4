"""Trainer.step on arrays already placed on the model (the benchmarks' hot path)."""

from __future__ import annotations

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend


def test_step_on_placed_arrays_matches_host_data(backend, xor_data):
    X, Y = xor_data
    placed = pm.Trainer(pm.MLP([2, 3, 2], bias=False, seed=2017, backend=backend),
                        optimizer=pm.SGD(lr=0.5))
    host = pm.Trainer(pm.MLP([2, 3, 2], bias=False, seed=2017, backend=backend),
                      optimizer=pm.SGD(lr=0.5))
    Xd = placed.model.placement.from_host(X)
    Yd = placed.model.placement.from_host(Y)
    assert placed.model.placement.owns(Xd)
    for _ in range(3):
        a, b = placed.step(Xd, Yd), host.step(X, Y)
    assert float(_backend.to_host(a)) == pytest.approx(float(_backend.to_host(b)), rel=1e-6)
    for p, q in zip(placed.model.host_params(), host.model.host_params(), strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-6)


def test_step_on_placed_arrays_still_checks_shapes(backend, xor_data):
    X, Y = xor_data
    trainer = pm.Trainer(pm.MLP([2, 3, 2], seed=0, backend=backend))
    Xd = trainer.model.placement.from_host(X)
    with pytest.raises(ValueError, match="columns"):
        trainer.step(Xd, trainer.model.placement.from_host(np.ones((300, 3))))
    with pytest.raises(ValueError, match="different lengths"):
        trainer.step(Xd, trainer.model.placement.from_host(Y[:10]))
