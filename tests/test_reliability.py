"""Reliability, second round: divergence inside the update, checks after the cast, every
entry point refusing bad input before anything changes (issue 13)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend


def _host(arrays):
    return [_backend.to_host(a).copy() for a in arrays]


def _snapshot(trainer):
    """Everything a refused or diverged step must leave as it was."""
    state = trainer.optimizer.state
    slots = [] if state is None else _host(s for ss in state["slots"] for s in ss)
    return (_host(trainer.model.params), slots, None if state is None else state["step"],
            trainer.steps)


def _assert_same(a, b):
    (pa, sa, ta, na), (pb, sb, tb, nb) = a, b
    assert (ta, na) == (tb, nb)
    for x, y in zip([*pa, *sa], [*pb, *sb], strict=True):
        np.testing.assert_array_equal(x, y)


def _overflowing(backend="numpy", deferred=None, check_every=100, optimizer=None):
    """XOR with targets 100 * one_hot and SGD(lr=1e308): the loss and the gradients of
    the first step are finite, its update is not."""
    X, y = pm.datasets.xor(n=60, seed=0)
    model = pm.MLP([2, 3, 2], seed=0, backend=backend, dtype="float64")
    if deferred is not None:
        model.placement.__dict__["host_reads_are_free"] = not deferred
    trainer = pm.Trainer(model, optimizer=optimizer or pm.SGD(lr=1e308),
                         check_every=check_every)
    return trainer, X, 100 * np.asarray(pm.one_hot(y, 2))


# --- 1. the update is part of the step ----------------------------------------------

@pytest.mark.parametrize("epochs", [1, 3])
@pytest.mark.parametrize("check_every", [1, 100])
@pytest.mark.parametrize("deferred", [False, True], ids=["read-every-step", "deferred"])
def test_an_update_that_overflows_is_a_divergence(deferred, check_every, epochs):
    trainer, X, Y = _overflowing(deferred=deferred, check_every=check_every)
    before = _snapshot(trainer)
    with pytest.raises(pm.DivergenceError) as info:
        trainer.fit(X, Y, epochs=epochs, progress=False)
    assert info.value.step == 1
    assert info.value.history == {"loss": [], "accuracy": []}
    _assert_same(_snapshot(trainer), (before[0], before[1], 0, 0))


def test_an_update_that_overflows_is_a_divergence_on_every_backend(backend):
    trainer, X, Y = _overflowing(backend)
    start = _host(trainer.model.params)
    with pytest.raises(pm.DivergenceError):
        trainer.fit(X, Y, epochs=3, progress=False)
    for a, b in zip(_host(trainer.model.params), start, strict=True):
        np.testing.assert_array_equal(a, b)
    assert trainer.steps == 0 == trainer.optimizer.state["step"]


@pytest.mark.parametrize("deferred", [False, True], ids=["read-every-step", "deferred"])
def test_a_diverged_update_keeps_the_momentum_slots(deferred):
    trainer, X, Y = _overflowing(deferred=deferred, check_every=1,
                                 optimizer=pm.SGD(lr=1e308, momentum=0.5))
    trainer.optimizer.lr = 0.1
    trainer.step(X, Y)  # non-zero slots
    trainer.optimizer.lr = 1e308
    before = _snapshot(trainer)
    with pytest.raises(pm.DivergenceError):
        trainer.step(X, Y)
    _assert_same(_snapshot(trainer), before)


def test_train_step_reports_an_update_that_overflows(backend):
    trainer, X, Y = _overflowing(backend)
    model, opt = trainer.model, pm.SGD(lr=1e308, momentum=0.5)
    place = model.placement
    params, state = list(model.params), opt.init_state(model.xp, model.params)
    kept = _host(params)
    new_params, new_state, loss, finite = pm.train_step(
        model, params, state, place.from_host(X), place.from_host(Y), opt)
    assert np.isfinite(float(_backend.to_host(loss)))  # the loss itself was fine
    assert not bool(_backend.to_host(finite))
    for a, b in zip(_host(new_params), kept, strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(np.isfinite(s).all() for s in _host(new_state["slots"][0]))


# --- 2. an epoch with a non-finite loss is never saved nor logged --------------------

def _inf_epoch_run(path):
    """relu 2-8-2, SGD lr 1 momentum 0.9, batch 16: every step's loss is finite, and the
    model after epoch 2 logs an infinite loss (found by a search over seeds)."""
    X, y = pm.datasets.xor(n=300, seed=0)
    model = pm.MLP([2, 8, 2], activation="relu", output="identity", seed=164)
    trainer = pm.Trainer(model, optimizer=pm.SGD(lr=1, momentum=0.9))
    return trainer, X, np.asarray(pm.one_hot(y, 2))


def test_checkpoint_never_saves_an_epoch_whose_loss_is_not_finite(tmp_path):
    path = tmp_path / "m.safetensors"
    trainer, X, Y = _inf_epoch_run(path)
    seen = []
    with pytest.raises(pm.DivergenceError) as info:
        trainer.fit(X, Y, epochs=50, batch_size=16, progress=False, epoch_loss="evaluate",
                    callbacks=[lambda t, e, logs: seen.append((logs["loss"],
                                                               t.model.host_params())),
                               pm.Checkpoint(path)])
    exc = info.value
    assert not np.isfinite(seen[-1][0])  # the case this test is about happened
    assert exc.history["loss"] == [loss for loss, _ in seen[:-1]]
    assert np.isfinite(exc.history["loss"]).all()
    assert "logs loss = inf" in str(exc)
    for a, b in zip(pm.load(path).host_params(), seen[-2][1], strict=True):
        np.testing.assert_array_equal(a, b)


# --- 3. no warning escapes a step; it applies whole or not at all --------------------

def test_no_numpy_warning_escapes_a_diverging_step_under_w_error():
    """pytest runs with filterwarnings=error: an overflow warning raised inside the
    in-place update left half the parameters updated."""
    trainer, X, Y = _overflowing(deferred=False)
    before = _snapshot(trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(pm.DivergenceError):
            trainer.step(X, Y)
    _assert_same(_snapshot(trainer), (before[0], before[1], 0, 0))


def test_no_warning_is_printed_before_divergence_error(backend):
    """Issue 15, item 12: the DivergenceError is enough."""
    trainer, X, Y = _overflowing(backend)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(pm.DivergenceError):
            trainer.fit(X, Y, epochs=3, progress=False)
    assert [str(w.message) for w in caught] == []
