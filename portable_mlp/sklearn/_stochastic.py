"""The minibatch solvers ('sgd', 'adam'): portable_mlp's Trainer with scikit-learn's
per-epoch bookkeeping (curves, tolerance, learning-rate schedules, early stopping).

Divergence: without early stopping, a fit whose loss or weights stop being finite
raises scikit-learn's ValueError (and the estimator is left as it was before the
call). With early stopping it stops, as scikit-learn does since 1.6: the weights of
the best validation score are restored, NaN is recorded for the diverged epoch, and
a ConvergenceWarning says so. That way one diverging candidate of a grid search
scores (badly) instead of crashing the search.

Ctrl-C during a fit stops at a step boundary, warns and keeps the epochs trained so
far (the best ones, with early stopping), as scikit-learn does.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from portable_mlp import _backend, validation
from portable_mlp.callback_base import Callback
from portable_mlp.optim import SGD, Adam
from portable_mlp.train import DivergenceError, Trainer, TrainingInterrupted

Array = Any

NON_FINITE = "Solver produced non-finite parameter weights."
_PREPROCESS = " The input data may contain large values and need to be preprocessed."


def fit(est: Any, X: Array, Y: Array, w: Array | None, y: Any, first: bool,
        incremental: bool) -> None:
    """Train ``est.model_`` with sgd or adam for ``max_iter`` epochs (one if incremental)."""
    if first or not incremental or not hasattr(est, "_trainer"):
        est._trainer = est._new_trainer(_optimizer(est))
    if first or not hasattr(est, "_no_improvement_count"):  # e.g. after an lbfgs fit
        est.loss_curve_ = []
        est._no_improvement_count = 0
        est.best_loss_ = np.inf
        est.validation_scores_ = [] if est.early_stopping else None
        est.validation_loss_curve_ = [] if est.early_stopping else None
        est.best_validation_score_ = -np.inf if est.early_stopping else None
    if est.early_stopping:
        est.best_loss_ = None
    est.n_iter_ = 0
    est._best_params = None
    X, Y, w, val = _split(est, X, Y, w, y)
    n = X.shape[0]
    tracker = _Epochs(est, n, val)
    try:
        est._trainer.fit(X, Y, epochs=1 if incremental else est.max_iter,
                         batch_size=_batch_size(est, n), shuffle=est.shuffle,
                         seed=int(est._random_state.randint(2**31 - 1)), callbacks=[tracker],
                         progress=False, sample_weight=w, epoch_loss="steps")
    except DivergenceError as exc:
        if val is None:
            raise ValueError(f"{NON_FINITE}{_PREPROCESS} ({exc})") from exc
        tracker.stop_diverged()
    except TrainingInterrupted:  # Ctrl-C: as scikit-learn, keep what was trained
        warnings.warn("Training interrupted by user.", stacklevel=4)
        tracker.on_train_end(est._trainer)
    if (not incremental and not tracker.converged and not tracker.diverged
            and est.n_iter_ == est.max_iter):
        warnings.warn(f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) reached and "
                      "the optimization hasn't converged yet.", ConvergenceWarning,
                      stacklevel=4)


def _optimizer(est: Any) -> Any:
    if est.solver == "adam":
        return Adam(lr=est.learning_rate_init, beta1=est.beta_1, beta2=est.beta_2,
                    eps=est.epsilon)
    return SGD(lr=est.learning_rate_init, momentum=est.momentum,
               nesterov=bool(est.nesterovs_momentum and est.momentum > 0))


def _batch_size(est: Any, n: int) -> int:
    if est.batch_size == "auto":
        return min(200, n)
    if est.batch_size > n:
        warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going "
                      "to be clipped", stacklevel=5)
    return int(np.clip(est.batch_size, 1, n))


def _split(est: Any, X: Array, Y: Array, w: Array | None, y: Any
           ) -> tuple[Array, Array, Array | None, tuple | None]:
    """The training part and, with early stopping, the validation part (X, Y, w)."""
    if not est.early_stopping:
        return X, Y, w, None
    xp, n = est.placement_.xp, X.shape[0]
    if w is not None:  # host weights: checked and placed on the model, to be split there
        w = validation.sample_weights(est.model_, w, n)
    stratify = _backend.to_host(y) if est._stratify() else None  # the user's labels
    train, held = train_test_split(np.arange(n), random_state=est._random_state,
                                   test_size=est.validation_fraction, stratify=stratify)
    if held.shape[0] < 2:
        raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                         "or the size of your dataset.")
    take = est.placement_.indices
    parts = [(xp.take(a, take(train), axis=0), xp.take(a, take(held), axis=0))
             if a is not None else (None, None) for a in (X, Y, w)]
    (X, Xv), (Y, Yv), (w, wv) = parts
    for part, weights in (("training", w), ("validation", wv)):
        if weights is not None and not bool(xp.any(weights > 0)):
            raise ValueError(f"The {part} part of the early_stopping split has only zero "
                             "sample weights: its loss is undefined. Change "
                             "'validation_fraction' or 'random_state', or give more samples "
                             "a weight.")
    return X, Y, w, (Xv, Yv, wv)


class _Epochs(Callback):
    """scikit-learn's per-epoch bookkeeping, as a Trainer callback.

    Records ``loss_curve_``, the validation score and loss (early stopping), counts
    epochs without improvement by ``tol``, adapts the learning rate ('invscaling',
    'adaptive'), stops training as scikit-learn's MLPs do, and treats weights that
    are no longer finite as a divergence.
    """

    def __init__(self, est: Any, n_samples: int, val: tuple | None) -> None:
        self.est, self.n_samples, self.val = est, n_samples, val
        self.converged = self.diverged = False
        self._start: list[Array] | None = None
        self._model: Any = None

    def on_train_begin(self, trainer: Trainer) -> None:
        self._model = trainer.model
        if self.val is not None:  # what divergence in the first epoch falls back to
            self._start = _copies(trainer.model)

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if not _all_finite(trainer.model):  # an update that overflowed
            raise DivergenceError(trainer.steps, logs["loss"])
        est = self.est
        est.n_iter_ += 1
        est.t_ += self.n_samples
        est.loss_ = logs["loss"]
        est.loss_curve_.append(logs["loss"])
        if self.val is not None:
            self._validate(trainer)
        else:
            if est.loss_curve_[-1] > est.best_loss_ - est.tol:
                est._no_improvement_count += 1
            else:
                est._no_improvement_count = 0
            est.best_loss_ = min(est.best_loss_, est.loss_curve_[-1])
        self._schedule(trainer)
        if est.verbose:
            print(f"Iteration {est.n_iter_}, loss = {est.loss_:.8f}")

    def _validate(self, trainer: Trainer) -> None:
        est = self.est
        Xv, Yv, wv = self.val  # type: ignore[misc]
        est.validation_loss_curve_.append(trainer._evaluate(Xv, Yv, wv)["loss"])
        score = est._placed_score(Xv, Yv, wv)
        est.validation_scores_.append(score)
        if score < est.best_validation_score_ + est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if score > est.best_validation_score_:
            est.best_validation_score_ = score
            est._best_params = _copies(trainer.model)

    def _schedule(self, trainer: Trainer) -> None:
        est, optimizer = self.est, trainer.optimizer
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

    def on_train_end(self, trainer: Trainer) -> None:
        self._restore_best()

    def stop_diverged(self) -> None:
        """Early stopping met a divergence: record it, keep the best weights, warn."""
        est = self.est
        self.diverged = True
        est.n_iter_ += 1
        est.t_ += self.n_samples
        est.loss_ = math.nan
        for curve in (est.loss_curve_, est.validation_scores_, est.validation_loss_curve_):
            curve.append(math.nan)
        self._restore_best()
        warnings.warn(f"{NON_FINITE} Training stopped at iteration {est.n_iter_}; the weights "
                      "with the best validation score were restored.", ConvergenceWarning,
                      stacklevel=5)

    def _restore_best(self) -> None:
        best = self.est._best_params
        if self.diverged and best is None:
            best = self._start
        if self.val is not None and best is not None:
            self._model.load_params(best)
        self.est._best_params = None


def _copies(model: Any) -> list[Array]:
    xp = model.xp
    return [xp.asarray(p, copy=True) for p in model.params]


def _all_finite(model: Any) -> bool:
    """Whether every parameter is finite (one boolean read back)."""
    xp = model.xp
    return bool(xp.all(xp.stack([xp.all(xp.isfinite(p)) for p in model.params])))
