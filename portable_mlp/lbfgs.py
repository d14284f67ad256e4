"""Full-batch L-BFGS: scipy's L-BFGS-B over a model's flattened parameters.

``pm.LBFGS(...).minimize(model, X, Y, loss=...)`` trains ``model`` on the whole
data set at once, as scikit-learn's ``solver="lbfgs"`` does; there are no
minibatches and no epochs, so it is not an optimizer for ``Trainer`` (which steps
on batches). The optimisation itself is scipy's; this module only evaluates the
loss and its gradient on the model's backend and device. Per evaluation, the flat
parameter vector crosses to the device once and the loss with the flat gradient
comes back once (one array: ``[loss, *gradient]``).
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from portable_mlp import _backend, grad, losses, validation
from portable_mlp.train import DivergenceError

if TYPE_CHECKING:
    from scipy.optimize import OptimizeResult

    from portable_mlp.model import Sequential

Array = Any

__all__ = ["LBFGS"]


class LBFGS:
    """scipy's L-BFGS-B for a model's parameters, full batch.

    ``max_iter`` and ``max_fun`` bound the iterations and the loss evaluations,
    ``tol`` is scipy's ``gtol`` (the projected gradient's largest entry), as in
    scikit-learn's MLPs. Needs scipy (``pip install 'portable_mlp[sklearn]'``).

    Parameters
    ----------
    max_iter : int, default 200
        The most iterations.
    max_fun : int, default 15000
        The most loss evaluations.
    tol : float, default 1e-4
        scipy's ``gtol``: stop when the projected gradient's largest entry is below it.
    verbose : bool, default False
        Print one line per iteration.
    """

    def __init__(self, max_iter: int = 200, max_fun: int = 15000, tol: float = 1e-4,
                 verbose: bool = False) -> None:
        self.max_iter = validation.positive("max_iter", max_iter, integer=True)
        self.max_fun = validation.positive("max_fun", max_fun, integer=True)
        self.tol = validation.non_negative("tol", tol)
        self.verbose = bool(verbose)

    def __repr__(self) -> str:
        return f"LBFGS(max_iter={self.max_iter}, max_fun={self.max_fun}, tol={self.tol})"

    def minimize(self, model: Sequential, X: Any, Y: Any, loss: str = "mse", l2: float = 0.0,
                 sample_weight: Any = None) -> OptimizeResult:
        """Minimize the loss of ``model`` on all of (X, Y); return scipy's result.

        The model ends with the parameters found (``result.x``), and the result has
        ``loss_curve`` added: the loss after each iteration. A non-finite loss or
        parameters at the end raise ``DivergenceError`` and the model keeps the
        parameters it had before the call.

        Parameters
        ----------
        model : Sequential
            The model to train; it ends with the parameters found.
        X : array of shape (n, n_features)
            All the features (full batch).
        Y : array of shape (n, n_outputs) or (n,)
            Targets, or 1-D integer class labels.
        loss : str, default "mse"
            The loss's name (see ``Trainer``).
        l2 : float, default 0.0
            The weight decay.
        sample_weight : array of shape (n,) or None, default None
            Per-sample weights of the loss.
        """
        from scipy.optimize import minimize

        fn = grad.check_loss(model, loss)
        if model.random:
            raise ValueError("LBFGS minimizes a deterministic loss: a model with Dropout has "
                             "none; remove the Dropout, or train with pm.SGD / pm.AdamW")
        l2 = validation.non_negative("l2", l2)
        Xd = validation.features(model, X, check_values=True)
        Yd = validation.targets(model, Y, Xd.shape[0], check_values=True)
        losses.check_targets(loss, model.xp, Yd)
        w = validation.sample_weights(model, sample_weight, Xd.shape[0])
        placed = model.placement.materialize([a for a in (Xd, Yd, w) if a is not None])
        Xd, Yd = placed[0], placed[1]
        w = placed[2] if w is not None else None
        objective = _Objective(model, Xd, Yd, fn, l2, w)
        curve: list[float] = []

        def record(intermediate_result: OptimizeResult) -> None:
            curve.append(float(intermediate_result.fun))
            if self.verbose:
                print(f"Iteration {len(curve)}, loss = {curve[-1]:.8f}")

        result = minimize(objective, _flatten(model.host_params()), method="L-BFGS-B",
                          jac=True, callback=record,
                          options={"maxiter": self.max_iter, "maxfun": self.max_fun,
                                   "gtol": self.tol})
        if not (math.isfinite(result.fun) and np.isfinite(result.x).all()):
            raise _divergence(curve)
        model.load_params(objective.unflatten_host(result.x))
        result.loss_curve = curve
        return result


def _divergence(curve: list[float]) -> DivergenceError:
    """The error of a run that ended non-finite, given the loss after each iteration: at
    the first iteration whose loss is not finite (else the one after the last), with the
    finite loss before it (None if there was none)."""
    bad = next((i for i, v in enumerate(curve) if not math.isfinite(v)), len(curve))
    return DivergenceError(bad + 1, curve[bad - 1] if bad else None)


class _Objective:
    """``flat -> (loss, flat gradient)`` on the model's backend, for scipy."""

    def __init__(self, model: Sequential, X: Array, Y: Array, fn: Any, l2: float,
                 w: Array | None) -> None:
        self.model, self.X, self.Y, self.fn, self.l2, self.w = model, X, Y, fn, l2, w
        self.shapes = [tuple(p.shape) for p in model.params]
        self.host_dtype = _backend.dtype_name(model.placement.dtype_obj)

    def __call__(self, flat: np.ndarray) -> tuple[float, np.ndarray]:
        placement = self.model.placement
        xp = placement.xp
        params = _split(xp, placement.from_host(flat.astype(self.host_dtype)), self.shapes)
        with warnings.catch_warnings():  # a non-finite loss is scipy's to handle, and ours
            warnings.simplefilter("ignore", RuntimeWarning)  # to report: no float warnings
            value, grads = grad.loss_and_grads(self.model, params, self.X, self.Y, self.fn,
                                               self.l2, self.w)
            packed = xp.concat([xp.reshape(xp.asarray(value, dtype=placement.dtype_obj), (1,)),
                                *[xp.reshape(g, (-1,)) for g in grads]])
        host = _backend.to_host(packed).astype(np.float64)
        return float(host[0]), host[1:]

    def unflatten_host(self, flat: np.ndarray) -> list[np.ndarray]:
        return _split(np, flat.astype(self.host_dtype), self.shapes)


def _flatten(host: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([p.reshape(-1) for p in host]).astype(np.float64)


def _split(xp: Any, flat: Array, shapes: list[tuple[int, ...]]) -> list[Array]:
    """The parameters of ``shapes``, in order, out of one flat vector (views where the
    backend makes them)."""
    out, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        out.append(xp.reshape(flat[start:start + size], shape))
        start += size
    return out
