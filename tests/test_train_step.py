"""pm.train_step: the pure step (for jax.jit), the same math as Trainer.step."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend


def _host(arrays):
    return [_backend.to_host(a).copy() for a in arrays]


@pytest.mark.parametrize("optimizer", [functools.partial(pm.SGD, lr=0.5, momentum=0.9),
                                       functools.partial(pm.Adam, lr=0.05)])
def test_train_step_follows_trainer_step(backend, xor_data, optimizer):
    X, Y = xor_data
    trainer = pm.Trainer(pm.MLP([2, 3, 2], seed=1, backend=backend), optimizer=optimizer())
    model = pm.MLP([2, 3, 2], seed=1, backend=backend)
    place, opt = model.placement, optimizer()
    Xd, Yd = place.from_host(X), place.from_host(Y)
    params, state = list(model.params), opt.init_state(model.xp, model.params)
    for _ in range(4):
        expected_loss = trainer.step(Xd, Yd)
        params, state, loss, finite = pm.train_step(model, params, state, Xd, Yd, opt)
        assert bool(_backend.to_host(finite))
        assert float(_backend.to_host(loss)) == pytest.approx(
            float(_backend.to_host(expected_loss)), rel=1e-5)
    for p, q in zip(_host(params), trainer.model.host_params(), strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-5)
    assert state["step"] == 4 or int(_backend.to_host(state["step"])) == 4


def test_train_step_never_modifies_its_inputs(backend, xor_data):
    X, Y = xor_data
    model = pm.MLP([2, 3, 2], seed=1, backend=backend)
    opt = pm.SGD(lr=0.5, momentum=0.9)
    Xd, Yd = model.placement.from_host(X), model.placement.from_host(Y)
    params, state = list(model.params), opt.init_state(model.xp, model.params)
    params, state, _, _ = pm.train_step(model, params, state, Xd, Yd, opt)  # non-zero slots
    before, slots_before = _host(params), _host(state["slots"][0])
    new_params, _, _, _ = pm.train_step(model, params, state, Xd, Yd, opt)
    for p, q in zip(_host(params), before, strict=True):
        np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(_host(state["slots"][0])[0], slots_before[0])
    assert not np.array_equal(_host(new_params)[0], before[0])


def test_train_step_keeps_params_and_slots_where_not_finite(backend, xor_data):
    X, Y = xor_data
    model = pm.MLP([2, 3, 2], seed=1, backend=backend)
    opt = pm.SGD(lr=0.5, momentum=0.9)
    place = model.placement
    Yd = place.from_host(Y)
    params, state = list(model.params), opt.init_state(model.xp, model.params)
    params, state, _, _ = pm.train_step(model, params, state, place.from_host(X), Yd, opt)
    bad = X.copy()
    bad[0, 0] = np.nan
    kept, kept_slots = _host(params), _host(s for ss in state["slots"] for s in ss)
    new_params, new_state, loss, finite = pm.train_step(model, params, state,
                                                        place.from_host(bad), Yd, opt)
    assert not bool(_backend.to_host(finite))
    assert not np.isfinite(float(_backend.to_host(loss)))
    for p, q in zip(_host(new_params), kept, strict=True):
        np.testing.assert_array_equal(p, q)
    for s, t in zip(_host(s for ss in new_state["slots"] for s in ss), kept_slots, strict=True):
        np.testing.assert_array_equal(s, t)


def test_train_step_jits_whole_on_jax(xor_data):
    jax = pytest.importorskip("jax")
    X, Y = xor_data
    model = pm.MLP([2, 3, 2], seed=1, backend="jax", dtype="float32")
    trainer = pm.Trainer(pm.MLP([2, 3, 2], seed=1, backend="jax", dtype="float32"),
                         optimizer=pm.Adam(lr=0.05))
    opt = pm.Adam(lr=0.05)
    step = jax.jit(functools.partial(pm.train_step, model, optimizer=opt))
    Xd, Yd = model.placement.from_host(X), model.placement.from_host(Y)
    params, state = list(model.params), opt.init_state(model.xp, model.params)
    for _ in range(5):
        params, state, loss, finite = step(params, state, Xd, Yd)
        expected = trainer.step(Xd, Yd)
    assert bool(finite)
    assert float(loss) == pytest.approx(float(expected), rel=1e-4)
    for p, q in zip(_host(params), trainer.model.host_params(), strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-6)
    traced = step._cache_size()  # the first call's Python int step count traces apart
    for _ in range(3):
        params, state, loss, finite = step(params, state, Xd, Yd)
    assert step._cache_size() == traced  # no retrace per step
