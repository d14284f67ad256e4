"""Decoupled weight decay: AdamW step for step torch.optim.AdamW, SGD's weight_decay."""

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend

torch = pytest.importorskip("torch")


def _gradients(shape, steps, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape), [rng.standard_normal(shape) * rng.uniform(0.01, 3)
                                        for _ in range(steps)]


def _run_ours(backend, opt, p, grads):
    place = pm.MLP([2, 2], backend=backend, dtype="float64").placement
    params = [place.from_host(p.copy())]
    state = opt.init_state(place.xp, params)
    for g in grads:
        params, state = opt.update(place.xp, params, [place.from_host(g.copy())], state)
    return _backend.to_host(params[0])


def _run_torch(make, p, grads):
    tp = torch.tensor(p, requires_grad=True)
    topt = make([tp])
    for g in grads:
        tp.grad = torch.tensor(g)
        topt.step()
    return tp.detach().numpy()


def test_adamw_equals_torch_adamw_over_100_steps(backend):
    p, grads = _gradients((6, 4), 100)
    ours = _run_ours(backend, pm.AdamW(lr=0.01, weight_decay=0.1, beta2=0.99, eps=1e-6),
                     p, grads)
    ref = _run_torch(lambda ps: torch.optim.AdamW(ps, lr=0.01, weight_decay=0.1,
                                                  betas=(0.9, 0.99), eps=1e-6), p, grads)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    assert not np.allclose(ours, _run_ours("numpy", pm.Adam(lr=0.01, beta2=0.99, eps=1e-6),
                                           p, grads), atol=1e-6)  # the decay counts


def test_adamw_training_equals_torch_over_100_steps():
    """A network trained 100 full-batch steps: ours against torch's module and AdamW."""
    X, y = pm.datasets.xor(n=64, seed=0)
    Y = np.asarray(pm.one_hot(y, 2))
    model = pm.MLP([2, 8, 2], activation="silu", output="identity", seed=0, dtype="float64")
    net = model.to_torch_module(dtype="float64")
    trainer = pm.Trainer(model, loss="cross_entropy", optimizer=pm.AdamW(lr=0.05))
    topt = torch.optim.AdamW(net.parameters(), lr=0.05)
    tX, tY = torch.tensor(X), torch.tensor(Y)
    for _ in range(100):
        trainer.step(X, Y)
        topt.zero_grad()
        loss = -(tY * torch.log_softmax(net(tX), dim=1)).sum() / len(X)
        loss.backward()
        topt.step()
    ref = [t.detach().numpy() for t in net.parameters()]
    # torch's Linear holds W as (out, in): ours is (in, out)
    for ours, theirs in zip(model.host_params(), ref, strict=True):
        np.testing.assert_allclose(ours, theirs.T, rtol=1e-12, atol=1e-12)


def test_sgd_weight_decay_is_torch_sgds_without_momentum_and_sgdw_with(backend):
    p, grads = _gradients((5, 3), 20, seed=1)
    ours = _run_ours(backend, pm.SGD(lr=0.05, weight_decay=0.3), p, grads)
    ref = _run_torch(lambda ps: torch.optim.SGD(ps, lr=0.05, weight_decay=0.3), p, grads)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    ours = _run_ours(backend, pm.SGD(lr=0.05, momentum=0.9, weight_decay=0.3), p, grads)
    want, v = p.copy(), np.zeros_like(p)
    for g in grads:  # decoupled: the decay stays out of the velocity
        v = 0.9 * v - 0.05 * g
        want = want * (1 - 0.05 * 0.3) + v
    np.testing.assert_allclose(ours, want, rtol=1e-12, atol=1e-12)


def test_adamw_checkpoint_round_trip(tmp_path):
    X, y = pm.datasets.xor(n=40, seed=0)
    Y = np.asarray(pm.one_hot(y, 2))
    model = pm.MLP([2, 4, 2], seed=0, dtype="float64")
    opt = pm.AdamW(lr=0.01, weight_decay=0.05)
    pm.fit(model, X, Y, optimizer=opt, epochs=2, progress=False)
    pm.save(model, tmp_path / "m.safetensors", optimizer=opt)
    loaded = pm.load_optimizer(tmp_path / "m.safetensors", model)
    assert isinstance(loaded, pm.AdamW) and loaded.weight_decay == 0.05
    assert loaded.state["step"] == opt.state["step"]


@pytest.mark.parametrize("opt", [lambda: pm.AdamW(weight_decay=-1.0),
                                 lambda: pm.SGD(weight_decay=float("inf"))])
def test_bad_weight_decay_is_refused(opt):
    with pytest.raises(ValueError, match="weight_decay must be >= 0 and finite"):
        opt()
