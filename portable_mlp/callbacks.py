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
    and (``restore_best``) put back the parameters of the best epoch."""

    def __init__(self, monitor: str = "val_loss", patience: int = 10, min_delta: float = 0.0,
                 mode: str = "auto", restore_best: bool = True) -> None:
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if monitor not in LOG_KEYS:
            raise ValueError(f"EarlyStopping cannot monitor {monitor!r}: fit logs "
                             f"{', '.join(LOG_KEYS)} (val_* with validation_data)")
        self.monitor = monitor
        self.patience = validation.positive("patience", patience, integer=True)
        self.min_delta = validation.non_negative("min_delta", min_delta)
        self.sign = -1.0 if mode == "max" or (mode == "auto" and "acc" in monitor) else 1.0
        self.restore_best = restore_best

    def on_train_begin(self, trainer: Trainer) -> None:
        logged = getattr(trainer, "log_keys", None)  # set by fit; None for a loop by hand
        if logged is not None and self.monitor not in logged:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, but this fit logs "
                             f"{', '.join(logged)}; pass validation_data to fit for val_* keys")
        self.best, self.best_epoch, self.wait = math.inf, -1, 0
        self.best_params: list[Any] | None = None

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, but the logs hold "
                             f"{', '.join(logs)}; pass validation_data to fit for val_* keys")
        score = self.sign * logs[self.monitor]
        if score < self.best - self.min_delta:
            self.best, self.best_epoch, self.wait = score, epoch, 0
            if self.restore_best:
                self.best_params = trainer.model.host_params()
                self.best_params = [p.copy() for p in self.best_params]
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop_training = True

    def on_train_end(self, trainer: Trainer) -> None:
        if self.restore_best and self.best_params is not None:
            trainer.model.load_params(self.best_params)
