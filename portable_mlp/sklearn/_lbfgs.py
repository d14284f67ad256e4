"""The full-batch solver ('lbfgs'): ``portable_mlp.LBFGS`` (scipy's L-BFGS-B) with
scikit-learn's attributes and warnings.

As in scikit-learn: ``max_iter`` bounds the iterations, ``max_fun`` the loss
evaluations, ``tol`` is the gradient tolerance; ``n_iter_`` and ``loss_`` come from
scipy's result, and a run that stops short of convergence warns with scikit-learn's
own ConvergenceWarning. ``loss_curve_`` (the loss after each iteration) is recorded
too, where scikit-learn records none for this solver.
"""

from __future__ import annotations

from typing import Any

from sklearn.utils.optimize import _check_optimize_result

from portable_mlp.lbfgs import LBFGS
from portable_mlp.sklearn._stochastic import NON_FINITE
from portable_mlp.train import DivergenceError

Array = Any


def fit(est: Any, X: Array, Y: Array, w: Array | None) -> None:
    """Minimize ``est``'s loss over all of (X, Y), starting from ``est.model_``'s weights."""
    solver = LBFGS(max_iter=est.max_iter, max_fun=est.max_fun, tol=est.tol,
                   verbose=bool(est.verbose))
    try:
        result = solver.minimize(est.model_, X, Y, loss=est._loss, l2=est.alpha,
                                 sample_weight=w)
    except DivergenceError as exc:
        raise ValueError(f"{NON_FINITE} The input data may contain large values and need to "
                         f"be preprocessed. ({exc})") from exc
    est.n_iter_ = _check_optimize_result("lbfgs", result, est.max_iter)
    est.loss_ = float(result.fun)
    est.loss_curve_ = result.loss_curve
