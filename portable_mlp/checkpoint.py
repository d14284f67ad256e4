"""Checkpoints: a model (and optionally its optimizer's state) in a safetensors file.

The file is plain safetensors: an 8-byte little-endian header length, a JSON
header naming each tensor's dtype, shape and byte range, then the raw bytes. No
pickle, so loading a file never runs code. The header's ``__metadata__`` holds
the architecture (``Piece.to_config()`` of every piece), the dtype and the
library version, so ``load`` rebuilds the model without being told what it is,
on any backend, device and dtype.

The ``safetensors`` package writes the bytes and reads the tensors. Before it sees
a file, the header is checked here, more strictly than the format asks: any file
that is not what ``save`` writes for some model raises ``ValueError`` naming the
problem (duplicate or NUL names, gaps, overlaps, sizes), having read only the
header: the rest of a file is read only once the header accounts for every byte.

Saving is atomic: the bytes go to a temporary file in the target's folder, which
is flushed, fsynced and ``os.replace``-d over the target, then the folder is
fsynced. A process killed at any moment leaves either the old or the new file
(and a temporary file, removed by the next save into that folder).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import stat
import struct
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import safetensors
import safetensors.numpy

from portable_mlp import _backend, layers, optim, validation
from portable_mlp._backend import Placement
from portable_mlp.callback_base import Callback
from portable_mlp.callbacks import check_logged, check_monitor, logged_value, sign_of
from portable_mlp.train import DivergenceError

if TYPE_CHECKING:
    from portable_mlp.model import Sequential
    from portable_mlp.train import Trainer

FORMAT = "portable_mlp"
FORMAT_VERSION = "1"
MAX_HEADER = 100 * 1024 * 1024     # bytes; a longer header is refused before it is read
MAX_NDIM = 8
MAX_TOKENS = 1_000_000  # JSON values in one header: bounds the memory a parse takes
MAX_DIM = 2**40
# safetensors dtype codes that a portable_mlp checkpoint may hold
DTYPES: dict[str, np.dtype[Any]] = {"F32": np.dtype("<f4"), "F64": np.dtype("<f8")}
CODES = {"float32": "F32", "float64": "F64"}
ALL_CODES = ("BOOL", "U8", "I8", "U16", "I16", "F16", "BF16", "U32", "I32", "F32", "U64",
             "I64", "F64", "F8_E4M3", "F8_E5M2")
METADATA_KEYS = {"format", "format_version", "portable_mlp_version", "pieces", "dtype",
                 "n_params", "optimizer"}
OPTIMIZER_KEYS = {"name", "config", "schedule", "step", "slots"}
# optimizer settings added since format 1: absent from older files, where the default holds
ADDED_KEYS = {"weight_decay"}
MAX_STEP = 2**53  # an optimizer's step count: exact as a float, far beyond any training
# temporary files of a save: ".pm-<pid>-<random>.tmp", short whatever the target's name
TEMPORARY = re.compile(r"\.pm-(\d+)-[0-9a-f]{16}\.tmp")
STALE_AFTER = 60.0  # seconds untouched before a dead process's temporary file is removed


def _version() -> str:
    from portable_mlp import __version__

    return __version__


# --- writing ----------------------------------------------------------------

def dumps(model: Sequential, optimizer: optim.Optimizer | None = None) -> bytes:
    """The checkpoint bytes of ``model`` (and ``optimizer``'s state, if given)."""
    from portable_mlp.model import Sequential

    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a portable_mlp model (Sequential), "
                        f"got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, optim.Optimizer):
        raise TypeError(f"optimizer must be a portable_mlp Optimizer or None, "
                        f"got {type(optimizer).__name__}")
    dtype = model.placement.dtype
    tensors: list[tuple[str, np.ndarray]] = []
    for i, p in enumerate(model.host_params()):
        tensors.append((f"param.{i}", p))
    metadata = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "portable_mlp_version": _version(),
        "pieces": json.dumps([piece.to_config() for piece in model.pieces]),
        "dtype": dtype, "n_params": str(len(model.params)),
    }
    if optimizer is not None and optimizer.state is not None:
        state = optimizer.state
        slots = state["slots"]
        if len(slots) != len(model.params):
            raise ValueError(f"optimizer holds state for {len(slots)} parameters, "
                             f"the model has {len(model.params)}")
        for i, ss in enumerate(slots):
            for j, s in enumerate(ss):
                tensors.append((f"optimizer.{i}.{j}", _backend.to_host(s)))
        metadata["optimizer"] = json.dumps(_optimizer_config(optimizer, state))
    elif optimizer is not None:
        metadata["optimizer"] = json.dumps(_optimizer_config(optimizer, None))
    for name, arr in tensors:
        if not np.isfinite(arr).all():
            raise ValueError(f"{name} holds NaN or inf: refusing to save a diverged model "
                             "(the previous checkpoint is kept)")
    return encode(tensors, metadata, dtype)


def _optimizer_config(opt: optim.Optimizer, state: dict[str, Any] | None) -> dict[str, Any]:
    name = next((k for k, cls in optim.OPTIMIZERS.items() if type(opt) is cls), None)
    if name is None:
        raise TypeError(f"cannot save the state of {type(opt).__name__}: only "
                        f"{', '.join(optim.OPTIMIZERS)} are known to checkpoints")
    config = {k: v for k, v in vars(opt).items()
              if k not in ("state", "schedule") and isinstance(v, (bool, int, float))}
    out: dict[str, Any] = {"name": name, "config": config, "schedule": repr(opt.schedule)}
    if state is not None:
        out["step"] = int(state["step"])
        out["slots"] = [len(ss) for ss in state["slots"]]
    return out


def encode(tensors: Sequence[tuple[str, np.ndarray]], metadata: dict[str, str],
           dtype: str) -> bytes:
    """safetensors bytes of ``tensors`` (cast to ``dtype``) with ``metadata``."""
    np_dtype = DTYPES[CODES[dtype]]
    arrays = {name: np.ascontiguousarray(arr, dtype=np_dtype) for name, arr in tensors}
    if len(arrays) != len(tensors):
        raise ValueError("tensor names must be unique")
    return _sorted_metadata(safetensors.numpy.save(arrays, metadata=metadata))


def _sorted_metadata(data: bytes) -> bytes:
    """``data`` with the header's ``__metadata__`` keys in sorted order. safetensors
    writes them in a random order (a Rust hash map), so that the same checkpoint would
    be different bytes on every save; the tensors' offsets do not depend on the header,
    which is padded with spaces to a multiple of 8 bytes, as safetensors pads it."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    if "__metadata__" not in header:
        return data
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


def save(model: Sequential, path: str | os.PathLike[str],
         optimizer: optim.Optimizer | None = None) -> None:
    """Write ``model`` (and ``optimizer``'s state, to resume training) to ``path``, atomically.

    A model whose parameters are not finite is refused (ValueError) and the file at
    ``path`` is left untouched. A new file gets the permissions the umask gives; a
    file replaced keeps its permissions.

    Parameters
    ----------
    model : Sequential
        The model to write (any backend; its host copy is written).
    path : str or os.PathLike
        The file; its folder must exist.
    optimizer : Optimizer or None, default None
        Also write this optimizer's state (``pm.load_optimizer`` restores it).
    """
    target = check_target(path)
    data = dumps(model, optimizer)
    write_atomic(target, data)


def check_target(path: Any) -> str:
    """``path`` as a str, if a file can be saved there: its folder exists and it is not
    a folder (FileNotFoundError, IsADirectoryError otherwise: nothing is written)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    target = os.fspath(path)
    if isinstance(target, bytes):
        raise TypeError("path must be a str or os.PathLike of str, got bytes")
    folder = os.path.dirname(os.path.abspath(target))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot save to {target!r}: the folder {folder!r} does not "
                                "exist")
    if os.path.isdir(target):
        raise IsADirectoryError(f"cannot save to {target!r}: it is a folder")
    return target


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one.

    The temporary file's name does not grow with the target's (any name the file
    system takes can be saved); stale ones that a killed save left in the folder are
    removed first. A file replaced keeps its permission bits.
    """
    path = check_target(path)
    folder = os.path.dirname(os.path.abspath(path))
    _remove_stale_temporaries(folder)
    tmp = os.path.join(folder, f".pm-{os.getpid()}-{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)  # the umask applies, as for any new file
    try:
        with os.fdopen(fd, "wb") as f:
            with contextlib.suppress(FileNotFoundError):
                mode = os.stat(path).st_mode
                if stat.S_ISREG(mode) and hasattr(os, "fchmod"):
                    os.fchmod(f.fileno(), stat.S_IMODE(mode))
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_folder(folder)


def _remove_stale_temporaries(folder: str) -> None:
    """Remove our temporary files in ``folder`` whose process is gone (killed mid-save)
    and that nobody has written to for ``STALE_AFTER`` seconds."""
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            found = TEMPORARY.fullmatch(entry.name)
            if found is None or _alive(int(found.group(1))):
                continue
            with contextlib.suppress(OSError):
                if time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_AFTER:
                    os.unlink(entry.path)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True  # it exists (another user's), or we cannot tell: keep its file
    return True


def _fsync_folder(folder: str) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # Windows: folders cannot be opened for fsync
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- reading ----------------------------------------------------------------

def _bad(what: str) -> ValueError:
    return ValueError(f"not a valid portable_mlp checkpoint: {what}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _bad(f"the header names {key!r} twice")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _bad(f"the header holds the non-JSON constant {name}")


def _json(text: str, what: str) -> Any:
    # JSON values cost far more memory than their bytes: bound their number first
    tokens = text.count(",") + text.count(":") + text.count("[") + text.count("{")
    if tokens > MAX_TOKENS:
        raise _bad(f"{what} holds over {MAX_TOKENS} JSON values")
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        if str(exc).startswith("not a valid"):
            raise
        raise _bad(f"{what} is not valid JSON ({exc})") from None
    except RecursionError:
        raise _bad(f"{what} is nested too deeply") from None


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(f"{what} must be a non-negative integer, got {value!r}"[:300])
    return value


Span = tuple[int, int, str, str, list[int]]  # begin, end, name, dtype code, shape


def parse(raw_data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Strictly check safetensors bytes, then read them into host arrays; return those
    and the metadata."""
    if not isinstance(raw_data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(raw_data).__name__}")
    data = memoryview(raw_data).cast("B")
    n = _header_length(data[:8], len(data))
    spans, metadata = _header(bytes(data[8:8 + n]), len(data) - 8 - n)
    return _tensors(data, spans), metadata


def _header_length(first: bytes | memoryview, size: int) -> int:
    """The header length that the first 8 bytes of a ``size``-byte file give, checked."""
    if size < 8:
        raise _bad(f"the file is {size} bytes long, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", first)
    if n > MAX_HEADER:
        raise _bad(f"the header length {n} is over the limit of {MAX_HEADER} bytes")
    if 8 + n > size:
        raise _bad(f"the header length {n} runs past the end of the file ({size} bytes): "
                   "truncated?")
    return int(n)


def _header(raw: bytes, body_size: int) -> tuple[list[Span], dict[str, str]]:
    """The tensors' spans (sorted by offset) and the metadata of a JSON header, checked
    to describe exactly ``body_size`` bytes of float tensors."""
    if not raw.startswith(b"{"):
        raise _bad("the header does not start with '{'")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"the header is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    header = _json(text, "the header")
    if not isinstance(header, dict):
        raise _bad("the header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise _bad("__metadata__ is missing or not a map of strings to strings")
    spans = sorted(_span(name, info) for name, info in header.items())
    position = 0
    for begin, end, name, _, _ in spans:
        if begin != position:
            kind = "a gap before" if begin > position else "an overlap at"
            raise _bad(f"{kind} tensor {name!r} (offset {begin}, expected {position})")
        position = end
    if position != body_size:
        raise _bad(f"the data holds {body_size} bytes, the tensors describe {position} "
                   f"({'trailing bytes' if position < body_size else 'truncated'})")
    return spans, metadata


def _span(name: str, info: Any) -> Span:
    """One tensor's header entry, checked: where its bytes are, its dtype and shape."""
    if not name or "\x00" in name:
        raise _bad(f"tensor name {name!r} is empty or holds a NUL byte")
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise _bad(f"tensor {name!r} must have exactly dtype, shape and data_offsets")
    code = info["dtype"]
    if not isinstance(code, str) or code not in DTYPES:
        known = "known to safetensors but " if code in ALL_CODES else ""
        raise _bad(f"tensor {name!r} has dtype {code!r}, {known}not one of "
                   f"{', '.join(DTYPES)}"[:300])
    shape, offsets = info["shape"], info["data_offsets"]
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise _bad(f"tensor {name!r}: shape must be a list of at most {MAX_NDIM} sizes")
    dims = [_int(d, f"tensor {name!r}: a shape entry") for d in shape]
    if any(d > MAX_DIM for d in dims):
        raise _bad(f"tensor {name!r}: a shape entry is over {MAX_DIM}")
    if not isinstance(offsets, list) or len(offsets) != 2:
        raise _bad(f"tensor {name!r}: data_offsets must be [begin, end]")
    begin, end = (_int(o, f"tensor {name!r}: an offset") for o in offsets)
    if end < begin:
        raise _bad(f"tensor {name!r}: data_offsets end {end} is before begin {begin}")
    expected = math.prod(dims) * DTYPES[code].itemsize
    if end - begin != expected:
        raise _bad(f"tensor {name!r}: shape {dims} of {code} needs {expected} bytes, "
                   f"its data_offsets span {end - begin}")
    return begin, end, name, code, dims


def _tensors(data: memoryview, spans: list[Span]) -> dict[str, np.ndarray]:
    """The tensors of checked bytes, read by the safetensors package (writable copies)."""
    try:
        loaded = safetensors.numpy.load(bytes(data))
    except safetensors.SafetensorError as exc:  # our checks are stricter: not expected
        raise _bad(f"safetensors cannot read it ({exc})"[:300]) from None
    arrays = {}
    for _, _, name, code, dims in spans:
        arr = loaded.get(name)
        if arr is None or arr.dtype != DTYPES[code] or list(arr.shape) != dims:
            raise _bad(f"safetensors reads tensor {name!r} otherwise than its header says")
        arrays[name] = np.array(arr)  # its arrays are read-only views
    return arrays


def _read(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the regular file at ``path``, read only once its header accounts for
    all of them: a huge, sparse or hostile file is refused after its first bytes, and a
    FIFO or a device without blocking on it."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    # O_NONBLOCK: opening a FIFO does not wait for a writer (regular files ignore it)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise ValueError(f"{os.fspath(path)!r} is not a regular file (a folder, FIFO, "
                         "socket or device): refusing to read it as a checkpoint")
    with os.fdopen(fd, "rb") as f:
        size = info.st_size
        first = f.read(8)
        n = _header_length(first, max(size, len(first)))
        raw = f.read(n)
        if len(raw) != n:
            raise _bad(f"the file changed size while it was read ({size} bytes before)")
        _header(raw, size - 8 - n)
        body = f.read(size - 8 - n + 1)
    data = first + raw + body
    if len(data) != size:
        raise _bad(f"the file changed size while it was read ({size} -> {len(data)} bytes)")
    return data


class _Checkpoint:
    """A parsed, fully checked checkpoint: pieces, host params, optimizer record."""

    def __init__(self, data: bytes) -> None:
        arrays, meta = parse(data)
        extra = set(meta) - METADATA_KEYS
        if meta.get("format") != FORMAT:
            raise _bad(f"__metadata__ 'format' is {meta.get('format')!r}, expected {FORMAT!r}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise _bad(f"format_version {meta.get('format_version')!r} is not supported "
                       f"(this library reads {FORMAT_VERSION!r})")
        if extra:
            raise _bad(f"unknown metadata keys {sorted(extra)}"[:300])
        for key in ("portable_mlp_version", "pieces", "dtype", "n_params"):
            if key not in meta:
                raise _bad(f"__metadata__ lacks {key!r}")
        self.version = meta["portable_mlp_version"]
        self.dtype = meta["dtype"]
        if self.dtype not in CODES:
            raise _bad(f"metadata dtype {self.dtype!r} is not one of {', '.join(CODES)}")
        self.pieces = self._pieces(meta["pieces"])
        shapes = _param_shapes(self.pieces)
        if meta["n_params"] != str(len(shapes)):
            raise _bad(f"n_params is {meta['n_params']!r}, the architecture has {len(shapes)}")
        expected = {f"param.{i}": shape for i, shape in enumerate(shapes)}
        self.optimizer = None
        if "optimizer" in meta:
            self.optimizer = self._optimizer(meta["optimizer"], shapes)
            expected.update(self.optimizer.pop("tensors"))
        missing, unknown = set(expected) - set(arrays), set(arrays) - set(expected)
        if missing or unknown:
            raise _bad(f"tensors missing: {sorted(missing)[:5]}, unexpected: "
                       f"{sorted(unknown)[:5]}"[:300])
        for name, shape in expected.items():
            arr = arrays[name]
            if arr.shape != shape:
                raise _bad(f"tensor {name!r} has shape {arr.shape}, the architecture needs {shape}")
            if arr.dtype != DTYPES[CODES[self.dtype]]:
                raise _bad(f"tensor {name!r} is {arr.dtype}, the metadata says {self.dtype}")
            if not np.isfinite(arr).all():
                raise _bad(f"tensor {name!r} holds NaN or inf")
        self.params = [arrays[f"param.{i}"] for i in range(len(shapes))]
        if self.optimizer is not None and "step" in self.optimizer:
            self.optimizer["slots"] = [
                [arrays[f"optimizer.{i}.{j}"] for j in range(count)]
                for i, count in enumerate(self.optimizer["slots"])]

    @staticmethod
    def _pieces(text: str) -> list[layers.Piece]:
        configs = _json(text, "metadata 'pieces'")
        if not isinstance(configs, list) or not configs:
            raise _bad("metadata 'pieces' is not a non-empty list of piece descriptions")
        try:
            pieces = [layers.from_config(c) for c in configs]
            return validation.check_pieces(pieces)
        except (ValueError, TypeError) as exc:
            raise _bad(f"metadata 'pieces' does not describe a model ({exc})"[:400]) from None

    @staticmethod
    def _optimizer(text: str, shapes: list[tuple[int, ...]]) -> dict[str, Any]:
        record = _json(text, "metadata 'optimizer'")
        name = record.get("name") if isinstance(record, dict) else None
        if not isinstance(name, str) or name not in optim.OPTIMIZERS:
            raise _bad(f"metadata 'optimizer' must name one of {', '.join(optim.OPTIMIZERS)}")
        extra = set(record) - OPTIMIZER_KEYS
        if extra:
            raise _bad(f"metadata 'optimizer' has unknown keys {sorted(extra)}"[:300])
        if not isinstance(record.get("schedule"), str):
            raise _bad("metadata 'optimizer' lacks its schedule's description (a string)")
        opt = _saved_optimizer(name, record.get("config"))
        tensors = {}
        if "step" in record or "slots" in record:
            if _int(record.get("step"), "optimizer step") > MAX_STEP:
                raise _bad(f"optimizer step {record['step']} is over {MAX_STEP}")
            slots = record.get("slots")
            if not isinstance(slots, list) or len(slots) != len(shapes):
                raise _bad("optimizer slots must list a count per parameter")
            for count in slots:
                _int(count, "optimizer slot count")
            expected = validation.slot_counts(opt, len(shapes))
            if slots != expected:
                raise _bad(f"optimizer slot counts {slots} do not match {opt!r}, which keeps "
                           f"{expected}"[:300])
            for i, (count, shape) in enumerate(zip(slots, shapes, strict=True)):
                tensors.update({f"optimizer.{i}.{j}": shape for j in range(count)})
        record["tensors"] = tensors
        return record


def _saved_optimizer(name: str, config: Any) -> optim.Optimizer:
    """The optimizer that a saved config describes, checked as strictly as a tensor:
    exactly the keys ``save`` writes, each of the JSON type it writes (a bool for a bool,
    a number with a fraction for a float), and in the range the optimizer accepts."""
    cls = optim.OPTIMIZERS[name]
    expected = _optimizer_config(cls(lr=1.0), None)["config"]  # its keys and types
    if not isinstance(config, dict):
        raise _bad("metadata 'optimizer' lacks its config")
    if not set(expected) - ADDED_KEYS <= set(config) <= set(expected):
        raise _bad(f"optimizer config has the keys {sorted(config)}, {name} saves "
                   f"{sorted(expected)}"[:300])
    for key, value in config.items():
        if type(value) is not type(expected[key]):
            raise _bad(f"optimizer config {key!r} must be a {type(expected[key]).__name__}, "
                       f"got {value!r}"[:300])
    try:
        return cls(**config)
    except (ValueError, TypeError) as exc:
        raise _bad(f"optimizer config {config!r} is not valid ({exc})"[:400]) from None


def _param_shapes(pieces: list[layers.Piece]) -> list[tuple[int, ...]]:
    """The parameter shapes of ``pieces``, computed without allocating them."""
    return [shape for piece in pieces for shape in piece.param_shapes()]


def loads(data: bytes, backend: Any = "numpy", device: Any = None,
          dtype: Any = None) -> Sequential:
    """The model in checkpoint bytes ``data`` (see ``load``)."""
    placement = Placement.create(backend, device, dtype)
    ckpt = _Checkpoint(data)
    return _build(ckpt, backend, device, dtype, placement)


def _build(ckpt: _Checkpoint, backend: Any, device: Any, dtype: Any,
           placement: Placement) -> Sequential:
    from portable_mlp.model import Sequential

    if dtype is None:  # the saved dtype, unless asked otherwise
        placement = Placement.create(backend, device, ckpt.dtype)
    return Sequential._from_host(ckpt.pieces, ckpt.params, placement,
                                 f"pm.load(..., dtype={placement.dtype!r})")


def load(path: str | os.PathLike[str], backend: Any = "numpy", device: Any = None,
         dtype: Any = None) -> Sequential:
    """Rebuild the model saved at ``path`` on ``backend``/``device`` (dtype None: the saved one).

    Raises ValueError naming the problem if the file is not a valid checkpoint.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``pm.save``.
    backend : str, default "numpy"
        The backend to rebuild the model on.
    device : str or None, default None
        The device on that backend; None: its default.
    dtype : str or None, default None
        The float dtype; None: the saved one (refused where the backend lacks it, as
        float64 on JAX without x64).
    """
    placement = Placement.create(backend, device, dtype)  # bad names fail before any I/O
    ckpt = _Checkpoint(_read(path))
    return _build(ckpt, backend, device, dtype, placement)


def load_optimizer(path: str | os.PathLike[str], model: Sequential,
                   optimizer: optim.Optimizer | None = None) -> optim.Optimizer:
    """The optimizer saved with the checkpoint at ``path``, its state placed on ``model``.

    Pass ``optimizer`` (of the saved kind) to keep its hyper-parameters and schedule
    (schedules are not stored); its state is replaced. Otherwise one is rebuilt from
    the saved hyper-parameters with a constant schedule.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``pm.save(model, path, optimizer=...)``.
    model : Sequential
        The model the state is placed on (the same architecture as the saved one).
    optimizer : Optimizer or None, default None
        An optimizer of the saved kind whose hyper-parameters and schedule are kept; None
        rebuilds one from the saved hyper-parameters, with a constant schedule.
    """
    from portable_mlp.model import Sequential

    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a portable_mlp model, got {type(model).__name__}")
    if optimizer is not None and not isinstance(optimizer, optim.Optimizer):
        raise TypeError(f"optimizer must be an Optimizer or None, got {type(optimizer).__name__}")
    ckpt = _Checkpoint(_read(path))
    record = ckpt.optimizer
    if record is None:
        raise ValueError(f"{os.fspath(path)!r} holds no optimizer state; "
                         "save with pm.save(model, path, optimizer=...)")
    cls = optim.OPTIMIZERS[record["name"]]
    if optimizer is not None and type(optimizer) is not cls:
        raise TypeError(f"the checkpoint holds {cls.__name__} state, "
                        f"got a {type(optimizer).__name__}")
    if [p.shape for p in ckpt.params] != [tuple(p.shape) for p in model.params] or \
            ckpt.pieces != model.pieces:
        raise ValueError("the checkpoint's optimizer state is for another architecture "
                         "than this model's")
    saved = cls(**record["config"])
    opt = optimizer if optimizer is not None else saved
    if "step" in record:
        counts = [len(ss) for ss in record["slots"]]
        wanted = validation.slot_counts(opt, len(model.params))
        if counts != wanted:
            raise ValueError(f"the checkpoint holds the state of {saved!r} ({counts} state "
                             f"arrays per parameter), but {opt!r} keeps {wanted}: pass an "
                             "optimizer with the saved settings, or none")
    state = None
    if "step" in record:
        place = model.placement
        _check_step_fits(record["step"], place)
        slots = [[place.from_host(validation.cast_finite(s, place.dtype,
                                                         f"optimizer state {i}.{j}"))
                  for j, s in enumerate(ss)] for i, ss in enumerate(record["slots"])]
        state = {"step": record["step"], "slots": slots}
    opt.state = state
    return opt


def _check_step_fits(step: int, place: Placement) -> None:
    """Refuse a step count beyond the model's integers (JAX without x64: int32), which
    compiled training could not take."""
    limit = int(np.iinfo(_backend.dtype_name(place.int_dtype)).max)
    if step > limit:
        raise ValueError(f"the checkpoint's optimizer step {step} is over {limit}, the "
                         f"largest {_backend.dtype_name(place.int_dtype)} of this "
                         f"{place.backend} model")


# --- the callback -----------------------------------------------------------

class Checkpoint(Callback):
    """Save the model (and the optimizer's state) to ``path`` during ``fit``.

    What the file holds when ``fit`` returns does not depend on the order of the callbacks:

    - ``save_best_only=False`` (the default): the model as ``fit`` returns it. It is saved
      every ``every`` epochs and at the end, after any ``EarlyStopping`` has restored its
      best epoch (callbacks that change the model end first).
    - ``save_best_only=True``: the model of the epoch with the best ``monitor`` value,
      saved at that epoch and never at the end (the best epoch's optimizer state with it).

    A diverged model is never saved: an epoch whose logged loss (or any logged value) is
    not finite raises ``DivergenceError`` instead, so that ``exc.history`` ends with the
    last good epoch and the file keeps the last good model. Where the file cannot be
    written (no such folder, an optimizer that checkpoints do not know) ``fit`` fails at
    its start, before any step.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (safetensors, replaced atomically at each save).
    every : int, default 1
        Save every ``every`` epochs (``save_best_only=False``).
    save_optimizer : bool, default True
        Save the optimizer's state too, so that ``pm.load_optimizer`` resumes training.
    save_best_only : bool, default False
        Save only at an epoch that improves ``monitor``, and not at the end.
    monitor : str, default "loss"
        What ``save_best_only`` watches: ``"loss"``, ``"accuracy"``, ``"val_loss"`` or
        ``"val_accuracy"``.
    mode : {"auto", "min", "max"}, default "auto"
        Whether lower or higher ``monitor`` is better; ``"auto"``: higher for
        accuracies.

    Attributes
    ----------
    saved : int
        How many times the file was written in this fit.
    best : float
        The best ``monitor`` value saved (``save_best_only``).
    best_epoch : int
        The epoch (from 1) whose model the file holds with ``save_best_only``; 0 before
        one is saved.
    """

    def __init__(self, path: str | os.PathLike[str], every: int = 1,
                 save_optimizer: bool = True, save_best_only: bool = False,
                 monitor: str = "loss", mode: str = "auto") -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self.path = os.fspath(path)
        self.every = validation.positive("every", every, integer=True)
        self.save_optimizer = bool(save_optimizer)
        self.save_best_only = bool(save_best_only)
        self.monitor = check_monitor("Checkpoint", monitor)
        self.sign = sign_of(monitor, mode)
        self.saved = 0
        self.best, self.best_epoch = self.sign * math.inf, 0
        self._last_loss: float | None = None

    def on_train_begin(self, trainer: Trainer) -> None:
        """Check that the file can be written (and the monitored value is logged)."""
        check_target(self.path)
        if self.save_optimizer:
            _optimizer_config(trainer.optimizer, None)  # TypeError for an unknown kind
        if self.save_best_only:
            check_logged("Checkpoint", self.monitor, trainer)
        self._last_loss = None
        self.saved, self.best, self.best_epoch = 0, self.sign * math.inf, 0

    def _save(self, trainer: Trainer) -> None:
        trainer.check_saveable()  # raises DivergenceError before a diverged save
        save(trainer.model, self.path, trainer.optimizer if self.save_optimizer else None)
        self.saved += 1

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        """Save every ``every`` epochs, or at a new best (``save_best_only``)."""
        bad = {key: value for key, value in logs.items() if not math.isfinite(value)}
        if bad:
            trainer.check_divergence()  # a step skipped as non-finite: the exact step
            key, value = next(iter(bad.items()))
            last = "none yet" if self._last_loss is None else f"{self._last_loss:.6g}"
            raise DivergenceError(trainer.steps, self._last_loss, detail=(
                f"the model it made logs {key} = {value} (last finite loss: {last}); "
                f"{self.path!r} keeps the last epoch saved, whose logs were finite"))
        self._last_loss = logs.get("loss", self._last_loss)
        if self.save_best_only:
            value = logged_value("Checkpoint", self.monitor, logs)
            if self.sign * value < self.sign * self.best:
                self._save(trainer)
                self.best, self.best_epoch = value, epoch + 1
        elif (epoch + 1) % self.every == 0:
            self._save(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        """Save the model as ``fit`` returns it (not with ``save_best_only``)."""
        if not self.save_best_only:
            self._save(trainer)
