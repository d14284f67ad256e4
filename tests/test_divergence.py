"""Divergence: DivergenceError with the scratch_mlp article's advice; the last finite state
is kept."""

from __future__ import annotations

import os

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings


def _diverging(backend="numpy", deferred=None, check_every=100):
    X, y = pm.datasets.xor(n=60, seed=0)
    model = pm.MLP([2, 8, 2], activation="identity", output="identity", seed=0,
                   backend=backend, dtype="float64")
    if deferred is not None:  # force the GPU-style path (skip on device, read back every k)
        model.placement.__dict__["host_reads_are_free"] = not deferred
    trainer = pm.Trainer(model, optimizer=pm.SGD(lr=0.2, momentum=0.5),
                         check_every=check_every)
    return trainer, X * 4, np.asarray(pm.one_hot(y, 2))


def _state(trainer):
    params = [p.copy() for p in trainer.model.host_params()]
    slots = [[_backend.to_host(s).copy() for s in ss] for ss in trainer.optimizer.state["slots"]]
    return params, slots, trainer.optimizer.state["step"], trainer.steps


def _replay(steps, backend="numpy"):
    trainer, X, Y = _diverging(backend)
    trainer.fit(X, Y, epochs=steps, progress=False)
    return trainer


def _assert_state_equal(a, b):
    (pa, sa, ta, na), (pb, sb, tb, nb) = a, b
    assert (ta, na) == (tb, nb)
    for x, y in zip(pa, pb, strict=True):
        np.testing.assert_array_equal(x, y)
    for xs, ys in zip(sa, sb, strict=True):
        for x, y in zip(xs, ys, strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("deferred", [False, True], ids=["read-every-step", "deferred"])
def test_divergence_error_keeps_the_last_finite_state(deferred):
    trainer, X, Y = _diverging(deferred=deferred)
    with pytest.raises(pm.DivergenceError) as info:
        trainer.fit(X, Y, epochs=500, progress=False)
    exc = info.value
    message = str(exc)
    assert f"diverged at step {exc.step}" in message
    for remedy in ("lower the learning rate", "clip_norm", "fewer layers"):
        assert remedy in message
    assert exc.last_loss is not None and np.isfinite(exc.last_loss)
    assert f"{exc.last_loss:.6g}" in message
    assert len(exc.history["loss"]) == exc.step - 1  # one full-batch step per epoch
    state = _state(trainer)
    assert all(np.isfinite(p).all() for p in state[0])
    _assert_state_equal(state, _state(_replay(exc.step - 1)))


def test_deferred_and_per_step_checks_agree():
    results = []
    for deferred in (False, True):
        trainer, X, Y = _diverging(deferred=deferred, check_every=7)
        with pytest.raises(pm.DivergenceError) as info:
            trainer.fit(X, Y, epochs=500, progress=False)
        results.append((info.value.step, info.value.last_loss, _state(trainer)))
    (step0, loss0, state0), (step1, loss1, state1) = results
    assert (step0, loss0) == (step1, loss1)
    _assert_state_equal(state0, state1)


def test_divergence_on_every_backend(backend):
    trainer, X, Y = _diverging(backend)
    with pytest.raises(pm.DivergenceError) as info:
        trainer.fit(X, Y, epochs=12, progress=False)
    params = trainer.model.host_params()
    assert all(np.isfinite(p).all() for p in params)
    assert trainer.steps == info.value.step - 1 == trainer.optimizer.state["step"]


def test_bare_steps_raise_on_the_first_non_finite_loss():
    trainer, X, Y = _diverging(deferred=False)
    losses = []
    with pytest.raises(pm.DivergenceError) as info:
        for _ in range(500):
            losses.append(float(trainer.step(X, Y)))
    assert info.value.step == len(losses) + 1
    assert info.value.last_loss == losses[-1]


def test_training_can_go_on_after_divergence_with_a_lower_learning_rate():
    trainer, X, Y = _diverging(deferred=True)
    start = [p.copy() for p in trainer.model.host_params()]
    with pytest.raises(pm.DivergenceError):
        trainer.fit(X, Y, epochs=500, progress=False)
    trainer.model.load_params(start)  # the last finite state is far gone: start again
    trainer.optimizer.lr = 1e-4
    trainer.optimizer.reset()
    history = trainer.fit(X, Y, epochs=5, progress=False)
    assert np.isfinite(history["loss"]).all()
    assert trainer.optimizer.state["step"] == 5


def test_clip_norm_prevents_the_divergence():
    trainer, X, Y = _diverging()
    trainer.clip_norm = 1.0
    history = trainer.fit(X, Y, epochs=50, progress=False)
    assert np.isfinite(history["loss"]).all()


def test_checkpoint_callback_never_saves_a_diverged_model(tmp_path):
    path = tmp_path / "model.safetensors"
    trainer, X, Y = _diverging(deferred=True, check_every=1000)  # found late, by the callback
    with pytest.raises(pm.DivergenceError) as info:
        trainer.fit(X, Y, epochs=500, progress=False, callbacks=[pm.Checkpoint(path)])
    exc = info.value
    assert np.isfinite(exc.history["loss"]).all()
    # the file holds the last epoch whose logged loss was finite (one step per epoch)
    saved = pm.load(path)
    good = _replay(len(exc.history["loss"])).model.host_params()
    for a, b in zip(saved.host_params(), good, strict=True):
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)


def test_save_refuses_non_finite_parameters_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "model.safetensors"
    model = pm.MLP([2, 3, 2], seed=0)
    pm.save(model, path)
    before = path.read_bytes()
    model.params[0][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf: refusing to save a diverged model"):
        pm.save(model, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]


def test_deferred_check_reads_nothing_back_on_jax(xor_data):
    """On JAX the divergence check adds no device-to-host transfer per step."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    X, Y = xor_data
    model = pm.MLP([2, 3, 2], seed=0, backend="jax")
    trainer = pm.Trainer(model, optimizer=pm.Adam(lr=0.01), check_every=1000)
    Xd, Yd = model.placement.from_host(X), model.placement.from_host(Y)
    trainer.step(Xd, Yd)  # compile outside the guard
    with jax.transfer_guard_device_to_host("disallow"):
        for _ in range(5):
            trainer.step(Xd, Yd)
    trainer.check_divergence()
    assert trainer.steps == 6


@pytest.mark.parametrize("deferred", [False, True])
def test_a_schedule_that_grows_past_floats_range_is_a_divergence(deferred):
    """step_decay(every=1, factor=2) reaches 2.0**1024 at step 1024: a rate of inf, so the
    step diverges (DivergenceError), never an OverflowError from the host arithmetic."""
    X, y = pm.datasets.xor(n=20, seed=0)
    model = pm.MLP([2, 3, 2], seed=0, dtype="float64")
    if deferred:
        model.placement.__dict__["host_reads_are_free"] = False
    opt = pm.SGD(lr=5e-324, schedule=pm.optim.step_decay(every=1, factor=2.0))  # tiny until
    with pytest.raises(pm.DivergenceError) as info:                           # 2**1024
        pm.Trainer(model, optimizer=opt).fit(X, y, epochs=2000, progress=False)
    assert info.value.step == 1025  # the 0-based step 1024 is the first past float's range
    assert all(np.isfinite(p).all() for p in model.host_params())


@pytest.mark.parametrize("scale, step", [(1e17, 6), (1e19, 1)])  # later; at once
def test_lbfgs_reports_its_last_finite_loss(scale, step):
    """Issue 20, item 5: float32 losses of ~1e38 overflow, and the error named the last
    loss of the curve, inf, as the "last finite loss" (and step 51 where the first
    iteration's loss was already inf)."""
    pytest.importorskip("scipy")
    X, y = pm.datasets.xor(n=60, seed=0)
    model = pm.MLP([2, 8, 2], activation="identity", output="identity", seed=0,
                   dtype="float32")
    with pytest.raises(pm.DivergenceError) as info:
        pm.LBFGS(max_iter=50).minimize(model, X * scale, pm.one_hot(y, 2) * scale)
    last = info.value.last_loss
    assert info.value.step == step
    assert (last is None) == (step == 1) and (last is None or np.isfinite(last))
    assert "last finite loss: inf" not in str(info.value)
