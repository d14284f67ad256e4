"""Bad input raises a clear ValueError/TypeError before anything is mutated."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import portable_mlp as pm
from portable_mlp import _backend


def _snapshot(trainer):
    state = trainer.optimizer.state
    slots = None if state is None else [[_backend.to_host(s).copy() for s in ss]
                                        for ss in state["slots"]]
    return ([p.copy() for p in trainer.model.host_params()],
            None if state is None else state["step"], slots, trainer.steps)


def _assert_same(before, after):
    params0, step0, slots0, steps0 = before
    params1, step1, slots1, steps1 = after
    for a, b in zip(params0, params1, strict=True):
        np.testing.assert_array_equal(a, b)
    assert step0 == step1 and steps0 == steps1
    if slots0 is not None:
        for ss0, ss1 in zip(slots0, slots1, strict=True):
            for a, b in zip(ss0, ss1, strict=True):
                np.testing.assert_array_equal(a, b)


@pytest.fixture
def trained(xor_data):
    """A trainer that has taken a few steps, so there is optimizer state to protect."""
    X, Y = xor_data
    model = pm.MLP([2, 3, 2], seed=0)
    trainer = pm.Trainer(model, optimizer=pm.Adam(lr=0.01))
    trainer.fit(X, Y, epochs=3, progress=False)
    return trainer


def _bad_x(X):
    X = X.copy()
    X[5, 1] = np.nan
    return X


def _inf_y(Y):
    Y = Y.copy()
    Y[3, 0] = np.inf
    return Y


# (name, X transform, Y transform, exception, message fragment)
BAD_DATA = [
    ("nan in X", _bad_x, None, ValueError, "X contains NaN or inf"),
    ("inf in Y", None, _inf_y, ValueError, "Y contains NaN or inf"),
    ("X 1-D", lambda X: X[:, 0], None, ValueError, "X must be 2-D"),
    ("X 3-D", lambda X: X[:, :, None], None, ValueError, "X must be 2-D"),
    ("n_features", lambda X: np.hstack([X, X]), None, ValueError, "X has 4 columns, but the "
     "model expects 2"),
    ("n_outputs", None, lambda Y: Y[:, :1], ValueError, "Y has 1 columns, but the model "
     "expects 2"),
    ("lengths", lambda X: X[:-1], None, ValueError, "different lengths: 299 rows in X, 300"),
    ("empty", lambda X: X[:0], lambda Y: Y[:0], ValueError, "X is empty"),
    ("complex", lambda X: X.astype(complex), None, TypeError, "X has dtype complex128"),
    ("object", lambda X: X.astype(object), None, TypeError, "Python objects"),
    ("string", lambda X: X.astype(str), None, TypeError, "strings"),
    ("bytes", lambda X: X.astype("S8"), None, TypeError, "bytes"),
    ("None", lambda X: None, None, TypeError, "X has dtype object"),
]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's, on the NaN a bare step meets
@pytest.mark.parametrize("entry, case", [
    pytest.param(entry, case, id=f"{entry}-{case[0]}")
    for entry in ("fit", "step", "value_and_grad", "predict") for case in BAD_DATA
    # predict takes no Y
    if not (entry == "predict" and (case[2] is not None or case[0] == "lengths"))
])
def test_bad_data_raises_before_mutation(trained, xor_data, entry, case):
    _, fx, fy, exc, fragment = case
    X, Y = xor_data
    X = fx(X) if fx else X
    Y = fy(Y) if fy else Y
    if entry == "step" and "NaN" in fragment:
        # a bare step does no pass over the values (DESIGN): divergence catches it
        exc, fragment = pm.DivergenceError, "diverged at step"
    before = _snapshot(trained)
    with pytest.raises(exc, match=fragment):
        if entry == "fit":
            trained.fit(X, Y, epochs=2, progress=False)
        elif entry == "step":
            trained.step(X, Y)
        elif entry == "value_and_grad":
            pm.value_and_grad(trained.model, X, Y)
        else:
            trained.model.predict(X)
    _assert_same(before, _snapshot(trained))


@pytest.mark.parametrize("kwargs, exc, fragment", [
    ({"epochs": 0}, ValueError, "epochs must be positive"),
    ({"epochs": -3}, ValueError, "epochs must be positive"),
    ({"epochs": 2.5}, TypeError, "epochs must be an integer"),
    ({"batch_size": 0}, ValueError, "batch_size must be positive"),
    ({"batch_size": True}, TypeError, "batch_size must be an integer"),
    ({"seed": -1}, ValueError, "seed must be a non-negative integer"),
    ({"callbacks": [3]}, TypeError, "a callback must be"),
    ({"validation_data": np.zeros((3, 2))}, TypeError, "validation_data must be a pair"),
])
def test_bad_fit_arguments_raise_before_mutation(trained, xor_data, kwargs, exc, fragment):
    before = _snapshot(trained)
    with pytest.raises(exc, match=fragment):
        trained.fit(*xor_data, progress=False, **{"epochs": 2, **kwargs})
    _assert_same(before, _snapshot(trained))


def test_integer_and_boolean_x_are_cast(xor_data):
    X, _Y = xor_data
    model = pm.MLP([2, 3, 2], seed=0)
    for data in (X.astype(np.int64), X > 0):
        out = model(data)
        assert out.dtype == model.dtype
        np.testing.assert_array_equal(out, model(data.astype(np.float64)))


@pytest.mark.parametrize("make, exc, fragment", [
    (lambda: pm.SGD(lr=0), ValueError, "lr must be positive"),
    (lambda: pm.SGD(lr=-0.1), ValueError, "lr must be positive"),
    (lambda: pm.Adam(lr=float("nan")), ValueError, "lr must be positive and finite"),
    (lambda: pm.Adam(lr="fast"), TypeError, "lr must be a number"),
    (lambda: pm.SGD(momentum=1.5), ValueError, r"momentum must be in \[0, 1\]"),
    (lambda: pm.Adam(beta1=1.5), ValueError, "beta1 must be in"),
    (lambda: pm.MLP([2, 3, 2], activation="swish"), ValueError,
     "unknown activation 'swish'; expected one of sigmoid, tanh, relu, identity, softmax"),
    (lambda: pm.MLP([2, 3, 2], backend="tensorflow"), ValueError,
     "unknown backend 'tensorflow'; expected one of numpy, cupy, torch"),
    (lambda: pm.MLP([2, 3, 2], dtype="float16"), ValueError, "dtype must be one of float32"),
    (lambda: pm.MLP([2, 0, 2]), ValueError, "every layer size must be a positive integer"),
    (lambda: pm.MLP([2]), ValueError, "sizes must list at least"),
    (lambda: pm.MLP([2, 2], seed=-1), ValueError, "seed must be a non-negative"),
    (lambda: pm.MLP([2, 2], device="gpu:7"), ValueError, "device 'gpu:7' is not available"),
    (lambda: pm.Sequential([pm.Linear(2, 3), pm.Linear(4, 1)]), ValueError,
     "Linear expects 4 input features"),
    (lambda: pm.Sequential([pm.Linear(2, 3), "relu"]), TypeError, "every piece must be"),
    (lambda: pm.Trainer(pm.MLP([2, 2]), loss="hinge"), ValueError,
     "unknown loss 'hinge'; expected one of mse, cross_entropy, binary_cross_entropy"),
    (lambda: pm.Trainer(pm.MLP([2, 2]), optimizer="rmsprop"), ValueError,
     "unknown optimizer 'rmsprop'.*sgd, adam"),
    (lambda: pm.Trainer(pm.MLP([2, 2]), optimizer=pm.LBFGS()), TypeError,
     "LBFGS.*is a full-batch solver.*minimize\\(model, X, Y"),
    (lambda: pm.Trainer(pm.MLP([2, 2]), loss="cross_entropy"), ValueError, "takes logits"),
    (lambda: pm.Trainer(pm.MLP([2, 2]), clip_norm=0), ValueError, "clip_norm must be positive"),
    (lambda: pm.Trainer(pm.MLP([2, 2]), l2=-1), ValueError, "l2 must be >= 0"),
    (lambda: pm.one_hot(np.array([0, 1, 5]), 3), ValueError, "labels must be in \\[0, 3\\), "
     "got values from 0 to 5"),
    (lambda: pm.one_hot(np.array([True, False]), 2), TypeError, "integer labels"),
    (lambda: pm.one_hot(np.array([0.0, 1.0]), 2), TypeError, "integer labels"),
    (lambda: pm.load("x.safetensors", backend="mxnet"), ValueError, "unknown backend 'mxnet'"),
    (lambda: pm.Trainer("model"), TypeError, "model must be a portable_mlp model"),
    (lambda: pm.value_and_grad(None, np.zeros((2, 2)), np.zeros((2, 2))), TypeError,
     "model must be a portable_mlp model"),
])
def test_constructors_and_names_are_checked(make, exc, fragment):
    with pytest.raises(exc, match=fragment):
        make()


def test_foreign_namespace_is_refused_with_a_conversion_hint(xor_data):
    torch = pytest.importorskip("torch")
    X, Y = xor_data
    trainer = pm.Trainer(pm.MLP([2, 3, 2], seed=0), optimizer=pm.Adam(lr=0.01))
    trainer.fit(X, Y, epochs=2, progress=False)
    before = _snapshot(trainer)
    with pytest.raises(TypeError, match=r"X is a torch array.*backend 'numpy'.*numpy.asarray"):
        trainer.fit(torch.asarray(X), Y, epochs=1, progress=False)
    with pytest.raises(TypeError, match=r"Y is a torch array"):
        trainer.step(X, torch.asarray(Y))
    _assert_same(before, _snapshot(trainer))


def test_array_of_another_device_is_refused(xor_data):
    strict = pytest.importorskip("array_api_strict")
    X, Y = xor_data
    model = pm.MLP([2, 3, 2], seed=0, backend="array_api_strict")
    trainer = pm.Trainer(model)
    other = strict.asarray(X, device=strict.Device("device1"))
    before = _snapshot(trainer)
    with pytest.raises(TypeError, match=r"device 'device1'.*device 'CPU_DEVICE'"):
        trainer.fit(other, Y, epochs=1, progress=False)
    _assert_same(before, _snapshot(trainer))


def test_numpy_input_is_accepted_on_every_backend(backend, xor_data):
    X, Y = xor_data
    model = pm.MLP([2, 3, 2], seed=0, backend=backend)
    history = pm.fit(model, X, Y, epochs=2, progress=False)
    assert len(history["loss"]) == 2
    assert _backend.array_backend(model(X)) == backend


def test_fit_moves_host_data_once(backend, xor_data, monkeypatch):
    """NumPy data is placed on the device once per fit, not once per step."""
    X, Y = xor_data
    model = pm.MLP([2, 3, 2], seed=0, backend=backend)
    calls = []
    original = _backend.from_host

    def counting(name, x, device, dtype):
        if name == backend:  # (dask's step tasks make NumPy models of their own)
            calls.append(x.shape)
        return original(name, x, device, dtype)

    monkeypatch.setattr(_backend, "from_host", counting)
    pm.fit(model, X, Y, epochs=3, batch_size=50, progress=False)
    assert calls == ([] if backend == "numpy" else [X.shape, Y.shape])


def test_optimizer_state_for_another_model_is_refused(xor_data):
    X, Y = xor_data
    opt = pm.Adam(lr=0.01)
    pm.fit(pm.MLP([2, 3, 2], seed=0), X, Y, optimizer=opt, epochs=2, progress=False)
    other = pm.MLP([2, 4, 2], seed=0)
    params = [p.copy() for p in other.host_params()]
    state = copy.deepcopy(opt.state)
    with pytest.raises(ValueError, match="holds state for other parameters"):
        pm.fit(other, X, Y, optimizer=opt, epochs=2, progress=False)
    for a, b in zip(params, other.host_params(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert opt.state["step"] == state["step"]


# --- hypothesis: any malformed array gives a clear error, never another exception ------

def _arrays():
    dtypes = st.one_of(hnp.floating_dtypes(), hnp.integer_dtypes(), hnp.boolean_dtypes(),
                       hnp.complex_number_dtypes(), hnp.unicode_string_dtypes(),
                       hnp.byte_string_dtypes())
    return hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=_arrays(), y=_arrays())
def test_malformed_arrays_raise_clear_errors(x, y):
    model = pm.MLP([2, 2], seed=0)
    trainer = pm.Trainer(model)
    before = [p.copy() for p in model.host_params()]
    well_formed = x.shape[1:] == (2,) and y.shape == (x.shape[0], 2) and x.shape[0] > 0
    try:
        trainer.fit(x, y, epochs=1, progress=False)
    except (ValueError, TypeError) as exc:
        assert any(name in str(exc) for name in ("X", "Y")), str(exc)
    except pm.DivergenceError:  # finite data so large that the loss overflows (Y ~ 1e154)
        assert well_formed
    else:  # only well-formed, finite, real data of the right shapes trains
        assert well_formed
        return
    for a, b in zip(before, model.host_params(), strict=True):
        np.testing.assert_array_equal(a, b)
