"""MLPRegressor: squared error (identity output) or Poisson (exp output)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import RegressorMixin, _fit_context
from sklearn.utils._param_validation import StrOptions

from portable_mlp import _backend, losses
from portable_mlp.sklearn._base import BaseMLP, shared_parameters

Array = Any

_LOSSES = {"squared_error": "mse", "poisson": "poisson"}  # scikit-learn's -> portable_mlp's


@shared_parameters
class MLPRegressor(RegressorMixin, BaseMLP):
    """Multi-layer perceptron regressor trained by portable_mlp on any backend.

    ``loss="squared_error"``: half the squared error, identity output.
    ``loss="poisson"``: half the Poisson deviance with an exp output (the network
    predicts the log of the mean), for counts and rates; needs ``y >= 0``. One output
    per target column. Parameters (scikit-learn's, with its meaning and defaults, plus
    ``backend``, ``device``, ``dtype``, ``clip_norm``, ``threads`` and ``dropout``;
    ``activation`` with portable_mlp's names too) and fitted attributes as
    ``MLPClassifier``'s (no ``classes_``).

    Parameters
    ----------
    loss : {"squared_error", "poisson"}, default "squared_error"
        Half the squared error (identity output), or half the Poisson deviance (exp
        output, ``y >= 0``).
    """

    _parameter_constraints: dict = {
        **BaseMLP._parameter_constraints,
        "loss": [StrOptions(set(_LOSSES))],
    }

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend=None, device=None, dtype=None, clip_norm=None, threads=None,
                 dropout=0.0) -> None:
        super().__init__(
            loss=loss, hidden_layer_sizes=hidden_layer_sizes, activation=activation,
            solver=solver, alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change,
            max_fun=max_fun, backend=backend, device=device, dtype=dtype, clip_norm=clip_norm,
            threads=threads, dropout=dropout)

    @property
    def _loss(self) -> str:
        return _LOSSES[self.loss]

    @property
    def _out_activation(self) -> str:
        return "exp" if self.loss == "poisson" else "identity"

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``X``, ``y``, continuing from the optimizer's state.

        As scikit-learn's MLPRegressor, available with every solver: with 'lbfgs' it
        runs the full-batch solver again from the current weights.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            The features.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The targets.
        sample_weight : array-like of shape (n_samples,) or None, default None
            Per-sample weights of the loss.
        """
        return self._fit(X, y, sample_weight, incremental=True)

    def _encode(self, y: Any, first: bool, incremental: bool,
                classes: np.ndarray | None = None) -> Array:
        Y = self._placed(y)
        if Y.ndim == 1:
            Y = self.placement_.xp.reshape(Y, (-1, 1))
        if not first and Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} outputs, but the model was fitted on "
                             f"{self.n_outputs_}")
        losses.check_targets(self._loss, self.placement_.xp, Y)
        return Y

    def _predictions(self, out: Array) -> Array:
        """The model's output through the loss's link (exp for Poisson)."""
        return self.placement_.xp.exp(out) if self.loss == "poisson" else out

    def _placed_score(self, X: Array, Y: Array, w: Array | None) -> float:
        """R^2, averaged uniformly over outputs (weighted by ``w``)."""
        xp = self.placement_.xp
        out = self._predictions(self.model_.forward(X)[0])
        wc = xp.ones_like(Y[:, :1]) if w is None else xp.reshape(w, (-1, 1))
        total = xp.sum(wc)
        mean = xp.sum(Y * wc, axis=0) / total
        resid = xp.sum(wc * (Y - out) ** 2, axis=0)
        spread = xp.sum(wc * (Y - mean) ** 2, axis=0)
        safe = xp.where(spread > 0.0, spread, 1.0)
        exact = 1.0 - xp.astype(resid > 0.0, resid.dtype)  # constant y: 1 if fitted exactly
        r2 = xp.where(spread > 0.0, 1.0 - resid / safe, exact)
        return float(_backend.to_host(xp.mean(r2)))

    def predict(self, X):
        """Predicted targets: ``(n,)`` for one target, ``(n, n_outputs)`` for several.

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            The features.
        """
        out, keep = self._logits(X, "predict")
        out = self._predictions(out)
        if out.shape[1] == 1:
            out = self.placement_.xp.reshape(out, (-1,))
        return self._output(out, keep)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags
