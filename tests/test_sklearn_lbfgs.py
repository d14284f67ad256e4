"""solver='lbfgs' against scikit-learn's, and pm.LBFGS (scipy's L-BFGS-B) on every backend."""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import load_digits, load_iris, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SkClassifier
from sklearn.neural_network import MLPRegressor as SkRegressor
from sklearn.preprocessing import StandardScaler
from sklearn_helpers import numpy_session, quiet

import portable_mlp as pm
from portable_mlp import _backend
from portable_mlp.sklearn import MLPClassifier, MLPRegressor


def _regression():
    X, y = make_regression(n_samples=200, n_features=5, noise=5.0, random_state=0)
    return StandardScaler().fit_transform(X), y / np.std(y)


DATA = {
    "digits": lambda: (load_digits(return_X_y=True)[0] / 16.0, load_digits(return_X_y=True)[1]),
    "iris": lambda: (StandardScaler().fit_transform(load_iris(return_X_y=True)[0]),
                     load_iris(return_X_y=True)[1]),
    "regression": _regression,
}


@numpy_session
@pytest.mark.parametrize("name, hidden, max_iter", [
    ("digits", (16,), 100), ("iris", (10,), 500), ("regression", (10,), 500)])
def test_lbfgs_agrees_with_scikit_learn(name, hidden, max_iter):
    """Same random_state, same first weights: scores within 1 point, n_iter_ of the same
    order (in fact equal here), and the same loss to 1e-4."""
    X, y = DATA[name]()
    ours, theirs = (MLPRegressor, SkRegressor) if name == "regression" else (
        MLPClassifier, SkClassifier)
    kwargs = dict(hidden_layer_sizes=hidden, solver="lbfgs", max_iter=max_iter, random_state=0)
    a, b = quiet(ours(**kwargs), X, y), quiet(theirs(**kwargs), X, y)
    assert abs(a.score(X, y) - b.score(X, y)) <= 0.01
    assert 0.5 <= a.n_iter_ / b.n_iter_ <= 2.0
    assert a.loss_ == pytest.approx(b.loss_, rel=1e-4)


@numpy_session
def test_lbfgs_follows_scikit_learns_trajectory():
    """The same network and data give the same iterates (scipy is deterministic): the
    tolerance of scikit-learn's own float32/float64 comparison, rtol 1e-4, holds with
    room to spare."""
    X, y = DATA["digits"]()
    kwargs = dict(hidden_layer_sizes=(16,), solver="lbfgs", max_iter=30, random_state=3)
    a, b = quiet(MLPClassifier(**kwargs), X, y), quiet(SkClassifier(**kwargs), X, y)
    assert a.n_iter_ == b.n_iter_ == 30
    for mine, theirs in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), rtol=1e-4, atol=1e-7)


@numpy_session
def test_lbfgs_limits_and_warnings_follow_scikit_learn():
    X, y = DATA["iris"]()
    for kwargs in ({"max_iter": 3}, {"max_fun": 4}):
        ours = MLPClassifier((10,), solver="lbfgs", random_state=0, **kwargs)
        theirs = SkClassifier((10,), solver="lbfgs", random_state=0, **kwargs)
        with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge") as mine:
            ours.fit(X, y)
        with pytest.warns(ConvergenceWarning) as sk:
            theirs.fit(X, y)
        assert str(mine[0].message) == str(sk[0].message)
        assert ours.n_iter_ == theirs.n_iter_ <= max(kwargs.values())
    assert len(ours.loss_curve_) == ours.n_iter_  # recorded here, not by scikit-learn


@numpy_session
def test_partial_fit_with_lbfgs_is_as_in_scikit_learn():
    """The classifier has no partial_fit with lbfgs; scikit-learn's regressor has one
    (it runs the solver again from the current weights), so ours does too."""
    X, y = DATA["regression"]()
    clf = MLPClassifier(solver="lbfgs")
    assert not hasattr(clf, "partial_fit") and not hasattr(SkClassifier(solver="lbfgs"),
                                                           "partial_fit")
    reg = quiet(MLPRegressor(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=5,
                             random_state=0), X, y)
    before = reg.loss_
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.partial_fit(X, y)
    assert reg.loss_ < before


def test_lbfgs_on_every_backend_matches_numpy(backend):
    """pm.LBFGS for Trainer users: the same iterates on every backend as on NumPy."""
    X, y = pm.datasets.xor(n=200, seed=0)
    Y = pm.one_hot(y, 2)

    def run(name, dtype):
        model = pm.MLP([2, 6, 2], activation="tanh", output="identity", seed=0, backend=name,
                       dtype=dtype)
        result = pm.LBFGS(max_iter=15).minimize(model, X, Y, loss="cross_entropy", l2=1e-3)
        return model, result

    model, result = run(backend, None)
    dtype = _backend.dtype_name(model.dtype)
    ref_model, ref = run("numpy", dtype)
    rtol = 1e-8 if dtype == "float64" else 1e-3
    assert result.nit == ref.nit == 15
    assert result.fun == pytest.approx(ref.fun, rel=rtol)
    for p, q in zip(model.host_params(), ref_model.host_params()):
        np.testing.assert_allclose(p, q, rtol=rtol * 100, atol=rtol)


def test_lbfgs_sends_one_vector_each_way_per_evaluation(backend, monkeypatch):
    """Per loss evaluation: the flat parameters go to the device once, and the loss with
    the flat gradient comes back once."""
    X, y = pm.datasets.xor(n=64, seed=1)
    model = pm.MLP([2, 5, 2], activation="tanh", output="identity", seed=0, backend=backend)
    Xd, Yd = model.placement.from_host(X), model.placement.from_host(pm.one_hot(y, 2))
    size = sum(int(np.prod(p.shape)) for p in model.params)
    moved = {"up": [], "down": []}
    real_up, real_down = _backend.from_host, _backend.to_host

    def up(name, x, device, dtype):
        moved["up"].append(x.shape)
        return real_up(name, x, device, dtype)

    def down(x):
        moved["down"].append(tuple(x.shape))
        return real_down(x)

    monkeypatch.setattr(_backend, "from_host", up)
    monkeypatch.setattr(_backend, "to_host", down)
    result = pm.LBFGS(max_iter=5).minimize(model, Xd, Yd, loss="cross_entropy")
    n_params = len(model.params)
    assert moved["down"].count((size + 1,)) == result.nfev
    assert moved["up"].count((size,)) == result.nfev
    # besides: the start (host_params) and the end (load_params), once per parameter
    assert len(moved["up"]) - result.nfev <= n_params
    assert len(moved["down"]) - result.nfev <= n_params


def test_lbfgs_divergence_keeps_the_model():
    X, _ = pm.datasets.xor(n=50, seed=0)
    model = pm.MLP([2, 4, 1], activation="relu", output="identity", seed=0)
    before = model.host_params()
    with pytest.raises(pm.DivergenceError):
        pm.LBFGS(max_iter=20).minimize(model, X * 1e200, (X[:, :1] * 1e200), loss="mse")
    for p, q in zip(model.host_params(), before):
        np.testing.assert_array_equal(p, q)
    with pytest.raises(ValueError, match="max_fun"):
        pm.LBFGS(max_fun=0)


@numpy_session
def test_lbfgs_weights_as_repeated_samples():
    """sample_weight=2 is the sample twice (scikit-learn's convention), also for lbfgs."""
    X, y = DATA["regression"]()
    w = np.where(np.arange(len(y)) % 3 == 0, 2.0, 1.0)
    repeat = np.repeat(np.arange(len(y)), w.astype(int))
    kwargs = dict(hidden_layer_sizes=(4,), solver="lbfgs", max_iter=20, random_state=0)
    a = quiet(MLPRegressor(**kwargs), X, y, sample_weight=w)
    b = quiet(MLPRegressor(**kwargs), X[repeat], y[repeat])
    np.testing.assert_allclose(a.predict(X), b.predict(X), rtol=1e-6, atol=1e-8)
