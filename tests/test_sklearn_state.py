"""What a fitted estimator holds, and when it changes: assignable weights, warm_start and
partial_fit class checks, divergence (with and without early stopping), and failed calls,
which leave the estimator as it was."""

import copy
import os
import pickle
import re
import signal
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn.datasets import make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV
from sklearn.neural_network import MLPClassifier as SkClassifier
from sklearn_helpers import numpy_session, own_backends, quiet, torch_session

from portable_mlp import _backend
from portable_mlp.sklearn import MLPClassifier, MLPRegressor, _stochastic

NON_FINITE = "Solver produced non-finite parameter weights."


@pytest.fixture(scope="module")
def blobs():
    X, y = make_classification(n_samples=120, n_features=6, n_informative=4, n_classes=3,
                               random_state=0)
    return X, np.array(["ant", "bee", "cat"])[y]


def host(arrays):
    return [_backend.to_host(a).copy() for a in arrays]


def snapshot(est):
    """What must not change on a refused call: weights, optimizer, counters, curves."""
    trainer = getattr(est, "_trainer", None)
    opt = None if trainer is None else trainer.optimizer.state
    return {"params": host(est.model_.params), "n_iter_": est.n_iter_,
            "loss_curve_": list(getattr(est, "loss_curve_", [])),
            "classes_": _backend.to_host(getattr(est, "classes_", np.arange(0))).tolist(),
            "steps": None if trainer is None else trainer.steps,
            "opt_step": None if opt is None else opt["step"],
            "slots": None if opt is None else host(s for ss in opt["slots"] for s in ss),
            "architecture": repr(est.model_)}


def assert_unchanged(est, before):
    after = snapshot(est)
    for key in ("architecture", "n_iter_", "loss_curve_", "classes_", "steps", "opt_step"):
        assert after[key] == before[key], key
    for key in ("params", "slots"):
        for a, b in zip(after[key] or [], before[key] or []):
            np.testing.assert_array_equal(a, b)


# --- coefs_ and intercepts_ ----------------------------------------------------

def test_assigned_weights_are_the_models(backend, blobs):
    X, y = blobs
    est = quiet(MLPClassifier((5,), max_iter=2, random_state=0, backend=backend), X, y)
    rng = np.random.default_rng(0)
    coefs = [rng.standard_normal((6, 5)), rng.standard_normal((5, 3))]
    est.coefs_ = coefs
    est.intercepts_[1] = np.array([1.0, -1.0, 0.5])
    for mine, given in zip(est.coefs_, coefs):
        np.testing.assert_allclose(_backend.to_host(mine), given, rtol=1e-6)
        assert est.placement_.owns(mine)  # set on the model's backend
    np.testing.assert_allclose(_backend.to_host(est.intercepts_[1]), [1.0, -1.0, 0.5])
    hidden = np.maximum(X @ coefs[0] + _backend.to_host(est.intercepts_[0]), 0.0)
    logits = hidden @ coefs[1] + np.array([1.0, -1.0, 0.5])
    np.testing.assert_array_equal(est.predict(X), est.classes_[np.argmax(logits, axis=1)])


def test_weight_assignment_is_validated_and_atomic(blobs):
    X, y = blobs
    est = quiet(MLPClassifier((5,), max_iter=2, random_state=0), X, y)
    before = snapshot(est)
    bad = [
        ([np.ones((6, 5))], ValueError, "needs 2 arrays"),
        ([np.ones((6, 5)), np.ones((4, 3))], ValueError, r"coefs_\[1\] has shape \(4, 3\)"),
        ([np.ones((6, 5)), np.full((5, 3), np.nan)], ValueError, "NaN"),
        ([np.ones((6, 5)), np.full((5, 3), "a")], TypeError, "real numbers"),
        (np.ones((6, 5)), ValueError, "needs 2 arrays"),
        (3.0, TypeError, "list of arrays"),
    ]
    for value, error, match in bad:
        with pytest.raises(error, match=match):
            est.coefs_ = value
        assert_unchanged(est, before)
    with pytest.raises(TypeError, match="number of layers is fixed"):
        est.coefs_.append(np.ones((5, 3)))
    with pytest.raises(NotFittedError, match="once the estimator is fitted"):
        MLPClassifier().coefs_ = [np.ones((6, 5))]


def test_in_place_changes_reach_the_model(blobs):
    X, y = blobs
    est = quiet(MLPClassifier((5,), max_iter=2, random_state=0), X, y)
    est.coefs_[1][...] = 0.0  # NumPy arrays are writable: the model's own array changes
    est.intercepts_[1][...] = [0.0, 3.0, 0.0]
    assert (est.predict(X) == "bee").all()
    old = est.coefs_
    est.partial_fit(X, y)  # the model gets new arrays
    trained = _backend.to_host(est.coefs_[0]).copy()
    old[1] = np.zeros((5, 3))  # an item set through an older list reaches the model, alone
    np.testing.assert_array_equal(_backend.to_host(est.coefs_[0]), trained)
    np.testing.assert_array_equal(_backend.to_host(est.coefs_[1]), 0.0)
    copied = copy.deepcopy(est.coefs_)
    assert type(copied) is list and type(pickle.loads(pickle.dumps(est.coefs_))) is list


@numpy_session
def test_transferred_weights_reproduce_scikit_learn(blobs):
    """scikit-learn's fitted weights, assigned here, give scikit-learn's probabilities."""
    X, y = blobs
    theirs = quiet(SkClassifier((7,), max_iter=30, random_state=1), X, y)
    ours = quiet(MLPClassifier((7,), max_iter=1, random_state=5), X, y)
    ours.coefs_, ours.intercepts_ = theirs.coefs_, theirs.intercepts_
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-12)
    ours.set_params(warm_start=True, solver="lbfgs", max_iter=5)
    theirs.set_params(warm_start=True, solver="lbfgs", max_iter=5)
    quiet(ours, X, y), quiet(theirs, X, y)  # warm starts from the assigned weights
    np.testing.assert_allclose(ours.predict_proba(X), theirs.predict_proba(X), rtol=1e-6)


# --- warm_start and partial_fit -------------------------------------------------

@own_backends
def test_warm_start_needs_the_same_classes(blobs):
    X, y = blobs
    est = quiet(MLPClassifier((5,), max_iter=3, random_state=0, warm_start=True), X, y)
    before = snapshot(est)
    subset = y != "cat"
    with pytest.raises(ValueError, match="warm_start can only be used where `y` has the same "
                                         "classes as in the previous call to fit"):
        est.fit(X[subset], y[subset])
    assert_unchanged(est, before)
    with pytest.raises(ValueError, match="warm_start can only be used"):
        est.partial_fit(X[subset], y[subset])  # scikit-learn checks partial_fit so too
    quiet(est, X, y)
    assert est.n_iter_ == 3 and list(est.classes_) == ["ant", "bee", "cat"]


@own_backends
def test_partial_fit_checks_classes_with_scikit_learns_message(blobs):
    X, y = blobs
    est = MLPClassifier((5,), random_state=0)
    est.partial_fit(X, y, classes=["ant", "bee", "cat", "dog"])
    before = snapshot(est)
    with pytest.raises(ValueError, match=re.escape("`y` has classes not in `self.classes_`")):
        est.partial_fit(X[:3], np.array(["eel", "ant", "bee"]))
    assert_unchanged(est, before)
    est.partial_fit(X[:10], y[:10])  # a subset is fine
    assert list(est.classes_) == ["ant", "bee", "cat", "dog"]


# --- failed calls change nothing (issue 13, item 12) ------------------------------

def test_refused_calls_leave_the_fitted_estimator_as_it_was(backend, blobs):
    X, y = blobs
    w = np.ones(len(y))
    est = quiet(MLPClassifier((5,), max_iter=3, random_state=0, warm_start=True,
                              backend=backend), X, y)
    est.partial_fit(X, y)  # the optimizer holds state now
    before = snapshot(est)
    model, coefs = est.model_, list(est.coefs_)
    negative = np.where(np.arange(len(y)) == 3, -1.0, 1.0)
    nan_X = X.copy()
    nan_X[0, 0] = np.nan
    for call in (lambda: est.fit(X, y, sample_weight=negative),
                 lambda: est.partial_fit(X, y, sample_weight=negative),
                 lambda: est.partial_fit(X, y, sample_weight=w[:5]),
                 lambda: est.set_params(warm_start=False).fit(nan_X, y),
                 lambda: est.set_params(warm_start=True).fit(X[:, :4], y),
                 lambda: est.set_params(warm_start=True).fit(X, np.arange(len(y)) * 0.5)):
        with pytest.raises(ValueError):
            call()
        assert_unchanged(est, before)
        # restored in place (issue 20, item 6): the arrays read before are the model's
        assert est.model_ is model and all(a is b for a, b in zip(est.coefs_, coefs))


def test_arrays_read_before_a_failed_fit_stay_the_models():
    """A fit that trains, then diverges, puts the model's own arrays back: changing one
    in place still changes the model."""
    X, y = _exploding()
    est = quiet(MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0,
                             solver="sgd", warm_start=True), X / 1e3, y / 1e6)
    coefs = est.coefs_
    est.set_params(learning_rate_init=1e3, max_iter=20)
    with pytest.raises(ValueError, match=f"^{NON_FINITE}"), np.errstate(all="ignore"):
        est.fit(X, y)
    coefs[1][...] = 0.0
    est.intercepts_[1][...] = 7.0
    np.testing.assert_array_equal(est.predict(X), 7.0)


# --- divergence -------------------------------------------------------------------------

def _exploding():
    X, y = make_regression(n_samples=60, n_features=3, random_state=0)
    return X * 1e3, y * 1e6


@own_backends
def test_divergence_without_early_stopping_raises_and_keeps_the_estimator():
    X, y = _exploding()
    est = quiet(MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0,
                             solver="sgd", warm_start=True), X / 1e3, y / 1e6)
    before = snapshot(est)
    est.set_params(learning_rate_init=1e3, max_iter=20)
    with pytest.raises(ValueError, match=f"^{NON_FINITE}"), np.errstate(all="ignore"):
        est.fit(X, y)
    assert_unchanged(est, before)
    with pytest.raises(ValueError, match=f"^{NON_FINITE}"), np.errstate(all="ignore"):
        # finite loss and gradients, but an update that overflows the weights
        MLPRegressor(solver="sgd", learning_rate_init=1e308, max_iter=1).fit(X / 1e3, y / 1e6)


@own_backends
def test_divergence_with_early_stopping_stops_restores_and_warns():
    """scikit-learn's behaviour since 1.6: NaN recorded, the best weights kept, a warning."""
    X, y = make_regression(n_samples=200, n_features=3, noise=1.0, random_state=0)
    est = MLPRegressor(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=0.3,
                       momentum=0.99, early_stopping=True, max_iter=200, random_state=0,
                       n_iter_no_change=200)
    with pytest.warns(ConvergenceWarning, match=f"^{NON_FINITE}"), np.errstate(all="ignore"):
        est.fit(X, y / 10.0)
    assert np.isnan(est.validation_scores_[-1]) and np.isnan(est.loss_curve_[-1])
    assert len(est.validation_scores_) == len(est.loss_curve_) == est.n_iter_ < 200
    assert all(np.isfinite(_backend.to_host(c)).all() for c in est.coefs_ + est.intercepts_)
    best = np.nanmax(est.validation_scores_)
    assert est.best_validation_score_ == best
    assert est.score(*_split_like(est, X, y / 10.0)) == pytest.approx(best, rel=1e-9)


def _split_like(est, X, y):
    """The validation part of ``est``'s early-stopping split (same random_state)."""
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state

    rs = check_random_state(est.random_state)
    rs.uniform(size=sum(a.size for a in est.coefs_ + est.intercepts_))  # the first weights
    _, held = train_test_split(np.arange(len(y)), random_state=rs,
                               test_size=est.validation_fraction)
    return X[held], y[held]


@own_backends
def test_a_diverging_candidate_scores_in_a_grid_search():
    X, y = make_regression(n_samples=200, n_features=3, noise=1.0, random_state=0)
    grid = GridSearchCV(MLPRegressor(hidden_layer_sizes=(8,), solver="sgd", momentum=0.99,
                                     early_stopping=True, max_iter=30, random_state=0),
                        {"learning_rate_init": [1e-3, 0.3]}, cv=2, error_score="raise")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y / 10.0)
    assert grid.best_params_ == {"learning_rate_init": 1e-3}


def test_stratified_split_errors_name_the_users_labels():
    """scikit-learn names the encoded value ('True'); we name the class."""
    X = np.random.default_rng(0).standard_normal((20, 3))
    y = np.array(["ant"] * 19 + ["bee"])
    est = MLPClassifier((3,), early_stopping=True, max_iter=2)
    with pytest.raises(ValueError, match=re.escape("Classes with too few members are: ['bee']")):
        est.fit(X, y)
    assert not hasattr(est, "model_") and not hasattr(est, "classes_")


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler (a background shell may start jobs ignoring SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@own_backends
def test_ctrl_c_keeps_the_epochs_trained_as_scikit_learn(default_sigint, monkeypatch, blobs):
    X, y = blobs
    real = _stochastic._Epochs.on_epoch_end

    def press_ctrl_c(self, trainer, epoch, logs):
        real(self, trainer, epoch, logs)
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(_stochastic._Epochs, "on_epoch_end", press_ctrl_c)
    est = MLPClassifier((5,), max_iter=50, random_state=0)
    with pytest.warns(UserWarning, match="Training interrupted by user."):
        est.fit(X, y)
    assert est.n_iter_ == len(est.loss_curve_) == 3
    assert est.predict(X).shape == (len(y),)


# --- copies leave the original alone (issue 20, item 1) ---------------------------------

def _twins(backend, X, y, **kwargs):
    """Two estimators fitted alike (adam, partial_fit: the optimizer holds state)."""
    def one():
        est = MLPClassifier((5,), random_state=0, backend=backend, **kwargs)
        est.partial_fit(X, y, classes=np.unique(y))
        return est
    return one(), one()


def _copy_every_way(est):
    from sklearn.base import clone

    pickle.loads(pickle.dumps(est))
    copy.deepcopy(est)
    clone(est)


def test_pickling_copying_and_cloning_leave_the_estimator_as_it_was(backend, blobs):
    X, y = blobs
    est, twin = _twins(backend, X, y)
    trainer, dtype = est._trainer, est.model_dtype_
    _copy_every_way(est)
    assert est._trainer is trainer and est.model_dtype_ == dtype
    assert_unchanged(est, snapshot(twin))
    est.partial_fit(X, y), twin.partial_fit(X, y)  # Adam goes on from its step, as the twin's
    assert_unchanged(est, snapshot(twin))
    est.coefs_ = [_backend.to_host(c) for c in twin.coefs_]  # needs model_dtype_


@own_backends
def test_copies_under_array_api_dispatch_leave_classes_on_the_model(blobs):
    torch = pytest.importorskip("torch")
    import sklearn

    X, y = blobs
    Xt, yt = torch.asarray(X), torch.asarray(np.unique(y, return_inverse=True)[1])
    with sklearn.config_context(array_api_dispatch=True):
        est = quiet(MLPClassifier((5,), max_iter=2, random_state=0), Xt, yt)
        _copy_every_way(est)
        assert isinstance(est.classes_, torch.Tensor)
        assert est.predict(Xt).shape == (len(y),)


def test_negative_stride_views_fit_and_predict(backend, blobs):
    """Issue 20, item 7: X[::-1] on a float64 torch estimator raised torch's own error."""
    X, y = blobs
    Xr, yr = X[::-1], y[::-1]
    w = np.linspace(0.5, 1.5, len(y))[::-1]
    est = quiet(MLPClassifier((5,), max_iter=2, random_state=0, backend=backend, dtype="float64",
                              early_stopping=True), Xr, yr, sample_weight=w)
    reg = quiet(MLPRegressor(hidden_layer_sizes=(5,), max_iter=2, random_state=0, backend=backend,
                             dtype="float64", solver="lbfgs"), Xr, Xr[:, :2])
    assert est.predict_proba(Xr).shape == (len(y), 3) and reg.predict(Xr).shape == (len(y), 2)
    est.coefs_ = [_backend.to_host(c).copy()[::-1] for c in est.coefs_]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_weight_errors_name_the_attribute(backend, blobs, dtype):
    """Issue 20, item 8: where the backend owned the array (NumPy data on a NumPy model,
    the model's own arrays), the error named params[1], not the attribute."""
    X, y = blobs
    est = quiet(MLPClassifier((5,), max_iter=2, random_state=0, backend=backend, dtype=dtype),
                X, y)
    nan, huge = np.full(5, np.nan), np.full(5, 1e300 if dtype == "float32" else np.inf)
    for value in (nan, huge, est.placement_.from_host(nan)):
        with pytest.raises(ValueError) as info:
            est.intercepts_[0] = value
        assert str(info.value).startswith("intercepts_[0] "), info.value
    wrong = est.placement_.from_host(np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"^coefs_\[1\] has shape"):
        est.coefs_ = [est.coefs_[0], wrong]


@torch_session
def test_torch_meta_tensors_are_refused_as_weights(blobs):
    """Issue 20, item 12: assigning a 'meta' tensor raised torch's NotImplementedError."""
    torch = pytest.importorskip("torch")
    X, y = blobs
    est = quiet(MLPClassifier((5,), max_iter=2, random_state=0, backend="torch"), X, y)
    before = snapshot(est)
    with pytest.raises(TypeError, match="'meta' device holds no values"):
        est.coefs_[0] = torch.zeros((6, 5), dtype=torch.float64, device="meta")
    assert_unchanged(est, before)
