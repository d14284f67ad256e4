"""The estimators take the new activations and ``dropout`` (0.0 by default: scikit-learn's
behaviour unchanged)."""

import numpy as np
import pytest

from portable_mlp import Dropout, layers
from portable_mlp.sklearn import MLPClassifier, MLPRegressor

pytest.importorskip("sklearn")
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 4))
    return X, (X[:, 0] * X[:, 1] > 0).astype(int)  # xor: no linear model fits it


@pytest.mark.parametrize("activation", ["gelu", "silu", "leaky_relu", "elu", "softplus"])
def test_new_activations_fit(activation):
    X, y = _data()
    clf = MLPClassifier((16,), activation=activation, learning_rate_init=0.01, max_iter=400,
                        random_state=0).fit(X, y)
    assert clf.score(X, y) > 0.8  # a linear model: about 0.5
    assert type(clf.model_.pieces[1]) is layers.ACTIVATIONS[activation]


def test_dropout_is_off_by_default_and_on_when_asked():
    X, y = _data()
    plain = MLPClassifier((16, 16), max_iter=50, random_state=0).fit(X, y)
    assert plain.dropout == 0.0
    assert not any(isinstance(p, Dropout) for p in plain.model_.pieces)
    drop = MLPClassifier((16, 16), max_iter=50, random_state=0, dropout=0.3).fit(X, y)
    assert [p.rate for p in drop.model_.pieces if isinstance(p, Dropout)] == [0.3, 0.3]
    # training differs, prediction is deterministic (no dropout in inference)
    assert not np.allclose(plain.coefs_[0], drop.coefs_[0])
    np.testing.assert_array_equal(drop.predict_proba(X), drop.predict_proba(X))
    again = MLPClassifier((16, 16), max_iter=50, random_state=0, dropout=0.3).fit(X, y)
    np.testing.assert_array_equal(again.coefs_[0], drop.coefs_[0])  # seeded: reproducible
    reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=30, random_state=0, dropout=0.1)
    reg.fit(X, X[:, 0])
    assert any(isinstance(p, Dropout) for p in reg.model_.pieces)


@pytest.mark.parametrize("kwargs, match", [
    ({"dropout": 1.0}, "dropout"),
    ({"dropout": 0.2, "solver": "lbfgs"}, "needs a stochastic solver"),
    ({"activation": "swish"}, "activation"),
])
def test_bad_settings_are_refused(kwargs, match):
    X, y = _data()
    with pytest.raises(ValueError, match=match):
        MLPClassifier((4,), max_iter=5, **kwargs).fit(X, y)
