"""How a library runs a training step: NumPy's warnings, waiting for queued work,
compiling, keeping a lazy graph bounded, and the data of a fit (``Backend``'s half that
the execution model decides; the generic answers here)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from portable_mlp.backends.standard import same

Array = Any


class Execution:
    """The generic answers: an eager library that may compute on NumPy."""

    name: str
    _materialize_hook: Callable[[list[Any]], list[Any]] | None

    def overflow_is_fine(self) -> Callable[[], Any]:
        """A context-manager factory for a forward pass: ``exp`` may overflow to inf (the
        right sigmoid). NumPy's warnings are silenced, as many libraries compute on NumPy."""
        return functools.partial(np.errstate, over="ignore")

    def quiet(self) -> Callable[[], Any]:
        """A context-manager factory for a training step: no NumPy warning on overflow or
        invalid values (a diverging step is reported whole by the divergence check)."""
        return functools.partial(np.errstate, all="ignore")

    def host_reads_are_free(self, device: Any) -> bool:
        """Reading a value back costs no device sync and forces no lazy compute (not
        known of a library in general: no)."""
        return False

    def synchronize(self, arrays: Any = ()) -> None:
        """Wait until queued work producing ``arrays`` is done (for timing only)."""

    compiles = False  # training runs compiled by default (JAX: jax.jit)
    small_steps_cost_more = True  # a small step costs more than on NumPy (dispatch, sync)

    def threads(self, n: int) -> contextlib.AbstractContextManager[Any]:
        """The library's own thread pool limited to ``n`` for a block (BLAS's: the caller's)."""
        return contextlib.nullcontext()

    def thread_count(self) -> int:
        """The threads the library's own pool runs (1: it has none; BLAS's: threadpoolctl's)."""
        return 1

    def jit(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return fn

    def scan(self) -> Callable[..., Any]:
        raise ValueError(f"backend {self.name!r} does not compile; scan runs only inside "
                         "compiled code")

    def read_scalars(self, arrays: list[Any]) -> list[float]:
        """0-d arrays read back to the host as floats."""
        return [float(a) for a in arrays]

    def materializer(self) -> Callable[[list[Any]], list[Any]]:
        """The function that bounds a lazy graph, once a step (a fresh one per model)."""
        return self._materialize_hook or same

    # --- data of a fit -------------------------------------------------------------
    lazy = False  # arrays are graphs whose values (and some shapes) are known later

    def rows(self, data: Any, name: str) -> Any:
        """Input ``data`` (called ``name``) as this library's rows are cut from it."""
        return data

    def persist_rows(self, X: Array, others: list[Array | None]) -> list[Array | None]:
        """The data of a fit, computed into memory once (lazy libraries)."""
        return [X, *others]

    def row_blocks(self, x: Array) -> tuple[int, ...] | None:
        """The lengths of a chunked array's row blocks; None for one piece of memory."""
        return None

    def shuffled_blocks(self, arrays: list[Array | None], order: np.ndarray,
                        states: list[Mapping[str, Any]], kind: type) -> list[Array | None]:
        raise TypeError(f"backend {self.name!r} keeps its arrays in one block")

    def guarded_step(self) -> Callable[..., Any]:
        """``Trainer``'s step function."""
        from portable_mlp import steps

        return steps.guarded_step
