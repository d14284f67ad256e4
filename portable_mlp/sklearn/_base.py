"""scikit-learn estimators on portable_mlp: ``MLPClassifier`` and ``MLPRegressor``.

They take scikit-learn's MLP parameters (and ``backend``, ``device``, ``dtype``,
``clip_norm``) and fit with portable_mlp's ``Trainer``: the same forward, backward
and optimizer code as everything else, on any backend. Needs scikit-learn
(``pip install 'portable_mlp[sklearn]'``); ``import portable_mlp`` never does.

Where the data lives:

- ``backend=None`` (the default) follows the input, as scikit-learn's array API
  support does: with ``sklearn.set_config(array_api_dispatch=True)`` an estimator
  fitted on torch tensors trains on torch, on their device; otherwise on NumPy.
- ``backend="torch"`` (or any name) always trains there: host data is moved once;
  under array API dispatch, arrays already on that backend are used as they are.
- Outputs follow the input: arrays of the model's backend in, arrays of it out;
  host data in, NumPy out.
- ``dtype=None`` keeps the input's float32 or float64 (other input: float64), as
  scikit-learn's MLPs do; where the backend's device has no float64 (JAX without its
  x64 mode), float32. A ``dtype`` that is asked for is honoured or refused.
"""

from __future__ import annotations

import copy
import numbers
import warnings
from typing import Any

import array_api_compat
import numpy as np
from sklearn import get_config
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from portable_mlp import _backend
from portable_mlp.callbacks import Callback
from portable_mlp.model import MLP
from portable_mlp.optim import SGD, Adam
from portable_mlp.train import DivergenceError, Trainer

Array = Any

__all__ = ["MLPClassifier", "MLPRegressor"]

# scikit-learn's activation names -> portable_mlp's pieces
_ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}


class _SklearnEpochs(Callback):
    """scikit-learn's per-epoch bookkeeping, as a Trainer callback.

    Records ``loss_curve_``, the validation score and loss (early stopping),
    counts epochs without improvement by ``tol``, adapts the learning rate
    ('invscaling', 'adaptive') and stops training as scikit-learn's MLPs do.
    """

    def __init__(self, est: _BaseMLP, n_samples: int, val: tuple | None) -> None:
        self.est, self.n_samples, self.val = est, n_samples, val
        self.converged = False

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        est: Any = self.est  # its fitted attributes come and go with fit
        est.n_iter_ += 1
        est.t_ += self.n_samples
        est.loss_ = logs["loss"]
        est.loss_curve_.append(logs["loss"])
        if self.val is not None:
            Xv, Yv, wv = self.val
            est.validation_loss_curve_.append(trainer.evaluate(Xv, Yv, wv)["loss"])
            score = est._placed_score(Xv, Yv, wv)
            est.validation_scores_.append(score)
            if score < est.best_validation_score_ + est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            if score > est.best_validation_score_:
                est.best_validation_score_ = score
                xp = trainer.model.xp
                est._best_params = [xp.asarray(p, copy=True) for p in trainer.model.params]
        else:
            if est.loss_curve_[-1] > est.best_loss_ - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            est.best_loss_ = min(est.best_loss_, est.loss_curve_[-1])
        optimizer = trainer.optimizer
        if est.solver == "sgd" and est.learning_rate == "invscaling":
            optimizer.lr = est.learning_rate_init / (est.t_ + 1) ** est.power_t
        if est._no_improvement_count > est.n_iter_no_change:
            adaptive = est.solver == "sgd" and est.learning_rate == "adaptive"
            if adaptive and optimizer.lr > 1e-6:
                optimizer.lr /= 5.0
                est._no_improvement_count = 0
            else:
                self.converged = True
                trainer.stop_training = True
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {est.loss_:.8f}")

    def on_train_end(self, trainer: Trainer) -> None:
        if self.val is not None and self.est._best_params is not None:
            trainer.model.load_params(self.est._best_params)
        self.est._best_params = None


class _BaseMLP(BaseEstimator):
    """The shared half of MLPClassifier and MLPRegressor."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(numbers.Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(_ACTIVATIONS))],
        "solver": [StrOptions({"sgd", "adam"})],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "power_t": [Interval(numbers.Real, 0, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(numbers.Real, 0, 1, closed="left")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_1": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_2": [Interval(numbers.Real, 0, 1, closed="left")],
        "epsilon": [Interval(numbers.Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left"),
                             Options(numbers.Real, {np.inf})],
        "backend": [StrOptions(set(_backend.BACKENDS)), None],
        "device": "no_validation",
        "dtype": [StrOptions({"float32", "float64"}), None],
        "clip_norm": [Interval(numbers.Real, 0, None, closed="neither"), None],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 backend=None, device=None, dtype=None, clip_norm=None) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.clip_norm = clip_norm

    # --- what subclasses give --------------------------------------------
    @property
    def _loss(self) -> str:
        raise NotImplementedError

    @property
    def _out_activation(self) -> str:
        raise NotImplementedError

    def _encode(self, y: Any, first: bool) -> Any:
        raise NotImplementedError

    def _placed_score(self, X: Array, Y: Array, w: Array | None) -> float:
        raise NotImplementedError

    # --- fitting -------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to ``X`` and ``y`` (restarting unless ``warm_start``)."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X, y, sample_weight, incremental: bool):
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        fitted = hasattr(self, "model_")
        first = not fitted or not (self.warm_start or incremental)
        X, y = self._validate_train(X, y, reset=first)
        if first:
            self._random_state = check_random_state(self.random_state)
            self._place_on(X)
        Y = self._encode(y, first)
        model_X = self._to_model(X)
        Xd = self.placement_.from_host(model_X) if isinstance(model_X, np.ndarray) else model_X
        if Xd.dtype != self.model_dtype_:
            Xd = self.placement_.xp.astype(Xd, self.model_dtype_)
        sample_weight = self._weights(y, sample_weight, X)
        w = None if sample_weight is None else self._to_model(sample_weight)
        if first:
            self._build(Xd.shape[1], Y.shape[1])
        if first or not incremental:
            self._trainer = Trainer(self.model_, loss=self._loss, optimizer=self._optimizer(),
                                    l2=self.alpha, clip_norm=self.clip_norm)
        if first:
            self.loss_curve_: list[float] = []
            self.t_ = 0
            self._no_improvement_count = 0
            self.best_loss_: float | None = np.inf
            self.validation_scores_: list[float] | None = [] if self.early_stopping else None
            self.validation_loss_curve_: list[float] | None = (
                [] if self.early_stopping else None)
            self.best_validation_score_: float | None = (
                -np.inf if self.early_stopping else None)
        if self.early_stopping:
            self.best_loss_ = None
        self.n_iter_ = 0
        self._best_params: list[Array] | None = None
        self._train(Xd, Y, w, y, incremental)
        return self

    def _weights(self, y: Any, sample_weight: Any, X: Array) -> Any:
        if sample_weight is None:
            return None
        if not isinstance(sample_weight, np.ndarray) and not self.placement_.owns(sample_weight):
            sample_weight = _backend.to_host(sample_weight)  # another library's array
        return _check_sample_weight(sample_weight, X, dtype=X.dtype)

    def _validate_train(self, X, y, reset: bool):
        xp, _ = _namespace(X)
        X, y = validate_data(self, X, y, reset=reset, accept_sparse=["csr", "csc"],
                             multi_output=True, dtype=[xp.float64, xp.float32],
                             y_numeric=isinstance(self, RegressorMixin))
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return _dense(X), y

    def _place_on(self, X: Array) -> None:
        """Choose the backend, device and dtype (on a first fit)."""
        follow = self.backend is None and get_config()["array_api_dispatch"]
        name = _backend.array_backend(X) if follow else None
        if self.backend is not None:
            backend, device = self.backend, self.device
        elif name is not None:
            backend, device = name, _backend.device_of(X)
        else:
            backend, device = "numpy", self.device
        dtype = self.dtype or _fallback(backend, device, _float_name(X.dtype))
        placement = _backend.Placement.create(backend, device, dtype)
        self.placement_ = placement
        self.model_dtype_ = placement.dtype_obj

    def _to_model(self, data: Array) -> Array:
        """Arrays of the model's backend as they are, host data as it is (placed later);
        another library's array is moved onto the model's backend and device."""
        place = self.placement_
        if place.owns(data) or isinstance(data, np.ndarray) or not hasattr(data, "shape"):
            return data
        host = _backend.to_host(data)
        if host.dtype.kind not in "biuf":
            return host
        return place.xp.asarray(host, device=place.device_obj)

    def _build(self, n_features: int, n_outputs: int) -> None:
        hidden = self.hidden_layer_sizes
        hidden = [hidden] if isinstance(hidden, numbers.Integral) else list(hidden)
        if any(isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1
               for h in hidden):
            raise ValueError(f"hidden_layer_sizes must hold positive integers, got {hidden}.")
        p = self.placement_
        self.model_ = MLP([n_features, *map(int, hidden), n_outputs],
                          activation=_ACTIVATIONS[self.activation], output="identity",
                          bias=True, seed=int(self._random_state.randint(2**31 - 1)),
                          backend=p.backend, device=p.device, dtype=p.dtype, init="glorot")
        self.n_layers_ = len(hidden) + 2
        self.n_outputs_ = n_outputs
        self.out_activation_ = self._out_activation

    def _optimizer(self) -> Any:
        if self.solver == "adam":
            return Adam(lr=self.learning_rate_init, beta1=self.beta_1, beta2=self.beta_2,
                        eps=self.epsilon)
        return SGD(lr=self.learning_rate_init, momentum=self.momentum,
                   nesterov=bool(self.nesterovs_momentum and self.momentum > 0))

    def _train(self, X: Array, Y: Array, w: Array | None, y: Any, incremental: bool) -> None:
        xp, n = self.placement_.xp, X.shape[0]
        val = None
        if self.early_stopping:
            stratify = _backend.to_host(y) if self._stratify() else None
            train, held = train_test_split(np.arange(n), random_state=self._random_state,
                                           test_size=self.validation_fraction,
                                           stratify=stratify)
            if held.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase "
                                 "'validation_fraction' or the size of your dataset.")
            take = self.placement_.indices
            split = [(xp.take(a, take(train), axis=0), xp.take(a, take(held), axis=0))
                     if a is not None else (None, None) for a in (X, Y, w)]
            (X, Xv), (Y, Yv), (w, wv) = split
            for part, weights in (("training", w), ("validation", wv)):
                if weights is not None and not bool(xp.any(weights > 0)):
                    raise ValueError(f"The {part} part of the early_stopping split has only "
                                     "zero sample weights: its loss is undefined. Change "
                                     "'validation_fraction' or 'random_state', or give more "
                                     "samples a weight.")
            val = (Xv, Yv, wv)
            n = X.shape[0]
        if self.batch_size == "auto":
            batch_size = min(200, n)
        else:
            if self.batch_size > n:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. "
                              "It is going to be clipped", stacklevel=3)
            batch_size = int(np.clip(self.batch_size, 1, n))
        epochs = 1 if incremental else self.max_iter
        tracker = _SklearnEpochs(self, n, val)
        try:
            self._trainer.fit(X, Y, epochs=epochs, batch_size=batch_size, shuffle=self.shuffle,
                              seed=int(self._random_state.randint(2**31 - 1)),
                              callbacks=[tracker], progress=False, sample_weight=w,
                              epoch_loss="steps")
        except DivergenceError as exc:
            raise ValueError("Solver produced non-finite parameter weights: the loss or a "
                             f"gradient is not finite. The input data may contain large "
                             f"values and need to be preprocessed. ({exc})") from exc
        if not incremental and not tracker.converged and self.n_iter_ == self.max_iter:
            warnings.warn(f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                          "and the optimization hasn't converged yet.", ConvergenceWarning,
                          stacklevel=3)

    def _stratify(self) -> bool:
        return False

    # --- predicting ----------------------------------------------------------
    def _logits(self, X: Any, method: str) -> tuple[Array, bool]:
        """The output layer's values for ``X``, and whether outputs stay on the backend."""
        check_is_fitted(self)
        self._check_same_namespace(X, method)
        X = _dense(validate_data(self, X, reset=False, accept_sparse=["csr", "csc"],
                                 dtype=[_namespace(X)[0].float64, _namespace(X)[0].float32]))
        keep = self.placement_.owns(X) and not isinstance(X, np.ndarray)
        keep = keep or self.placement_.backend == "numpy"
        data = self._to_model(X)
        if isinstance(data, np.ndarray):
            data = self.placement_.from_host(data)
        elif data.dtype != self.model_dtype_:
            data = self.placement_.xp.astype(data, self.model_dtype_)
        return self.model_.forward(data)[0], keep

    def _check_same_namespace(self, X: Any, method: str) -> None:
        """Under array API dispatch, an estimator that followed its input refuses another."""
        if self.backend is not None or not get_config()["array_api_dispatch"]:
            return
        name = _backend.array_backend(X) or "numpy"
        same = name == self.placement_.backend and (name == "numpy" or self.placement_.owns(X))
        if not same:
            raise ValueError(
                f"Inputs passed to {type(self).__name__}.{method}() must use the same namespace "
                f"and the same device as those passed to fit(): fitted on "
                f"{self.placement_.backend} ({self.placement_.device}), got {name}. Set "
                "backend= to train on one backend and accept any input.")

    def _output(self, a: Array, keep: bool) -> Array:
        return a if keep else _backend.to_host(a)

    @property
    def coefs_(self) -> list[Array]:
        """Weight matrices, layer by layer (arrays of the model's backend)."""
        check_is_fitted(self)
        return self.model_.params[0::2]

    @property
    def intercepts_(self) -> list[Array]:
        """Bias vectors, layer by layer (arrays of the model's backend)."""
        check_is_fitted(self)
        return self.model_.params[1::2]

    # --- python protocol -----------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        trainer = state.pop("_trainer", None)
        if trainer is not None:
            opt = copy.copy(trainer.optimizer)
            if opt.state is not None:
                opt.state = {"step": opt.state["step"],
                             "slots": [[_backend.to_host(s) for s in slots]
                                       for slots in opt.state["slots"]]}
            state["_trainer_config"] = (trainer.loss, opt, trainer.l2, trainer.clip_norm,
                                        trainer.steps)
        for key in ("_best_params", "classes_"):
            if key in state and state[key] is not None and not isinstance(state[key], np.ndarray):
                value = state[key]
                state[key] = ([_backend.to_host(v) for v in value] if isinstance(value, list)
                              else ("on_model", _backend.to_host(value)))
        state.pop("model_dtype_", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        config = state.pop("_trainer_config", None)
        classes = state.get("classes_")
        super().__setstate__(state)
        if "placement_" not in state:
            return
        place = self.placement_
        self.model_dtype_ = place.dtype_obj
        if isinstance(classes, tuple):
            self.classes_ = place.xp.asarray(classes[1], device=place.device_obj)
        best = getattr(self, "_best_params", None)
        if best is not None:
            self._best_params = [place.from_host(p) for p in best]
        if config is not None:
            loss, opt, l2, clip_norm, steps = config
            if opt.state is not None:
                opt.state = {"step": opt.state["step"],
                             "slots": [[place.from_host(s) for s in slots]
                                       for slots in opt.state["slots"]]}
            self._trainer = Trainer(self.model_, loss=loss, optimizer=opt, l2=l2,
                                    clip_norm=clip_norm)
            self._trainer.steps = steps

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        # with backend=None the estimator follows its input's namespace, as scikit-learn's
        # array API support means; a fixed backend takes any input and moves it there
        tags.array_api_support = self.backend is None
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier trained by portable_mlp on any backend.

    Parameters are scikit-learn's ``MLPClassifier``'s (solvers 'sgd' and 'adam'),
    plus ``backend``, ``device``, ``dtype`` and ``clip_norm``. Multi-class targets use
    a softmax output and cross-entropy; binary targets one logistic output; multi-label
    indicator matrices one logistic output per label. ``class_weight`` ('balanced' or a
    dict) multiplies every sample's weight by its class's weight.

    Fitted attributes: ``classes_``, ``loss_``, ``loss_curve_``, ``best_loss_``,
    ``validation_scores_`` and ``validation_loss_curve_`` (early stopping),
    ``best_validation_score_``, ``n_iter_``, ``t_``, ``coefs_``, ``intercepts_``,
    ``n_layers_``, ``n_outputs_``, ``out_activation_``, ``model_`` (the portable_mlp
    model) and ``placement_`` (its backend, device and dtype).
    """

    _parameter_constraints: dict = {
        **_BaseMLP._parameter_constraints,
        "class_weight": [StrOptions({"balanced"}), dict, None],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10,
                 class_weight=None, backend=None, device=None, dtype=None,
                 clip_norm=None) -> None:
        super().__init__(
            hidden_layer_sizes, activation, solver=solver, alpha=alpha, batch_size=batch_size,
            learning_rate=learning_rate, learning_rate_init=learning_rate_init,
            power_t=power_t, max_iter=max_iter, shuffle=shuffle, random_state=random_state,
            tol=tol, verbose=verbose, warm_start=warm_start, momentum=momentum,
            nesterovs_momentum=nesterovs_momentum, early_stopping=early_stopping,
            validation_fraction=validation_fraction, beta_1=beta_1, beta_2=beta_2,
            epsilon=epsilon, n_iter_no_change=n_iter_no_change, backend=backend,
            device=device, dtype=dtype, clip_norm=clip_norm)
        self.class_weight = class_weight

    @property
    def _loss(self) -> str:
        return "cross_entropy" if self._kind == "multiclass" else "binary_cross_entropy"

    @property
    def _out_activation(self) -> str:
        return "softmax" if self._kind == "multiclass" else "logistic"

    def _stratify(self) -> bool:
        return self._kind != "multilabel"

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit to ``X`` and labels ``y`` (any label type; a 0/1 matrix for multi-label)."""
        return self._fit(X, y, sample_weight, incremental=False)

    def _weights(self, y: Any, sample_weight: Any, X: Array) -> Any:
        """``sample_weight`` times each sample's class weight (``class_weight``)."""
        sample_weight = super()._weights(y, sample_weight, X)
        if self.class_weight is None:
            return sample_weight
        from sklearn.utils.class_weight import compute_sample_weight

        weights = compute_sample_weight(self.class_weight, _backend.to_host(y))
        if sample_weight is not None:
            weights = weights * _backend.to_host(sample_weight)
        return weights.astype(_backend.dtype_name(self.model_dtype_))

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
            if classes is None and type_of_target(y) != "multilabel-indicator":
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self._partial_classes = None if classes is None else np.unique(np.asarray(classes))
        elif classes is not None and not np.array_equal(
                np.unique(np.asarray(classes)), _backend.to_host(self.classes_)):
            raise ValueError(f"`classes={classes!r}` is not the same as on the first call to "
                             f"partial_fit, which was {self.classes_!r}")
        return self._fit(X, y, sample_weight, incremental=True)

    def _encode(self, y: Any, first: bool) -> Array:
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass", "multilabel-indicator"):
            raise ValueError(f"{type(self).__name__} does not support {kind} targets; "
                             "expected binary, multiclass or multilabel-indicator y")
        y = self._to_model(y)
        if first:
            self._kind = "multilabel" if kind == "multilabel-indicator" else (
                "binary" if kind == "binary" else "multiclass")
            self._set_classes(y)
        elif (kind == "multilabel-indicator") != (self._kind == "multilabel"):
            raise ValueError(f"y is {kind}, but the model was fitted on {self._kind} targets")
        place = self.placement_
        if self._kind == "multilabel":
            Y = self._to_model(y)
            return place.from_host(Y) if isinstance(Y, np.ndarray) else place.xp.astype(
                Y, self.model_dtype_)
        classes = self.classes_
        labels = y if _same_home(y, classes) else _backend.to_host(y)
        ns = array_api_compat.array_namespace(labels) if not isinstance(labels, np.ndarray) \
            else np
        classes = classes if _same_home(labels, classes) else _backend.to_host(classes)
        Y = labels[:, None] == classes[None, :]
        if not bool(ns.all(ns.any(Y, axis=1))):
            unseen = np.setdiff1d(_backend.to_host(labels), _backend.to_host(classes))
            raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                             f"{self.classes_}. 'y' has {unseen}.")
        if self._kind == "binary":
            Y = Y[:, 1:]
        if isinstance(Y, np.ndarray):
            return place.from_host(Y)
        return place.xp.astype(Y, self.model_dtype_)

    def _set_classes(self, y: Any) -> None:
        given = getattr(self, "_partial_classes", None)
        if self._kind == "multilabel":
            self.classes_ = np.arange(y.shape[1])
        elif given is not None:
            self.classes_ = given
            self._kind = "binary" if given.shape[0] == 2 else "multiclass"
        elif self.placement_.owns(y) and not isinstance(y, np.ndarray):
            xp = self.placement_.xp
            self.classes_ = xp.sort(xp.unique_values(y))
        else:
            self.classes_ = np.unique(_backend.to_host(y))
        if self.classes_.shape[0] < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in "
                             f"the data, but the data contains only one class: "
                             f"{_backend.to_host(self.classes_)[0]!r}")

    def _placed_score(self, X: Array, Y: Array, w: Array | None) -> float:
        xp = self.placement_.xp
        out = self.model_.forward(X)[0]
        if self._kind == "multiclass":
            hits = xp.argmax(out, axis=1) == xp.argmax(Y, axis=1)
        else:
            hits = xp.all((out > 0.0) == (Y > 0.5), axis=1)
        hits = xp.astype(hits, out.dtype)
        score = xp.mean(hits) if w is None else xp.sum(hits * w) / xp.sum(w)
        return float(_backend.to_host(score))

    def predict(self, X):
        """The predicted labels (a 0/1 matrix for multi-label)."""
        out, keep = self._logits(X, "predict")
        xp = self.placement_.xp
        if self._kind == "multilabel":
            return self._output(xp.astype(out > 0.0, self.placement_.int_dtype), keep)
        if self._kind == "binary":
            index = xp.astype(out[:, 0] > 0.0, self.placement_.int_dtype)
        else:
            index = xp.argmax(out, axis=1)
        if _same_home(index, self.classes_):
            return self._output(xp.take(self.classes_, index, axis=0), keep)
        return self.classes_[_backend.to_host(index)]

    def predict_proba(self, X):
        """Class probabilities: softmax (multi-class) or logistic outputs."""
        out, keep = self._logits(X, "predict_proba")
        return self._output(self._proba(out), keep)

    def predict_log_proba(self, X):
        """The log of ``predict_proba``."""
        out, keep = self._logits(X, "predict_log_proba")
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


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor trained by portable_mlp on any backend.

    Squared error (halved, as scikit-learn's), identity output, one output per target
    column. Parameters and fitted attributes as ``MLPClassifier``'s (no ``classes_``).
    """

    @property
    def _loss(self) -> str:
        return "mse"

    @property
    def _out_activation(self) -> str:
        return "identity"

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over ``X``, ``y``, continuing from the optimizer's state."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _encode(self, y: Any, first: bool) -> Array:
        Y = self._to_model(y)
        place = self.placement_
        Y = place.from_host(Y) if isinstance(Y, np.ndarray) else place.xp.astype(
            Y, self.model_dtype_)
        if Y.ndim == 1:
            Y = place.xp.reshape(Y, (-1, 1))
        if not first and Y.shape[1] != self.n_outputs_:
            raise ValueError(f"y has {Y.shape[1]} outputs, but the model was fitted on "
                             f"{self.n_outputs_}")
        return Y

    def _placed_score(self, X: Array, Y: Array, w: Array | None) -> float:
        """R^2, averaged uniformly over outputs (weighted by ``w``)."""
        xp = self.placement_.xp
        out = self.model_.forward(X)[0]
        wc = xp.ones_like(Y[:, :1]) if w is None else xp.reshape(w, (-1, 1))
        total = xp.sum(wc)
        mean = xp.sum(Y * wc, axis=0) / total
        resid = xp.sum(wc * (Y - out) ** 2, axis=0)
        spread = xp.sum(wc * (Y - mean) ** 2, axis=0)
        safe = xp.where(spread > 0.0, spread, 1.0)
        r2 = xp.where(spread > 0.0, 1.0 - resid / safe, xp.where(resid > 0.0, 0.0, 1.0))
        return float(_backend.to_host(xp.mean(r2)))

    def predict(self, X):
        """Predicted targets: ``(n,)`` for one target, ``(n, n_outputs)`` for several."""
        out, keep = self._logits(X, "predict")
        if out.shape[1] == 1:
            out = self.placement_.xp.reshape(out, (-1,))
        return self._output(out, keep)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags


# --- helpers -----------------------------------------------------------------

def _namespace(X: Any) -> tuple[Any, bool]:
    from sklearn.utils._array_api import get_namespace

    return get_namespace(X)


def _dense(X: Any) -> Any:
    return X.toarray() if hasattr(X, "toarray") else X


def _float_name(dtype: Any) -> str:
    name = _backend.dtype_name(dtype)
    return name if name in _backend.FLOAT_DTYPES else "float64"


def _fallback(backend: str, device: Any, dtype: str) -> str:
    """``dtype``, or float32 where the backend's device cannot hold float64."""
    dev = _backend.resolve_device(_backend.backend_name(backend), device)
    info = _backend.namespace(_backend.backend_name(backend)).__array_namespace_info__()
    return dtype if dtype in info.dtypes(device=dev, kind="real floating") else "float32"


def _same_home(a: Any, b: Any) -> bool:
    """Whether two arrays live in the same library (and so can meet in one expression)."""
    return (_backend.array_backend(a) or "numpy") == (_backend.array_backend(b) or "numpy")
