"""Dropout: counter-based masks (statistics, bit-identical on every backend, inside
``jax.jit`` and on dask blocks), on in training and off in inference, and the same float64
trajectory on every backend."""

import functools

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend, counter_rng, distributed


def _bits(xp, shape=(37, 23), seed=7, layer=2, step=5, row0=0):
    return _backend.to_host(counter_rng.uniform_bits(xp, shape, seed, layer,
                                                     counter_rng.Key(step, row0)))


def _keep(bits, rate):
    return bits >= counter_rng.threshold(rate)


def test_masks_have_the_rate_and_are_independent_across_steps_layers_and_neighbours():
    rate, shape = 0.2, (1000, 500)
    masks = {(step, layer): _keep(_bits(np, shape, 0, layer, step), rate).astype(float)
             for step in (0, 1, 2**20) for layer in (1, 4)}
    n = masks[0, 1].size
    sd = np.sqrt(rate * (1 - rate) / n)
    for mask in masks.values():
        assert abs(mask.mean() - (1 - rate)) < 5 * sd

    def corr(a, b):
        return np.corrcoef(a.ravel(), b.ravel())[0, 1]

    bound = 5 / np.sqrt(n)  # |correlation| of independent masks: about 1 / sqrt(n)
    assert abs(corr(masks[0, 1], masks[1, 1])) < bound        # steps
    assert abs(corr(masks[0, 1], masks[2**20, 1])) < bound
    assert abs(corr(masks[0, 1], masks[0, 4])) < bound        # layers
    m = masks[0, 1]
    assert abs(corr(m[:, 1:], m[:, :-1])) < bound             # neighbours in a row
    assert abs(corr(m[1:], m[:-1])) < bound                   # and in a column
    # the draws themselves: 64 equal bins of the 32-bit range (chi-square, 63 dof)
    counts = np.bincount((_bits(np, shape, 0, 1, 0).ravel().astype(np.int64) + 2**31) >> 26,
                         minlength=64)
    chi2 = np.sum((counts - n / 64) ** 2 / (n / 64))
    assert chi2 < 120  # p < 1e-5 under uniform draws


def test_threshold_is_the_rate():
    assert counter_rng.threshold(0.0) == -(2**31)  # nothing below: all kept
    assert counter_rng.threshold(0.5) == 0
    assert counter_rng.threshold(0.25) == -(2**30)


def test_masks_are_bit_identical_on_every_backend(xp):
    for kwargs in ({}, {"seed": 2**40 + 3, "layer": 11, "step": 123456, "row0": 4000}):
        np.testing.assert_array_equal(_bits(xp, **kwargs), _bits(np, **kwargs))


def test_a_block_of_rows_draws_what_the_whole_batch_draws_for_them():
    whole = _bits(np, (30, 8))
    np.testing.assert_array_equal(_bits(np, (10, 8), row0=12), whole[12:22])


def test_masks_under_jax_jit_with_a_traced_step():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    def draw(step):
        return counter_rng.uniform_bits(jnp, (9, 4), 3, 1, counter_rng.Key(step))

    got = jax.jit(draw)(jnp.asarray(17))
    np.testing.assert_array_equal(np.asarray(got), _bits(np, (9, 4), 3, 1, 17))


def _model(backend, rate=0.3, **kwargs):
    return pm.Sequential([pm.Linear(3, 16), pm.ReLU(), pm.Dropout(rate, seed=9),
                          pm.Linear(16, 16), pm.GELU(), pm.Dropout(rate),
                          pm.Linear(16, 2), pm.Identity()], seed=1, backend=backend,
                         dtype="float64", **kwargs)


def _data(n=60):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, 3))
    return X, np.eye(2)[(X[:, 0] * X[:, 1] > 0).astype(int)]


def test_dropout_is_off_in_inference_and_on_in_training(backend):
    X, Y = _data()
    model = _model(backend)
    plain = pm.Sequential([p for p in model.pieces if not isinstance(p, pm.Dropout)],
                          seed=1, backend=backend, dtype="float64")
    for f in ("__call__", "predict", "predict_proba"):
        np.testing.assert_array_equal(_backend.to_host(getattr(model, f)(X)),
                                      _backend.to_host(getattr(plain, f)(X)))
    trainer = pm.Trainer(model, loss="cross_entropy")
    Xd, Yd = model.placement.from_host(X), model.placement.from_host(Y)
    plain_trainer = pm.Trainer(plain, loss="cross_entropy")
    assert trainer.evaluate(Xd, Yd) == plain_trainer.evaluate(Xd, Yd)
    off = pm.value_and_grad(model, X, Y, loss="cross_entropy")[0]
    on = [pm.value_and_grad(model, X, Y, loss="cross_entropy", dropout_step=s)[0]
          for s in (0, 1)]
    assert float(off) == float(pm.value_and_grad(plain, X, Y, loss="cross_entropy")[0])
    assert len({float(off), *(float(v) for v in on)}) == 3  # a new mask each step


def test_training_forward_drops_at_the_rate_and_scales_the_rest():
    x = np.ones((400, 50))
    piece = pm.Dropout(0.25, seed=3)
    ops = _backend.ops("numpy")
    y, backprop = piece.forward_train(ops, [], x, counter_rng.Key(0), 4, None)
    assert set(np.unique(y)) == {0.0, 1.0 / 0.75}
    assert abs((y == 0).mean() - 0.25) < 0.01
    dx, _ = backprop(np.ones_like(x))
    np.testing.assert_array_equal(dx, y)  # the same mask, the same scale
    np.testing.assert_array_equal(x, 1.0)  # the input untouched


def test_gradcheck_with_the_masks_of_a_step_held_fixed(backend):
    X, Y = _data(8)
    assert pm.gradcheck(_model(backend), X, Y, loss="cross_entropy", dropout_step=3) <= 1.0
    with pytest.raises(ValueError, match="dropout_step must be a non-negative integer"):
        pm.value_and_grad(_model(backend), X, Y, dropout_step=-1)


@functools.cache
def _numpy_fit(shuffle=True):
    return _fit("numpy", shuffle=shuffle)


def _fit(backend, X=None, shuffle=True):
    X0, Y = _data()
    model = _model(backend)
    trainer = pm.Trainer(model, loss="cross_entropy", optimizer=pm.AdamW(lr=0.02),
                         clip_norm=5.0)
    history = trainer.fit(X0 if X is None else X, Y, epochs=4, batch_size=16, seed=2,
                          shuffle=shuffle, progress=False)
    return history, model.host_params()


def test_float64_trajectory_with_dropout_is_the_same_on_every_backend(backend):
    """numpy, array_api_strict, torch, dask (its graph path) and jax (compiled epochs)."""
    history, params = _fit(backend)
    ref_history, ref_params = _numpy_fit()
    np.testing.assert_allclose(history["loss"], ref_history["loss"], rtol=1e-12)
    for a, b in zip(params, ref_params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_dask_row_blocks_draw_the_whole_batchs_masks():
    da = pytest.importorskip("dask.array")
    X, _ = _data()
    # in order: dask shuffles within its blocks, NumPy across all rows
    history, params = _fit("dask", X=da.from_array(X, chunks=(7, 3)), shuffle=False)
    ref_history, ref_params = _numpy_fit(shuffle=False)
    np.testing.assert_allclose(history["loss"], ref_history["loss"], rtol=1e-12)
    for a, b in zip(params, ref_params, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_jitted_train_step_draws_the_eager_masks():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    X, Y = _data(16)
    results = []
    for backend in ("numpy", "jax"):
        model, opt = _model(backend), pm.SGD(lr=0.1)
        params, state = model.params, opt.init_state(model.xp, model.params)
        step = functools.partial(pm.train_step, model, optimizer=opt, loss="cross_entropy")
        if backend == "jax":
            step, state["step"] = jax.jit(step), jnp.asarray(0)
        Xd, Yd = model.placement.from_host(X), model.placement.from_host(Y)
        for _ in range(3):
            params, state, _, _ = step(params, state, Xd, Yd)
        results.append([np.asarray(p) for p in params])
    for a, b in zip(*results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_refused_where_it_cannot_be_honoured():
    X, Y = _data()
    with pytest.raises(ValueError, match="LBFGS minimizes a deterministic loss"):
        pm.LBFGS().minimize(_model("numpy"), X, Y, loss="cross_entropy")
    with pytest.raises(ValueError, match="fit_spmd does not train models with Dropout"):
        distributed.fit_spmd(_model("numpy"), X, Y)


@pytest.mark.parametrize("rate", [-0.1, 1.0, float("nan"), "0.5", True])
def test_bad_rates_are_refused(rate):
    with pytest.raises(ValueError, match=r"Dropout rate must be a number in \[0, 1\)"):
        pm.Dropout(rate)
    with pytest.raises(ValueError, match="seed must be"):
        pm.Dropout(0.5, seed=-1)


def test_a_step_on_the_device_draws_what_a_host_step_draws(xp):
    """The offset mixed on the host (a Python int) and on the device (an array) agree."""
    for step in (0, 5, 2**31 + 7):  # past int32: both wrap to the same 32 bits
        key = counter_rng.Key(xp.asarray(step))
        got = _backend.to_host(counter_rng.uniform_bits(xp, (37, 23), 7, 2, key))
        np.testing.assert_array_equal(got, _bits(np, step=step))
