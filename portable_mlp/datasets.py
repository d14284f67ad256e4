"""Small seeded 2-D data sets, generated here (no downloads). All return host NumPy."""

from __future__ import annotations

from typing import Any

import numpy as np

from portable_mlp import validation


def xor(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The scratch_mlp article's XOR data: ``RandomState(seed).randn(n, 2)``, label
    ``x0 > 0 xor x1 > 0``.

    Returns X float64 (n, 2) and y int64 (n,).

    Parameters
    ----------
    n : int, default 300
        The number of points.
    seed : int, default 0
        The random seed of the points (``numpy.random.RandomState``, as the article).
    """
    n = validation.positive("n", n, integer=True)
    X = np.random.RandomState(validation.check_seed(seed)).randn(n, 2)
    y = np.logical_xor(X[:, 0] > 0, X[:, 1] > 0).astype(np.int64)
    return X, y


def moons(n: int = 300, noise: float = 0.1, seed: int | None = 0
          ) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles (class 0 on top, class 1 below), with Gaussian ``noise``.

    Returns X float64 (n, 2) and y int64 (n,), shuffled.

    Parameters
    ----------
    n : int, default 300
        The number of points, split evenly between the two classes.
    noise : float, default 0.1
        The standard deviation of the Gaussian noise added to each coordinate.
    seed : int or None, default 0
        The random seed; None draws a fresh one.
    """
    n = _at_least("n", n, 2)
    noise = validation.non_negative("noise", noise)
    rng = np.random.default_rng(validation.check_seed(seed))
    n_top = n // 2
    t_top = np.linspace(0.0, np.pi, n_top)
    t_bottom = np.linspace(0.0, np.pi, n - n_top)
    X = np.concatenate([np.stack([np.cos(t_top), np.sin(t_top)], axis=1),
                        np.stack([1.0 - np.cos(t_bottom), 0.5 - np.sin(t_bottom)], axis=1)])
    y = np.repeat(np.arange(2, dtype=np.int64), [n_top, n - n_top])
    return _noisy_shuffled(rng, X, y, noise)


def circles(n: int = 300, noise: float = 0.05, factor: float = 0.5, seed: int | None = 0
            ) -> tuple[np.ndarray, np.ndarray]:
    """Two concentric circles: class 0 of radius 1, class 1 of radius ``factor`` (0 < factor < 1).

    Returns X float64 (n, 2) and y int64 (n,), shuffled.

    Parameters
    ----------
    n : int, default 300
        The number of points, split evenly between the two circles.
    noise : float, default 0.05
        The standard deviation of the Gaussian noise added to each coordinate.
    factor : float, default 0.5
        The inner circle's radius relative to the outer's, in (0, 1).
    seed : int or None, default 0
        The random seed; None draws a fresh one.
    """
    n = _at_least("n", n, 2)
    noise = validation.non_negative("noise", noise)
    factor = validation.positive("factor", factor)
    if factor >= 1:
        raise ValueError(f"factor (the inner radius) must be below 1, got {factor!r}")
    rng = np.random.default_rng(validation.check_seed(seed))
    n_outer = n // 2
    t_outer = np.linspace(0.0, 2 * np.pi, n_outer, endpoint=False)
    t_inner = np.linspace(0.0, 2 * np.pi, n - n_outer, endpoint=False)
    X = np.concatenate([np.stack([np.cos(t_outer), np.sin(t_outer)], axis=1),
                        factor * np.stack([np.cos(t_inner), np.sin(t_inner)], axis=1)])
    y = np.repeat(np.arange(2, dtype=np.int64), [n_outer, n - n_outer])
    return _noisy_shuffled(rng, X, y, noise)


def spirals(n: int = 300, n_classes: int = 3, noise: float = 0.2, seed: int | None = 0
            ) -> tuple[np.ndarray, np.ndarray]:
    """``n_classes`` arms of a spiral winding out of the origin; ``noise`` jitters the angle.

    Returns X float64 (n, 2) in the unit disc and y int64 (n,) in 0..n_classes-1, shuffled.

    Parameters
    ----------
    n : int, default 300
        The number of points, split evenly between the arms.
    n_classes : int, default 3
        The number of arms, one class each.
    noise : float, default 0.2
        The standard deviation of the Gaussian jitter of each point's angle.
    seed : int or None, default 0
        The random seed; None draws a fresh one.
    """
    n_classes = _at_least("n_classes", n_classes, 2)
    n = _at_least("n", n, n_classes)
    noise = validation.non_negative("noise", noise)
    rng = np.random.default_rng(validation.check_seed(seed))
    sizes = [n // n_classes + (k < n % n_classes) for k in range(n_classes)]
    parts = []
    for k, size in enumerate(sizes):  # arm k: one full turn, starting at angle 2 pi k / n_classes
        r = np.linspace(0.05, 1.0, size)
        start = 2 * np.pi * k / n_classes
        t = np.linspace(start, start + 2 * np.pi, size) + rng.standard_normal(size) * noise
        parts.append(np.stack([r * np.sin(t), r * np.cos(t)], axis=1))
    y = np.repeat(np.arange(n_classes, dtype=np.int64), sizes)
    return _noisy_shuffled(rng, np.concatenate(parts), y, 0.0)


def _at_least(name: str, value: Any, low: int) -> int:
    number: int = validation.positive(name, value, integer=True)
    if number < low:
        raise ValueError(f"{name} must be at least {low}, got {number!r}")
    return number


def _noisy_shuffled(rng: np.random.Generator, X: np.ndarray, y: np.ndarray, noise: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    X = X + rng.standard_normal(X.shape) * noise
    order = rng.permutation(X.shape[0])
    return np.ascontiguousarray(X[order], dtype=np.float64), y[order]
