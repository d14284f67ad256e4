"""The new pieces (GELU, SiLU, LeakyReLU, ELU, Softplus, LayerNorm): forward and hand-written
backward equal torch autograd in float64 on every backend, and gradcheck passes."""

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend

PIECES = {
    "gelu_tanh": (lambda: pm.GELU("tanh"),
                  lambda F, x: F.gelu(x, approximate="tanh")),
    "silu": (pm.SiLU, lambda F, x: F.silu(x)),
    "leaky_relu": (lambda: pm.LeakyReLU(0.1), lambda F, x: F.leaky_relu(x, 0.1)),
    "elu": (lambda: pm.ELU(0.7), lambda F, x: F.elu(x, 0.7)),
    "softplus": (pm.Softplus, lambda F, x: F.softplus(x)),
}


def _inputs(shape=(6, 5), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 3.0
    x[0, :3] = [40.0, -40.0, 1e-3]  # far into the tails, and near the kink at 0
    return x, rng.standard_normal(shape)


def _torch_autograd(fn, x, dy, params=()):
    torch = pytest.importorskip("torch")
    tx = torch.tensor(x, requires_grad=True)
    tps = [torch.tensor(p, requires_grad=True) for p in params]
    y = fn(torch.nn.functional, tx, *tps)
    y.backward(torch.tensor(dy))
    return y.detach().numpy(), tx.grad.numpy(), [p.grad.numpy() for p in tps]


def _ours(piece, place, x, dy, params=()):
    placed = [place.from_host(p) for p in params]
    with place.overflow_is_fine():
        y, backprop = piece.forward(place.ops, placed, place.from_host(x))
        dx, grads = backprop(place.from_host(dy.copy()))
    return (_backend.to_host(y), _backend.to_host(dx), [_backend.to_host(g) for g in grads])


@pytest.mark.parametrize("name", list(PIECES))
def test_activation_matches_torch_autograd(backend, name):
    make, reference = PIECES[name]
    place = pm.MLP([2, 2], backend=backend, dtype="float64").placement
    x, dy = _inputs()
    y, dx, _ = _ours(make(), place, x, dy)
    ty, tdx, _ = _torch_autograd(reference, x, dy)
    np.testing.assert_allclose(y, ty, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tdx, rtol=1e-12, atol=1e-12)


def test_layernorm_matches_torch_autograd(backend):
    place = pm.MLP([2, 2], backend=backend, dtype="float64").placement
    x, dy = _inputs((7, 5), seed=3)
    rng = np.random.default_rng(4)
    scale, shift = rng.standard_normal(5), rng.standard_normal(5)
    y, dx, grads = _ours(pm.LayerNorm(5, eps=1e-3), place, x, dy, (scale, shift))
    ty, tdx, tgrads = _torch_autograd(
        lambda F, t, w, b: F.layer_norm(t, (5,), w, b, eps=1e-3), x, dy, (scale, shift))
    for a, b in zip([y, dx, *grads], [ty, tdx, *tgrads], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_exact_gelu_on_torch_and_refused_without_erf(backend):
    place = pm.MLP([2, 2], backend=backend, dtype="float64").placement
    x, dy = _inputs()
    if not hasattr(place.xp, "erf"):
        with pytest.raises(ValueError, match=r"needs erf.*approximate='tanh'"):
            _ours(pm.GELU("none"), place, x, dy)
        return
    y, dx, _ = _ours(pm.GELU("none"), place, x, dy)
    ty, tdx, _ = _torch_autograd(lambda F, t: F.gelu(t), x, dy)
    np.testing.assert_allclose(y, ty, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tdx, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["gelu", "silu", "leaky_relu", "elu", "softplus"])
def test_new_activations_pass_gradcheck(backend, name):
    rng = np.random.default_rng(2)
    model = pm.MLP([3, 4, 2], activation=name, output="sigmoid", seed=2, backend=backend,
                   dtype="float64")
    X, Y = rng.standard_normal((5, 3)), rng.uniform(0, 1, (5, 2))
    assert pm.gradcheck(model, X, Y, loss="mse", l2=0.1) <= 1.0


def test_layernorm_passes_gradcheck(backend):
    rng = np.random.default_rng(3)
    model = pm.Sequential([pm.Linear(3, 4), pm.LayerNorm(4), pm.Tanh(), pm.Linear(4, 2),
                           pm.Identity()], seed=3, backend=backend, dtype="float64")
    host = model.host_params()  # a scale and shift away from ones and zeros
    host[2], host[3] = rng.uniform(0.5, 1.5, 4), rng.standard_normal(4)
    model.load_params(host)
    X, Y = rng.standard_normal((6, 3)), np.eye(2)[rng.integers(0, 2, 6)]
    assert pm.gradcheck(model, X, Y, loss="cross_entropy") <= 1.0


@pytest.mark.parametrize("bad, match", [
    (lambda: pm.LeakyReLU(float("nan")), "slope must be a finite number"),
    (lambda: pm.ELU(0.0), "alpha must be a positive number"),
    (lambda: pm.GELU("erf"), "approximate must be 'tanh' or 'none'"),
    (lambda: pm.LayerNorm(0), "n must be a positive integer"),
    (lambda: pm.LayerNorm(3, eps=0.0), "eps must be a positive finite number"),
    (lambda: pm.Sequential([pm.Linear(2, 3), pm.LayerNorm(4)]), "LayerNorm expects 4"),
])
def test_bad_settings_are_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        bad()


def test_mlp_accepts_the_new_names_and_summary_shows_them():
    model = pm.MLP([4, 8, 3], activation="leaky_relu", output="identity", dropout=0.25, seed=4)
    assert [type(p).__name__ for p in model.pieces] == [
        "Linear", "LeakyReLU", "Dropout", "Linear", "Identity"]
    text = repr(model)
    assert "LeakyReLU(slope=0.01)" in text and "Dropout(rate=0.25, seed=4)" in text
    ln = pm.Sequential([pm.Linear(4, 8), pm.LayerNorm(8), pm.Linear(8, 2)])
    row = next(line for line in repr(ln).splitlines() if "LayerNorm" in line)
    assert row.split()[-3:] == ["(n,", "8)", "16"]
    with pytest.raises(ValueError, match=r"unknown activation 'swish'.*gelu"):
        pm.MLP([2, 2], activation="swish")


def test_the_docs_page_example_runs(capsys):
    """docs/pieces.md's python block, as written."""
    import re
    from pathlib import Path

    text = (Path(pm.__file__).resolve().parent.parent / "docs" / "pieces.md").read_text()
    (code,) = re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)
    exec(compile(code, "docs/pieces.md", "exec"), {})
    assert "Dropout(rate=0.2, seed=0)" in capsys.readouterr().out
