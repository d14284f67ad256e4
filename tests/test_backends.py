"""Backend behaviour: dtypes honoured or refused, devices, no host sync in a step."""

import subprocess
import sys

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError, match="expected one of numpy, cupy, torch"):
        pm.MLP([2, 2], backend="tensorflow")


def test_jax_float64_without_x64_is_refused_with_the_fix():
    pytest.importorskip("jax")
    code = ("import portable_mlp as pm\n"
            "try:\n    pm.MLP([2, 2], backend='jax', dtype='float64')\n"
            "except ValueError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 'jax.config.update("jax_enable_x64", True)' in out.stdout
    assert "float64" in out.stdout


def test_jax_default_without_x64_is_float32():
    pytest.importorskip("jax")
    code = "import portable_mlp as pm; print(pm.MLP([2, 2], backend='jax').placement.dtype)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "float32"


def test_float64_on_a_device_without_it_is_refused():
    pytest.importorskip("array_api_strict")
    with pytest.raises(ValueError, match="float64 is not available"):
        pm.MLP([2, 2], backend="array_api_strict", device="no_float64", dtype="float64")
    model = pm.MLP([2, 2], backend="array_api_strict", device="no_float64")
    assert model.placement.dtype == "float32"


def test_array_api_strict_on_a_second_device(xor_data):
    xps = pytest.importorskip("array_api_strict")
    X, Y = xor_data
    model = pm.MLP([2, 4, 2], seed=0, backend="array_api_strict", device="device1")
    loss = pm.Trainer(model, optimizer=pm.SGD(lr=1.0)).step(X, Y)
    assert loss.device == xps.Device("device1")
    assert all(p.device == xps.Device("device1") for p in model.params)
    on_default = xps.asarray(X)
    with pytest.raises(TypeError, match="device"):
        model(on_default)


def test_unknown_device_is_refused():
    with pytest.raises(ValueError, match="not available on backend 'numpy'"):
        pm.MLP([2, 2], device="cuda:3")


def test_foreign_arrays_are_refused_with_how_to_convert(backend, xp, xor_data):
    X, _ = xor_data
    model = pm.MLP([2, 2], backend="numpy")
    foreign = xp.asarray(X)
    if backend == "numpy":
        assert model(foreign).shape == (300, 2)
        return
    with pytest.raises(TypeError, match=f"X is a {backend} array.*backend 'numpy'"):
        model(foreign)


def test_model_to_moves_and_keeps_the_network(backend, xor_data):
    X, _ = xor_data
    model = pm.MLP([2, 3, 2], seed=3, dtype="float64")
    moved = model.to(backend, dtype="float32")
    assert moved.backend == backend and moved.placement.dtype == "float32"
    np.testing.assert_allclose(_backend.to_host(moved(X)), model(X), rtol=1e-5)
    back = moved.to("numpy", dtype="float64")
    np.testing.assert_allclose(back(X), model(X), rtol=1e-6)


def test_jax_step_reads_nothing_back_to_the_host(xor_data):
    jax = pytest.importorskip("jax")
    X, Y = xor_data
    model = pm.MLP([2, 4, 2], seed=0, backend="jax", dtype="float32")
    trainer = pm.Trainer(model, optimizer=pm.Adam(lr=0.01), clip_norm=1.0, check_every=1000)
    Xd, Yd = model.xp.asarray(X, dtype=model.dtype), model.xp.asarray(Y, dtype=model.dtype)
    trainer.step(Xd, Yd)  # warm-up: creates the optimizer state
    with jax.transfer_guard_device_to_host("disallow"):
        losses = [trainer.step(Xd, Yd) for _ in range(5)]
    assert float(losses[-1]) < float(losses[0])


def test_jax_arrays_are_immutable_and_training_still_works(xor_data):
    pytest.importorskip("jax")
    X, Y = xor_data
    model = pm.MLP([2, 8, 2], seed=2017, backend="jax", dtype="float32")
    first = model.params[0]
    initial = np.array(first)
    history = pm.fit(model, X, Y, optimizer=pm.SGD(lr=2.0, momentum=0.9), epochs=300)
    np.testing.assert_array_equal(np.asarray(first), initial)  # rebound, never written
    assert not np.allclose(np.asarray(model.params[0]), initial)
    assert history["accuracy"][-1] > 0.85


class ComputeCounter:
    """Counts every dask graph execution (compute or persist)."""

    def __init__(self):
        from dask.callbacks import Callback

        self.count = 0
        counter = self

        class _Counter(Callback):
            def _start(self, dsk):
                counter.count += 1

        self._cb = _Counter()

    def __enter__(self):
        self._cb.__enter__()
        return self

    def __exit__(self, *exc):
        self._cb.__exit__(*exc)


def test_dask_step_computes_once_and_keeps_the_graph_bounded(xor_data):
    pytest.importorskip("dask")
    X, Y = xor_data
    model = pm.MLP([2, 4, 2], seed=0, backend="dask", dtype="float64")
    trainer = pm.Trainer(model, optimizer=pm.SGD(lr=1.0, momentum=0.5), check_every=1000)
    Xd, Yd = model.xp.asarray(X), model.xp.asarray(Y)
    trainer.step(Xd, Yd)
    sizes = []
    with ComputeCounter() as counter:
        for _ in range(6):
            trainer.step(Xd, Yd)
            sizes.append(max(len(p.__dask_graph__()) for p in model.params))
    assert counter.count <= 6, "more than one persist per step"
    assert sizes[-1] == sizes[0], f"graph grows step after step: {sizes}"
    reference = pm.MLP([2, 4, 2], seed=0, dtype="float64")
    ref_trainer = pm.Trainer(reference, optimizer=pm.SGD(lr=1.0, momentum=0.5))
    for _ in range(7):
        ref_trainer.step(X, Y)
    for a, b in zip(model.host_params(), reference.params):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_saturated_sigmoids_give_0_and_1_without_warnings(backend):
    # exp(-x) overflows for x < -709 (float64): the value 0 is right, and nothing may warn
    # (pytest turns warnings into errors here)
    model = pm.MLP([1, 1], bias=False, seed=0, backend=backend, dtype="float64")
    model.load_params([np.array([[1.0]])])
    out = _backend.to_host(model(np.array([[-1e4], [1e4]])))
    np.testing.assert_array_equal(out, [[0.0], [1.0]])


def test_ops_compute_the_standards_math(backend):
    """Each backend's resolved operations (its faster spellings) agree with the standard's
    expressions computed in float64 on the host, and leave their inputs untouched."""
    place = pm.MLP([2, 2], backend=backend).placement
    ops, rtol = place.ops, (1e-12 if place.dtype == "float64" else 1e-5)
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((7, 3)), rng.standard_normal((3, 4))
    x = np.concatenate([rng.standard_normal((4, 3)) * 30, [[-800.0, 800.0, 0.0]]])
    A, B, Xd = (place.from_host(h) for h in (a, b, x))
    with place.overflow_is_fine():
        y = _backend.to_host(ops.sigmoid(Xd))
    with np.errstate(over="ignore"):
        expected = 1.0 / (1.0 + np.exp(-x.astype(place.dtype)))
    np.testing.assert_allclose(y, expected, rtol=rtol, atol=1e-30)
    np.testing.assert_array_equal(_backend.to_host(Xd), x.astype(place.dtype))
    np.testing.assert_allclose(_backend.to_host(ops.matmul(A, B)), a @ b, rtol=rtol * 10)
    np.testing.assert_allclose(_backend.to_host(ops.matmul(A.T, A)), a.T @ a, rtol=rtol * 10)
    assert float(_backend.to_host(ops.sum_of_squares(A))) == pytest.approx(np.sum(a * a),
                                                                          rel=rtol * 10)
    y_host, dy_host = rng.uniform(0.05, 0.95, (5, 2)), rng.standard_normal((5, 2))
    backward = ops.sigmoid_backward(place.from_host(y_host), place.from_host(dy_host.copy()))
    np.testing.assert_allclose(_backend.to_host(backward), dy_host * y_host * (1.0 - y_host),
                               rtol=rtol * 10, atol=1e-30)


@pytest.mark.parametrize("into", [False, True], ids=["new-arrays", "into-spares"])
@pytest.mark.parametrize("rule", ["sgd", "sgd-decay", "momentum", "nesterov", "adam", "adamw"])
def test_ops_optimizer_rules_are_the_standard_math(backend, rule, into):
    """The optimizers' rules as each backend runs them (list operations: ufuncs with
    out=, torch's _foreach_ kernels; one fused kernel each on CuPy) agree with their
    formulas in float64 on the host, over two parameters of different shapes; they leave
    the parameters and their slots untouched (a step whose update is not finite is
    dropped whole); given spares, they write into them where the backend writes in
    place. The decoupled weight decay (``Ops.decay``, AdamW's) takes ``rate * p`` off."""
    place = pm.MLP([2, 2], backend=backend).placement
    ops, rtol = place.ops, (1e-12 if place.dtype == "float64" else 1e-5)
    rng = np.random.default_rng(9)
    shapes = [(4, 3), (3,)]
    p, g, m = ([rng.standard_normal(s) for s in shapes] for _ in range(3))
    v = [rng.uniform(0.0, 2.0, s) for s in shapes]
    P, M, V = ([place.from_host(a.copy()) for a in arrays] for arrays in (p, m, v))
    G = [place.from_host(a.copy()) for a in g]  # the rule's own: it may be overwritten
    n_out = {"sgd": 1, "sgd-decay": 1, "adam": 3, "adamw": 3}.get(rule, 2)
    spares = tuple([place.from_host(np.zeros(s)) for s in shapes] for _ in range(n_out))
    out = spares if into else None
    lr, mu, b1, b2, eps, step, rate = 0.3, 0.9, 0.8, 0.99, 1e-3, 0.05, 0.03
    if rule == "sgd":
        got = [ops.sgd(P, G, lr, out)]
        want = [[a - lr * b for a, b in zip(p, g)]]
    elif rule == "sgd-decay":
        got = [ops.decay(ops.sgd(P, G, lr, out), P, rate, G)]
        want = [[a - lr * b - rate * a for a, b in zip(p, g)]]
    elif rule in ("momentum", "nesterov"):
        got = list(ops.sgd_momentum(P, G, M, lr, mu, rule == "nesterov", out))
        v_new = [mu * a - lr * b for a, b in zip(m, g)]
        want = [[a + (mu * c - lr * b if rule == "nesterov" else c)
                 for a, b, c in zip(p, g, v_new)], v_new]
    else:
        got = list(ops.adam(P, G, M, V, b1, b2, eps, step, out) if rule == "adam"
                   else ops.adamw(P, G, M, V, b1, b2, eps, step, rate, out))
        m_new = [b1 * a + (1 - b1) * b for a, b in zip(m, g)]
        v_new = [b2 * a + (1 - b2) * b * b for a, b in zip(v, g)]
        decay = 0.0 if rule == "adam" else rate
        want = [[a - step * b / (np.sqrt(c) + eps) - decay * a
                 for a, b, c in zip(p, m_new, v_new)], m_new, v_new]
    for got_list, want_list in zip(got, want, strict=True):
        for a, b in zip(got_list, want_list, strict=True):
            np.testing.assert_allclose(_backend.to_host(a), b, rtol=rtol * 10, atol=rtol)
    for kept, host in ((P, p), (M, m), (V, v)):
        for a, b in zip(kept, host, strict=True):
            np.testing.assert_array_equal(_backend.to_host(a), b.astype(place.dtype))
    if into and ops.writes_in_place:  # the results are the spares, filled
        for got_list, spare_list in zip(got, spares, strict=True):
            assert all(a is b for a, b in zip(got_list, spare_list, strict=True))


def test_ops_affine_and_relu_are_the_standard_math(backend):
    """``Ops.affine`` (torch: one addmm), ``Ops.relu`` and its backward from the output
    (NumPy and torch: the boolean mask as it is) and ``Ops.count_true`` agree with their
    formulas."""
    place = pm.MLP([2, 2], backend=backend).placement
    ops, rtol = place.ops, (1e-12 if place.dtype == "float64" else 1e-5)
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((5, 4)), rng.standard_normal((4, 3)), rng.standard_normal(3)
    got = ops.affine(*(place.from_host(a) for a in (x, w, b)))
    np.testing.assert_allclose(_backend.to_host(got), x @ w + b, rtol=rtol * 10, atol=rtol)
    z, dy = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    y = ops.relu(place.from_host(z))
    np.testing.assert_array_equal(_backend.to_host(y), np.maximum(z, 0.0).astype(place.dtype))
    back = ops.relu_backward(y, place.from_host(dy.copy()))
    np.testing.assert_allclose(_backend.to_host(back), dy * (z > 0), rtol=rtol)
    count = ops.count_true(place.from_host(z) > 0.0, place.dtype_obj)
    assert float(_backend.to_host(count)) == np.count_nonzero(z > 0)
