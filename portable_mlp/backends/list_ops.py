"""The list operations the optimizers' rules are written in (``portable_mlp.rules``).

Each takes lists of arrays (every parameter of a model at once) and returns the
resulting list. ``out``: where to write (None: new arrays; it may be the input itself);
``scratch``: arrays the operation may overwrite on the way (None: a temporary). The
standard's spelling ignores both; NumPy's and CuPy's ufuncs write into them; torch's
``_foreach_`` kernels are in ``backends/torch.py``.
"""

from __future__ import annotations

from typing import Any


def _is(c: Any, value: float) -> bool:
    """``c`` is the Python number ``value``: a device array is never compared (on a GPU
    that would read it back to the host)."""
    return isinstance(c, (int, float)) and c == value


class StandardListOps:
    """The standard's expressions: new arrays (JAX, dask, array-api-strict)."""

    def __init__(self, xp: Any) -> None:
        self.xp = xp

    def scale(self, out: Any, xs: Any, c: Any) -> Any:  # xs * c
        return [x * c for x in xs]

    def axpy(self, acc: Any, xs: Any, c: Any, scratch: Any) -> Any:  # acc + xs * c
        return [a + x * c for a, x in zip(acc, xs)]

    def axpy_into(self, out: Any, ps: Any, xs: Any, c: Any) -> Any:  # ps + xs * c
        return [p + x * c for p, x in zip(ps, xs)]

    def add_square(self, acc: Any, xs: Any, c: Any, scratch: Any) -> Any:  # acc + xs*xs*c
        return [a + x * x * c for a, x in zip(acc, xs)]

    def sqrt_plus(self, out: Any, xs: Any, c: Any) -> Any:  # sqrt(xs) + c
        return [self.xp.sqrt(x) + c for x in xs]

    def sub_ratio_into(self, out: Any, ps: Any, num: Any, den: Any, c: Any) -> Any:
        return [p - c * n / d for p, n, d in zip(ps, num, den)]  # ps - c * num / den


class UfuncListOps:
    """NumPy's (or CuPy's) ufuncs with ``out`` (passed by position: NumPy parses it
    faster than the keyword): no new array where ``out`` is given."""

    def __init__(self, module: Any) -> None:
        self.m = module
        self.add, self.subtract, self.multiply = module.add, module.subtract, module.multiply

    def scale(self, out: Any, xs: Any, c: Any) -> Any:
        if out is None:
            return [x * c for x in xs]
        multiply = self.multiply
        for o, x in zip(out, xs):
            multiply(x, c, o)
        return out

    def axpy(self, acc: Any, xs: Any, c: Any, scratch: Any) -> Any:
        for i, (a, x) in enumerate(zip(acc, xs)):
            if _is(c, -1.0):
                a -= x
            else:
                a += x * c if scratch is None else self.multiply(x, c, scratch[i])
        return acc

    def axpy_into(self, out: Any, ps: Any, xs: Any, c: Any) -> Any:
        if _is(c, 1.0):
            combine = self.add
        elif _is(c, -1.0):
            combine = self.subtract
        else:
            combine = self.add
            for x in xs:
                x *= c
        if out is None:
            return [combine(p, x) for p, x in zip(ps, xs)]
        for p, x, o in zip(ps, xs, out):
            combine(p, x, o)
        return out

    def add_square(self, acc: Any, xs: Any, c: Any, scratch: Any) -> Any:
        for i, (a, x) in enumerate(zip(acc, xs)):
            s = x * x if scratch is None else self.multiply(x, x, scratch[i])
            s *= c
            a += s
        return acc

    def sqrt_plus(self, out: Any, xs: Any, c: Any) -> Any:
        out = [self.m.empty_like(x) for x in xs] if out is None else out
        for o, x in zip(out, xs):
            self.m.sqrt(x, o)
            o += c
        return out

    def sub_ratio_into(self, out: Any, ps: Any, num: Any, den: Any, c: Any) -> Any:
        if out is None:
            out = [n * c for n in num]
        else:
            for o, n in zip(out, num):
                self.multiply(n, c, o)
        for o, p, d in zip(out, ps, den):
            o /= d
            self.subtract(p, o, o)
        return out
