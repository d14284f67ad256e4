"""The shared half of MLPClassifier and MLPRegressor.

Parameters and their validation, the fit as a transaction (a call that raises
leaves a fitted estimator as it was), where the model lives, the first weights
(drawn as scikit-learn draws them), prediction helpers, the assignable
``coefs_`` and ``intercepts_``, and pickling. The solvers are in ``_stochastic``
(sgd, adam) and ``_lbfgs``.
"""

from __future__ import annotations

import copy
import itertools
import math
import numbers
from typing import Any

import numpy as np
from sklearn import get_config
from sklearn.base import BaseEstimator, RegressorMixin, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.validation import (
    _check_sample_weight,
    check_is_fitted,
    column_or_1d,
    validate_data,
)

from portable_mlp import _backend, backends, validation
from portable_mlp.model import MLP
from portable_mlp.sklearn import _lbfgs, _stochastic
from portable_mlp.sklearn._weights import LayerList, set_layers
from portable_mlp.threads import limited
from portable_mlp.train import Trainer

Array = Any

# scikit-learn's activation names -> portable_mlp's pieces; then the ones scikit-learn
# lacks, by portable_mlp's names
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu",
               **{name: name for name in ("gelu", "silu", "leaky_relu", "elu", "softplus")}}

# the parameters both estimators share, for their docstrings (``shared_parameters``)
PARAMETERS = """\
hidden_layer_sizes : array-like of shape (n_layers - 2,), default (100,)
    The width of each hidden layer.
activation : str, default "relu"
    The hidden layers' activation: scikit-learn's "identity", "logistic", "tanh",
    "relu", or portable_mlp's "gelu", "silu", "leaky_relu", "elu", "softplus".
solver : {"lbfgs", "sgd", "adam"}, default "adam"
    scipy's L-BFGS-B (full batch, ``pm.LBFGS``), SGD or Adam (``pm.Trainer``).
alpha : float, default 0.0001
    The l2 penalty, scikit-learn's: ``alpha * sum(W**2) / (2 n_samples)``.
batch_size : int or "auto", default "auto"
    Rows per step (sgd, adam); "auto": ``min(200, n_samples)``.
learning_rate : {"constant", "invscaling", "adaptive"}, default "constant"
    The schedule of sgd's rate.
learning_rate_init : float, default 0.001
    The first learning rate (sgd, adam).
power_t : float, default 0.5
    The exponent of "invscaling".
max_iter : int, default 200
    The most epochs (sgd, adam) or iterations (lbfgs).
shuffle : bool, default True
    Shuffle the rows every epoch (sgd, adam).
random_state : int, RandomState or None, default None
    The seed of the first weights, the early-stopping split and the shuffling.
tol : float, default 1e-4
    The improvement below which an epoch counts as none.
verbose : bool, default False
    Print the loss of every epoch.
warm_start : bool, default False
    Continue from the fitted weights on the next ``fit``.
momentum : float, default 0.9
    sgd's momentum, in [0, 1].
nesterovs_momentum : bool, default True
    Nesterov's momentum for sgd.
early_stopping : bool, default False
    Hold out ``validation_fraction`` of the rows and stop when their score stops
    improving; the best weights are restored.
validation_fraction : float, default 0.1
    The rows held out by ``early_stopping``.
beta_1 : float, default 0.9
    Adam's first-moment decay.
beta_2 : float, default 0.999
    Adam's second-moment decay.
epsilon : float, default 1e-8
    Adam's epsilon.
n_iter_no_change : int, default 10
    Epochs without an improvement of ``tol`` before stopping.
max_fun : int, default 15000
    The most loss evaluations (lbfgs).
backend : str or None, default None
    Where the model trains: ``"numpy"``, ``"torch"``, ``"jax"``, ``"dask"``, ``"cupy"``,
    ``"array_api_strict"``; None follows the input under scikit-learn's array API
    dispatch, NumPy otherwise. On a fitted estimator, ``set_params(backend=...)`` moves
    the model there (``to``).
device : str or None, default None
    The device on that backend; None: its default (or the input's, when following it).
dtype : {"float32", "float64"} or None, default None
    The model's float dtype; None keeps the input's.
clip_norm : float or None, default None
    Clip the gradients to this global norm; None does not clip.
threads : int or None, default None
    Limit torch's and the BLAS library's threads during ``fit`` and ``partial_fit``,
    and put them back after. None keeps the libraries' settings (one per core), and
    warns once where they outnumber the idle cores: on a busy machine, ``threads=1`` is
    often several times faster (docs/guide/threads.md).
dropout : float, default 0.0
    A ``Dropout`` of this rate after each hidden activation, active in training only
    (0.0: none, scikit-learn's network). Not with ``solver="lbfgs"``."""


def shared_parameters(cls: type) -> type:
    """Put ``PARAMETERS`` at the head of the Parameters section of ``cls``'s docstring
    (which lists only the estimator's own ones)."""
    header = "    Parameters\n    ----------\n"
    if cls.__doc__ is None:  # python -OO strips docstrings
        return cls
    text = "".join(f"    {line}\n" if line else "\n" for line in PARAMETERS.split("\n"))
    cls.__doc__ = cls.__doc__.replace(header, header + text, 1)
    return cls



class _RegisteredBackend(StrOptions):
    """A backend's name, checked against the registry when a fit validates its
    parameters (``pm.register_backend`` may add names after this module is imported)."""

    def __init__(self) -> None:
        super().__init__(set(backends.names()))

    def is_satisfied_by(self, val: Any) -> bool:
        try:
            return isinstance(val, str) and backends.get(val).name == val
        except ValueError:
            return False

    def __str__(self) -> str:
        return f"a str among {set(backends.names())}"

class BaseMLP(BaseEstimator):
    """The parameters, fitting and predicting that both estimators share."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(numbers.Integral, 1, None, closed="left")],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
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
        "momentum": [Interval(numbers.Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_1": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_2": [Interval(numbers.Real, 0, 1, closed="left")],
        "epsilon": [Interval(numbers.Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left"),
                             Options(numbers.Real, {np.inf})],
        "max_fun": [Interval(numbers.Integral, 1, None, closed="left")],
        "backend": [_RegisteredBackend(), None],
        "device": "no_validation",
        "dtype": [StrOptions({"float32", "float64"}), None],
        "clip_norm": [Interval(numbers.Real, 0, None, closed="neither"), None],
        "threads": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "dropout": [Interval(numbers.Real, 0, 1, closed="left")],
    }

    def __init__(self, **params: Any) -> None:
        for name, value in params.items():  # the subclasses spell the signature out
            setattr(self, name, value)

    # --- what subclasses give ---------------------------------------------
    @property
    def _loss(self) -> str:
        """portable_mlp's name of the loss."""
        raise NotImplementedError

    @property
    def _out_activation(self) -> str:
        """scikit-learn's ``out_activation_``."""
        raise NotImplementedError

    def _encode(self, y: Any, first: bool, incremental: bool,
                classes: np.ndarray | None = None) -> Array:
        """The targets as a float array placed on the model (checks them first)."""
        raise NotImplementedError

    def _placed_score(self, X: Array, Y: Array, w: Array | None) -> float:
        raise NotImplementedError

    def _stratify(self) -> bool:
        return False

    # --- fitting: a transaction ---------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to ``X`` and ``y`` (restarting unless ``warm_start``).

        Parameters
        ----------
        X : array-like or sparse matrix of shape (n_samples, n_features)
            The features.
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The targets (for the classifier: labels of any type, a pandas or dask Series
            included, or a 0/1 matrix for multi-label).
        sample_weight : array-like of shape (n_samples,) or None, default None
            Per-sample weights of the loss.
        """
        return self._fit(X, y, sample_weight, incremental=False)

    def _fit(self, X: Any, y: Any, sample_weight: Any, incremental: bool,
             classes: np.ndarray | None = None) -> BaseMLP:
        """Fit, or leave every fitted attribute (weights, optimizer, curves) as it was."""
        before, weights = self._fitted_state()
        try:
            with limited(self.threads):
                self._fit_unguarded(X, y, sample_weight, incremental, classes)
        except BaseException:
            self._restore(before, weights)
            raise
        return self

    def _fitted_state(self) -> tuple[dict[str, Any], list[Array] | None]:
        """What a failed fit restores: a deep copy of everything but the parameters, in
        which the model itself is kept, not copied, with the list of its arrays (training
        makes new arrays, never changes these): arrays read from ``coefs_`` before the
        call stay the model's."""
        names = set(self._get_param_names())
        state = {k: v for k, v in vars(self).items() if k not in names}
        model = state.get("model_")
        if model is None:
            return copy.deepcopy(state), None
        kept = [model, model.params, *model.params]
        return copy.deepcopy(state, memo={id(x): x for x in kept}), model.params

    def _restore(self, state: dict[str, Any], weights: list[Array] | None) -> None:
        names = set(self._get_param_names())
        for key in [k for k in vars(self) if k not in names]:
            delattr(self, key)
        self.__dict__.update(state)
        if weights is not None:
            self.model_.params = weights

    def _fit_unguarded(self, X: Any, y: Any, sample_weight: Any, incremental: bool,
                       classes: np.ndarray | None) -> None:
        if self.early_stopping and incremental and self.solver != "lbfgs":
            raise ValueError("partial_fit does not support early_stopping=True")
        if self.dropout and self.solver == "lbfgs":
            raise ValueError(f"dropout={self.dropout} needs a stochastic solver ('sgd' or "
                             "'adam'): 'lbfgs' minimizes a deterministic loss")
        first = not hasattr(self, "model_") or not (self.warm_start or incremental)
        X, y = self._validate_train(X, y, reset=first)
        sample_weight = self._check_weights(sample_weight, X)
        self._random_state = check_random_state(self.random_state)
        if first:
            self._place_on(X)
        Y = self._encode(y, first, incremental, classes)
        Xd = self._placed(X)
        w = self._weights(y, sample_weight)
        w = None if w is None else self._to_model(w)
        if first:
            self._build(Xd.shape[1], Y.shape[1])
        if self.solver == "lbfgs":
            _lbfgs.fit(self, Xd, Y, w)
        else:
            _stochastic.fit(self, Xd, Y, w, y, first, incremental)

    def _check_weights(self, sample_weight: Any, X: Array) -> Any:
        if sample_weight is None or _is_dask(X):  # dask: checked by the solver, lazily
            return sample_weight
        if not same_home(sample_weight, X):
            sample_weight = _backend.to_host(sample_weight)  # another library's array
        return _check_sample_weight(sample_weight, X, dtype=X.dtype)

    def _weights(self, y: Any, sample_weight: Any) -> Any:
        """The per-sample weights of the loss (the classifier adds ``class_weight``)."""
        return sample_weight

    def _validate_train(self, X: Any, y: Any, reset: bool) -> tuple[Array, Any]:
        if self._keeps_dask(X, first=reset):
            return self._validate_dask(X, reset), self._dask_targets(y, X.shape[0])
        xp, _ = _namespace(X)
        X, y = validate_data(self, X, y, reset=reset, accept_sparse=["csr", "csc"],
                             multi_output=True, dtype=[xp.float64, xp.float32],
                             y_numeric=isinstance(self, RegressorMixin))
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        return _dense(X), y

    def _keeps_dask(self, X: Any, first: bool = False) -> bool:
        """Whether ``X`` is a dask array for a dask model (the one a first fit builds, or
        the fitted one): it then stays lazy, never gathered."""
        name = self.backend if first else self.placement_.backend
        return name is not None and backends.get(name).lazy and _is_dask(X)

    def _validate_dask(self, X: Array, reset: bool) -> Array:
        """What ``validate_data`` checks, on a dask array's metadata (values: later)."""
        if X.ndim != 2 or not known_shape(X.shape):
            raise ValueError(f"Expected a 2D dask array with known chunk sizes, got shape "
                             f"{X.shape}; call X.compute_chunk_sizes() first.")
        if X.dtype.kind not in "biuf":
            raise TypeError(f"X has dtype {X.dtype}; expected real numbers")
        if reset:
            self.n_features_in_ = X.shape[1]
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is "
                             f"expecting {self.n_features_in_} features as input.")
        return X

    @staticmethod
    def _dask_targets(y: Any, n: int) -> Any:
        y = validation.sliceable(y, "y")  # a dask or pandas Series: its array
        if not hasattr(y, "shape"):
            y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim not in (1, 2) or y.shape[0] != n:
            raise ValueError(f"y must have {n} rows (as X) and 1 or 2 dimensions, got shape "
                             f"{y.shape}")
        return y

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

    def _placed(self, data: Any) -> Array:
        """Numeric data on the model's backend, device and dtype."""
        data = self._to_model(data)
        if isinstance(data, np.ndarray) or not hasattr(data, "shape"):
            return self.placement_.from_host(np.asarray(data))
        if data.dtype != self.model_dtype_:
            return self.placement_.xp.astype(data, self.model_dtype_)
        return data

    def _build(self, n_features: int, n_outputs: int) -> None:
        """The model, with the first weights scikit-learn would draw."""
        hidden = self.hidden_layer_sizes
        hidden = [hidden] if isinstance(hidden, numbers.Integral) else list(hidden)
        if any(isinstance(h, bool) or not isinstance(h, numbers.Integral) or h < 1
               for h in hidden):
            raise ValueError(f"hidden_layer_sizes must hold positive integers, got {hidden}.")
        units = [n_features, *map(int, hidden), n_outputs]
        p = self.placement_
        weights = _glorot(self._random_state, units, self.activation)
        # the masks' seed drawn after the weights: without dropout, no draw changes
        seed = int(self._random_state.randint(2**31)) if self.dropout else 0
        self.model_ = MLP(units, activation=ACTIVATIONS[self.activation], output="identity",
                          bias=True, seed=seed, backend=p.backend, device=p.device,
                          dtype=p.dtype, dropout=self.dropout)
        self.model_.load_params(weights)
        self.n_layers_ = len(units)
        self.n_outputs_ = n_outputs
        self.out_activation_ = self._out_activation
        self.t_ = 0

    def _new_trainer(self, optimizer: Any) -> Trainer:
        return Trainer(self.model_, loss=self._loss, optimizer=optimizer, l2=self.alpha,
                       clip_norm=self.clip_norm)

    # --- predicting ----------------------------------------------------------
    def _logits(self, X: Any, method: str) -> tuple[Array, bool]:
        """The output layer's values for ``X``, and whether outputs stay on the backend."""
        check_is_fitted(self)
        if self._keeps_dask(X):
            return self.model_.forward(self._placed(self._validate_dask(X, False)))[0], True
        self._check_same_namespace(X, method)
        xp = _namespace(X)[0]
        X = _dense(validate_data(self, X, reset=False, accept_sparse=["csr", "csc"],
                                 dtype=[xp.float64, xp.float32]))
        keep = self.placement_.owns(X) and not isinstance(X, np.ndarray)
        keep = keep or self.placement_.on_host
        return self.model_.forward(self._placed(X))[0], keep

    def _check_same_namespace(self, X: Any, method: str) -> None:
        """Under array API dispatch, an estimator that followed its input refuses another."""
        if self.backend is not None or not get_config()["array_api_dispatch"]:
            return
        name = _backend.array_backend(X) or "numpy"
        same = name == self.placement_.backend and (self.placement_.on_host
                                                    or self.placement_.owns(X))
        if not same:
            raise ValueError(
                f"Inputs passed to {type(self).__name__}.{method}() must use the same namespace "
                f"and the same device as those passed to fit(): fitted on "
                f"{self.placement_.backend} ({self.placement_.device}), got {name}. Set "
                "backend= to train on one backend and accept any input.")

    def _output(self, a: Array, keep: bool) -> Array:
        return a if keep else _backend.to_host(a)

    # --- the weights, as scikit-learn's lists ------------------------------------
    @property
    def coefs_(self) -> list[Array]:
        """Weight matrices, layer by layer (the model's arrays). Assignable: the whole
        list, or one layer (``est.coefs_[0] = W``)."""
        check_is_fitted(self)
        return LayerList(self, 0)

    @coefs_.setter
    def coefs_(self, arrays: list[Any]) -> None:
        set_layers(self, 0, arrays)

    @property
    def intercepts_(self) -> list[Array]:
        """Bias vectors, layer by layer (the model's arrays). Assignable as ``coefs_``."""
        check_is_fitted(self)
        return LayerList(self, 1)

    @intercepts_.setter
    def intercepts_(self, arrays: list[Any]) -> None:
        set_layers(self, 1, arrays)

    # --- moving a fitted estimator ---------------------------------------------
    def set_params(self, **params: Any) -> BaseMLP:
        """Set parameters, as scikit-learn's ``set_params``; on a fitted estimator, a new
        ``backend``, ``device`` or ``dtype`` also moves the fitted model there (``to``).

        Parameters
        ----------
        **params : dict
            Estimator parameters by name.

        Returns
        -------
        self
        """
        super().set_params(**params)
        if hasattr(self, "model_") and {"backend", "device", "dtype"} & set(params):
            self._move(self.backend, self.device, self.dtype)
        return self

    def to(self, backend: Any, device: Any = None, dtype: Any = None) -> BaseMLP:
        """Move the fitted estimator (model, optimizer state, classes) to another backend,
        device or dtype, and set those parameters, so that a refit trains there too.

        A torch- or GPU-trained estimator moved with ``to("numpy")`` serves and pickles
        where torch (or the GPU) is missing.

        Parameters
        ----------
        backend : str
            The backend's name: ``"numpy"``, ``"torch"``, ``"jax"``, ``"dask"``,
            ``"cupy"`` or ``"array_api_strict"``.
        device : str or None, default None
            The device on that backend; None: the backend's default.
        dtype : {"float32", "float64"} or None, default None
            The float dtype; None keeps the model's (never downcast).

        Returns
        -------
        self
        """
        check_is_fitted(self)
        BaseEstimator.set_params(self, backend=backend, device=device, dtype=dtype)
        self._move(backend, device, dtype)
        return self

    def _move(self, backend: Any, device: Any, dtype: Any) -> None:
        """The fitted state through its host copy (as pickling takes it) onto the new
        placement."""
        state = self.__getstate__()
        model = state["model_"].to(backend or state["placement_"].backend, device, dtype)
        state["model_"], state["placement_"] = model, model.placement
        self.__setstate__(state)

    # --- python protocol -----------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        # a copy: on Python 3.11+ scikit-learn hands back the live __dict__, which the
        # lines below would strip of the trainer and move to the host
        state = dict(super().__getstate__())
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


# --- helpers -----------------------------------------------------------------

def _glorot(random_state: np.random.RandomState, units: list[int],
            activation: str) -> list[np.ndarray]:
    """scikit-learn's first weights, drawn in its order from the same ``random_state``:
    per layer, W then b, uniform in +-sqrt(factor / (fan_in + fan_out)) (factor 2 for
    the logistic activation, else 6). The same ``random_state`` gives the same network
    as scikit-learn's MLPs."""
    factor = 2.0 if activation == "logistic" else 6.0
    params = []
    for fan_in, fan_out in itertools.pairwise(units):
        bound = math.sqrt(factor / (fan_in + fan_out))
        params.append(random_state.uniform(-bound, bound, (fan_in, fan_out)))
        params.append(random_state.uniform(-bound, bound, fan_out))
    return params


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


def _is_dask(x: Any) -> bool:
    """Whether ``x`` is an array of a lazy library (dask): its values are checked later."""
    impl = backends.of_array(x)
    return impl is not None and impl.lazy


def known_shape(shape: tuple[Any, ...]) -> bool:
    """Whether every dimension is known (lazy arrays may have None or NaN ones)."""
    return all(d is not None and not (isinstance(d, float) and math.isnan(d)) for d in shape)


def same_home(a: Any, b: Any) -> bool:
    """Whether two arrays live in the same library (and so can meet in one expression)."""
    return (_backend.array_backend(a) or "numpy") == (_backend.array_backend(b) or "numpy")
