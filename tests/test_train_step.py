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
    opt = pm.Adam(lr=0.05)
    Xd, Yd = model.placement.from_host(X), model.placement.from_host(Y)
    params, state = list(model.params), opt.init_state(model.xp, model.params)
    params, state, _, _ = pm.train_step(model, params, state, Xd, Yd, opt)  # non-zero slots
    before = _host([*params, *(s for ss in state["slots"] for s in ss), Xd, Yd])
    step_before = state["step"]
    new_params, _, _, _ = pm.train_step(model, params, state, Xd, Yd, opt, clip_norm=0.01)
    after = _host([*params, *(s for ss in state["slots"] for s in ss), Xd, Yd])
    for p, q in zip(after, before, strict=True):
        np.testing.assert_array_equal(p, q)
    assert state["step"] == step_before
    assert not np.array_equal(_host(new_params)[0], before[0])


def test_train_step_refuses_arrays_that_do_not_fit(xor_data):
    X, Y = xor_data
    model = pm.MLP([2, 3, 2], dtype="float64")
    opt = pm.SGD()
    state = opt.init_state(model.xp, model.params)
    with pytest.raises(ValueError, match=r"shapes \(n, 2\) and \(n, 2\).*Y float64 \(300, 3\)"):
        pm.train_step(model, model.params, state, X, np.ones((300, 3)), opt)
    with pytest.raises(ValueError, match="got X float32"):
        pm.train_step(model, model.params, state, X.astype(np.float32), Y, opt)


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
    opt, traces = pm.Adam(lr=0.05), []

    def counted(params, state, X, Y):
        traces.append(1)  # runs once per trace, never per compiled call
        return pm.train_step(model, params, state, X, Y, opt)

    step = jax.jit(counted)
    Xd, Yd = model.placement.from_host(X), model.placement.from_host(Y)
    params, state = list(model.params), opt.init_state(model.xp, model.params)
    state["step"] = model.xp.asarray(0)
    for _ in range(5):
        params, state, loss, finite = step(params, state, Xd, Yd)
        expected = trainer.step(Xd, Yd)
    assert bool(finite) and len(traces) == 1
    assert float(loss) == pytest.approx(float(expected), rel=1e-4)
    for p, q in zip(_host(params), trainer.model.host_params(), strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-4, atol=1e-6)


def test_a_schedule_under_jit_says_what_to_do():
    jax = pytest.importorskip("jax")
    model = pm.MLP([2, 3, 2], backend="jax", dtype="float32")
    opt = pm.SGD(schedule=pm.optim.cosine(steps=10))
    X = model.placement.from_host(np.ones((4, 2)))
    state = opt.init_state(model.xp, model.params)
    step = jax.jit(functools.partial(pm.train_step, model, optimizer=opt))
    with pytest.raises(TypeError, match="needs the step count as a Python int"):
        step(list(model.params), state, X, X)
