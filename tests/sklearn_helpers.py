"""What the scikit-learn test files share (not a test module)."""

import os
import warnings

import pytest
from sklearn.exceptions import ConvergenceWarning

# Tests that pick their own backends run in the test sessions of numpy, torch and
# array_api_strict (PORTABLE_MLP_BACKEND), not again in those of jax, dask or cupy.
REQUESTED = {b for b in os.environ.get("PORTABLE_MLP_BACKEND", "").split(",") if b}
own_backends = pytest.mark.skipif(
    bool(REQUESTED) and not REQUESTED & {"numpy", "torch", "array_api_strict"},
    reason="runs in the numpy, torch and array_api_strict sessions")
torch_session = pytest.mark.skipif(bool(REQUESTED) and "torch" not in REQUESTED,
                                   reason="runs in the torch session")
dask_session = pytest.mark.skipif(bool(REQUESTED) and "dask" not in REQUESTED,
                                  reason="runs in the dask session")
numpy_session = pytest.mark.skipif(bool(REQUESTED) and "numpy" not in REQUESTED,
                                   reason="runs in the numpy session")


def quiet(est, *args, **kwargs):
    """``est.fit(*args, **kwargs)``, ignoring ConvergenceWarning (short test fits)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)
