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
    """

    def on_train_begin(self, trainer: Trainer) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass


class LambdaCallback(Callback):
    """Wraps a plain function ``fn(trainer, epoch, logs)`` called after each epoch."""

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
