"""scikit-learn estimators on portable_mlp: ``MLPClassifier`` and ``MLPRegressor``.

Drop-in replacements for scikit-learn's: the same parameters with the same meaning
and defaults (solvers 'lbfgs', 'sgd', 'adam'; the regressor's 'squared_error' and
'poisson' losses), the same fitted attributes (``coefs_`` and ``intercepts_``
assignable), plus ``backend``, ``device``, ``dtype`` and ``clip_norm``. They fit with
portable_mlp's ``Trainer`` (sgd, adam) or ``LBFGS`` (lbfgs): the same forward,
backward and optimizer code as everything else, on any backend. Needs scikit-learn
and scipy (``pip install 'portable_mlp[sklearn]'``); ``import portable_mlp`` never does.

Where the data lives:

- ``backend=None`` (the default) follows the input, as scikit-learn's array API
  support does: with ``sklearn.set_config(array_api_dispatch=True)`` an estimator
  fitted on torch tensors trains on torch, on their device; otherwise on NumPy.
- ``backend="torch"`` (or any name) always trains there: host data is moved once;
  under array API dispatch, arrays already on that backend are used as they are.
  ``backend="dask"`` takes dask arrays as they are, without gathering them.
- Outputs follow the input: arrays of the model's backend in, arrays of it out;
  host data in, NumPy out.
- ``dtype=None`` keeps the input's float32 or float64 (other input: float64), as
  scikit-learn's MLPs do; where the backend's device has no float64 (JAX without its
  x64 mode), float32. A ``dtype`` that is asked for is honoured or refused.

A call that raises (bad input, divergence without early stopping) leaves a fitted
estimator as it was before the call.
"""

from portable_mlp._install import require

require("sklearn", "portable_mlp.sklearn", "sklearn")
require("scipy", "portable_mlp.sklearn", "sklearn")

from portable_mlp.sklearn._classifier import MLPClassifier  # noqa: E402 - after the hint
from portable_mlp.sklearn._regressor import MLPRegressor  # noqa: E402

__all__ = ["MLPClassifier", "MLPRegressor", "register_onnx_converters"]


def register_onnx_converters() -> None:
    """Register MLPClassifier's and MLPRegressor's converters with skl2onnx, so that
    ``skl2onnx.to_onnx`` converts them (alone or in a Pipeline) as scikit-learn's own MLPs.
    Needs skl2onnx (``pip install 'portable_mlp[skl2onnx]'``); calling it again is harmless."""
    from portable_mlp.sklearn._onnx import register

    register()
