"""How ``fit`` shows its progress: a tqdm bar on a terminal, or a line every k epochs."""

from __future__ import annotations

import sys
from typing import Any, TextIO


class Silent:
    """Shows nothing."""

    def update(self, logs: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class Bar(Silent):
    """A tqdm bar with the latest loss and accuracy."""

    def __init__(self, epochs: int) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=epochs, unit="epoch", leave=False)

    def update(self, logs: dict[str, float]) -> None:
        shown = {k.replace("accuracy", "acc"): f"{v:.4g}" for k, v in logs.items()}
        self._bar.set_postfix(shown, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


class Lines(Silent):
    """A line every ``every`` epochs and after the last, as Keras's ``verbose=2``."""

    def __init__(self, epochs: int, every: int, stream: TextIO | None = None) -> None:
        self.epochs, self.every, self.epoch = epochs, every, 0
        self.stream = sys.stdout if stream is None else stream

    def update(self, logs: dict[str, float]) -> None:
        self.epoch += 1
        if self.epoch % self.every == 0 or self.epoch == self.epochs:
            shown = " - ".join(f"{k} {v:.4g}" for k, v in logs.items())
            print(f"epoch {self.epoch}/{self.epochs} - {shown}", file=self.stream, flush=True)


def shows_progress(progress: bool = True) -> bool:
    """Whether ``fit(progress=progress)`` draws a bar: wanted, and on a terminal (stderr)."""
    return bool(progress) and sys.stderr.isatty()


def progress_report(epochs: int, progress: bool, verbose: int) -> Silent:
    """A tqdm bar on a terminal; else a line every ``verbose`` epochs (0: nothing)."""
    if shows_progress(progress):
        return Bar(epochs)
    return Lines(epochs, verbose) if verbose else Silent()


def check_verbose(verbose: Any) -> int:
    if isinstance(verbose, bool):
        return int(verbose)
    if not isinstance(verbose, int) or verbose < 0:
        raise ValueError(f"verbose must be a non-negative integer (print a line every "
                         f"verbose epochs; 0: none), got {verbose!r}")
    return verbose
