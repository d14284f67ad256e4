"""``coefs_`` and ``intercepts_``: lists that write through to the model.

scikit-learn keeps the weights in two plain lists, and scripts assign them (the
whole list, or one layer) to initialise a network or to transfer one. Here the
weights live in the portable_mlp model, on its backend; these lists are views of
it. Reading gives the model's own arrays (changing one in place changes the
model, where the backend's arrays can be written); assigning an item or the whole
list validates the arrays and sets them on the model. Changing the number of
layers is refused. Copies and pickles of the list are plain lists.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, SupportsIndex

from portable_mlp import validation

Array = Any

_NAMES = ("coefs_", "intercepts_")


class LayerList(list):
    """The model's weight matrices (``which=0``) or bias vectors (``which=1``)."""

    def __init__(self, est: Any, which: int) -> None:
        super().__init__(est.model_.params[which::2])
        self._est, self._which = est, which

    def __setitem__(self, index: Any, value: Any) -> None:
        items = list(self._est.model_.params[self._which::2])  # the model's now, not ours
        items[index] = value
        set_layers(self._est, self._which, items)
        super().__init__(self._est.model_.params[self._which::2])

    def _fixed(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"{_NAMES[self._which]} has one array per layer; the number of layers "
                        "is fixed. Assign an item or the whole list instead.")

    append = extend = insert = pop = remove = clear = sort = reverse = _fixed
    __delitem__ = __iadd__ = __imul__ = _fixed

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple[Any, ...]:
        return list, (list(self),)


def set_layers(est: Any, which: int, arrays: Iterable[Any]) -> None:
    """Set the weight matrices (0) or bias vectors (1) of a fitted estimator's model,
    after checking every array (count, shapes, values); nothing changes on an error."""
    name = _NAMES[which]
    if not hasattr(est, "model_"):
        from sklearn.exceptions import NotFittedError

        raise NotFittedError(f"{name} can be assigned once the estimator is fitted (its "
                             "architecture is set by the first fit); fit it, then assign "
                             f"{name} and refit with warm_start=True.")
    if isinstance(arrays, (str, bytes)) or not isinstance(arrays, Iterable):
        raise TypeError(f"{name} must be a list of arrays, got {type(arrays).__name__}")
    arrays = list(arrays)
    model = est.model_
    params = list(model.params)
    current = params[which::2]
    if len(arrays) != len(current):
        raise ValueError(f"{name} needs {len(current)} arrays (one per layer), got "
                         f"{len(arrays)}")
    placed = [_checked(est, f"{name}[{i}]", a, tuple(old.shape))
              for i, (a, old) in enumerate(zip(arrays, current))]
    params[which::2] = placed
    model.load_params(params)


def _checked(est: Any, name: str, value: Any, shape: tuple[int, ...]) -> Array:
    """``value`` as an array the model takes, checked as the model checks its data (real
    numbers, finite after the cast to the model's dtype, so that a value beyond float32's
    range is caught as inf), whoever holds it: errors name ``name``."""
    value = validation.as_array(est.model_, est._to_model(value), name, ndim=len(shape),
                                check_values=True)
    if tuple(value.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {shape}")
    return value
