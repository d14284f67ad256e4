"""Compiled training on JAX: one compilation per fit, the NumPy trajectory, divergence."""

from __future__ import annotations

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import steps

jax = pytest.importorskip("jax")
pytestmark = pytest.mark.usefixtures("x64")


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)


@pytest.fixture
def traces(monkeypatch):
    """How many times the step is traced (compiled code calls it once per trace)."""
    count = [0]
    original = steps.guarded_step

    def counting(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(steps, "guarded_step", counting)
    return count


def _xor(n=100):
    X, y = pm.datasets.xor(n=n, seed=1)
    return X, np.asarray(pm.one_hot(y, 2))


def _fit(backend, compile=None, epochs=6, batch_size=32, **kwargs):
    X, Y = _xor()
    model = pm.MLP([2, 5, 2], seed=3, backend=backend, dtype="float64")
    opt = pm.Adam(lr=0.05, schedule=pm.optim.step_decay(every=4, factor=0.5))
    trainer = pm.Trainer(model, optimizer=opt, l2=1e-3, clip_norm=2.0, compile=compile)
    history = trainer.fit(X, Y, epochs=epochs, batch_size=batch_size, progress=False, **kwargs)
    return trainer, history


def test_jax_trainer_compiles_by_default_and_can_run_eagerly():
    model = pm.MLP([2, 3, 2], backend="jax")
    assert pm.Trainer(model).compiled
    assert not pm.Trainer(model, compile=False).compiled
    assert not pm.Trainer(pm.MLP([2, 3, 2])).compiled
    with pytest.raises(ValueError, match="compiles"):
        pm.Trainer(pm.MLP([2, 3, 2]), compile=True)
    with pytest.raises(TypeError, match="compile"):
        pm.Trainer(model, compile="yes")


@pytest.mark.parametrize("batch_size", [None, 25, 32])  # full, even, a padded last batch
def test_one_compilation_per_fit(traces, batch_size):
    _fit("jax", batch_size=batch_size, epochs=5)
    assert traces[0] == 1


@pytest.mark.parametrize("batch_size", [None, 25, 32])
def test_compiled_fit_follows_numpys_float64_trajectory(batch_size):
    """Shuffled from the same host seed, with a schedule, l2 and clipping: the same
    parameters and history as NumPy's eager loop (the padded last batch computes its
    mean as a weighted one: equal to rounding)."""
    ref, ref_history = _fit("numpy", batch_size=batch_size)
    ours, history = _fit("jax", batch_size=batch_size)
    eager, eager_history = _fit("jax", compile=False, batch_size=batch_size)
    for trainer, hist in ((ours, history), (eager, eager_history)):
        assert trainer.steps == ref.steps
        assert trainer.optimizer.state["step"] == ref.optimizer.state["step"]
        np.testing.assert_allclose(hist["loss"], ref_history["loss"], rtol=1e-12)
        np.testing.assert_allclose(hist["accuracy"], ref_history["accuracy"], rtol=1e-12)
        for p, r in zip(trainer.model.host_params(), ref.model.host_params()):
            np.testing.assert_allclose(p, r, rtol=1e-10, atol=1e-13)


def test_a_batch_of_zero_weight_is_skipped_as_on_numpy():
    X, _ = _xor()
    w = np.ones(len(X))
    w[32:64] = 0.0  # the second batch, unshuffled
    runs = [_fit(b, batch_size=32, epochs=2, shuffle=False, sample_weight=w)
            for b in ("numpy", "jax")]
    (ref, ref_history), (ours, history) = runs
    assert ours.steps == ref.steps == 6
    np.testing.assert_allclose(history["loss"], ref_history["loss"], rtol=1e-12)
    for p, r in zip(ours.model.host_params(), ref.model.host_params()):
        np.testing.assert_allclose(p, r, rtol=1e-10, atol=1e-13)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow, on the reference
def test_compiled_fit_catches_divergence_and_keeps_the_last_finite_state():
    X, y = pm.datasets.xor(n=60, seed=0)
    Y = np.asarray(pm.one_hot(y, 2))
    runs = []
    for backend in ("numpy", "jax"):
        model = pm.MLP([2, 8, 2], activation="identity", output="identity", seed=0,
                       backend=backend, dtype="float64")
        trainer = pm.Trainer(model, optimizer=pm.SGD(lr=0.2, momentum=0.5))
        with pytest.raises(pm.DivergenceError) as info:
            trainer.fit(X * 4, Y, epochs=500, batch_size=20, progress=False)
        runs.append((trainer, info.value))
    (ref, ref_exc), (ours, exc) = runs
    assert exc.step == ref_exc.step and ours.steps == ref.steps == exc.step - 1
    assert len(exc.history["loss"]) == len(ref_exc.history["loss"])
    assert exc.last_loss == pytest.approx(ref_exc.last_loss, rel=1e-9)
    for p, r in zip(ours.model.host_params(), ref.model.host_params()):
        assert np.isfinite(p).all()
        np.testing.assert_allclose(p, r, rtol=1e-9)


def test_compiled_step_reuses_its_compilation_across_steps_and_schedules(traces):
    X, Y = _xor()
    model = pm.MLP([2, 5, 2], seed=3, backend="jax", dtype="float64")
    opt = pm.SGD(lr=0.5, schedule=pm.optim.inverse_scaling(0.5))
    trainer = pm.Trainer(model, optimizer=opt)
    ref = pm.Trainer(pm.MLP([2, 5, 2], seed=3, dtype="float64"),
                     optimizer=pm.SGD(lr=0.5, schedule=pm.optim.inverse_scaling(0.5)))
    for _ in range(4):
        loss, ref_loss = trainer.step(X, Y), ref.step(X, Y)
        assert float(loss) == pytest.approx(float(ref_loss), rel=1e-12)
    assert traces[0] == 1 and trainer.optimizer.state["step"] == 4


def test_train_step_takes_the_schedules_rate_under_jit():
    import functools

    X, Y = _xor()
    model = pm.MLP([2, 5, 2], seed=3, backend="jax", dtype="float64")
    opt = pm.SGD(lr=0.5, schedule=pm.optim.step_decay(every=1, factor=0.5))
    step = jax.jit(functools.partial(pm.train_step, model, optimizer=opt))
    params, state = model.params, opt.init_state(model.xp, model.params)
    state["step"] = jax.numpy.asarray(0)
    Xd, Yd = model.placement.from_host(X), model.placement.from_host(Y)
    ref = pm.Trainer(pm.MLP([2, 5, 2], seed=3, dtype="float64"),
                     optimizer=pm.SGD(lr=0.5, schedule=pm.optim.step_decay(every=1, factor=0.5)))
    for k in range(3):
        params, state, _, _ = step(params, state, Xd, Yd, lr=opt.learning_rate(k))
        ref.step(X, Y)
    for p, r in zip(params, ref.model.params):
        np.testing.assert_allclose(np.asarray(p), r, rtol=1e-12)


SCHEDULES = [pm.optim.constant(), pm.optim.step_decay(every=2), pm.optim.exponential_decay(0.9),
             pm.optim.inverse_scaling(0.5), pm.optim.cosine(steps=10)]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_a_schedule_compiles_once_per_fit(traces, schedule):
    """The rate is computed on the host and passed in: a fit compiles once, and the next
    fit of the same trainer (its lr changed, as scikit-learn's schedules change it) reuses
    that compilation."""
    X, Y = _xor()
    trainer = pm.Trainer(pm.MLP([2, 5, 2], seed=3, backend="jax"),
                         optimizer=pm.SGD(lr=0.1, momentum=0.5, schedule=schedule))
    trainer.fit(X, Y, epochs=4, batch_size=32, progress=False)
    trainer.optimizer.lr /= 5.0
    trainer.fit(X, Y, epochs=2, batch_size=32, progress=False)
    assert traces[0] == 1


@pytest.mark.parametrize("learning_rate", ["constant", "invscaling", "adaptive"])
def test_scikit_learn_schedules_compile_once_per_fit(traces, learning_rate):
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from portable_mlp.sklearn import MLPClassifier

    X, y = pm.datasets.xor(n=100, seed=1)
    adaptive = learning_rate == "adaptive"  # no improvement by tol=10: the rate is divided
    est = MLPClassifier((5,), solver="sgd", learning_rate=learning_rate, max_iter=8,
                        batch_size=32, tol=10.0 if adaptive else 0.0,
                        n_iter_no_change=1 if adaptive else 10, random_state=0, backend="jax")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    assert est.n_iter_ == 8 and traces[0] == 1
    lr = est._trainer.optimizer.lr
    assert lr == 1e-3 if learning_rate == "constant" else lr < 1e-3 / 5
