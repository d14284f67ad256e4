"""What a newcomer looks for on a model: its size and layout, class probabilities, and
class labels accepted where one-hot targets are expected."""

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend


def test_n_params_and_summary(backend, capsys):
    model = pm.MLP([2, 8, 3], activation="tanh", output="identity", backend=backend)
    assert model.n_params == (2 * 8 + 8) + (8 * 3 + 3)
    assert pm.MLP([2, 8, 3], bias=False, backend=backend).n_params == 2 * 8 + 8 * 3
    model.summary()
    printed = capsys.readouterr().out
    assert printed == repr(model) + "\n"
    lines = printed.splitlines()
    assert lines[0].startswith(f"Sequential on {backend!r}") and "51 parameters" in lines[0]
    assert lines[1].split() == ["#", "piece", "output", "params"]
    assert lines[2].startswith("0  Linear(in_features=2, out_features=8")
    assert lines[2].split()[-3:] == ["(n,", "8)", "24"]
    assert lines[3].split()[-3:] == ["(n,", "8)", "0"] and "Tanh()" in lines[3]
    assert lines[4].split()[-1] == "27" and lines[5].split()[-3:] == ["(n,", "3)", "0"]


def _host(a):
    return np.asarray(_backend.to_host(a), dtype=np.float64)


@pytest.mark.parametrize("output, n_out", [("identity", 3), ("softmax", 3), ("sigmoid", 3),
                                           ("identity", 1), ("sigmoid", 1)])
def test_predict_proba_rows_are_probabilities(backend, output, n_out):
    X, _ = pm.datasets.xor(n=40, seed=1)
    model = pm.MLP([2, 5, n_out], output=output, seed=3, backend=backend)
    proba = model.predict_proba(X)
    assert _backend.array_backend(proba) == backend
    p = _host(proba)
    assert p.shape == (40, max(n_out, 2))
    assert np.all(p >= 0) and np.allclose(p.sum(axis=1), 1.0)
    out = _host(model(X))
    if n_out == 1:
        expected = 1 / (1 + np.exp(-out[:, 0])) if output == "identity" else out[:, 0]
        np.testing.assert_allclose(p[:, 1], expected, rtol=1e-5)
    else:
        expected = (np.exp(out) / np.exp(out).sum(axis=1, keepdims=True)
                    if output == "identity" else out / out.sum(axis=1, keepdims=True))
        np.testing.assert_allclose(p, expected, rtol=1e-5)
        np.testing.assert_array_equal(p.argmax(axis=1), _host(model.predict(X)))


def test_predict_proba_refuses_an_output_that_is_no_probability():
    with pytest.raises(TypeError, match="ends with a Sigmoid, a Softmax or an Identity"):
        pm.MLP([2, 3, 2], output="tanh").predict_proba(np.zeros((1, 2)))


@pytest.mark.parametrize("loss, output, k", [("cross_entropy", "identity", 3),
                                             ("mse", "sigmoid", 3),
                                             ("binary_cross_entropy", "identity", 1)])
def test_class_labels_train_as_their_one_hot_rows(backend, loss, output, k):
    X, y = pm.datasets.spirals(n=60, n_classes=3, seed=0)
    if k == 1:
        y = (y > 0).astype(np.int64)
    Y = pm.one_hot(y, 3)[:, -k:] if k > 1 else y[:, None].astype(np.float64)
    histories = []
    for targets in (Y, y):
        model = pm.MLP([2, 6, k], output=output, seed=0, backend=backend)
        histories.append(pm.fit(model, X, targets, loss=loss, optimizer=pm.Adam(lr=0.05),
                                epochs=3, batch_size=16, progress=False))
    np.testing.assert_allclose(histories[1]["loss"], histories[0]["loss"], rtol=1e-6)


def test_class_labels_on_the_model_s_own_backend(backend):
    X, y = pm.datasets.xor(n=30, seed=0)
    model = pm.MLP([2, 4, 2], backend=backend)
    labels = model.placement.xp.asarray(y, device=model.placement.device_obj)
    loss_labels, _ = pm.value_and_grad(model, X, labels)
    loss_onehot, _ = pm.value_and_grad(model, X, pm.one_hot(y, 2))
    assert float(_backend.to_host(loss_labels)) == pytest.approx(
        float(_backend.to_host(loss_onehot)), rel=1e-6)


@pytest.mark.parametrize("y, k, message", [
    (np.array([0, 1, 2, 0]), 2, "holds class labels, but the model has 2 outputs"),
    (np.array([0, 1, 2, 0]), 1, "holds class labels, but the model has 1 output"),
    (np.array([-1, 0, 1, 0]), 2, "labels must be in"),
    (np.array([0.0, 1.0, 1.0, 0.0]), 2, "or 1-D integer class labels; got a 1-D array of"),
])
def test_bad_class_labels_are_refused_before_training(y, k, message):
    model = pm.MLP([2, 3, k])
    before = model.host_params()
    with pytest.raises(ValueError, match=message):
        pm.fit(model, np.zeros((4, 2)), y, epochs=1)
    for a, b in zip(before, model.host_params()):
        np.testing.assert_array_equal(a, b)
