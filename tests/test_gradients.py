"""Every piece and loss passes a central-difference gradient check, on every backend."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import portable_mlp as pm

ACTIVATIONS = ["sigmoid", "tanh", "relu", "identity", "softmax"]


def _data(rng, n, n_in, n_out, loss):
    X = rng.standard_normal((n, n_in))
    if loss == "cross_entropy":
        return X, np.eye(n_out)[rng.integers(0, n_out, n)]
    if loss == "binary_cross_entropy":
        return X, rng.integers(0, 2, (n, n_out)).astype(float)
    return X, rng.uniform(0, 1, (n, n_out))


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(activation=st.sampled_from(ACTIVATIONS), n=st.integers(1, 6),
       hidden=st.integers(1, 5), n_out=st.integers(1, 3), bias=st.booleans(),
       l2=st.sampled_from([0.0, 0.3]), seed=st.integers(0, 2**16))
def test_pieces_pass_gradcheck_with_mse(backend, activation, n, hidden, n_out, bias, l2, seed):
    rng = np.random.default_rng(seed)
    model = pm.MLP([3, hidden, n_out], activation=activation, output="sigmoid", bias=bias,
                   seed=seed, backend=backend, dtype="float64")
    X, Y = _data(rng, n, 3, n_out, "mse")
    if activation == "relu":  # keep pre-activations away from the kink at 0
        X = X + np.sign(X)
    assert pm.gradcheck(model, X, Y, loss="mse", l2=l2) <= 1.0


@pytest.mark.parametrize("loss, output", [
    ("mse", "identity"), ("mse", "softmax"), ("mse", "tanh"),
    ("cross_entropy", "identity"), ("binary_cross_entropy", "identity"),
])
def test_losses_pass_gradcheck(backend, loss, output):
    rng = np.random.default_rng(1)
    model = pm.MLP([4, 5, 3], activation="tanh", output=output, seed=1, backend=backend,
                   dtype="float64")
    X, Y = _data(rng, 7, 4, 3, loss)
    assert pm.gradcheck(model, X, Y, loss=loss, l2=0.1) <= 1.0


def test_gradcheck_catches_a_wrong_gradient(monkeypatch):
    model = pm.MLP([2, 3, 2], seed=0, dtype="float64")
    X, Y = _data(np.random.default_rng(0), 5, 2, 2, "mse")
    original = pm.Sigmoid.forward

    def wrong(self, xp, params, x):
        y, backprop = original(self, xp, params, x)
        return y, lambda dy, need_dx=True: (backprop(dy, need_dx)[0] * 1.1, [])

    monkeypatch.setattr(pm.Sigmoid, "forward", wrong)
    with pytest.raises(pm.GradcheckError, match="gradient check failed"):
        pm.gradcheck(model, X, Y)


def test_l2_gradient_is_l2_w_over_n():
    model = pm.MLP([2, 3, 2], bias=False, seed=0, dtype="float64")
    X, Y = _data(np.random.default_rng(0), 10, 2, 2, "mse")
    loss0, g0 = pm.value_and_grad(model, X, Y, l2=0.0)
    loss1, g1 = pm.value_and_grad(model, X, Y, l2=0.5)
    for w, a, b in zip(model.params, g0, g1):
        np.testing.assert_allclose(b - a, 0.5 * w / 10, rtol=1e-12)
    penalty = 0.5 * sum(float(np.sum(w**2)) for w in model.params) / 20
    np.testing.assert_allclose(float(loss1 - loss0), penalty, rtol=1e-12)


def test_mse_is_the_seeds_loss():
    model = pm.MLP([2, 3, 2], bias=False, seed=0, dtype="float64")
    X, Y = _data(np.random.default_rng(0), 10, 2, 2, "mse")
    loss, _ = pm.value_and_grad(model, X, Y)
    out = np.asarray(model(X))
    np.testing.assert_allclose(float(loss), np.sum((out - Y) ** 2) / 20, rtol=1e-12)


@pytest.mark.parametrize("loss", ["cross_entropy", "binary_cross_entropy"])
def test_cross_entropies_are_stable_for_huge_logits(backend, xp, loss):
    from portable_mlp import _backend, losses

    z = xp.asarray([[1e4, -1e4], [-1e4, 1e4]], dtype=xp.float64)
    y = xp.asarray([[1.0, 0.0], [1.0, 0.0]], dtype=xp.float64)
    value, delta = losses.get(loss)(_backend.ops(backend), z, y)
    value, delta = float(_backend.to_host(value)), _backend.to_host(delta)
    assert np.isfinite(value) and np.all(np.isfinite(delta))
    assert value == pytest.approx(1e4, rel=1e-9)  # the second row is wrong by 2e4 / N=2


def test_cross_entropy_refuses_a_sigmoid_output():
    model = pm.MLP([2, 3, 2], output="sigmoid")
    with pytest.raises(ValueError, match="takes logits"):
        pm.Trainer(model, loss="cross_entropy")
