"""The generic backend: what the Array API standard alone says, for any conforming library.

A library's own file (``portable_mlp/backends/<name>.py``) subclasses ``Backend`` only
where the library has a faster spelling of the standard's math, or needs one (a host
transfer, a device, a lazy graph); ``register_backend`` gives a library the same through
hooks, without a file.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable
from typing import Any

import array_api_compat as compat
import numpy as np

from portable_mlp import _install
from portable_mlp.backends.execution import Execution
from portable_mlp.backends.standard import (
    BackendUnavailable,
    Ops,
    dtype_name,
    pick_device,
    pick_dtype,
    standard_ops,
)

Array = Any


class Backend(Execution):
    """A backend that is the standard: any library whose arrays have ``__array_namespace__``.

    Parameters
    ----------
    name : str
        The name that models, checkpoints and pickles keep (``backend=name``).
    namespace : str, module or callable, optional
        The namespace: a module to import by that name (default: ``name``), the namespace
        itself, or a function of no arguments that returns it (called on first use).
    library : str, optional
        The module whose import says that the library is installed (default: the first
        part of the namespace's module name).
    extra : str, optional
        The pip extra of portable_mlp that installs the library (for the install hint).
    to_host : callable, optional
        ``to_host(x) -> numpy.ndarray``, where DLPack and ``__array__`` cannot move an array
        to the host. Default: ``numpy.from_dlpack``, else ``numpy.asarray``.
    materialize : callable, optional
        ``materialize(arrays) -> arrays``, computed into memory: how a lazy library keeps
        its graph bounded, called once a training step. Default: the arrays as they are.
    device_spec : callable, optional
        ``device_spec(device) -> str``, a name for a device object that survives pickling.
        Default: ``str(device)``, or the device's position in ``devices()`` where that
        string is an object's address.
    """

    extra: str | None = None
    single_device = False  # arrays on one device only: ``owns`` compares no devices
    # its arrays are writable memory that torch.distributed sums in place (fit_spmd's ranks)
    sums_in_place = False

    def __init__(self, name: str, namespace: Any = None, *, library: str | None = None,
                 extra: str | None = None, to_host: Callable[[Any], np.ndarray] | None = None,
                 materialize: Callable[[list[Any]], list[Any]] | None = None,
                 device_spec: Callable[[Any], str] | None = None) -> None:
        self.name = name
        self._source = name if namespace is None else namespace
        module = self._source if isinstance(self._source, str) else getattr(
            self._source, "__name__", name)
        self.library = library or module.split(".")[0]
        self.extra = extra if extra is not None else self.extra
        self._to_host_hook, self._materialize_hook = to_host, materialize
        self._device_spec_hook = device_spec

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # --- the namespace ---------------------------------------------------------
    @functools.cached_property
    def xp(self) -> Any:
        """The namespace (imported on first use; ``BackendUnavailable`` if it cannot be)."""
        try:
            importlib.import_module(self.library)
            return self._load()
        except BackendUnavailable:
            raise
        except ImportError as exc:
            raise BackendUnavailable(f"backend {self.name!r} is not installed ({exc}); "
                                     f"try: {self.install_hint()}") from exc

    def _load(self) -> Any:
        source = self._source
        if isinstance(source, str):
            return importlib.import_module(source)
        if callable(source) and not hasattr(source, "__array_namespace_info__"):
            return source()
        return source

    def install_hint(self) -> str:
        """The pip command that installs the library."""
        if self.extra is None:
            return f"pip install {self.library}"
        return _install.pip_install(*self.extra.split(" or "))

    def is_namespace(self, xp: Any) -> bool:
        """Whether ``xp`` is this backend's namespace (without importing the library)."""
        if "xp" in self.__dict__:
            return xp is self.__dict__["xp"]
        return isinstance(self._source, str) and getattr(xp, "__name__", None) == self._source

    def is_array(self, x: Any) -> bool:
        """Whether ``x`` is an array of this backend (its ``__array_namespace__``)."""
        get = getattr(x, "__array_namespace__", None)
        return get is not None and self.is_namespace(get())

    def version(self) -> str:
        return str(getattr(importlib.import_module(self.library), "__version__", "unknown"))

    @functools.cached_property
    def ops(self) -> Ops:
        return standard_ops(self.xp)

    # --- devices ---------------------------------------------------------------
    def devices(self) -> list[Any]:
        """Every device the library offers (None, a library's "default", left out)."""
        return [d for d in self.xp.__array_namespace_info__().devices() if d is not None]

    def default_device(self) -> Any:
        default = self.xp.__array_namespace_info__().default_device()
        # None ("the default", JAX): name the device arrays land on, so that arrays placed
        # there are recognised as the model's (Placement.owns compares specs)
        return default if default is not None else self.device(self.xp.zeros(0))

    @functools.cached_property
    def device(self) -> Callable[[Array], Any]:
        """The function giving an array's device object (array-api-compat's, which reads
        the standard's ``.device`` where there is no other spelling)."""
        return compat.device

    def spells(self, device: Any) -> bool:
        """Whether ``device`` is a device object of this library."""
        return type(device).__module__.split(".")[0] == self.library

    def device_spec(self, device: Any) -> str:
        """A picklable string naming a device object of this backend."""
        if isinstance(device, str):
            return device
        if self._device_spec_hook is not None:
            return self._device_spec_hook(device)
        text = str(device)
        if " at 0x" not in text:
            return text
        found = [i for i, d in enumerate(self.devices()) if d is device or d == device]
        return f"device:{found[0]}" if found else text

    def resolve_device(self, spec: Any) -> Any:
        """The device object for ``spec`` (None: the default device)."""
        if spec is None:
            return self.default_device()
        return pick_device(self.name, self.device_spec(spec), self.devices(), self.device_spec)

    # --- dtypes ----------------------------------------------------------------
    dtype_hint = ""  # what to do when float64 is missing

    def resolve_dtype(self, device: Any, dtype: Any) -> Any:
        """The floating dtype object to use; honour the request or refuse it clearly."""
        info = self.xp.__array_namespace_info__()
        if dtype is None:
            return info.default_dtypes(device=device)["real floating"]
        available = info.dtypes(device=device, kind="real floating")
        where = f"backend {self.name!r}, device {self.device_spec(device)!r}"
        return pick_dtype(dtype_name(dtype), available, where, self.dtype_hint)

    # --- data movement -----------------------------------------------------------
    def from_host(self, x: np.ndarray, device: Any, dtype: Any) -> Array:
        """A copy of a host (NumPy) array on ``device``, cast to ``dtype``."""
        return self.xp.asarray(x, dtype=dtype, device=device)

    def indices(self, host: np.ndarray, dtype: Any, device: Any) -> Array:
        """Host integer indices as an array for ``xp.take``."""
        return self.xp.asarray(host, dtype=dtype, device=device)

    def to_host(self, x: Array) -> np.ndarray:
        """A NumPy copy (or view) of an array: the registered hook, else DLPack, else
        ``__array__``; an array that neither gives is refused."""
        if self._to_host_hook is not None:
            return self._to_host_hook(x)
        if hasattr(x, "__dlpack__"):
            with contextlib.suppress(BufferError, TypeError, RuntimeError):
                return np.from_dlpack(x)
        host = np.asarray(x) if hasattr(x, "__array__") else None
        if host is None or host.dtype == object:
            raise TypeError(f"an array of backend {self.name!r} ({type(x).__name__}) gives its "
                            "values neither through DLPack nor __array__; register a host "
                            "transfer: pm.register_backend(name, ..., to_host=...)")
        return host

    def detached(self, x: Array) -> Array:
        """``x`` cut from any autograd graph it carries (the identity: none here)."""
        return x

    has_masks = False  # arrays may have masked entries (``masked`` answers)

    def masked(self, x: Array) -> bool:
        """Whether an array of this library has a masked entry."""
        return False
