import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend


def test_xor_is_the_seeds_data():
    X, y = pm.datasets.xor(n=300, seed=0)
    expected = np.random.RandomState(0).randn(300, 2)
    np.testing.assert_array_equal(X, expected)
    assert X.dtype == np.float64 and y.dtype == np.int64 and y.shape == (300,)
    np.testing.assert_array_equal(y, (expected[:, 0] > 0) ^ (expected[:, 1] > 0))
    assert 0.3 < y.mean() < 0.7


def test_one_hot_on_every_backend(backend, xp):
    y = xp.asarray([0, 2, 1, 2])
    Y = pm.one_hot(y, 3)
    assert _backend.array_backend(Y) == backend
    np.testing.assert_array_equal(_backend.to_host(Y), np.eye(3)[[0, 2, 1, 2]])


@pytest.mark.parametrize("labels, n", [([0, 3], 3), ([-1, 0], 2)])
def test_one_hot_refuses_labels_out_of_range(labels, n):
    with pytest.raises(ValueError, match="labels must be in"):
        pm.one_hot(np.array(labels), n)


def test_one_hot_refuses_non_integer_labels():
    with pytest.raises(TypeError, match="integer labels"):
        pm.one_hot(np.array([0.0, 1.0]), 2)


GENERATORS = [pm.datasets.moons, pm.datasets.circles, pm.datasets.spirals]


@pytest.mark.parametrize("make", GENERATORS, ids=lambda f: f.__name__)
def test_2d_datasets_are_seeded_shaped_and_balanced(make):
    X, y = make(n=301, seed=3)
    assert X.shape == (301, 2) and X.dtype == np.float64
    assert y.shape == (301,) and y.dtype == np.int64
    assert np.isfinite(X).all()
    counts = np.bincount(y)
    assert counts.max() - counts.min() <= 1
    X2, y2 = make(n=301, seed=3)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(X, make(n=301, seed=4)[0])


def test_moons_without_noise_lie_on_their_half_circles():
    X, y = pm.datasets.moons(n=200, noise=0.0, seed=0)
    top, bottom = X[y == 0], X[y == 1]
    np.testing.assert_allclose(np.hypot(*top.T), 1.0)
    np.testing.assert_allclose(np.hypot(bottom[:, 0] - 1.0, bottom[:, 1] - 0.5), 1.0)
    assert (top[:, 1] >= -1e-12).all() and (bottom[:, 1] <= 0.5 + 1e-12).all()


def test_circles_without_noise_have_radius_one_and_factor():
    X, y = pm.datasets.circles(n=100, noise=0.0, factor=0.3, seed=0)
    radius = np.hypot(X[:, 0], X[:, 1])
    np.testing.assert_allclose(radius[y == 0], 1.0)
    np.testing.assert_allclose(radius[y == 1], 0.3)


def test_spirals_have_one_arm_per_class():
    X, y = pm.datasets.spirals(n=250, n_classes=5, noise=0.0, seed=0)
    assert set(np.unique(y)) == set(range(5))
    assert np.hypot(X[:, 0], X[:, 1]).max() <= 1.0 + 1e-12


@pytest.mark.parametrize("make, kwargs, error, match", [
    (pm.datasets.moons, {"n": 1}, ValueError, "n must be at least 2"),
    (pm.datasets.moons, {"n": 2.5}, TypeError, "n must be an integer"),
    (pm.datasets.moons, {"noise": -0.1}, ValueError, "noise must be >= 0"),
    (pm.datasets.circles, {"noise": float("nan")}, ValueError, "noise must be >= 0"),
    (pm.datasets.circles, {"factor": 1.0}, ValueError, "factor"),
    (pm.datasets.circles, {"factor": 0}, ValueError, "factor must be positive"),
    (pm.datasets.spirals, {"n_classes": 1}, ValueError, "n_classes must be at least 2"),
    (pm.datasets.spirals, {"n": 2, "n_classes": 3}, ValueError, "n must be at least 3"),
    (pm.datasets.spirals, {"seed": -1}, ValueError, "seed must be"),
    (pm.datasets.spirals, {"noise": "big"}, TypeError, "noise must be a number"),
])
def test_2d_datasets_refuse_bad_arguments(make, kwargs, error, match):
    with pytest.raises(error, match=match):
        make(**kwargs)
