"""The callback protocol: what ``Trainer.fit`` calls at the start, after each epoch and
at the end. It sits below training (``train`` imports it); the callbacks themselves
(``portable_mlp.callbacks``) sit above.

``on_train_begin`` runs before the first step: a callback checks there everything it
can (its settings against this fit), so that a mistake fails before the model changes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portable_mlp.train import Trainer


class Callback:
    """Override what you need; set ``trainer.stop_training = True`` to end ``fit``.

    ``on_train_begin`` is called before any step: raise there (ValueError, TypeError,
    OSError) if the callback cannot work with this fit.

    Attributes
    ----------
    end_order : int
        When ``on_train_end`` runs among the callbacks of one fit: lower first, the
        list's order among equals. 0 for callbacks that change the model at the end
        (``EarlyStopping`` restoring the best epoch), 1 (the default) for the others,
        so that a ``Checkpoint`` saves the model as ``fit`` returns it whatever the
        order of the list.
    """

    end_order = 1

    def on_train_begin(self, trainer: Trainer) -> None:
        """Called before the first step.

        Parameters
        ----------
        trainer : Trainer
            The trainer that runs this fit (``trainer.model``, ``trainer.optimizer``).
        """

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        """Called after every epoch.

        Parameters
        ----------
        trainer : Trainer
            The trainer that runs this fit.
        epoch : int
            The epoch just completed, counted from 0 in this fit.
        logs : dict of str to float
            What the epoch logged: ``loss``, ``accuracy`` (and ``val_loss``,
            ``val_accuracy`` with validation data).
        """

    def on_train_end(self, trainer: Trainer) -> None:
        """Called once training ends (not after Ctrl-C or a divergence).

        Parameters
        ----------
        trainer : Trainer
            The trainer that ran this fit.
        """


class LambdaCallback(Callback):
    """Wraps a plain function called after each epoch.

    Parameters
    ----------
    fn : callable
        Called as ``fn(trainer, epoch, logs)`` after every epoch (see
        ``Callback.on_epoch_end``); a plain function in ``callbacks`` is wrapped so.
    """

    def __init__(self, fn: Callable[[Trainer, int, dict[str, float]], Any]) -> None:
        self.fn = fn

    def on_train_begin(self, trainer: Trainer) -> None:
        try:
            signature = inspect.signature(self.fn)
        except (TypeError, ValueError):  # a builtin without a signature: trust it
            return
        try:
            signature.bind(trainer, 0, {})
        except TypeError:
            raise TypeError(f"a callback function is called as fn(trainer, epoch, logs); "
                            f"{self.fn!r} takes {signature}") from None

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        self.fn(trainer, epoch, logs)


def as_callbacks(callbacks: Iterable[Any]) -> list[Callback]:
    if isinstance(callbacks, Callback) or callable(callbacks):
        callbacks = [callbacks]
    out = []
    for cb in callbacks:
        if isinstance(cb, Callback):
            out.append(cb)
        elif callable(cb):
            out.append(LambdaCallback(cb))
        else:
            raise TypeError(f"a callback must be a Callback or a callable "
                            f"(trainer, epoch, logs), got {type(cb).__name__}")
    return out


def train_end(callbacks: Iterable[Callback], trainer: Trainer) -> None:
    """Run the callbacks' ``on_train_end``: those that change the model (``end_order`` 0)
    before those that read it, each group in the list's order."""
    for cb in sorted(callbacks, key=lambda cb: getattr(cb, "end_order", 1)):
        cb.on_train_end(trainer)
