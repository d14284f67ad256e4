"""The scikit-learn estimators: scikit-learn's own estimator checks, and what users rely on."""

import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn import neural_network  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_classification, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn_helpers import own_backends, quiet  # noqa: E402

from portable_mlp import _backend  # noqa: E402
from portable_mlp import sklearn as pm_sklearn  # noqa: E402
from portable_mlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402


@pytest.fixture(scope="module")
def blobs():
    X, y = make_classification(n_samples=120, n_features=6, n_informative=4, n_classes=3,
                               random_state=0)
    return X, np.array(["ant", "bee", "cat"])[y]


@own_backends
def test_pipeline_grid_search_and_cross_val_score(blobs):
    X, y = blobs
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=100, learning_rate_init=0.01,
                                                       random_state=0))
    grid = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(8,), (16,)],
                               "mlpclassifier__alpha": [1e-4, 1e-2]}, cv=3)
    quiet(grid, X, y)
    assert set(grid.best_params_) == {"mlpclassifier__hidden_layer_sizes",
                                      "mlpclassifier__alpha"}
    assert grid.score(X, y) > 0.7
    assert set(grid.predict(X)) <= {"ant", "bee", "cat"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(clone(pipe), X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.6


def test_pickle_round_trip(backend, blobs):
    X, y = blobs
    clf = quiet(MLPClassifier((8,), max_iter=5, random_state=0, backend=backend), X, y)
    reg = quiet(MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0, backend=backend),
                X, X[:, :2])
    for est, method in ((clf, "predict_proba"), (reg, "predict")):
        again = pickle.loads(pickle.dumps(est))
        assert again.placement_ == est.placement_
        np.testing.assert_array_equal(getattr(again, method)(X), getattr(est, method)(X))
        assert isinstance(getattr(again, method)(X), np.ndarray)  # host in, NumPy out
        again.partial_fit(X, y if est is clf else X[:, :2])  # the optimizer state came along
    np.testing.assert_array_equal(again.predict(X).shape, (X.shape[0], 2))


@own_backends
def test_partial_fit_keeps_optimizer_state_and_classes(blobs):
    X, y = blobs
    est = MLPClassifier((8,), random_state=0)
    est.partial_fit(X[:60], y[:60], classes=["ant", "bee", "cat"])
    steps = est._trainer.optimizer.state["step"]
    optimizer = est._trainer.optimizer
    est.partial_fit(X[60:], y[60:])
    assert est._trainer.optimizer is optimizer
    assert est._trainer.optimizer.state["step"] == steps + 1
    assert list(est.classes_) == ["ant", "bee", "cat"]
    with pytest.raises(ValueError, match="classes not in"):
        est.partial_fit(X[:5], np.array(["dog"] * 5))
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier().partial_fit(X, y)


@own_backends
def test_class_weight_moves_predictions_towards_the_weighted_class():
    X, y = make_classification(n_samples=300, n_features=4, n_informative=2,
                               class_sep=0.3, random_state=1)
    base = dict(hidden_layer_sizes=(8,), max_iter=60, random_state=0, learning_rate_init=0.01)
    plain = quiet(MLPClassifier(**base), X, y).predict(X)
    tilted = quiet(MLPClassifier(**base, class_weight={0: 1.0, 1: 10.0}), X, y).predict(X)
    assert tilted.mean() > plain.mean() + 0.1
    balanced = quiet(MLPClassifier(**base, class_weight="balanced"), X[40:], y[40:])
    assert balanced.classes_.tolist() == [0, 1]


@own_backends
def test_sample_weight_pulls_the_fit_towards_heavy_samples():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (200, 1))
    y = np.where(np.arange(200) % 2 == 0, 1.0, -1.0)  # two targets for the same inputs
    w = np.where(y > 0, 9.0, 1.0)
    base = dict(hidden_layer_sizes=(8,), max_iter=100, random_state=0, learning_rate_init=0.01)
    assert abs(quiet(MLPRegressor(**base), X, y).predict(X).mean()) < 0.3
    assert quiet(MLPRegressor(**base), X, y, sample_weight=w).predict(X).mean() > 0.5
    clf = quiet(MLPClassifier(**base), X, y > 0, sample_weight=w)
    assert clf.predict(X).mean() > 0.9


@own_backends
def test_fitted_attributes_and_curves():
    X, y = load_digits(return_X_y=True)
    est = quiet(MLPClassifier((16,), max_iter=15, early_stopping=True, random_state=0,
                              n_iter_no_change=50), X / 16, y)
    assert len(est.loss_curve_) == est.n_iter_ == 15
    assert len(est.validation_scores_) == len(est.validation_loss_curve_) == 15
    assert est.validation_loss_curve_[-1] < est.validation_loss_curve_[0]
    assert est.best_validation_score_ == max(est.validation_scores_)
    assert est.out_activation_ == "softmax" and est.n_layers_ == 3
    assert [tuple(c.shape) for c in est.coefs_] == [(64, 16), (16, 10)]
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier((4,), max_iter=2).fit(X[:50], y[:50])


@own_backends
def test_stops_when_the_loss_stops_improving():
    X, y = make_classification(n_samples=100, random_state=0)
    est = MLPClassifier((8,), max_iter=500, tol=1e-1, n_iter_no_change=3,
                        random_state=0).fit(X, y)
    assert est.n_iter_ < 20


@own_backends
def test_learning_rate_schedules():
    X, y = make_classification(n_samples=100, random_state=0)
    base = dict(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=0.1, random_state=0)
    est = quiet(MLPClassifier(**base, learning_rate="invscaling", max_iter=3), X, y)
    assert est._trainer.optimizer.lr == pytest.approx(0.1 / (est.t_ + 1) ** 0.5)
    est = quiet(MLPClassifier(**base, learning_rate="adaptive", tol=10.0, n_iter_no_change=1,
                              max_iter=8), X, y)
    assert est._trainer.optimizer.lr < 0.1  # divided by 5 when the loss stalls
    with pytest.raises(ValueError, match="balanced"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=[0, 1])


@own_backends
def test_multilabel_and_multioutput():
    X, Y = make_classification(n_samples=80, random_state=0)[0], None
    Y = (np.random.default_rng(0).uniform(size=(80, 3)) < X[:, :3] * 0 + 0.5).astype(int)
    clf = quiet(MLPClassifier((8,), max_iter=5, random_state=0), X, Y)
    assert clf.predict(X).shape == (80, 3) and clf.predict_proba(X).shape == (80, 3)
    assert clf.out_activation_ == "logistic"
    Xr, Yr = make_regression(n_samples=80, n_features=4, n_targets=3, random_state=0)
    reg = quiet(MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, random_state=0), Xr, Yr)
    assert reg.predict(Xr).shape == (80, 3)


@own_backends
def test_bad_input_and_divergence_give_value_errors():
    X, y = make_regression(n_samples=50, n_features=3, random_state=0)
    bad = X.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        MLPRegressor().fit(bad, y)
    with pytest.raises(ValueError, match="non-finite"), np.errstate(all="ignore"):
        MLPRegressor(solver="sgd", learning_rate_init=1e3, max_iter=20).fit(X * 1e3, y * 1e6)
    with pytest.raises(ValueError, match="solver"):
        MLPRegressor(solver="newton").fit(X, y)
    with pytest.raises(ValueError, match="continuous"):
        MLPClassifier().fit(X, y)


@own_backends
def test_array_api_dispatch_uses_backend_arrays_in_place(monkeypatch):
    torch = pytest.importorskip("torch")
    X, y = make_classification(n_samples=64, n_features=5, random_state=0)
    Xt, yt = torch.asarray(X), torch.asarray(y)
    moved = []
    real = _backend.from_host

    def spy(name, x, device, dtype):
        moved.append(tuple(x.shape))
        return real(name, x, device, dtype)

    monkeypatch.setattr(_backend, "from_host", spy)
    for est in (MLPClassifier((8,), max_iter=3, random_state=0),
                MLPClassifier((8,), max_iter=3, random_state=0, backend="torch")):
        with sklearn.config_context(array_api_dispatch=True), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(Xt, yt)
            proba, labels = est.predict_proba(Xt), est.predict(Xt)
        assert est.placement_.backend == "torch"
        assert isinstance(proba, torch.Tensor) and isinstance(labels, torch.Tensor)
        assert isinstance(est.classes_, torch.Tensor)
        assert not any(shape and shape[0] == 64 for shape in moved), moved  # no data copied
        again = pickle.loads(pickle.dumps(est))
        with sklearn.config_context(array_api_dispatch=True):
            assert torch.equal(again.predict_proba(Xt), proba)
        assert isinstance(again.classes_, torch.Tensor)
    # without dispatch, scikit-learn hands NumPy to the estimator, and NumPy comes back
    est = quiet(MLPClassifier((8,), max_iter=3, random_state=0, backend="torch"), Xt, yt)
    assert isinstance(est.predict(Xt), np.ndarray)


@own_backends
def test_pandas_input_and_feature_names():
    pd = pytest.importorskip("pandas")
    X, y = make_classification(n_samples=60, n_features=3, n_informative=2, n_redundant=0,
                               random_state=0)
    frame = pd.DataFrame(X, columns=["a", "b", "c"])
    labels = pd.Series(np.where(y == 1, "yes", "no"))
    est = quiet(MLPClassifier((4,), max_iter=5, random_state=0), frame, labels)
    assert list(est.feature_names_in_) == ["a", "b", "c"]
    assert set(est.predict(frame)) <= {"yes", "no"}
    with pytest.warns(UserWarning, match="feature names"):  # as scikit-learn's MLP warns
        assert est.predict([[0.0, 0.0, 0.0]]).shape == (1,)  # a list is taken too


@pytest.mark.parametrize("make, namespace", [
    (MLPRegressor, "torch"), (MLPRegressor, "array_api_strict"),
    (MLPClassifier, "array_api_strict"),  # torch: see the next test
])
@own_backends
def test_array_api_values_match_numpy(make, namespace):
    """Stricter than the default array API checks: the same numbers as on NumPy
    (one seed gives one network and one training trajectory on every backend)."""
    from sklearn.utils.estimator_checks import check_array_api_input_and_values

    pytest.importorskip(namespace)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check_array_api_input_and_values(make.__name__, make(hidden_layer_sizes=(8,), max_iter=20),
                                         array_namespace=namespace, check_sample_weight=True)


@own_backends
def test_torch_classifier_values_match_numpy():
    """As above for the classifier on torch, whose ``score`` the check cannot compare:
    scikit-learn's accuracy_score averages in torch's default float32."""
    torch = pytest.importorskip("torch")
    X, y = make_classification(n_samples=30, n_features=10, random_state=42)
    est = MLPClassifier((8,), max_iter=20, random_state=0)
    ref = quiet(clone(est), X, y)
    with sklearn.config_context(array_api_dispatch=True):
        ours = quiet(clone(est), torch.asarray(X), torch.asarray(y))
        proba = ours.predict_proba(torch.asarray(X)).numpy()
        labels = ours.predict(torch.asarray(X)).numpy()
    np.testing.assert_allclose(proba, ref.predict_proba(X), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(labels, ref.predict(X))
    np.testing.assert_allclose(ours.loss_curve_, ref.loss_curve_, rtol=1e-12)


def test_early_stopping_refuses_a_split_without_weight():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((60, 3)), rng.standard_normal(60)
    weights = np.zeros(60)
    weights[:6] = 1.0
    refused = 0
    for seed in range(6):  # some splits hold out only zero-weight samples
        est = MLPRegressor(hidden_layer_sizes=(4,), early_stopping=True, max_iter=5,
                           random_state=seed)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                est.fit(X, y, sample_weight=weights)
        except ValueError as exc:
            assert "zero sample weights" in str(exc)
            refused += 1
        else:
            assert all(np.isfinite(est.validation_loss_curve_))
    assert refused > 0


def test_dask_arrays_of_any_chunks_place_on_the_dask_cpu():
    da = pytest.importorskip("dask.array")
    sparse = pytest.importorskip("scipy.sparse")
    x = da.from_array(sparse.csr_matrix(np.ones((4, 2))), chunks=2, asarray=False)
    assert _backend.device_of(x) == "cpu"
    assert _backend.Placement.create("dask", _backend.device_of(x)).device == "cpu"


# --- one class, and feature names through early stopping (issue 25) ------------------------

SOLVERS = ("adam", "sgd", "lbfgs")


def _one_class_frame():
    """scikit-learn's test_preserve_feature_names data: 10 rows, every label 1."""
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(np.random.RandomState(0).randn(10, 2), columns=["colname_a", "colname_b"])
    return X, pd.Series(np.full(10, 1), name="colname_y")


def _fit_both(name: str, backend: str, X, y, **kwargs):
    """scikit-learn's estimator ``name`` and ours on ``backend``, fit alike; a UserWarning
    other than ConvergenceWarning (a feature-name warning) fails."""
    theirs = getattr(neural_network, name)(**kwargs)
    ours = getattr(pm_sklearn, name)(**kwargs, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        return theirs.fit(X, y), ours.fit(X, y)


@pytest.mark.parametrize("early_stopping", [False, True])
@pytest.mark.parametrize("solver", SOLVERS)
def test_one_class_fits_and_predicts_as_scikit_learn(backend, solver, early_stopping):
    """scikit-learn trains one logistic output towards 0, predicts the one class and gives
    two probability columns (1 - p, p); so does ours (10 rows: one batch, the same steps)."""
    X, y = _one_class_frame()
    ref, est = _fit_both("MLPClassifier", backend, X, y, solver=solver,
                         early_stopping=early_stopping, validation_fraction=0.2, max_iter=5,
                         random_state=0)
    assert _backend.to_host(est.classes_).tolist() == [1]
    assert (est.n_outputs_, est.out_activation_, est.n_iter_) == (1, "logistic", ref.n_iter_)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        np.testing.assert_array_equal(est.predict(X), ref.predict(X))
        np.testing.assert_allclose(est.predict_proba(X), ref.predict_proba(X), rtol=1e-6)
        np.testing.assert_allclose(est.predict_log_proba(X), ref.predict_log_proba(X),
                                   rtol=1e-6)
        assert est.score(X, y) == ref.score(X, y) == 1.0
    scores = [getattr(e, "validation_scores_", None) for e in (est, ref)]  # lbfgs: none
    assert scores[0] == scores[1]


def test_partial_fit_from_a_batch_of_one_class(backend):
    """A first batch with one class of the two in ``classes=``, or ``classes=`` naming one:
    scikit-learn's predictions, batch after batch."""
    X, y = make_classification(n_samples=40, n_features=4, random_state=0)
    first = y == 1
    for classes, batches in (([0, 1], [first, ~first, slice(None)]), ([1], [first, first])):
        ref = neural_network.MLPClassifier((8,), random_state=0)
        est = MLPClassifier((8,), random_state=0, backend=backend)
        for i, rows in enumerate(batches):
            given = {"classes": classes} if i == 0 else {}
            ref.partial_fit(X[rows], y[rows], **given)
            est.partial_fit(X[rows], y[rows], **given)
            np.testing.assert_allclose(est.predict_proba(X), ref.predict_proba(X), rtol=1e-6)
            np.testing.assert_array_equal(est.predict(X), ref.predict(X))
        assert _backend.to_host(est.classes_).tolist() == classes


@pytest.mark.parametrize("frame", ["pandas", "dask"])
@pytest.mark.parametrize("name", ["MLPClassifier", "MLPRegressor"])
def test_feature_names_survive_early_stopping(backend, frame, name):
    """No feature-name warning from the validation split, in fit or after; the feature
    names, validation scores and predictions are scikit-learn's (a dask DataFrame's names
    are not read, by scikit-learn either)."""
    pd = pytest.importorskip("pandas")
    rng = np.random.RandomState(0)
    X = pd.DataFrame(rng.randn(40, 2), columns=["colname_a", "colname_b"])
    y = pd.Series(np.arange(40) % 2, name="colname_y")
    if frame == "dask":
        dd = pytest.importorskip("dask.dataframe")
        X, y = dd.from_pandas(X, npartitions=2), dd.from_pandas(y, npartitions=2)
    ref, est = _fit_both(name, backend, X, y, early_stopping=True, hidden_layer_sizes=(4,),
                         max_iter=5, random_state=0)
    assert est.validation_scores_ == pytest.approx(ref.validation_scores_)
    names = getattr(ref, "feature_names_in_", None)
    assert (names is not None) == (frame == "pandas")
    np.testing.assert_array_equal(getattr(est, "feature_names_in_", None), names)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        np.testing.assert_allclose(est.predict(X), ref.predict(X), rtol=1e-6)
