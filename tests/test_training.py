"""Training through the public API: XOR, trajectories across backends, fit's features."""

import copy

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend


def test_xor_reaches_99_percent(xor_data):
    X, Y = xor_data
    model = pm.MLP([2, 8, 2], seed=2017)
    history = pm.fit(model, X, Y, optimizer=pm.SGD(lr=2.0, momentum=0.9), epochs=1000)
    assert history["accuracy"][-1] >= 0.99
    accuracy = np.mean(np.asarray(model.predict(X)) == np.argmax(Y, axis=1))
    assert accuracy == pytest.approx(history["accuracy"][-1])


def _trajectory(backend, X, Y, steps=25):
    model = pm.MLP([2, 5, 2], seed=7, backend=backend, dtype="float64")
    trainer = pm.Trainer(model, optimizer=pm.SGD(lr=0.5, momentum=0.5), l2=1e-3)
    losses = [float(_backend.to_host(trainer.step(X, Y))) for _ in range(steps)]
    return np.array(losses), model.host_params()


def test_same_seed_same_trajectory_as_numpy(backend, xor_data):
    X, Y = xor_data
    ref_losses, ref_params = _trajectory("numpy", X, Y)
    losses, params = _trajectory(backend, X, Y)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-9, atol=1e-12)
    for p, r in zip(params, ref_params):
        np.testing.assert_allclose(p, r, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_model_stays_in_its_dtype_through_a_step(backend, xp, dtype, xor_data):
    X, Y = xor_data
    model = pm.MLP([2, 4, 2], seed=0, backend=backend, dtype=dtype)
    loss = pm.Trainer(model, optimizer=pm.Adam(lr=0.01)).step(X, Y)
    wanted = getattr(xp, dtype)
    assert loss.dtype == wanted and loss.shape == ()
    assert all(p.dtype == wanted for p in model.params)
    assert model(X).dtype == wanted


@pytest.mark.parametrize("rate", ["numpy scalar", "numpy 0-d", "backend 0-d float64"])
@pytest.mark.parametrize("make", [lambda: pm.SGD(lr=0.1, momentum=0.9), lambda: pm.Adam()],
                         ids=["momentum", "adam"])
def test_a_float32_model_stays_float32_whatever_the_rate_passed_in(backend, xp, rate, make,
                                                                  xor_data):
    """train_step's ``lr``: a float64 rate must not promote a float32 update."""
    model = pm.MLP([2, 4, 2], seed=0, backend=backend, dtype="float32")
    place = model.placement
    if rate == "numpy scalar":
        lr = np.float64(0.01)
    elif rate == "numpy 0-d":
        lr = np.asarray(0.01)
    else:
        try:
            lr = xp.asarray(0.01, dtype=xp.float64, device=place.device_obj)
        except (TypeError, ValueError):
            pytest.skip(f"{backend} offers no float64 here")
    opt = make()
    X, Y = (place.from_host(a) for a in xor_data)
    params, state, _, finite = pm.train_step(model, model.params,
                                             opt.init_state(model.xp, model.params), X, Y,
                                             opt, lr=lr)
    assert bool(_backend.to_host(finite))
    assert all(p.dtype == xp.float32 for p in params)
    assert all(s.dtype == xp.float32 for ss in state["slots"] for s in ss)


def test_default_dtype_is_the_backends_default_float(backend, xp):
    model = pm.MLP([2, 2], backend=backend)
    info = xp.__array_namespace_info__()
    assert model.dtype == info.default_dtypes(device=model.device)["real floating"]


def test_minibatch_fit_is_seeded_and_shuffles(xor_data):
    X, Y = xor_data

    def run(seed, shuffle=True):
        model = pm.MLP([2, 4, 2], seed=0)
        return pm.fit(model, X, Y, epochs=3, batch_size=32, shuffle=shuffle, seed=seed,
                      optimizer=pm.SGD(lr=0.5))["loss"]

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert run(1, shuffle=False) == run(2, shuffle=False)


def test_fit_again_continues_with_the_optimizer_state(xor_data):
    X, Y = xor_data
    once = pm.Trainer(pm.MLP([2, 4, 2], seed=0), optimizer=pm.Adam(lr=0.01))
    once.fit(X, Y, epochs=20)
    twice = pm.Trainer(pm.MLP([2, 4, 2], seed=0), optimizer=pm.Adam(lr=0.01))
    twice.fit(X, Y, epochs=10)
    assert twice.optimizer.state["step"] == 10
    twice.fit(X, Y, epochs=10)
    assert twice.optimizer.state["step"] == 20
    for a, b in zip(once.model.params, twice.model.params):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_validation_data_and_early_stopping_restore_the_best(xor_data):
    X, Y = xor_data
    model = pm.MLP([2, 16, 2], seed=0)
    stopper = pm.EarlyStopping(monitor="val_loss", patience=3)
    best = {}

    def remember(trainer, epoch, logs):
        if logs["val_loss"] <= min(best.get("loss", np.inf), logs["val_loss"]):
            best.update(loss=logs["val_loss"], params=[p.copy() for p in trainer.model.params])

    # a learning rate too high for the data: the validation loss soon stops improving
    history = pm.fit(model, X[:200], Y[:200], optimizer=pm.SGD(lr=30.0), epochs=200,
                     validation_data=(X[200:], Y[200:]), callbacks=[remember, stopper])
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history["loss"]) < 200
    for p, b in zip(model.params, best["params"]):
        np.testing.assert_array_equal(p, b)


def test_callbacks_can_stop_training(xor_data):
    X, Y = xor_data
    seen = []

    def stop_at_3(trainer, epoch, logs):
        seen.append(epoch)
        trainer.stop_training = epoch == 2

    history = pm.fit(pm.MLP([2, 3, 2]), X, Y, epochs=50, callbacks=[stop_at_3])
    assert seen == [0, 1, 2] and len(history["loss"]) == 3


@pytest.mark.parametrize("momentum, nesterov", [(0.0, False), (0.9, False), (0.9, True)])
def test_sgd_matches_the_textbook_rule(momentum, nesterov):
    rng = np.random.default_rng(0)
    p, grads = rng.standard_normal(5), [rng.standard_normal(5) for _ in range(4)]
    opt = pm.SGD(lr=0.1, momentum=momentum, nesterov=nesterov)
    params, state = [p.copy()], opt.init_state(np, [p])
    ref, v = p.copy(), np.zeros(5)
    for g in grads:
        params, state = opt.update(np, params, [g.copy()], state)
        v = momentum * v - 0.1 * g
        ref = ref + (momentum * v - 0.1 * g if nesterov else v)
    np.testing.assert_allclose(params[0], ref, rtol=1e-12)


def test_adam_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    p, grads = rng.standard_normal(6), [rng.standard_normal(6) for _ in range(5)]
    opt = pm.Adam(lr=0.05)
    params, state = [p.copy()], opt.init_state(np, [p])
    tp = torch.tensor(p, requires_grad=True)
    topt = torch.optim.Adam([tp], lr=0.05, eps=1e-8)
    for g in grads:
        params, state = opt.update(np, params, [g.copy()], state)
        tp.grad = torch.tensor(g)
        topt.step()
    # eps sits outside the bias correction here (as in scikit-learn), inside in torch:
    # the two agree to within a few eps
    np.testing.assert_allclose(params[0], tp.detach().numpy(), rtol=0, atol=1e-6)


def test_schedules_scale_the_learning_rate():
    opt = pm.SGD(lr=1.0, schedule=pm.optim.step_decay(every=2, factor=0.5))
    assert [opt.learning_rate(s) for s in range(5)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert pm.optim.cosine(10)(10) == pytest.approx(0.0)
    assert pm.optim.inverse_scaling(0.5)(3) == pytest.approx(0.5)


def test_clip_norm_bounds_the_update(xor_data):
    X, Y = xor_data
    model = pm.MLP([2, 4, 2], seed=0, dtype="float64")
    before = [p.copy() for p in model.params]
    pm.Trainer(model, optimizer=pm.SGD(lr=1.0), clip_norm=1e-3).step(X, Y)
    step = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(model.params, before)))
    assert step == pytest.approx(1e-3, rel=1e-6)


@pytest.mark.parametrize("what", ["model", "optimizer", "trainer"])
def test_models_optimizers_trainers_pickle_and_deepcopy(backend, what, xor_data):
    import pickle

    X, Y = xor_data
    model = pm.MLP([2, 3, 2], seed=0, backend=backend, dtype="float32")
    trainer = pm.Trainer(model, optimizer=pm.SGD(lr=0.1, momentum=0.9))
    trainer.step(X, Y)
    obj = {"model": model, "optimizer": trainer.optimizer, "trainer": trainer}[what]
    for clone in (pickle.loads(pickle.dumps(obj)), copy.deepcopy(obj)):
        assert type(clone) is type(obj) and clone is not obj
    # a trainer carried across a pickle continues exactly like the original
    restored = pickle.loads(pickle.dumps(trainer))
    assert restored.model.backend == backend
    restored.step(X, Y)
    trainer.step(X, Y)
    for a, b in zip(restored.model.host_params(), trainer.model.host_params()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_moved_and_loaded_parameters_never_alias_the_source(xor_data):
    X, Y = xor_data
    model = pm.MLP([2, 3, 2], seed=0, dtype="float64")
    before = [p.copy() for p in model.params]
    for other in (model.to(dtype="float64"), model.to("numpy")):
        pm.Trainer(other, optimizer=pm.SGD(lr=1.0)).step(X, Y)
    mine = [p.copy() for p in before]
    model.load_params(mine)
    pm.Trainer(model, optimizer=pm.SGD(lr=1.0)).step(X, Y)
    for p, b, m in zip(model.params, before, mine):
        np.testing.assert_array_equal(m, b)  # the caller's arrays are untouched
        assert not np.array_equal(p, b)


def test_an_optimizer_with_state_refuses_another_backend_or_dtype(xor_data):
    X, Y = xor_data
    opt = pm.Adam(lr=0.01)
    pm.Trainer(pm.MLP([2, 3, 2], seed=0), optimizer=opt).step(X, Y)
    slots = [[s.copy() for s in ss] for ss in opt.state["slots"]]
    other = pm.MLP([2, 3, 2], seed=0, dtype="float32")
    with pytest.raises(ValueError, match="backend or dtype differ"):
        pm.Trainer(other, optimizer=opt).step(X, Y)
    for ss, kept in zip(opt.state["slots"], slots):
        for s, k in zip(ss, kept):
            np.testing.assert_array_equal(s, k)


def test_errors_and_schedules_pickle_and_read_well():
    import pickle

    err = pickle.loads(pickle.dumps(pm.DivergenceError(3, 0.25, {"loss": [1.0]})))
    assert (err.step, err.last_loss, err.history) == (3, 0.25, {"loss": [1.0]})
    assert repr(pm.optim.step_decay(every=2, factor=0.5)) == "step_decay(every=2, factor=0.5)"


def test_numpy_dtype_objects_are_accepted():
    assert pm.MLP([2, 2], dtype=np.float32).placement.dtype == "float32"
    assert pm.MLP([2, 2], dtype=np.dtype("float64")).placement.dtype == "float64"


def test_a_single_tanh_output_is_thresholded_at_zero():
    model = pm.MLP([1, 1], activation="tanh", output="tanh", bias=False, seed=0)
    model.load_params([np.array([[1.0]])])
    np.testing.assert_array_equal(model.predict(np.array([[-0.3], [0.3]])), [0, 1])
