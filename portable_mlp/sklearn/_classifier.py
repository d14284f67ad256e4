"""MLPClassifier: labels in, labels out; softmax, logistic or multi-label outputs."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, _fit_context
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.multiclass import check_classification_targets, type_of_target

from portable_mlp import _backend
from portable_mlp.sklearn._base import BaseMLP, _is_dask, known_shape, same_home, shared_parameters

Array = Any


@shared_parameters
class MLPClassifier(ClassifierMixin, BaseMLP):
    """Multi-layer perceptron classifier trained by portable_mlp on any backend.

    Parameters are scikit-learn's ``MLPClassifier``'s, with the same meaning and
    defaults, plus ``class_weight``, ``backend``, ``device``, ``dtype``, ``clip_norm``
    and ``dropout`` (default 0.0: none; else a ``Dropout`` of that rate after each
    hidden layer, with a stochastic solver, its masks seeded from ``random_state``).
    ``activation`` takes scikit-learn's names and portable_mlp's 'gelu', 'silu',
    'leaky_relu', 'elu' and 'softplus'. Multi-class targets use a softmax output and
    cross-entropy; binary targets one logistic output; multi-label indicator matrices
    one logistic output per label. A ``y`` of one class fits as in scikit-learn: one
    logistic output trained towards 0, ``predict`` gives the class, ``predict_proba``
    two columns (1 - p, p).
    ``class_weight`` ('balanced' or a dict) multiplies every sample's weight by its
    class's weight.

    Fitted attributes: ``classes_``, ``loss_``, ``loss_curve_``, ``best_loss_``,
    ``validation_scores_`` and ``validation_loss_curve_`` (early stopping),
    ``best_validation_score_``, ``n_iter_``, ``t_``, ``coefs_`` and ``intercepts_``
    (assignable), ``n_layers_``, ``n_outputs_``, ``out_activation_``, ``model_`` (the
    portable_mlp model) and ``placement_`` (its backend, device and dtype).

    Parameters
    ----------
    class_weight : dict, "balanced" or None, default None
        Weights per class, multiplying each sample's weight; "balanced": inversely
        proportional to the classes' frequencies.
    """

    _parameter_constraints: dict = {
        **BaseMLP._parameter_constraints,
        "class_weight": [StrOptions({"balanced"}), dict, None],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 class_weight=None, backend=None, device=None, dtype=None,
                 clip_norm=None, threads=None, dropout=0.0) -> None:
        super().__init__(
            hidden_layer_sizes=hidden_layer_sizes, activation=activation, solver=solver,
            alpha=alpha, batch_size=batch_size, learning_rate=learning_rate,
            learning_rate_init=learning_rate_init, power_t=power_t, max_iter=max_iter,
            shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction,
            beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change,
            max_fun=max_fun, class_weight=class_weight, backend=backend, device=device,
            dtype=dtype, clip_norm=clip_norm, threads=threads, dropout=dropout)

    @property
    def _loss(self) -> str:
        return "cross_entropy" if self._kind == "multiclass" else "binary_cross_entropy"

    @property
    def _out_activation(self) -> str:
        return "softmax" if self._kind == "multiclass" else "logistic"

    def _stratify(self) -> bool:
        return self._kind == "binary"  # as scikit-learn: one output column only

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit to ``X`` and labels ``y`` (any label type; a 0/1 matrix for multi-label).

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            The features.
        y : array-like of shape (n_samples,) or (n_samples, n_labels)
            Labels of any type (integers, strings, a pandas categorical or dask Series), or a
            0/1 matrix for multi-label.
        sample_weight : array-like of shape (n_samples,) or None, default None
            Per-sample weights of the loss (multiplied by ``class_weight``'s).
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _weights(self, y: Any, sample_weight: Any) -> Any:
        """``sample_weight`` times each sample's class weight (``class_weight``)."""
        if self.class_weight is None:
            return sample_weight
        from sklearn.utils.class_weight import compute_sample_weight

        weights = compute_sample_weight(self.class_weight, _backend.to_host(y))
        if sample_weight is not None:
            weights = weights * _backend.to_host(sample_weight)
        return weights.astype(_backend.dtype_name(self.model_dtype_))

    def _check_solver(self) -> bool:
        if self.solver == "lbfgs":
            raise AttributeError("partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    @available_if(_check_solver)
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over ``X``, ``y``, continuing from the optimizer's state.

        ``classes`` (every label that can occur) is needed on the first call.
        """
        if self.class_weight == "balanced":
            raise ValueError("class_weight='balanced' is not supported for partial_fit: the "
                             "class frequencies of one batch are not those of the data. Pass "
                             "class_weight as a dict, e.g. from "
                             "sklearn.utils.class_weight.compute_class_weight.")
        if not hasattr(self, "classes_"):
            if classes is None and not _is_indicator(y):
                raise ValueError("classes must be passed on the first call to partial_fit.")
        elif classes is not None and not np.array_equal(
                np.unique(np.asarray(classes)), _backend.to_host(self.classes_)):
            raise ValueError(f"`classes={classes!r}` is not the same as on the first call to "
                             f"partial_fit, which was {self.classes_!r}")
        given = None if classes is None else np.unique(np.asarray(classes))
        return self._fit(X, y, sample_weight, incremental=True, classes=given)

    # --- labels ----------------------------------------------------------------
    def _encode(self, y: Any, first: bool, incremental: bool,
                classes: np.ndarray | None = None) -> Array:
        """One-hot (or 0/1) targets; ``classes``: those given to a first partial_fit."""
        kind = self._target_kind(y)
        found = self._classes_in(y, kind)
        if first:
            self._kind = kind
            self._set_classes(found, classes)
        else:
            self._check_classes(kind, found, incremental)
        if self._kind == "multilabel":
            return self._placed(y)
        place = self.placement_
        y = self._to_model(y)
        own = self.classes_
        if not same_home(y, own):
            own = (place.xp.asarray(_backend.to_host(own), device=place.device_obj)
                   if place.owns(y) else _backend.to_host(own))
        Y = y[:, None] == own[None, :]
        if self._kind == "binary":  # one column, as scikit-learn's LabelBinarizer: 1 for the
            Y = Y[:, 1:] if own.shape[0] == 2 else ~Y  # second class; one class: 0
        return self._placed(Y)

    def _target_kind(self, y: Any) -> str:
        """'binary', 'multiclass' or 'multilabel' (dask labels: from their unique values)."""
        if _is_dask(y):
            if y.ndim == 2:
                return "multilabel"
            kind = type_of_target(_unique(y))
        else:
            check_classification_targets(y)
            kind = type_of_target(y)
        if kind not in ("binary", "multiclass", "multilabel-indicator"):
            raise ValueError(f"Unknown label type: {kind}. {type(self).__name__} supports "
                             "binary, multiclass and multilabel-indicator targets.")
        return "multilabel" if kind == "multilabel-indicator" else kind

    def _classes_in(self, y: Any, kind: str) -> Array:
        """The sorted classes in ``y``: on the model's backend where they are known
        eagerly, on the host otherwise (dask: its unique values are computed)."""
        if kind == "multilabel":
            return np.arange(y.shape[1])
        y = self._to_model(y)
        if isinstance(y, np.ndarray) or not hasattr(y, "shape"):
            return np.unique(np.asarray(y))
        return _unique(y)

    def _set_classes(self, classes: Array, given: np.ndarray | None) -> None:
        if given is not None and self._kind != "multilabel":
            unseen = np.setdiff1d(_backend.to_host(classes), given)
            if unseen.size:
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{given}. 'y' has {classes}.")
            classes = given
            self._kind = "binary" if given.shape[0] <= 2 else "multiclass"
        self.classes_ = classes

    def _check_classes(self, kind: str, classes: Array, incremental: bool) -> None:
        """scikit-learn's checks of a warm start or a partial fit, with its messages."""
        if (kind == "multilabel") != (self._kind == "multilabel"):
            raise ValueError(f"y is {kind}, but the model was fitted on {self._kind} targets")
        got, had = _backend.to_host(classes), _backend.to_host(self.classes_)
        if self.warm_start:
            if set(got.tolist()) != set(had.tolist()):
                raise ValueError("warm_start can only be used where `y` has the same classes "
                                 f"as in the previous call to fit. Previously got "
                                 f"{self.classes_}, `y` has {classes}")
        elif np.setdiff1d(got, had).size:
            raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                             f"{self.classes_}. 'y' has {classes}.")

    # --- predicting -------------------------------------------------------------
    def _placed_score(self, X: Array, Y: Array, w: Array | None) -> float:
        xp = self.placement_.xp
        out = self.model_.forward(X)[0]
        if self._kind == "multilabel":
            hits = xp.all((out > 0.0) == (Y > 0.5), axis=1)
        else:
            hits = self._class_index(out) == self._class_index(Y)
        hits = xp.astype(hits, out.dtype)
        score = xp.mean(hits) if w is None else xp.sum(hits * w) / xp.sum(w)
        return float(_backend.to_host(score))

    def predict(self, X):
        """The predicted labels (a 0/1 matrix for multi-label).

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            The features.
        """
        out, keep = self._logits(X, "predict")
        place = self.placement_
        xp = place.xp
        if self._kind == "multilabel":
            return self._output(xp.astype(out > 0.0, place.int_dtype), keep)
        index = self._class_index(out)
        if not keep:
            return _backend.to_host(self.classes_)[_backend.to_host(index)]
        classes = self.classes_
        if not same_home(index, classes):  # host classes, labels on the backend (dask)
            classes = xp.asarray(_backend.to_host(classes), device=place.device_obj)
        return xp.take(classes, index, axis=0)

    def _class_index(self, out: Array) -> Array:
        """Each row's index into ``classes_`` (binary and multi-class outputs, or their
        one-hot targets). One class: always 0, as scikit-learn predicts it."""
        xp = self.placement_.xp
        if self._kind == "multiclass":
            return xp.argmax(out, axis=1)
        index = xp.astype(out[:, 0] > 0.0, self.placement_.int_dtype)
        return index if self.classes_.shape[0] == 2 else xp.zeros_like(index)

    def predict_proba(self, X):
        """Class probabilities: softmax (multi-class) or logistic outputs. With one
        class, as scikit-learn's: two columns, 1 - p and p, p the logistic output (which
        training drives to 0).

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            The features.
        """
        out, keep = self._logits(X, "predict_proba")
        return self._output(self._proba(out), keep)

    def predict_log_proba(self, X):
        """The log of ``predict_proba`` (-inf where a probability rounds to 0, as
        scikit-learn's, without a warning).

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            The features.
        """
        out, keep = self._logits(X, "predict_log_proba")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return self._output(self.placement_.xp.log(self._proba(out)), keep)

    def _proba(self, out: Array) -> Array:
        xp = self.placement_.xp
        if self._kind == "multiclass":
            p = xp.exp(out - xp.max(out, axis=1, keepdims=True))
            return p / xp.sum(p, axis=1, keepdims=True)
        e = xp.exp(-xp.abs(out))
        p = xp.where(out >= 0.0, 1.0 / (1.0 + e), e / (1.0 + e))
        return xp.concat([1.0 - p, p], axis=1) if self._kind == "binary" else p

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


def _unique(y: Array) -> Array:
    """The sorted unique values of a backend array; computed to the host where the
    backend cannot know how many there are (dask)."""
    xp = _backend.namespace(_backend.array_backend(y) or "numpy")
    values = xp.unique_values(y)
    if not known_shape(values.shape):
        return np.sort(_backend.to_host(values))
    return xp.sort(values)


def _is_indicator(y: Any) -> bool:
    if _is_dask(y):
        return y.ndim == 2
    return type_of_target(y) == "multilabel-indicator"
