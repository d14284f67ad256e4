"""Checkpoints against hostile files and file-system corners (issue 13, items 13-17;
issue 15, item 9)."""

from __future__ import annotations

import json
import os
import signal
import stat
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import checkpoint


def _trained(opt):
    X, y = pm.datasets.xor(n=40, seed=0)
    model = pm.MLP([2, 3, 2], seed=1)
    pm.Trainer(model, optimizer=opt).fit(X, pm.one_hot(y, 2), epochs=3, progress=False)
    return model, opt


def _parts(data):
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _join(header, body):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


# --- 13. types substituted into every field give ValueError ---------------------------

SUBSTITUTES = [[], ["F64"], {}, {"a": 1}, None, 3, 2.5, True, "x"]


def _fields(node, path=()):
    """Every path into a JSON value (its own and its children's)."""
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _fields(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _fields(value, (*path, i))


def _substituted(data):
    """Every file made by putting one substitute into one field of the header, or of the
    JSON held in a metadata string (pieces, optimizer)."""
    header, body = _parts(data)
    for path in list(_fields(header))[1:]:
        for value in SUBSTITUTES:
            copy = json.loads(json.dumps(header))
            node = copy
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
            yield _join(copy, body)
    for key in ("pieces", "optimizer"):
        inner = json.loads(header["__metadata__"][key])
        for path in _fields(inner):
            for value in SUBSTITUTES:
                copy, meta = json.loads(json.dumps(header)), json.loads(json.dumps(inner))
                if path:
                    node = meta
                    for step in path[:-1]:
                        node = node[step]
                    node[path[-1]] = value
                else:
                    meta = value
                copy["__metadata__"][key] = json.dumps(meta)
                yield _join(copy, body)


def test_every_type_substituted_into_every_field_loads_or_raises_value_error():
    model, opt = _trained(pm.SGD(lr=0.1, momentum=0.9))
    data = checkpoint.dumps(model, opt)
    outcomes = {"loaded": 0, "ValueError": 0}
    for forged in _substituted(data):
        try:
            checkpoint.loads(forged)
            outcomes["loaded"] += 1
        except ValueError:
            outcomes["ValueError"] += 1
    assert outcomes["ValueError"] > 300  # the substitutions reached the checks


@pytest.mark.parametrize("where, value", [(("param.0", "dtype"), ["F64"]),
                                          (("param.0", "dtype"), {"F64": 1})])
def test_a_tensor_dtype_of_the_wrong_type_is_a_value_error(where, value):
    model, opt = _trained(pm.SGD(lr=0.1))
    header, body = _parts(checkpoint.dumps(model, opt))
    header[where[0]][where[1]] = value
    with pytest.raises(ValueError, match="has dtype"):
        checkpoint.loads(_join(header, body))


@pytest.mark.parametrize("name", [["sgd"], {"sgd": 1}])
def test_an_optimizer_name_of_the_wrong_type_is_a_value_error(name):
    model, opt = _trained(pm.SGD(lr=0.1))
    header, body = _parts(checkpoint.dumps(model, opt))
    record = json.loads(header["__metadata__"]["optimizer"])
    record["name"] = name
    header["__metadata__"]["optimizer"] = json.dumps(record)
    with pytest.raises(ValueError, match="must name one of"):
        checkpoint.loads(_join(header, body))


def _forge_record(data, edit):
    """The file with its optimizer record changed by ``edit(record)``."""
    header, body = _parts(data)
    record = json.loads(header["__metadata__"]["optimizer"])
    edit(record)
    header["__metadata__"]["optimizer"] = json.dumps(record)
    return _join(header, body)


HOSTILE_RECORDS = {
    "nesterov 'no'": lambda r: r["config"].update(nesterov="no"),
    "nesterov 1": lambda r: r["config"].update(nesterov=1),
    "momentum true": lambda r: r["config"].update(momentum=True),
    "lr as a string": lambda r: r["config"].update(lr="0.1"),
    "a config key missing": lambda r: r["config"].pop("momentum"),
    "an extra config key": lambda r: r["config"].update(dampening=0.5),
    "schedule 123": lambda r: r.update(schedule=123),
    "no schedule": lambda r: r.pop("schedule"),
    "step 2**63": lambda r: r.update(step=2**63),
    "step 2.0": lambda r: r.update(step=2.0),
}


@pytest.mark.parametrize("edit", HOSTILE_RECORDS.values(), ids=HOSTILE_RECORDS)
def test_a_hostile_optimizer_record_is_a_value_error(tmp_path, edit):
    """Issue 20, item 4: each field of the optimizer record is checked for its type and
    range, as the tensors are (nesterov 'no' loaded as True, step 2**63 was taken)."""
    model, opt = _trained(pm.SGD(lr=0.1, momentum=0.9, nesterov=True))
    path = tmp_path / "m.safetensors"
    path.write_bytes(_forge_record(checkpoint.dumps(model, opt), edit))
    with pytest.raises(ValueError, match="not a valid portable_mlp checkpoint"):
        pm.load(path)
    with pytest.raises(ValueError, match="not a valid portable_mlp checkpoint"):
        pm.load_optimizer(path, model)


def test_a_step_beyond_the_models_integers_is_refused_before_training(tmp_path):
    """JAX without x64 counts steps in int32: a compiled resume past it raised
    OverflowError."""
    jax = pytest.importorskip("jax")
    model, opt = _trained(pm.Adam(lr=0.01))
    path = tmp_path / "m.safetensors"
    path.write_bytes(_forge_record(checkpoint.dumps(model, opt),
                                   lambda r: r.update(step=2**31)))
    assert pm.load_optimizer(path, model).state["step"] == 2**31  # NumPy counts in int64
    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(ValueError, match="over 2147483647, the largest int32"):
            pm.load_optimizer(path, pm.load(path, backend="jax", dtype="float32"))
    finally:
        jax.config.update("jax_enable_x64", x64)


# --- 14. forged slot counts ---------------------------------------------------------------

def _forge_slots(data, counts):
    """The file with the optimizer's slot counts replaced and the tensors to match."""
    arrays, meta = checkpoint.parse(data)
    record = json.loads(meta["optimizer"])
    record["slots"] = counts
    meta["optimizer"] = json.dumps(record)
    tensors = [(f"param.{i}", arrays[f"param.{i}"]) for i in range(len(counts))]
    tensors += [(f"optimizer.{i}.{j}", arrays[f"param.{i}"])
                for i, count in enumerate(counts) for j in range(count)]
    return checkpoint.encode(tensors, meta, "float64")


@pytest.mark.parametrize("opt, counts", [(pm.Adam(lr=0.01), [2, 2, 2, 4]),
                                         (pm.SGD(lr=0.1, momentum=0.9), [1, 0, 1, 1])])
def test_forged_slot_counts_are_refused(tmp_path, opt, counts):
    model, opt = _trained(opt)
    path = tmp_path / "m.safetensors"
    path.write_bytes(_forge_slots(checkpoint.dumps(model, opt), counts))
    with pytest.raises(ValueError, match=r"slot counts .* do not match"):
        pm.load(path)
    with pytest.raises(ValueError, match=r"slot counts .* do not match"):
        pm.load_optimizer(path, model)


def test_load_optimizer_refuses_an_optimizer_whose_slots_differ(tmp_path):
    model, opt = _trained(pm.SGD(lr=0.1))
    path = tmp_path / "m.safetensors"
    pm.save(model, path, optimizer=opt)
    other = pm.SGD(lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=r"keeps \[1, 1, 1, 1\]"):
        pm.load_optimizer(path, model, optimizer=other)
    assert other.state is None
    resumed = pm.load_optimizer(path, model, optimizer=pm.SGD(lr=0.05))
    assert resumed.state["step"] == opt.state["step"]


# --- 15. the header is read first; only regular files --------------------------------------

def test_a_huge_sparse_file_is_refused_after_its_header(tmp_path):
    path = tmp_path / "sparse.safetensors"
    model, _ = _trained(pm.SGD(lr=0.1))
    good = checkpoint.dumps(model)
    with open(path, "wb") as f:
        f.write(good)
        f.truncate(10 * 2**30)  # 10 GiB, sparse: reading it whole is a MemoryError
    start = time.perf_counter()
    with pytest.raises(ValueError, match="trailing bytes"):
        pm.load(path)
    assert time.perf_counter() - start < 1.0


def test_a_large_file_is_rejected_without_reading_it(tmp_path):
    path = tmp_path / "big.safetensors"
    model, _ = _trained(pm.SGD(lr=0.1))
    with open(path, "wb") as f:
        f.write(checkpoint.dumps(model))
        f.truncate(2**30)
    import tracemalloc

    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="trailing bytes"):
            pm.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20  # bytes: the header only, not the gibibyte


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_refused_without_hanging(tmp_path):
    path = tmp_path / "pipe.safetensors"
    os.mkfifo(path)
    result: list[BaseException] = []

    def load():
        try:
            pm.load(path)
        except BaseException as exc:  # handed to the main thread
            result.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(5.0)
    if thread.is_alive():  # unblock it: open the write end once
        with open(path, "wb"):
            pass
        pytest.fail("pm.load blocked on a FIFO")
    assert isinstance(result[0], ValueError) and "not a regular file" in str(result[0])


def test_a_folder_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a regular file"):
        pm.load(tmp_path)


# --- 16. file housekeeping ----------------------------------------------------------------

def test_a_name_as_long_as_the_file_system_takes_can_be_saved(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX") if hasattr(os, "pathconf") else 255
    path = tmp_path / ("m" * (limit - len(".safetensors")) + ".safetensors")
    model, _ = _trained(pm.SGD(lr=0.1))
    pm.save(model, path)
    assert sorted(os.listdir(tmp_path)) == [path.name]
    np.testing.assert_array_equal(pm.load(path).params[0], model.params[0])


_KILLED_SAVE = """
import os, signal, sys
import portable_mlp as pm
from portable_mlp import checkpoint
real = checkpoint._fsync_folder
def die(*args):
    os.kill(os.getpid(), signal.SIGKILL)
os.fsync = die  # killed after writing its temporary file, before the replace
pm.save(pm.MLP([2, 3, 2]), sys.argv[1])
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_temporary_files_left_by_killed_saves_are_removed_by_the_next(tmp_path, monkeypatch):
    path = tmp_path / "m.safetensors"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(path)], env=env,
                              check=False)
        assert done.returncode == -signal.SIGKILL
    left = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    assert len(left) == 3 and not path.exists()
    monkeypatch.setattr(checkpoint, "STALE_AFTER", 0.0)
    pm.save(pm.MLP([2, 3, 2]), path)
    assert os.listdir(tmp_path) == [path.name]


def test_a_live_writers_temporary_file_is_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "STALE_AFTER", 0.0)
    mine = tmp_path / f".pm-{os.getpid()}-{'0' * 16}.tmp"  # this process is alive
    mine.write_bytes(b"")
    pm.save(pm.MLP([2, 3, 2]), tmp_path / "m.safetensors")
    assert mine.exists()


def test_re_saving_keeps_the_mode_of_the_file_replaced(tmp_path):
    path = tmp_path / "m.safetensors"
    model, _ = _trained(pm.SGD(lr=0.1))
    pm.save(model, path)
    os.chmod(path, 0o600)
    pm.save(model, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_save_into_a_missing_folder_names_the_users_path(tmp_path):
    """Issue 15, item 9: the error named the hidden temporary file."""
    path = tmp_path / "missing" / "m.safetensors"
    with pytest.raises(FileNotFoundError) as info:
        pm.save(pm.MLP([2, 3, 2]), path)
    message = str(info.value)
    assert repr(str(path)) in message and "folder" in message and "does not exist" in message
    assert ".tmp" not in message


# --- 17. the safetensors package reads and writes the format ---------------------------------

def test_the_bytes_are_what_the_safetensors_package_writes():
    """The same header and tensors as safetensors writes them (it orders the metadata
    map as its hash map does, so the bytes are compared as parsed headers), and the
    package reads every tensor back."""
    from safetensors.numpy import load, save

    model, opt = _trained(pm.Adam(lr=0.01))
    data = checkpoint.dumps(model, opt)
    arrays, meta = checkpoint.parse(data)
    theirs = save(arrays, metadata=meta)
    assert len(theirs) == len(data) and _parts(theirs)[0] == _parts(data)[0]
    assert _parts(theirs)[1] == _parts(data)[1]
    for name, arr in load(data).items():
        np.testing.assert_array_equal(arr, arrays[name])
