"""The rest of portable_mlp's one door to the backends (``portable_mlp/backends/``).

The math sees an array namespace ``xp`` and the standard's functions on it, and a
``Placement``: a backend's name, device and dtype (names, so that objects pickle), whose
backend (``backends.Backend``, one file per library that needs one) answers everything
that depends on the library: host transfers, devices, dtypes, whether reading a value back
is free, how to wait for queued work, how to keep a lazy graph bounded.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from portable_mlp import backends
from portable_mlp.backends import (
    FLOAT_DTYPES,
    Backend,
    BackendUnavailable,
    Ops,
    WorkerLostError,
    dtype_name,
    register_backend,
)

__all__ = ["BACKENDS", "FLOAT_DTYPES", "Backend", "BackendUnavailable", "Ops", "Placement",
           "WorkerLostError", "dtype_name", "register_backend"]

Array = Any

BACKENDS = backends.BUILTIN  # the libraries each with a test session of their own


def check_name(name: str) -> str:
    """``name``, if it names a backend (a registered one, or an array namespace's module)."""
    return backends.get(name).name


def namespace(name: str) -> Any:
    """The standard-compliant namespace of backend ``name`` (imported on first use)."""
    return backends.get(name).xp


def install_hint(name: str) -> str:
    """The pip command that installs backend ``name`` with portable_mlp."""
    return backends.get(name).install_hint()


def describe(name: str) -> dict[str, Any]:
    """What ``portable-mlp info`` shows for a backend: whether it is installed (and the pip
    extra that installs it), its version, its devices and its default device and float dtype."""
    impl = backends.get(name)
    found: dict[str, Any] = {"backend": name, "installed": False, "extra": impl.extra,
                             "version": None, "devices": [], "default_device": None,
                             "default_dtype": None, "problem": None}
    try:
        impl.xp  # noqa: B018 - the import
    except BackendUnavailable as exc:
        installed = importlib.util.find_spec(impl.library) is not None  # CuPy without a GPU
        found.update(installed=installed, problem=str(exc))
        if installed:
            found["version"] = impl.version()
        return found
    except Exception as exc:  # installed, but fails on import
        found.update(installed=True, problem=f"{type(exc).__name__}: {exc}")
        return found
    found.update(installed=True, version=impl.version())
    try:
        device = impl.resolve_device(None)
        found["devices"] = [impl.device_spec(d) for d in impl.devices()]
        found["default_device"] = impl.device_spec(device)
        found["default_dtype"] = dtype_name(impl.resolve_dtype(device, None))
    except Exception as exc:  # imports, but cannot reach a device
        found["problem"] = f"{type(exc).__name__}: {exc}"
    return found


def name_of_namespace(xp: Any) -> str:
    """The backend name of an array namespace (compat wrapper or library module)."""
    return backends.of_namespace(xp).name


def backend_name(backend: Any) -> str:
    """Accept a backend name or a namespace (a module); return the name."""
    if isinstance(backend, str):
        return check_name(backend)
    if not isinstance(backend, ModuleType):
        raise TypeError(f"backend must be a name (one of {', '.join(backends.names())}) or an "
                        f"array namespace (a module such as numpy), got "
                        f"{type(backend).__name__} {backend!r}"[:300])
    return name_of_namespace(backend)


def array_backend(x: Any) -> str | None:
    """The backend name an array belongs to, or None if it is no array (host data)."""
    if isinstance(x, np.ndarray):
        return "numpy"
    impl = backends.of_array(x)
    return None if impl is None else impl.name


def masked(x: Any) -> bool:
    """Whether ``x`` is an array of a masked-array library with a masked entry."""
    impl = backends.of_array(x)
    return impl is not None and impl.has_masks and impl.masked(x)


def device_of(x: Any) -> str:
    """The spec of the device array ``x`` lives on."""
    impl = _of(x)
    return impl.device_spec(impl.device(x))


def device_spec(device: Any) -> str:
    """A picklable string naming a device object of any registered backend."""
    if isinstance(device, str):
        return device
    for impl in backends._REGISTRY.values():
        if impl.spells(device):
            return impl.device_spec(device)
    return str(device)


def ops(name: str) -> Ops:
    """The ``Ops`` of backend ``name``."""
    return backends.get(name).ops


@functools.cache
def ops_of(xp: Any) -> Ops:
    """The ``Ops`` of an array namespace (what an optimizer's ``update`` is given)."""
    return backends.of_namespace(xp).ops


def resolve_device(name: str, spec: Any) -> Any:
    """The device object of backend ``name`` for ``spec`` (None: the default device)."""
    return backends.get(name).resolve_device(spec)


def from_host(name: str, x: np.ndarray, device: Any, dtype: Any) -> Any:
    """Copy a host (NumPy) array onto the backend's device, cast to ``dtype``."""
    return backends.get(name).from_host(x, device, dtype)


def to_host(x: Any) -> np.ndarray:
    """A NumPy copy (or view) of any backend's array; host data as a NumPy array."""
    if isinstance(x, np.ndarray):
        return x
    impl = backends.of_array(x)
    return np.asarray(x) if impl is None else impl.to_host(x)


def materialize(name: str, arrays: list[Any]) -> list[Any]:
    """Bound a lazy graph: compute ``arrays`` into memory (dask); identity elsewhere."""
    return backends.get(name).materializer()(arrays)


def synchronize(name: str, arrays: Any = ()) -> None:
    """Wait until queued work producing ``arrays`` is done (for timing only)."""
    backends.get(name).synchronize(arrays)


def _of(x: Any) -> Backend:
    impl = backends.of_array(x)
    if impl is None:
        raise TypeError(f"expected an array, got {type(x).__name__}")
    return impl


@dataclass(frozen=True)
class Placement:
    """Where a model's arrays live: backend name, device spec and dtype name.

    Holds only names, so it pickles; the backend, namespace, device object and dtype
    object are resolved once and cached.
    """

    backend: str
    device: str
    dtype: str

    @classmethod
    def create(cls, backend: Any = "numpy", device: Any = None, dtype: Any = None) -> Placement:
        impl = backends.get(backend_name(backend))
        dev = impl.resolve_device(device)
        return cls(impl.name, impl.device_spec(dev), dtype_name(impl.resolve_dtype(dev, dtype)))

    @functools.cached_property
    def impl(self) -> Backend:
        """The backend (``portable_mlp.backends``) that answers for this placement."""
        return backends.get(self.backend)

    @functools.cached_property
    def xp(self) -> Any:
        return self.impl.xp

    @functools.cached_property
    def device_obj(self) -> Any:
        return self.impl.resolve_device(self.device)

    @functools.cached_property
    def dtype_obj(self) -> Any:
        return self.impl.resolve_dtype(self.device_obj, self.dtype)

    @functools.cached_property
    def ops(self) -> Ops:
        return self.impl.ops

    @functools.cached_property
    def overflow_is_fine(self) -> Callable[[], Any]:
        return self.impl.overflow_is_fine()

    @functools.cached_property
    def detached(self) -> Callable[[Any], Any]:
        """An array cut from any autograd graph it carries (torch), resolved once."""
        return self.impl.detached

    @functools.cached_property
    def quiet(self) -> Callable[[], Any]:
        return self.impl.quiet()

    @functools.cached_property
    def host_reads_are_free(self) -> bool:
        return self.impl.host_reads_are_free(self.device)

    def __getstate__(self) -> dict[str, str]:
        return {"backend": self.backend, "device": self.device, "dtype": self.dtype}

    def __setstate__(self, state: dict[str, str]) -> None:
        for key, value in state.items():
            object.__setattr__(self, key, value)

    def from_host(self, x: np.ndarray) -> Any:
        return from_host(self.backend, x, self.device_obj, self.dtype_obj)

    def indices(self, host: np.ndarray) -> Any:
        """Integer indices for ``xp.take`` (dask takes host indices best)."""
        return self.impl.indices(host, self.int_dtype, self.device_obj)

    @functools.cached_property
    def int_dtype(self) -> Any:
        info = self.xp.__array_namespace_info__()
        return info.default_dtypes(device=self.device_obj)["integral"]

    def materialize(self, arrays: list[Any]) -> list[Any]:
        """The backend's ``materialize``, once a step (dask: persisted, and on a cluster
        the lineage cut every ``CUT_LINEAGE_EVERY`` calls)."""
        return self._materialize(arrays)

    @functools.cached_property
    def _materialize(self) -> Callable[[list[Any]], list[Any]]:
        return self.impl.materializer()

    def persist_rows(self, X: Array, *others: Array | None) -> list[Array | None]:
        """The data of a fit, computed into memory once (dask): ``others`` (Y, its class
        labels, sample weights or None) cut into X's row blocks, so that each block of
        rows lives whole on one worker; the same arrays elsewhere."""
        return self.impl.persist_rows(X, list(others))

    def row_blocks(self, x: Array) -> tuple[int, ...] | None:
        """The lengths of the row blocks of a chunked (dask) array; None for arrays in one
        piece of memory, which a host permutation and ``take`` shuffle best."""
        return self.impl.row_blocks(x)

    def shuffled_blocks(self, arrays: list[Array | None], order: np.ndarray,
                        states: list[Mapping[str, Any]], kind: type) -> list[Array | None]:
        """Each array's row blocks in ``order``, each block's rows permuted where it lies
        by ``np.random.Generator(kind())`` set to the matching state of ``states``."""
        return self.impl.shuffled_blocks(arrays, order, states, kind)

    @functools.cached_property
    def guarded_step(self) -> Callable[..., Any]:
        """``Trainer``'s step function: ``steps.guarded_step``, or on dask the same step
        as one task per row block and one for the update (``portable_mlp.dask_step``)."""
        return self.impl.guarded_step()

    @functools.cached_property
    def compiles(self) -> bool:
        return self.impl.compiles

    def jit(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        return self.impl.jit(fn)

    @functools.cached_property
    def scan(self) -> Callable[..., Any]:
        return self.impl.scan()

    def read_scalars(self, arrays: list[Any]) -> list[float]:
        return self.impl.read_scalars(arrays)

    def synchronize(self, arrays: Any = ()) -> None:
        self.impl.synchronize(arrays)

    def owns(self, x: Any) -> bool:
        """Whether ``x`` is already an array of this backend on this device (a masked
        array with a masked entry never is: ``validation`` refuses it)."""
        if isinstance(x, np.ndarray):  # the common case, answered without a call
            return self.on_host
        if type(x) in self._own_types:  # an array type of this backend, seen before:
            # compare device objects (no namespace lookup, no string per call)
            if self.impl.has_masks and self.impl.masked(x):
                return False
            return self.impl.single_device or self._device_of(x) == self.device_obj
        if not self.impl.is_array(x):
            return False
        self._own_types.add(type(x))
        return self.owns(x)

    @functools.cached_property
    def on_host(self) -> bool:
        """Whether this backend's arrays are NumPy's own (the numpy backend)."""
        return self.impl.is_array(np.empty(0))

    @functools.cached_property
    def _device_of(self) -> Callable[[Any], Any]:
        return self.impl.device

    @functools.cached_property
    def _own_types(self) -> set[type]:
        """Array types known to belong to this backend (filled by ``owns``)."""
        return set()
