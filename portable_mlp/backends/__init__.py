"""The backends by name: one file per library that needs more than the standard, and the
generic backend (``base.Backend``) for any other conforming array namespace.

``register_backend`` adds a library; a namespace handed to ``backend=``, or an array of a
library not registered, is registered on first sight under its module's name.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from portable_mlp.backends import marray, ndonnx
from portable_mlp.backends.array_api_strict import StrictBackend
from portable_mlp.backends.base import Backend
from portable_mlp.backends.cupy import CupyBackend
from portable_mlp.backends.dask import DaskBackend, WorkerLostError
from portable_mlp.backends.jax import JaxBackend
from portable_mlp.backends.numpy import NumpyBackend
from portable_mlp.backends.standard import FLOAT_DTYPES, BackendUnavailable, Ops, dtype_name
from portable_mlp.backends.torch import TorchBackend

__all__ = ["BUILTIN", "FLOAT_DTYPES", "Backend", "BackendUnavailable", "Ops",
           "WorkerLostError", "dtype_name", "get", "imported", "names", "of_array", "of_namespace",
           "register_backend"]

_REGISTRY: dict[str, Backend] = {}


def register_backend(name: str | Backend, namespace: Any = None, *, library: str | None = None,
                     to_host: Callable[[Any], np.ndarray] | None = None,
                     materialize: Callable[[list[Any]], list[Any]] | None = None,
                     device_spec: Callable[[Any], str] | None = None) -> Backend:
    """Make an array library a backend under ``name`` (``backend=name`` then finds it).

    Needed only where the standard is not enough: any namespace works without it
    (``backend=<namespace>``), but a name registered here is also found in another
    process (an unpickled model), and the hooks give what a library lacks.

    Parameters
    ----------
    name : str or Backend
        The backend's name, or a ``Backend`` (a subclass with a library's own spellings),
        registered under its ``name`` as it is; the other arguments must then be left out.
    namespace : str, module or callable, optional
        The array namespace: a module name to import (default: ``name``), the namespace
        itself, or a function of no arguments that returns it (called on first use).
    library : str, optional
        The module whose import says the library is installed (default: the namespace's
        top-level package).
    to_host : callable, optional
        ``to_host(x) -> numpy.ndarray``; default: DLPack, else ``__array__``.
    materialize : callable, optional
        ``materialize(arrays) -> arrays`` computed into memory, once a training step (a
        lazy library's graph kept bounded); default: none.
    device_spec : callable, optional
        ``device_spec(device) -> str``, a device's name that survives pickling; default:
        ``str(device)``, or ``"device:<i>"`` where that string is a memory address.

    Returns
    -------
    Backend
        The registered backend; it replaces one of the same name.
    """
    if isinstance(name, Backend):
        if (namespace, library, to_host, materialize, device_spec) != (None,) * 5:
            raise TypeError("register_backend(backend) takes no other arguments")
        backend = name
    elif isinstance(name, str) and name:
        backend = Backend(name, namespace, library=library, to_host=to_host,
                          materialize=materialize, device_spec=device_spec)
    else:
        raise TypeError(f"name must be a non-empty string or a Backend, got {name!r}")
    _REGISTRY[backend.name] = backend
    return backend


BUILTIN = ("numpy", "cupy", "torch", "jax", "dask", "array_api_strict")
for _backend in (NumpyBackend(), CupyBackend(), TorchBackend(), JaxBackend(), DaskBackend(),
                 StrictBackend(), marray.MarrayBackend(), ndonnx.BACKEND):
    register_backend(_backend)


def names() -> tuple[str, ...]:
    """Every registered backend's name (the built-in ones first)."""
    return tuple(_REGISTRY)


def imported() -> list[Backend]:
    """The registered backends whose library this process has imported already (their
    thread pools exist); none is imported here."""
    return [b for b in _REGISTRY.values() if b.library in sys.modules]


def get(name: str) -> Backend:
    """The backend called ``name``: a registered one, or a module of that name that is an
    array namespace (registered then)."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name (one of {', '.join(names())}) or an array "
                        f"namespace, got {type(name).__name__}")
    found = _REGISTRY.get(name)
    if found is not None:
        return found
    try:
        module = importlib.import_module(name)
    except (ImportError, ValueError):
        module = None
    if module is None or not hasattr(module, "__array_namespace_info__"):
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(names())}, "
                         "an array namespace, or a name given to pm.register_backend")
    return register_backend(name)


def of_namespace(xp: Any) -> Backend:
    """The backend of an array namespace (a library's module or a compat wrapper); a
    conforming namespace not registered is registered under its module's name."""
    for backend in _REGISTRY.values():
        if backend.is_namespace(xp):
            return backend
    name = getattr(xp, "__name__", None)
    if not (isinstance(name, str) and hasattr(xp, "__array_namespace_info__")):
        raise TypeError(f"unsupported array namespace {xp!r}: it has no "
                        "__array_namespace_info__ (the Array API standard's)"[:300])
    try:
        importable = importlib.import_module(name) is xp
    except ImportError:
        importable = False
    # a module that imports by its name is found again in another process (unpickling)
    return register_backend(name, name if importable else xp)


def of_array(x: Any) -> Backend | None:
    """The backend of an array of any library that has ``__array_namespace__``; None for
    anything else (host data: lists, DataFrames)."""
    for backend in _REGISTRY.values():
        if backend.is_array(x):
            return backend
    get_namespace = getattr(x, "__array_namespace__", None)
    if get_namespace is None:
        return None
    try:
        return of_namespace(get_namespace())
    except TypeError:
        return None
