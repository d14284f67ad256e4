"""backend="dask": the estimators train on dask arrays where they lie and predict lazily.

No array as long as the data is ever computed to the client: not X, not the labels
(their classes are found with a distributed ``unique``), not the predictions.
"""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
da = pytest.importorskip("dask.array")

from sklearn.datasets import make_classification, make_regression  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn_helpers import dask_session  # noqa: E402

from portable_mlp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

N = 240  # rows: any computed array this long is a gather
pytestmark = dask_session


@pytest.fixture
def no_gather(monkeypatch):
    """Within the block, computing a dask array of N rows to the client fails."""
    real = da.Array.compute

    def compute(self, **kwargs):
        if self.ndim and self.shape[0] == N:
            raise AssertionError(f"gathered a dask array of shape {self.shape}")
        return real(self, **kwargs)

    def refuse(self, *args, **kwargs):
        raise AssertionError(f"converted a dask array of shape {self.shape} to NumPy")

    def patched():
        monkeypatch.setattr(da.Array, "compute", compute)
        monkeypatch.setattr(da.Array, "__array__", refuse)
        return monkeypatch

    return patched


def _lazy(*arrays):
    return [da.from_array(a, chunks=(N // 4, *a.shape[1:])) for a in arrays]


def _fit_on_numpy_and_dask(estimator, kwargs, X, y, no_gather, while_guarded):
    """The estimator fit on (X, y) with NumPy (the reference) and on lazy dask copies;
    the dask fit and ``while_guarded(est, Xd)`` run with gathering refused. Returns the
    reference, the dask estimator and what ``while_guarded`` returned."""
    Xd, yd = _lazy(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref = estimator(**kwargs).fit(X, y)
        patch = no_gather()
        est = estimator(**kwargs, backend="dask").fit(Xd, yd)
        out = while_guarded(est, Xd)
        patch.undo()
    return ref, est, out


@pytest.mark.parametrize("solver, n_classes", [("adam", 3), ("lbfgs", 3), ("adam", 1)])
def test_classifier_trains_and_predicts_on_dask_without_gathering(no_gather, solver, n_classes):
    X, y = make_classification(n_samples=N, n_features=5, n_informative=3, n_classes=3,
                               random_state=0)
    y = y % n_classes  # one class: fits as scikit-learn's does
    # full batches: the same steps as NumPy's, however the dask Trainer forms minibatches
    kwargs = dict(hidden_layer_sizes=(6,), solver=solver, max_iter=5, random_state=0,
                  batch_size=N)
    ref, est, (labels, proba) = _fit_on_numpy_and_dask(
        MLPClassifier, kwargs, X, y, no_gather,
        lambda est, Xd: (est.predict(Xd), est.predict_proba(Xd)))
    assert isinstance(labels, da.Array) and isinstance(proba, da.Array)
    assert est.classes_.tolist() == list(range(n_classes)) and est.n_features_in_ == 5
    np.testing.assert_allclose(proba.compute(), ref.predict_proba(X), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(labels.compute(), ref.predict(X))


def test_regressor_trains_and_predicts_on_dask_without_gathering(no_gather):
    X, y = make_regression(n_samples=N, n_features=4, random_state=0)
    y = y / y.std()
    kwargs = dict(hidden_layer_sizes=(6,), max_iter=4, random_state=0, batch_size=N)

    def predict_and_probe_the_guard(est, Xd):
        pred = est.predict(Xd)
        with pytest.raises(AssertionError, match="gathered"):  # the guard works
            Xd.compute()
        return pred

    ref, _, pred = _fit_on_numpy_and_dask(MLPRegressor, kwargs, X, y, no_gather,
                                          predict_and_probe_the_guard)
    assert isinstance(pred, da.Array)
    np.testing.assert_allclose(pred.compute(), ref.predict(X), rtol=1e-9)


def test_dask_input_is_checked_lazily_but_clearly():
    X, y = make_classification(n_samples=N, n_features=5, random_state=0)
    Xd, yd = _lazy(X, y)
    est = MLPClassifier((4,), max_iter=2, backend="dask")
    with pytest.raises(ValueError, match="known chunk sizes"):
        est.fit(Xd[Xd[:, 0] > 0], yd[Xd[:, 0] > 0])
    with pytest.raises(ValueError, match="rows"):
        est.fit(Xd, yd[:10])
    Xbad = X.copy()
    Xbad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(*_lazy(Xbad), yd)
    with pytest.raises(ValueError, match="Unknown label type"):
        est.fit(Xd, yd + 0.5)
    assert not hasattr(est, "model_")
