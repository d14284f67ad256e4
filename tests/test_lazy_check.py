"""fit's lazy finite check and its double buffers (issue 19): a non-finite state is
found by the next loss, at the epoch's end or before a checkpoint, and training goes
back to the last finite state; updates reuse the trainer's own arrays, never a user's.
These run under ``-W error`` (pytest's filterwarnings): no NumPy warning escapes fit."""

from __future__ import annotations

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend, grad


def _host(arrays):
    return [_backend.to_host(a).copy() for a in arrays]


def _minibatch_run(backend="numpy", optimizer=None, lazy=False):
    """XOR, 40 rows in batches of 8: five steps an epoch. ``lazy``: skip unless fit
    checks lazily on ``backend`` (where reading back is free and nothing compiles;
    elsewhere every update is guarded on the device: tests/test_divergence.py)."""
    X, y = pm.datasets.xor(n=40, seed=0)
    model = pm.MLP([2, 6, 2], seed=0, backend=backend, dtype="float64")
    if lazy and (not model.placement.host_reads_are_free or model.placement.compiles):
        pytest.skip(f"fit guards every update on the device on {backend}")
    trainer = pm.Trainer(model, optimizer=optimizer or pm.Adam(lr=0.01))
    return trainer, X, np.asarray(pm.one_hot(y, 2))


def _poison_step(monkeypatch, trainer, step, value, seen):
    """Step ``step`` (1-based, counted over the trainer's steps) gets a gradient with
    ``value`` in it; ``seen`` records the host parameters each step starts from."""
    real = grad.loss_grads_and_output

    def poisoned(model, params, *args, **kwargs):
        seen.append(_host(params))
        loss, grads, out = real(model, params, *args, **kwargs)
        if len(seen) == step:
            g = _backend.to_host(grads[0]).copy()
            g[0, 0] = value
            grads = [model.placement.from_host(g), *grads[1:]]
        return loss, grads, out

    monkeypatch.setattr(grad, "loss_grads_and_output", poisoned)


def test_a_nan_mid_epoch_is_found_by_the_next_loss_and_rolled_back(monkeypatch, backend):
    """A NaN gradient at step 7 (epoch 2) makes NaN parameters, whose loss at step 8 is
    NaN: the model goes back to the parameters step 7 started from."""
    trainer, X, Y = _minibatch_run(backend, lazy=True)
    seen: list = []
    _poison_step(monkeypatch, trainer, 7, np.nan, seen)
    with pytest.raises(pm.DivergenceError) as info:
        trainer.fit(X, Y, epochs=3, batch_size=8, progress=False)
    assert info.value.step == 7
    assert trainer.steps == 6 == trainer.optimizer.state["step"]
    assert len(info.value.history["loss"]) == 1
    for a, b in zip(_host(trainer.model.params), seen[6], strict=True):
        np.testing.assert_array_equal(a, b)
    assert all(np.isfinite(s).all() for ss in trainer.optimizer.state["slots"]
               for s in _host(ss))


def test_a_non_finite_slot_hidden_from_the_loss_is_found_at_the_epochs_end(monkeypatch,
                                                                          backend):
    """A gradient of 1e200 at step 7 makes Adam's second moment inf (1e400) while the
    parameters stay finite (m / sqrt(v) = 0) and every loss is finite: the epoch's end
    finds it, and the model goes back to the end of epoch 1, the last verified state."""
    trainer, X, Y = _minibatch_run(backend, lazy=True)
    seen: list = []
    _poison_step(monkeypatch, trainer, 7, 1e200, seen)
    with pytest.raises(pm.DivergenceError) as info:
        trainer.fit(X, Y, epochs=3, batch_size=8, progress=False)
    exc = info.value
    assert exc.step == 6 and "without showing in the loss" in str(exc)
    assert trainer.steps == 5 == trainer.optimizer.state["step"]
    assert len(exc.history["loss"]) == 1
    for a, b in zip(_host(trainer.model.params), seen[5], strict=True):  # step 6's start
        np.testing.assert_array_equal(a, b)
    assert all(np.isfinite(s).all() for ss in trainer.optimizer.state["slots"]
               for s in _host(ss))


def test_fit_never_writes_into_arrays_it_did_not_make(backend):
    """The double buffers are the trainer's own: the parameters and slots a user held
    before fit keep their values, and host_params() hands out copies."""
    trainer, X, Y = _minibatch_run(backend)
    trainer.fit(X, Y, epochs=1, batch_size=8, progress=False)
    held = list(trainer.model.params)
    held_slots = [list(ss) for ss in trainer.optimizer.state["slots"]]
    values = _host(held) + _host(s for ss in held_slots for s in ss)
    snapshot = trainer.model.host_params()
    copy = [a.copy() for a in snapshot]
    trainer.fit(X, Y, epochs=3, batch_size=8, progress=False)
    for a, b in zip(_host(held) + _host(s for ss in held_slots for s in ss), values,
                    strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(snapshot, copy, strict=True):
        np.testing.assert_array_equal(a, b)


def test_updates_reuse_two_buffers(monkeypatch, backend):
    """Where the backend writes in place, fit's updates alternate between two sets of
    arrays (plus one kept aside for the last verified state): no new array per step."""
    trainer, X, Y = _minibatch_run(backend)
    if not trainer.model.placement.ops.writes_in_place:
        pytest.skip(f"{backend} makes new arrays (the functional path)")
    seen: dict[int, object] = {}  # id -> array, held so that no id is reused
    real = trainer._step

    def step(*args, **kwargs):
        result = real(*args, **kwargs)
        for a in (trainer.model.params[0], trainer.optimizer.state["slots"][0][0]):
            seen[id(a)] = a
        return result

    monkeypatch.setattr(trainer, "_step", step)
    trainer.fit(X, Y, epochs=12, batch_size=8, progress=False)
    assert len(seen) <= 4  # parameters and first moments: each in two buffers


def test_arrays_a_callback_sees_are_never_written_into(backend):
    """A callback may keep the model's arrays (not copies) at an epoch's end: later
    updates write into other arrays, so what it kept keeps that epoch's values."""
    trainer, X, Y = _minibatch_run(backend)
    kept = []

    def keep(t, epoch, logs):
        kept.append((list(t.model.params), _host(t.model.params)))

    trainer.fit(X, Y, epochs=4, batch_size=8, progress=False, callbacks=[keep])
    for arrays, values in kept:
        for a, b in zip(_host(arrays), values, strict=True):
            np.testing.assert_array_equal(a, b)


def test_checkpoint_saves_only_parameters_whose_loss_is_finite(tmp_path, backend):
    """The relu explosion: every step's loss is finite, and the parameters after an
    epoch's last update are finite with an infinite loss. With the default steps-based
    history, the logs of that epoch are finite (they are the losses before each update):
    the checkpoint checks the loss of what it saves on the last batch, refuses, and the
    model goes back to the step before."""
    path = tmp_path / "m.safetensors"
    X, y = pm.datasets.xor(n=60, seed=0)
    model = pm.MLP([2, 8, 2], activation="relu", output="identity", seed=0,
                   backend=backend, dtype="float64")
    trainer = pm.Trainer(model, optimizer=pm.SGD(lr=0.5, momentum=0.5))
    Y = np.asarray(pm.one_hot(y, 2))
    with pytest.raises(pm.DivergenceError) as info:
        trainer.fit(X * 4, Y, epochs=2000, progress=False, callbacks=[pm.Checkpoint(path)])
    exc = info.value
    assert "non-finite loss" in str(exc) and "on the last batch" in str(exc)
    assert np.isfinite(exc.history["loss"]).all()
    saved = pm.load(path)
    loss = pm.Trainer(saved).evaluate(*(saved.placement.from_host(a) for a in (X * 4, Y)))
    assert np.isfinite(loss["loss"])
    now = pm.Trainer(model).evaluate(*(model.placement.from_host(a) for a in (X * 4, Y)))
    assert np.isfinite(now["loss"])  # the model in memory went back too
    assert trainer.steps == exc.step - 1


def test_the_trainer_keeps_no_data_nor_spare_state_after_fit(backend):
    """fit's last batch (a compiled epoch's holds all the data) is dropped when fit ends,
    and a pickled trainer carries no state to go back to."""
    import pickle

    trainer, X, Y = _minibatch_run(backend)
    trainer.fit(X, Y, epochs=2, batch_size=8, progress=False)
    assert trainer._last_batch is None
    if backend == "dask":
        return  # dask arrays pickle as graphs: the model's own round trip is tested elsewhere
    copy = pickle.loads(pickle.dumps(trainer))
    assert copy._previous is None and copy._verified is None and copy._vault is None
