"""Per-sample weights: integer weights act as repeated samples, on every backend."""

import numpy as np
import pytest

import portable_mlp as pm


@pytest.mark.parametrize("loss, output", [
    ("mse", "identity"), ("cross_entropy", "identity"), ("binary_cross_entropy", "identity"),
])
def test_integer_weights_equal_repeated_samples(backend, loss, output):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 3))
    Y = np.eye(2)[rng.integers(0, 2, 6)]
    w = np.array([1.0, 2.0, 0.0, 3.0, 1.0, 1.0])
    model = pm.MLP([3, 4, 2], activation="tanh", output=output, seed=0, backend=backend,
                   dtype="float64")
    value, grads = pm.value_and_grad(model, X, Y, loss=loss, l2=0.3, sample_weight=w)
    rows = np.repeat(np.arange(6), w.astype(int))
    ref_value, ref_grads = pm.value_and_grad(model, X[rows], Y[rows], loss=loss, l2=0.3)
    to_host = pm._backend.to_host
    np.testing.assert_allclose(to_host(value), to_host(ref_value), rtol=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(to_host(g), to_host(r), rtol=1e-10, atol=1e-14)


def test_fit_with_weights_equals_fit_on_repeated_samples(backend):
    rng = np.random.default_rng(1)
    X = rng.standard_normal((8, 2))
    Y = rng.standard_normal((8, 1))
    w = np.array([1, 2, 1, 1, 3, 1, 0, 1], dtype=float)
    rows = np.repeat(np.arange(8), w.astype(int))
    histories = []
    for data in ((X, Y, w), (X[rows], Y[rows], None)):
        model = pm.MLP([2, 3, 1], activation="tanh", output="identity", seed=0,
                       backend=backend, dtype="float64")
        trainer = pm.Trainer(model, loss="mse", optimizer=pm.Adam(lr=1e-2), l2=0.1)
        history = trainer.fit(data[0], data[1], epochs=5, sample_weight=data[2],
                              progress=False, epoch_loss="steps")
        histories.append((history["loss"], model.host_params()))
    np.testing.assert_allclose(histories[0][0], histories[1][0], rtol=1e-10)
    for a, b in zip(histories[0][1], histories[1][1], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)


def test_bad_sample_weights_are_refused():
    model = pm.MLP([2, 2], output="identity")
    X, Y = np.zeros((3, 2)), np.zeros((3, 2))
    for bad, match in (([1.0, -1.0, 1.0], "non-negative"), ([0.0, 0.0, 0.0], "all zero"),
                       ([1.0, 1.0], "3 rows"), ([1.0, np.nan, 1.0], "NaN")):
        with pytest.raises(ValueError, match=match):
            pm.fit(model, X, Y, epochs=1, sample_weight=bad, progress=False)


def test_a_batch_of_zero_weight_is_skipped_not_divergent(backend, xor_data):
    X, Y = xor_data
    X, Y = X[:100], Y[:100]
    w = np.r_[np.zeros(90), np.ones(10)]  # nine batches of 10 weigh nothing
    fits = []
    for data in ((X, Y, w), (X[90:], Y[90:], None)):
        model = pm.MLP([2, 4, 2], seed=0, backend=backend, dtype="float64")
        trainer = pm.Trainer(model, optimizer=pm.SGD(lr=0.5, momentum=0.9))
        history = trainer.fit(data[0], data[1], epochs=3, batch_size=10, shuffle=False,
                              sample_weight=data[2], progress=False, epoch_loss="steps")
        fits.append((trainer.steps, history["loss"], model.host_params()))
    (steps, losses, params), (ref_steps, ref_losses, ref_params) = fits
    assert steps == ref_steps == 3
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-12)
    for p, q in zip(params, ref_params, strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-12)


def test_steps_loss_is_weighted_by_each_batch_weight(backend, xor_data):
    X, Y = xor_data
    X, Y = X[:100], Y[:100]
    w = np.r_[np.ones(50), np.full(50, 3.0)]
    model = pm.MLP([2, 4, 2], seed=0, backend=backend, dtype="float64")
    twin = pm.MLP([2, 4, 2], seed=0, backend=backend, dtype="float64")
    history = pm.Trainer(model, optimizer=pm.SGD(lr=0.5)).fit(
        X, Y, epochs=1, batch_size=50, shuffle=False, sample_weight=w, progress=False,
        epoch_loss="steps")
    to_host = pm._backend.to_host
    first, _ = pm.value_and_grad(twin, X[:50], Y[:50])
    pm.Trainer(twin, optimizer=pm.SGD(lr=0.5)).step(X[:50], Y[:50])
    second, _ = pm.value_and_grad(twin, X[50:], Y[50:], sample_weight=w[50:])
    expected = (50 * float(to_host(first)) + 150 * float(to_host(second))) / 200
    assert history["loss"][0] == pytest.approx(expected, rel=1e-12)
