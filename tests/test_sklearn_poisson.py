"""MLPRegressor(loss="poisson") and pm.losses.poisson: scikit-learn's loss, exp link."""

import re
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPRegressor as SkRegressor
from sklearn.neural_network._base import poisson_loss
from sklearn_helpers import numpy_session, own_backends, quiet

import portable_mlp as pm
from portable_mlp import _backend, losses
from portable_mlp.sklearn import MLPRegressor


def _counts(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    return X, rng.poisson(np.exp(0.5 * X[:, 0] - 0.3 * X[:, 1])).astype(float)


def test_poisson_loss_passes_gradcheck(backend):
    rng = np.random.default_rng(0)
    model = pm.MLP([3, 5, 2], activation="tanh", output="identity", seed=1, backend=backend,
                   dtype="float64")
    X, Y = rng.standard_normal((7, 3)), rng.poisson(2.0, (7, 2)).astype(float)
    assert pm.gradcheck(model, X, Y, loss="poisson", l2=0.1) <= 1.0


def test_poisson_loss_is_scikit_learns():
    rng = np.random.default_rng(1)
    z, y = rng.standard_normal((9, 2)), rng.poisson(1.5, (9, 2)).astype(float)
    w = rng.uniform(0.5, 2.0, 9)
    ops = _backend.ops("numpy")
    value, delta = losses.poisson(ops, z, y)
    assert float(value) == pytest.approx(poisson_loss(y, np.exp(z)), rel=1e-12)
    np.testing.assert_allclose(delta, (np.exp(z) - y) / 9, rtol=1e-12)
    weighted, _ = losses.poisson(ops, z, y, (w / w.sum())[:, None])
    assert float(weighted) == pytest.approx(poisson_loss(y, np.exp(z), w), rel=1e-12)


def test_negative_targets_are_refused_with_scikit_learns_message(backend):
    X, y = _counts()
    est = quiet(MLPRegressor(loss="poisson", hidden_layer_sizes=(4,), max_iter=3, backend=backend,
                             random_state=0, warm_start=True), X, y)
    before = [_backend.to_host(p).copy() for p in est.coefs_]
    with pytest.raises(ValueError, match=re.escape("Some value(s) of y are negative which is "
                                                   "not allowed for Poisson regression.")):
        est.fit(X, y - 1.0)
    for p, q in zip(est.coefs_, before):
        np.testing.assert_array_equal(_backend.to_host(p), q)
    with pytest.raises(ValueError, match="negative"):
        losses.check_targets("poisson", np, -np.ones((3, 1)))
    losses.check_targets("mse", np, -np.ones((3, 1)))  # other losses take any target


@numpy_session
@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_poisson_regressor_matches_scikit_learn(solver):
    X, y = _counts()
    kwargs = dict(loss="poisson", hidden_layer_sizes=(8,), solver=solver, max_iter=40,
                  random_state=0, learning_rate_init=0.01)
    a, b = quiet(MLPRegressor(**kwargs), X, y), quiet(SkRegressor(**kwargs), X, y)
    assert a.out_activation_ == b.out_activation_ == "exp"
    assert a.loss_ == pytest.approx(b.loss_, rel=1e-6)
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-5)
    assert (a.predict(X) > 0).all()


@own_backends
def test_poisson_fits_counts_better_than_their_mean():
    X, y = _counts(400, seed=2)
    est = quiet(MLPRegressor(loss="poisson", hidden_layer_sizes=(8,), solver="lbfgs",
                             max_iter=200, random_state=0), X, y)
    mean = poisson_loss(y[:, None], np.full((len(y), 1), y.mean()))
    assert poisson_loss(y[:, None], est.predict(X)[:, None]) < 0.8 * mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.set_params(early_stopping=True, solver="adam").fit(X, y)
    assert np.isfinite(est.validation_scores_).all()


def test_negative_targets_never_train_silently(backend):
    """pm.LBFGS and Trainer.fit refuse them up front, before any step; a bare Trainer
    step (no pass over the values) gets a NaN loss and stops."""
    X, y = _counts(40)
    Y = (y - 2.0)[:, None]
    model = pm.MLP([4, 3, 1], activation="tanh", output="identity", seed=0, backend=backend,
                   dtype="float64")
    before = [np.array(p) for p in model.host_params()]
    with pytest.raises(ValueError, match="negative which is not allowed for Poisson"):
        pm.LBFGS(max_iter=3).minimize(model, X, Y, loss="poisson")
    trainer = pm.Trainer(model, loss="poisson", optimizer=pm.Adam(), check_every=1)
    with pytest.raises(ValueError, match="negative which is not allowed for Poisson"):
        trainer.fit(X, Y, epochs=2, progress=False)
    assert trainer.steps == 0 and trainer.optimizer.state is None
    for a, b in zip(model.host_params(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(pm.DivergenceError):
        trainer.step(X, Y)
