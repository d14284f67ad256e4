"""Random bits without a random API: a counter-based hash in the standard's int32 operations.

The Array API standard has no random numbers, and each library's generator differs, so
dropout drawn from them would part a fit on torch from the same fit on NumPy at the
first mask. Here a mask's bits are a hash of ``(seed, step, layer, element index)``,
computed with integer multiplies, xors, shifts and adds on the model's own namespace:
every backend draws bit-identical masks, on the device, with no host transfer, inside
``jax.jit`` / ``lax.scan`` (the step may be a traced array) and on dask blocks (a block
is told the index of its first row).

The arithmetic is int32 and wraps on overflow (two's complement on every backend we
run: NumPy, CuPy, PyTorch, JAX, Dask); torch's uint32 lacks shifts and comparisons, so
the unsigned operations are spelled on int32: a logical right shift is the arithmetic
one masked, and a uniform 32-bit draw is compared as a signed number. The mixer is
Chris Wellons' ``lowbias32`` (two multiplies, xorshifts between). Per step and layer it
mixes the key (a ``(1, 1)`` array: the step may be traced) into an offset of the element
counter; per element it runs the middle of ``lowbias32`` (multiply, xorshift, multiply):
the top bits, which the comparison with a threshold reads, then depend on every bit of
the counter. That is five passes over the elements, the cost that matters (dropout's
mask on NumPy: docs/pieces.md).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

Array = Any

_M1, _M2 = 0x7FEB352D, 0x846CA68B  # lowbias32's multipliers
_GOLDEN = 0x9E3779B9               # 2**32 / the golden ratio: spreads consecutive inputs
_MASK32 = 0xFFFFFFFF


def _signed(value: int) -> int:
    """A 32-bit pattern as the int32 it is (what a Python int must be to meet int32)."""
    value &= _MASK32
    return value - (1 << 32) if value >= 1 << 31 else value


def mix_host(value: int) -> int:
    """``lowbias32`` of a Python int's low 32 bits, exactly, on the host (as unsigned).

    Parameters
    ----------
    value : int
        The input; its low 32 bits count.
    """
    x = value & _MASK32
    x ^= x >> 16
    x = (x * _M1) & _MASK32
    x ^= x >> 15
    x = (x * _M2) & _MASK32
    x ^= x >> 16
    return x


def _shift_right(x: Array, bits: int) -> Array:
    """The logical right shift of an int32 array (the arithmetic shift, sign bits masked)."""
    shifted = x >> bits
    shifted &= (1 << (32 - bits)) - 1
    return shifted


def mix(x: Array) -> Array:
    """``lowbias32`` on an int32 array, in place where the backend allows.

    Parameters
    ----------
    x : int32 array
        The caller's own array (it may be overwritten); the same as ``mix_host`` of
        each element's 32 bits, as a signed number.
    """
    x ^= _shift_right(x, 16)
    x = _spread(x)
    x ^= _shift_right(x, 16)
    return x


def _spread(x: Array) -> Array:
    """``lowbias32``'s middle: multiply, xorshift, multiply (in place where allowed)."""
    x *= _signed(_M1)
    x ^= _shift_right(x, 15)
    x *= _signed(_M2)
    return x


@dataclass(frozen=True)
class Key:
    """Where a training step's random draws come from.

    Parameters
    ----------
    step : int or 0-d integer array
        The step counter (the optimizer's ``state["step"]``, steps taken before this
        one); a traced array inside ``jax.jit`` and ``lax.scan``.
    row0 : int, default 0
        The index of the batch's first row among the rows the step draws for: a dask
        block of rows 100 to 199 of a batch draws with ``row0=100`` what the whole
        batch draws for those rows.
    """

    step: Any
    row0: int = 0


def uniform_bits(xp: Any, shape: tuple[int, int], seed: int, layer: int, key: Key,
                 device: Any = None) -> Array:
    """Uniform 32-bit draws, one per element of a ``(rows, columns)`` array, as int32
    (every value of ``[-2**31, 2**31)`` equally likely).

    Parameters
    ----------
    xp : namespace
        The array namespace to draw on.
    shape : tuple of int
        ``(rows, columns)`` of the array the draws are for.
    seed : int
        The draws' seed (a Python int; its low 32 bits count).
    layer : int
        The index of the piece drawing, so that two pieces draw independently.
    key : Key
        The step counter and the first row's index.
    device : optional
        The device to draw on (None: the namespace's default).
    """
    rows, columns = shape
    int32 = xp.int32
    offset = _offset(xp, key.step, mix_host(seed ^ mix_host(layer * _GOLDEN + 1)), device)
    first = _signed(key.row0 * columns)
    row_starts = xp.arange(rows, dtype=int32, device=device) * _signed(columns)
    row_starts = xp.reshape(row_starts, (rows, 1)) + offset
    row_starts += first
    x = row_starts + xp.reshape(xp.arange(columns, dtype=int32, device=device), (1, columns))
    return _spread(x)


def _offset(xp: Any, step: Any, stream: int, device: Any) -> Any:
    """The per-step, per-layer offset of the element counter: ``lowbias32`` of the step
    mixed with the stream. A host count is mixed on the host (a Python int: nothing to
    upload); a device count (traced under ``jax.jit``) as a ``(1, 1)`` array, the same
    bits."""
    if isinstance(step, numbers.Integral):
        return _signed(mix_host((int(step) * _GOLDEN) ^ stream))
    count = xp.reshape(xp.astype(xp.asarray(step, device=device), xp.int32), (1, 1))
    count *= _signed(_GOLDEN)
    count ^= _signed(stream)
    return mix(count)


def threshold(rate: float) -> int:
    """The int32 below which a uniform draw (``uniform_bits``) falls with probability
    ``rate`` (to 2**-32).

    Parameters
    ----------
    rate : float
        The probability, in ``[0, 1)``.
    """
    return min(round(rate * 2.0**32) - (1 << 31), 2**31 - 1)
