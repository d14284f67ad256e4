"""Callbacks for ``Trainer.fit``: early stopping (checkpoints: ``portable_mlp.checkpoint``).

The protocol (``Callback``, ``LambdaCallback``) is in ``portable_mlp.callback_base``,
below training; these build on it, above training.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from portable_mlp import validation
from portable_mlp.callback_base import Callback

if TYPE_CHECKING:
    from portable_mlp.train import Trainer


# what fit logs after each epoch (the val_* keys only with validation_data)
LOG_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs,
    and (``restore_best``) put back the parameters of the best epoch.

    Parameters
    ----------
    monitor : str, default "val_loss"
        The logged value to watch: ``"loss"``, ``"accuracy"``, ``"val_loss"`` or
        ``"val_accuracy"`` (the ``val_*`` ones need ``validation_data`` or
        ``validation_split`` in ``fit``).
    patience : int, default 10
        Epochs without improvement before training stops.
    min_delta : float, default 0.0
        The least change that counts as an improvement.
    mode : {"auto", "min", "max"}, default "auto"
        Whether lower (``"min"``) or higher (``"max"``) is better; ``"auto"`` takes
        ``"max"`` for accuracies and ``"min"`` otherwise.
    restore_best : bool, default True
        At the end of training, put back the parameters of the best epoch. This runs
        before any ``Checkpoint``'s last save, whatever the order of the callbacks, so
        that the file holds the model ``fit`` returns.
    verbose : bool, default False
        Print one line when training stops early and one when the best epoch is
        restored (``EarlyStopping: stopped at epoch 102 ...; restored epoch 92 ...``).

    Attributes
    ----------
    best : float
        The best value of ``monitor`` seen in this fit (as logged; inf, or -inf in
        ``"max"`` mode, before the first epoch).
    best_epoch : int
        The epoch (counted from 1) that logged ``best``; 0 before the first epoch.
    stopped_epoch : int
        The epoch (counted from 1) after which this callback stopped training; 0 if it
        did not stop it.
    """

    end_order = 0  # restores the model: before the callbacks that save it

    def __init__(self, monitor: str = "val_loss", patience: int = 10, min_delta: float = 0.0,
                 mode: str = "auto", restore_best: bool = True, verbose: bool = False) -> None:
        self.monitor = check_monitor("EarlyStopping", monitor)
        self.patience = validation.positive("patience", patience, integer=True)
        self.min_delta = validation.non_negative("min_delta", min_delta)
        self.sign = sign_of(monitor, mode)
        self.restore_best = restore_best
        self.verbose = bool(verbose)
        self.best, self.best_epoch, self.stopped_epoch = self.sign * math.inf, 0, 0

    def on_train_begin(self, trainer: Trainer) -> None:
        """Check that this fit logs ``monitor``; start counting afresh."""
        check_logged("EarlyStopping", self.monitor, trainer)
        self.best, self.best_epoch, self.stopped_epoch = self.sign * math.inf, 0, 0
        self.wait = 0
        self.best_params: list[Any] | None = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        """Keep the best epoch's parameters; stop after ``patience`` epochs without one."""
        value = logged_value("EarlyStopping", self.monitor, logs)
        if self.sign * value < self.sign * self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = value, epoch + 1, 0
            if self.restore_best:
                self.best_params = [p.copy() for p in trainer.model.host_params()]
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop_training = True
                self.stopped_epoch = epoch + 1
                self._say(f"stopped at epoch {epoch + 1}: {self.monitor} did not improve for "
                          f"{self.patience} epochs (best {self.best:.6g} at epoch "
                          f"{self.best_epoch})")

    def on_train_end(self, trainer: Trainer) -> None:
        """Put back the best epoch's parameters (``restore_best``)."""
        if self.restore_best and self.best_params is not None:
            trainer.model.load_params(self.best_params)
            self._say(f"restored the parameters of epoch {self.best_epoch} "
                      f"({self.monitor} {self.best:.6g})")

    def _say(self, line: str) -> None:
        if self.verbose:
            print(f"EarlyStopping: {line}", flush=True)


def check_monitor(owner: str, monitor: str) -> str:
    """``monitor`` if ``fit`` can log it, else a ValueError naming what it logs."""
    if monitor not in LOG_KEYS:
        raise ValueError(f"{owner} cannot monitor {monitor!r}: fit logs "
                         f"{', '.join(LOG_KEYS)} (val_* with validation_data)")
    return monitor


def sign_of(monitor: str, mode: str) -> float:
    """-1 where higher is better (``mode``, or "auto" and an accuracy), else 1."""
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    return -1.0 if mode == "max" or (mode == "auto" and "acc" in monitor) else 1.0


def check_logged(owner: str, monitor: str, trainer: Trainer) -> None:
    """Refuse, before the first step, a ``monitor`` that this fit does not log."""
    logged = getattr(trainer, "log_keys", None)  # set by fit; None for a loop by hand
    if logged is not None and monitor not in logged:
        raise ValueError(f"{owner} monitors {monitor!r}, but this fit logs "
                         f"{', '.join(logged)}; pass validation_data to fit for val_* keys")


def logged_value(owner: str, monitor: str, logs: dict[str, float]) -> float:
    if monitor not in logs:
        raise ValueError(f"{owner} monitors {monitor!r}, but the logs hold "
                         f"{', '.join(logs)}; pass validation_data to fit for val_* keys")
    return logs[monitor]
