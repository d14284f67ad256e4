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
