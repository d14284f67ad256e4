"""Reliability, second round: divergence inside the update, checks after the cast, every
entry point refusing bad input before anything changes (issue 13)."""

from __future__ import annotations

import contextlib
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


@pytest.mark.parametrize("batch_size", [None, 32])  # compiled: no scan, and a scan
def test_a_rate_beyond_float32_is_a_divergence_not_a_warning(backend, batch_size):
    """1e300 is inf in float32: the step diverges (pytest runs with -W error). JAX runs
    as it does by default, without x64 (a Python float is then cast to float32)."""
    X, y = pm.datasets.xor(n=60, seed=0)
    with _without_x64(backend):
        model = pm.MLP([2, 3, 2], seed=0, backend=backend, dtype="float32")
        trainer = pm.Trainer(model, optimizer=pm.SGD(lr=1e300))
        with pytest.raises(pm.DivergenceError):
            trainer.fit(X, pm.one_hot(y, 2), epochs=2, batch_size=batch_size, progress=False)


@contextlib.contextmanager
def _without_x64(backend):
    if backend != "jax":
        yield
        return
    import jax

    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", x64)


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


@pytest.mark.parametrize("optimizer", [{"lr": 0.1}, {"lr": 0.1, "momentum": 0.9},
                                       {"lr": 0.1, "momentum": 0.9, "nesterov": True},
                                       {"lr": 0.1, "adam": True}], ids=str)
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("deferred", [False, True], ids=["read-every-step", "deferred"])
def test_a_non_finite_gradient_with_a_finite_loss_is_a_divergence(monkeypatch, deferred, bad,
                                                                  optimizer):
    """Without clipping, no norm of the gradients is computed: the update's check is
    what catches a gradient that is not finite."""
    from portable_mlp import grad

    settings = dict(optimizer)
    make = pm.Adam if settings.pop("adam", False) else pm.SGD
    trainer, X, Y = _overflowing(deferred=deferred, check_every=1, optimizer=make(**settings))
    trainer.step(X, Y / 100)  # non-zero slots
    before = _snapshot(trainer)
    real = grad.loss_grads_and_output

    def poisoned(*args, **kwargs):
        loss, grads, out = real(*args, **kwargs)
        g = _backend.to_host(grads[-1]).copy()
        g[0] = bad
        return loss, [*grads[:-1], trainer.model.placement.from_host(g)], out

    monkeypatch.setattr(grad, "loss_grads_and_output", poisoned)
    with pytest.raises(pm.DivergenceError) as info:
        trainer.step(X, Y / 100)
    assert info.value.step == 2
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
    assert "logged non-finite loss" in str(exc)  # the case this test is about happened
    assert exc.history["loss"] == [loss for loss, _ in seen]  # no callback saw that epoch
    assert np.isfinite(exc.history["loss"]).all()
    for a, b in zip(pm.load(path).host_params(), seen[-1][1], strict=True):
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


# --- 5. values are checked after the cast to the model's dtype ----------------------

def _float32_model(backend="numpy"):
    return pm.MLP([2, 3, 2], seed=0, backend=backend, dtype="float32")


def test_data_beyond_float32_is_refused_naming_the_argument(backend):
    model = _float32_model(backend)
    trainer = pm.Trainer(model)
    before = _snapshot(trainer)
    X, Y = np.ones((4, 2)), np.ones((4, 2))
    big = X.copy()
    big[1, 1] = 1e39  # finite in float64, inf in float32
    with pytest.raises(ValueError, match=r"X holds values beyond float32's range"):
        trainer.fit(big, Y, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"Y holds values beyond float32's range"):
        trainer.fit(X, big, epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"sample_weight holds values beyond float32"):
        trainer.fit(X, Y, sample_weight=np.array([1.0, 1e39, 1.0, 1.0]), epochs=1,
                    progress=False)
    with pytest.raises(ValueError, match=r"validation X holds values beyond float32"):
        trainer.fit(X, Y, validation_data=(big, Y), epochs=1, progress=False)
    _assert_same(_snapshot(trainer), before)


def test_load_params_beyond_float32_is_refused():
    model = _float32_model()
    before = _host(model.params)
    with pytest.raises(ValueError, match=r"params\[0\] holds values beyond float32's range"):
        model.load_params([np.full(tuple(p.shape), 1e39) for p in model.params])
    for a, b in zip(_host(model.params), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_model_to_and_load_into_float32_refuse_values_beyond_its_range(tmp_path):
    model = pm.MLP([2, 3, 2], seed=0, dtype="float64")
    model.load_params([np.full(tuple(p.shape), 1e39) for p in model.params])
    with pytest.raises(ValueError, match=r"model.to\(dtype='float32'\): params\[0\] holds "):
        model.to(dtype="float32")
    path = tmp_path / "m.safetensors"
    pm.save(model, path)
    with pytest.raises(ValueError, match=r"pm.load\(..., dtype='float32'\): params\[0\] "):
        pm.load(path, dtype="float32")
    assert pm.load(path).dtype == np.float64  # in its own dtype it loads


def test_an_array_already_on_the_model_is_checked_after_its_cast():
    model = _float32_model()
    with pytest.raises(ValueError, match="beyond float32's range"):
        pm.value_and_grad(model, np.full((2, 2), 1e39), np.ones((2, 2)))


# --- 6. masked arrays -----------------------------------------------------------------

@pytest.mark.parametrize("what", ["X", "Y", "sample_weight"])
def test_masked_arrays_are_refused(what):
    """The mask hid a NaN and a negative weight from the checks."""
    trainer = pm.Trainer(pm.MLP([2, 3, 2], seed=0))
    before = _snapshot(trainer)
    args = {"X": np.ones((3, 2)), "Y": np.ones((3, 2)), "sample_weight": np.ones(3)}
    data = args[what].copy()
    data[0] = np.nan if what != "sample_weight" else -5.0
    mask = np.zeros(data.shape, dtype=bool)
    mask[0] = True
    args[what] = np.ma.masked_array(data, mask=mask)
    with pytest.raises(TypeError, match=f"{what} is a masked array"):
        trainer.fit(args["X"], args["Y"], sample_weight=args["sample_weight"], epochs=1,
                    progress=False)
    _assert_same(_snapshot(trainer), before)


# --- 7. torch input that requires grad ------------------------------------------------

def test_torch_input_that_requires_grad_does_not_chain_the_parameters():
    torch = pytest.importorskip("torch")
    model = pm.MLP([2, 8, 2], seed=0, backend="torch", dtype="float64")
    trainer = pm.Trainer(model, optimizer=pm.SGD(lr=0.1))
    X = torch.randn(16, 2, dtype=torch.float64, requires_grad=True)
    Y = torch.rand(16, 2, dtype=torch.float64, requires_grad=True)
    for _ in range(3):
        loss = trainer.step(X, Y)
    trainer.fit(X, Y, epochs=2, progress=False)
    pm.value_and_grad(model, X, Y)
    assert loss.grad_fn is None
    for p in [*model.params, *(s for ss in trainer.optimizer.state["slots"] for s in ss)]:
        assert not p.requires_grad and p.grad_fn is None
    model.load_params([p.clone().requires_grad_(True) for p in model.params])
    assert not any(p.requires_grad for p in model.params)


def test_torch_meta_tensors_are_refused_clearly():
    """Issue 20, item 12: a 'meta' tensor holds no values; one_hot raised torch's
    NotImplementedError."""
    torch = pytest.importorskip("torch")
    labels = torch.zeros(4, dtype=torch.int64, device="meta")
    with pytest.raises(TypeError, match="'meta' device holds no values"):
        pm.one_hot(labels, 2)


# --- 8. gradcheck ---------------------------------------------------------------------

def _xor():
    X, y = pm.datasets.xor(n=20, seed=0)
    return X, np.asarray(pm.one_hot(y, 2))


def test_gradcheck_fails_on_a_nan_gradient(monkeypatch):
    from portable_mlp import grad

    real = grad.loss_and_grads

    def nan_first(*args, **kwargs):
        value, grads = real(*args, **kwargs)
        return value, [grads[0] * np.nan, *grads[1:]]

    monkeypatch.setattr(grad, "loss_and_grads", nan_first)
    with pytest.raises(pm.GradcheckError, match="NaN or inf"):
        pm.gradcheck(pm.MLP([2, 3, 2]), *_xor())


@pytest.mark.parametrize("bad", [{"atol": np.nan}, {"rtol": np.nan}, {"eps": np.nan},
                                 {"atol": -1.0}, {"rtol": -1e-5}, {"rtol": np.inf},
                                 {"eps": 0.0}, {"eps": -1e-6}])
def test_gradcheck_validates_its_tolerances(bad):
    with pytest.raises(ValueError, match=f"{next(iter(bad))} must be"):
        pm.gradcheck(pm.MLP([2, 3, 2]), *_xor(), **bad)


def test_gradcheck_with_zero_tolerances_demands_exact_agreement():
    with pytest.raises(pm.GradcheckError, match="x the tolerance"):
        pm.gradcheck(pm.MLP([2, 3, 2]), *_xor(), rtol=0.0, atol=0.0)
    assert pm.gradcheck(pm.MLP([2, 3, 2]), *_xor()) <= 1.0


# --- 9. train_step checks its arguments as Trainer does -------------------------------

def _step_args():
    model = pm.MLP([2, 3, 2], seed=0, dtype="float64")
    opt = pm.SGD(lr=0.1, momentum=0.9)
    X, Y = _xor()
    return model, opt, X, Y


@pytest.mark.parametrize("bad, error, fragment", [
    ({"clip_norm": np.nan}, ValueError, "clip_norm must be positive"),
    ({"clip_norm": -1.0}, ValueError, "clip_norm must be positive"),
    ({"l2": -5.0}, ValueError, "l2 must be >= 0"),
    ({"X": "list"}, TypeError, "X is a list"),
    ({"params": 2}, ValueError, "params holds 2 arrays, the model has 4"),
    ({"params": "shape"}, ValueError, r"params\[0\] is float64 \(3, 2\)"),
    ({"optimizer": "sgd"}, TypeError, "optimizer must be a portable_mlp Optimizer"),
    ({"state": {}}, TypeError, "state must be the optimizer's state"),
    ({"state": "adam"}, ValueError, r"must hold \[1, 1, 1, 1\] arrays per parameter"),
    ({"lr": -0.1}, ValueError, "lr must be positive"),
    ({"lr": np.nan}, ValueError, "lr must be positive"),
    ({"lr": "fast"}, TypeError, "lr must be a number or a 0-d floating array"),
    ({"lr": np.ones(3)}, TypeError, "lr must be a number or a 0-d floating array"),
    ({"lr": np.asarray(1)}, TypeError, "lr must be a number or a 0-d floating array"),
])
def test_train_step_refuses_bad_arguments(bad, error, fragment):
    model, opt, X, Y = _step_args()
    params, state = list(model.params), opt.init_state(model.xp, model.params)
    kept = _host(params)
    kwargs = {"model": model, "params": params, "state": state, "X": X, "Y": Y,
              "optimizer": opt}
    made = {"list": lambda: X.tolist(), "shape": lambda: [params[0].T, *params[1:]],
            "adam": lambda: pm.Adam().init_state(model.xp, model.params)}
    for key, value in bad.items():
        if key == "params" and value == 2:
            value = params[:2]
        elif isinstance(value, str) and value in made:  # not an array: == compares elementwise
            value = made[value]()
        kwargs[key] = value
    with pytest.raises(error, match=fragment):
        pm.train_step(**kwargs)
    for a, b in zip(_host(params), kept, strict=True):
        np.testing.assert_array_equal(a, b)


def test_train_step_checks_still_compile_under_jax_jit():
    jax = pytest.importorskip("jax")
    import functools

    model = pm.MLP([2, 3, 2], seed=0, backend="jax", dtype="float32")
    opt = pm.SGD(lr=0.1)
    step = jax.jit(functools.partial(pm.train_step, model, optimizer=opt, clip_norm=1.0))
    X, Y = _xor()
    place = model.placement
    state = opt.init_state(model.xp, model.params)
    state["step"] = jax.numpy.asarray(0)
    params, state, loss, finite = step(list(model.params), state, place.from_host(X),
                                       place.from_host(Y))
    assert bool(finite) and int(state["step"]) == 1 and np.isfinite(float(loss))
    assert not np.array_equal(_host(params)[0], _host(model.params)[0])


# --- 10. callbacks are checked before any step ----------------------------------------

def test_checkpoint_into_a_missing_folder_fails_before_any_step(tmp_path):
    trainer = pm.Trainer(pm.MLP([2, 3, 2], seed=0))
    before = _snapshot(trainer)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        trainer.fit(*_xor(), epochs=2, progress=False,
                    callbacks=[pm.Checkpoint(tmp_path / "nope" / "m.safetensors")])
    _assert_same(_snapshot(trainer), before)


def test_a_misspelt_monitor_fails_before_fit():
    with pytest.raises(ValueError, match="cannot monitor 'val_los'"):
        pm.EarlyStopping("val_los")


def test_early_stopping_on_val_loss_without_validation_data_fails_at_train_begin():
    trainer = pm.Trainer(pm.MLP([2, 3, 2], seed=0))
    trainer.log_keys = ("loss", "accuracy")  # what fit sets: no validation_data
    with pytest.raises(ValueError, match="pass validation_data"):
        pm.EarlyStopping("val_loss").on_train_begin(trainer)


def test_early_stopping_on_val_loss_without_validation_data_fails_before_any_step():
    trainer = pm.Trainer(pm.MLP([2, 3, 2], seed=0))
    before = _snapshot(trainer)
    with pytest.raises(ValueError, match="pass validation_data"):
        trainer.fit(*_xor(), epochs=2, progress=False, callbacks=[pm.EarlyStopping("val_loss")])
    _assert_same(_snapshot(trainer), before)


def test_an_epoch_with_a_non_finite_log_is_a_divergence_never_logged():
    """The model after epoch 2 overflows on the validation data: DivergenceError, and the
    history and the callbacks never see that epoch."""
    X, Y = _xor()
    model = pm.MLP([2, 3, 2], activation="identity", output="identity", seed=0)
    seen = []
    with pytest.raises(pm.DivergenceError, match="non-finite val_loss") as info:
        pm.fit(model, X, Y, epochs=5, progress=False, validation_data=(X * 1e200, Y),
               callbacks=[lambda trainer, epoch, logs: seen.append(epoch)])
    assert seen == [] and info.value.history["val_loss"] == []


def test_a_callback_function_of_the_wrong_arity_fails_before_any_step():
    trainer = pm.Trainer(pm.MLP([2, 3, 2], seed=0))
    before = _snapshot(trainer)
    with pytest.raises(TypeError, match=r"called as fn\(trainer, epoch, logs\)"):
        trainer.fit(*_xor(), epochs=2, progress=False, callbacks=[lambda logs: None])
    _assert_same(_snapshot(trainer), before)


# --- 11. a backend of the wrong type ---------------------------------------------------

@pytest.mark.parametrize("backend", [3, None, 3.5, object()])
def test_a_backend_of_the_wrong_type_is_a_type_error(backend, tmp_path):
    match = r"backend must be a name \(one of numpy, cupy, torch"
    with pytest.raises(TypeError, match=match):
        pm.MLP([2, 2], backend=backend)
    path = tmp_path / "m.safetensors"
    pm.save(pm.MLP([2, 2]), path)
    with pytest.raises(TypeError, match=match):
        pm.load(path, backend=backend)
    if backend is not None:  # to(None) keeps the model's backend
        with pytest.raises(TypeError, match=match):
            pm.MLP([2, 2]).to(backend)


# --- issue 20, item 7: any valid NumPy view is data ---------------------------------------

def _reversed(a):
    """``a`` as a view with negative strides (a reversed copy, reversed again)."""
    return np.ascontiguousarray(a[::-1])[::-1]


def test_negative_stride_views_are_data_everywhere(backend):
    """torch refused to share NumPy memory with negative strides (X[::-1]) for a float64
    model: fit's data, labels and weights, validation data, predictions, gradients,
    L-BFGS and load_params."""
    X, y = pm.datasets.xor(n=40, seed=0)
    Y = np.asarray(pm.one_hot(y, 2))
    Xr, Yr, w = _reversed(X), _reversed(Y), _reversed(np.linspace(0.5, 1.5, 40))
    assert Xr.strides[0] < 0
    model = pm.MLP([2, 3, 2], seed=0, backend=backend, dtype="float64")
    pm.Trainer(model).fit(Xr, Yr, epochs=1, sample_weight=w, validation_data=(Xr, Yr),
                          progress=False)
    pm.Trainer(model).fit(Xr, _reversed(y.astype(np.int64)), epochs=1, progress=False)
    model.predict_proba(Xr)
    pm.value_and_grad(model, Xr, Yr, sample_weight=w)
    pm.LBFGS(max_iter=2).minimize(model, Xr, Yr, sample_weight=w)
    model.load_params([_reversed(p) for p in model.host_params()])
