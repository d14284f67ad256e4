"""Weight initializers: host NumPy draws from a seeded Generator.

Weights are drawn in float64 on the host and only then moved and cast, so one
seed gives one network on every backend and dtype.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Initializer = Callable[[np.random.Generator, int, int], np.ndarray]


def uniform(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """The scratch_mlp article's: uniform in [-1, 1), scaled by 1/sqrt(fan_in).

    Parameters
    ----------
    rng : numpy.random.Generator
        The seeded generator to draw from.
    fan_in : int
        The layer's inputs: the weight matrix's rows.
    fan_out : int
        The layer's outputs: its columns.
    """
    return rng.uniform(-1.0, 1.0, size=(fan_in, fan_out)) / np.sqrt(fan_in)


def glorot(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """Glorot/Xavier uniform: limit sqrt(6 / (fan_in + fan_out)).

    Parameters
    ----------
    rng : numpy.random.Generator
        The seeded generator to draw from.
    fan_in : int
        The layer's inputs: the weight matrix's rows.
    fan_out : int
        The layer's outputs: its columns.
    """
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=(fan_in, fan_out))


def he(rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
    """He/Kaiming normal: standard deviation sqrt(2 / fan_in), for ReLU layers.

    Parameters
    ----------
    rng : numpy.random.Generator
        The seeded generator to draw from.
    fan_in : int
        The layer's inputs: the weight matrix's rows.
    fan_out : int
        The layer's outputs: its columns.
    """
    return rng.standard_normal(size=(fan_in, fan_out)) * np.sqrt(2.0 / fan_in)


INITIALIZERS: dict[str, Initializer] = {"uniform": uniform, "glorot": glorot, "he": he}


def get(name: str) -> Initializer:
    """The initializer of that name (``INITIALIZERS``).

    Parameters
    ----------
    name : {"uniform", "glorot", "he"}
        The initializer's name.
    """
    if not isinstance(name, str) or name not in INITIALIZERS:
        raise ValueError(f"unknown initializer {name!r}; expected one of {', '.join(INITIALIZERS)}")
    return INITIALIZERS[name]
