"""Checkpoints: safetensors, no pickle, atomic, strict on hostile files, resumable."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import portable_mlp as pm
from portable_mlp import _backend, checkpoint


def _trained(opt=None, sizes=(2, 4, 2), **kwargs):
    X, y = pm.datasets.xor(n=60, seed=0)
    Y = pm.one_hot(y, 2)
    model = pm.MLP(list(sizes), seed=3, **kwargs)
    opt = opt or pm.Adam(lr=0.05)
    pm.Trainer(model, optimizer=opt).fit(X, Y, epochs=4, progress=False)
    return model, opt


def _equal_params(a, b):
    for x, y in zip(a.host_params(), b.host_params(), strict=True):
        np.testing.assert_array_equal(x, y)


def test_round_trip_on_every_backend(backend, tmp_path):
    model, _ = _trained()
    path = tmp_path / "m.safetensors"
    pm.save(model, path)
    loaded = pm.load(path, backend=backend)
    assert loaded.backend == backend and loaded.placement.dtype == "float64"
    assert loaded.pieces == model.pieces
    _equal_params(model, loaded)
    pm.save(loaded, path)  # and back from that backend
    _equal_params(model, pm.load(path))
    np.testing.assert_array_equal(_backend.to_host(loaded.predict(np.eye(2))),
                                  model.predict(np.eye(2)))


def test_load_onto_another_dtype(tmp_path):
    model, _ = _trained(dtype="float32")
    path = tmp_path / "m.safetensors"
    pm.save(model, path)
    assert pm.load(path).placement.dtype == "float32"
    wide = pm.load(path, dtype="float64")
    assert wide.placement.dtype == "float64"
    np.testing.assert_array_equal(wide.host_params()[0], model.host_params()[0].astype(float))


def test_header_records_architecture_dtype_and_version(tmp_path):
    model, opt = _trained(bias=False, activation="tanh")
    path = tmp_path / "m.safetensors"
    pm.save(model, path, optimizer=opt)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(data[8:8 + n])["__metadata__"]
    assert meta["portable_mlp_version"] == pm.__version__
    assert meta["dtype"] == "float64"
    assert json.loads(meta["pieces"]) == [p.to_config() for p in model.pieces]
    assert json.loads(meta["optimizer"])["name"] == "adam"
    assert b"pickle" not in data and not data[8 + n:].startswith(b"\x80")


def test_the_same_checkpoint_is_the_same_bytes(tmp_path):
    """safetensors orders ``__metadata__`` at random (a Rust hash map): we sort it."""
    model, opt = _trained(bias=False, activation="tanh")
    saved = set()
    for i in range(8):
        pm.save(model, tmp_path / f"{i}.safetensors", optimizer=opt)
        saved.add((tmp_path / f"{i}.safetensors").read_bytes())
    assert len(saved) == 1
    data = saved.pop()
    (n,) = struct.unpack("<Q", data[:8])
    assert n % 8 == 0
    meta = json.loads(data[8:8 + n])["__metadata__"]
    assert list(meta) == sorted(meta)
    again = pm.load(tmp_path / "0.safetensors")
    for a, b in zip(again.host_params(), model.host_params(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_safetensors_library_reads_our_files(tmp_path):
    st_numpy = pytest.importorskip("safetensors.numpy")
    model, _ = _trained()
    path = tmp_path / "m.safetensors"
    pm.save(model, path)
    tensors = st_numpy.load_file(str(path))
    for i, p in enumerate(model.host_params()):
        np.testing.assert_array_equal(tensors[f"param.{i}"], p)


@pytest.mark.parametrize("opt", [pm.Adam(lr=0.05), pm.SGD(lr=0.3, momentum=0.9, nesterov=True),
                                 pm.SGD(lr=0.5)], ids=["adam", "nesterov", "sgd"])
def test_resume_training_is_bit_identical(tmp_path, opt):
    X, y = pm.datasets.xor(n=60, seed=0)
    Y = pm.one_hot(y, 2)
    straight = pm.MLP([2, 4, 2], seed=1)
    pm.Trainer(straight, optimizer=pm.optim.get(type(opt)(**_hyper(opt)))).fit(
        X, Y, epochs=10, batch_size=20, shuffle=False, progress=False)

    first = pm.MLP([2, 4, 2], seed=1)
    pm.Trainer(first, optimizer=opt).fit(X, Y, epochs=6, batch_size=20, shuffle=False,
                                         progress=False)
    path = tmp_path / "m.safetensors"
    pm.save(first, path, optimizer=opt)
    resumed = pm.load(path)
    opt2 = pm.load_optimizer(path, resumed)
    assert type(opt2) is type(opt) and opt2.state["step"] == 18
    pm.Trainer(resumed, optimizer=opt2).fit(X, Y, epochs=4, batch_size=20, shuffle=False,
                                            progress=False)
    _equal_params(straight, resumed)


def _hyper(opt):
    return {k: v for k, v in vars(opt).items() if k not in ("state", "schedule")}


def test_load_optimizer_errors(tmp_path):
    model, opt = _trained()
    bare, with_opt = tmp_path / "bare.safetensors", tmp_path / "opt.safetensors"
    pm.save(model, bare)
    pm.save(model, with_opt, optimizer=opt)
    with pytest.raises(ValueError, match="holds no optimizer state"):
        pm.load_optimizer(bare, model)
    with pytest.raises(TypeError, match="holds Adam state, got a SGD"):
        pm.load_optimizer(with_opt, model, pm.SGD())
    with pytest.raises(ValueError, match="another architecture"):
        pm.load_optimizer(with_opt, pm.MLP([2, 5, 2]))
    mine = pm.Adam(lr=0.001)
    assert pm.load_optimizer(with_opt, model, mine) is mine and mine.lr == 0.001
    assert mine.state["step"] == opt.state["step"]


def test_determinism_same_seed_same_bits(backend):
    X, y = pm.datasets.xor(n=60, seed=0)
    Y = pm.one_hot(y, 2)
    runs = []
    for _ in range(2):
        model = pm.MLP([2, 5, 2], seed=11, backend=backend)
        history = pm.fit(model, X, Y, optimizer=pm.Adam(lr=0.05), epochs=2, batch_size=30,
                         seed=4, progress=False)
        runs.append((model.host_params(), history))
    (p0, h0), (p1, h1) = runs
    assert h0 == h1
    for a, b in zip(p0, p1, strict=True):
        np.testing.assert_array_equal(a, b)


# --- atomic saving ------------------------------------------------------------

def test_file_gets_the_umask_permissions(tmp_path):
    model, _ = _trained()
    path = tmp_path / "m.safetensors"
    old = os.umask(0o027)
    try:
        pm.save(model, path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_failed_save_removes_the_temporary_file_and_keeps_the_old(tmp_path, monkeypatch):
    model, _ = _trained()
    path = tmp_path / "m.safetensors"
    pm.save(model, path)
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        pm.save(pm.MLP([2, 4, 2], seed=99), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.safetensors"]


def test_save_checks_its_arguments(tmp_path):
    model, _ = _trained()
    with pytest.raises(TypeError, match="model must be a portable_mlp model"):
        pm.save("model", tmp_path / "m")
    with pytest.raises(TypeError, match="path must be a str"):
        pm.save(model, 3)
    with pytest.raises(TypeError, match="optimizer must be"):
        pm.save(model, tmp_path / "m", optimizer="adam")
    assert os.listdir(tmp_path) == []


# --- hostile files -------------------------------------------------------------

def _parts(data):
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def _join(header, body, raw=None):
    text = raw if raw is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


@pytest.fixture(scope="module")
def good():
    model, opt = _trained()
    return checkpoint.dumps(model, opt)


def _edit(fn):
    def make(data):
        header, body = _parts(data)
        out = fn(header, body)
        return out if isinstance(out, bytes) else _join(header, body)
    return make


def _dup(header, body):
    text = json.dumps(header)
    entry = json.dumps({"param.0": header["param.0"]})[1:-1]
    return _join(None, body, (text[:-1] + "," + entry + "}").encode())


def _set(path, value):
    def fn(header, body):
        *keys, last = path
        node = header
        for key in keys:
            node = node[key]
        node[last] = value
    return fn


def _meta(key, value):
    def fn(header, body):
        if value is None:
            del header["__metadata__"][key]
        else:
            header["__metadata__"][key] = value
    return fn


HOSTILE = {
    "empty": (lambda d: b"", "shorter than the 8-byte header length"),
    "truncated length": (lambda d: d[:5], "shorter than the 8-byte header length"),
    "truncated header": (lambda d: d[:40], "runs past the end of the file"),
    "truncated data": (lambda d: d[:-3], "truncated"),
    "trailing bytes": (lambda d: d + b"\0\0", "trailing bytes"),
    "header over 100 MB": (lambda d: struct.pack("<Q", 200 * 2**20) + d[8:],
                           "over the limit of 104857600"),
    "huge header length": (lambda d: b"\xff" * 8 + d[8:], "over the limit"),
    "not json": (lambda d: _join(None, b"", b"{nope"), "not valid JSON"),
    "not an object": (lambda d: _join(None, b"", b"{}")[:8] + b"[]", "does not start with"),
    "not utf-8": (lambda d: _join(None, b"", b'{"\xff": 1}'), "not UTF-8"),
    "NaN constant": (lambda d: _join(None, b"", b'{"a": NaN}'), "non-JSON constant NaN"),
    "deep nesting": (lambda d: _join(None, b"", b'{"a":' + b"[" * 100000 + b"}"),
                     "nested too deeply"),
    "too many values": (lambda d: _join(None, b"", b'{"a":[' + b"0," * 2_000_000 + b'0]}'),
                        "over 1000000 JSON values"),
    "duplicate name": (_edit(_dup), "names 'param.0' twice"),
    "NUL in name": (_edit(lambda h, b: h.update({"param.0\0": h.pop("param.0")})),
                    "holds a NUL byte"),
    "unknown dtype": (_edit(_set(["param.0", "dtype"], "F128")), "dtype 'F128'"),
    "integer dtype": (_edit(_set(["param.0", "dtype"], "I64")), "known to safetensors but"),
    "gap": (_edit(lambda h, b: _shift_first(h, 8)), "a gap before"),
    "overlap": (_edit(_set(["param.1", "data_offsets"], [0, 32])), "overlap"),
    "shape vs bytes": (_edit(_set(["param.0", "shape"], [3, 4])), "needs 96 bytes"),
    "negative dim": (_edit(_set(["param.0", "shape"], [-2, -4])), "non-negative integer"),
    "float dim": (_edit(_set(["param.0", "shape"], [2.0, 4])), "non-negative integer"),
    "huge dim": (_edit(_set(["param.0", "shape"], [0, 2**70])), "a shape entry is over"),
    "extra key": (_edit(_set(["param.0", "x"], 1)), "exactly dtype, shape and data_offsets"),
    "offsets reversed": (_edit(_set(["param.0", "data_offsets"], [64, 0])), "before begin"),
    "missing tensor": (lambda d: pm.checkpoint.encode(
        [("param.0", np.zeros((2, 4)))], _parts(d)[0]["__metadata__"], "float64"),
        "tensors missing"),
    "extra tensor": (lambda d: _extra(d), "unexpected: \\['zzz'\\]"),
    "no metadata": (_edit(lambda h, b: h.pop("__metadata__")), "__metadata__ is missing"),
    "foreign format": (_edit(_meta("format", "pytorch")), "'format' is 'pytorch'"),
    "future version": (_edit(_meta("format_version", "9")), "format_version '9'"),
    "unknown metadata": (_edit(_meta("exec", "rm -rf /")), "unknown metadata keys"),
    "no pieces": (_edit(_meta("pieces", None)), "lacks 'pieces'"),
    "pieces not a model": (_edit(_meta("pieces", '[{"type": "Sigmoid"}]')),
                           "does not describe a model"),
    "pieces not chained": (_edit(_meta("pieces", json.dumps(
        [{"type": "Linear", "in_features": 2, "out_features": 4},
         {"type": "Linear", "in_features": 5, "out_features": 2}]))),
        "does not describe a model"),
    "pieces unknown type": (_edit(_meta("pieces", '[{"type": "os.system"}]')),
                            "does not describe a model"),
    "architecture vs tensors": (_edit(_meta("pieces", json.dumps(
        [{"type": "Linear", "in_features": 2, "out_features": 4, "bias": False}]))),
        "n_params"),
    "dtype vs metadata": (_edit(_meta("dtype", "float32")), "is float64, the metadata says"),
    "bad optimizer": (_edit(_meta("optimizer", '{"name": "evil", "config": {}}')),
                      "must name one of"),
    "bad optimizer config": (_edit(_meta("optimizer", '{"name": "sgd", "config": {"lr": -1.0, '
                                         '"momentum": 0.0, "nesterov": false}, '
                                         '"schedule": "constant()"}')),
                             "is not valid"),
    "NaN weights": (lambda d: d[:-8] + struct.pack("<d", float("nan")), "holds NaN or inf"),
}


def _shift_first(header, by):
    """Move the tensor stored first ``by`` bytes on (the writer picks the order)."""
    first = next(v for k, v in header.items() if k != "__metadata__"
                 and v["data_offsets"][0] == 0)
    first["data_offsets"] = [o + by for o in first["data_offsets"]]


def _extra(data):
    header, body = _parts(data)
    tensors = [(k, np.frombuffer(body[v["data_offsets"][0]:v["data_offsets"][1]])
                .reshape(v["shape"])) for k, v in header.items() if k != "__metadata__"]
    return checkpoint.encode([*tensors, ("zzz", np.zeros(1))], header["__metadata__"], "float64")


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_raise_value_error(good, tmp_path, name):
    make, fragment = HOSTILE[name]
    path = tmp_path / "bad.safetensors"
    path.write_bytes(make(good))
    with pytest.raises(ValueError, match=fragment):
        pm.load(path)


def test_stricter_than_the_safetensors_library(good):
    """safetensors itself accepts duplicate names and NUL bytes in names; we do not."""
    for name in ("duplicate name", "NUL in name"):
        with pytest.raises(ValueError):
            checkpoint.loads(HOSTILE[name][0](good))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=400))
def test_random_bytes_raise_only_value_error(data):
    with pytest.raises(ValueError, match="not a valid portable_mlp checkpoint"):
        checkpoint.loads(data)


@settings(max_examples=300, deadline=None)
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1,
                      max_size=6), cut=st.one_of(st.none(), st.integers(0, 10**6)))
def test_mutated_files_load_or_raise_value_error(good, edits, cut):
    buf = bytearray(good)
    for where, value in edits:
        buf[where % len(buf)] = value
    if cut is not None:
        buf = buf[:cut % (len(buf) + 1)]
    try:
        model = checkpoint.loads(bytes(buf))
    except ValueError:
        return
    assert all(np.isfinite(p).all() for p in model.host_params())


def test_the_new_pieces_round_trip_and_an_old_sgd_record_still_loads(tmp_path):
    """Architecture in the metadata (every new piece, with its settings); an SGD record
    written before ``weight_decay`` existed loads with its default."""
    model = pm.Sequential([pm.Linear(3, 6), pm.GELU(), pm.Dropout(0.2, seed=7),
                           pm.LayerNorm(6, eps=1e-3), pm.SiLU(), pm.Linear(6, 4),
                           pm.LeakyReLU(0.3), pm.ELU(0.5), pm.Softplus(), pm.Linear(4, 2),
                           pm.Identity()], seed=1, dtype="float64")
    opt = pm.SGD(lr=0.1, momentum=0.5)
    pm.fit(model, np.ones((4, 3)), np.eye(2)[[0, 1, 0, 1]], loss="cross_entropy",
           optimizer=opt, epochs=2, progress=False)
    path = tmp_path / "m.safetensors"
    pm.save(model, path, optimizer=opt)
    loaded = pm.load(path)
    assert loaded.pieces == model.pieces and repr(loaded) == repr(model)
    for a, b in zip(loaded.host_params(), model.host_params(), strict=True):
        np.testing.assert_array_equal(a, b)
    header, _ = _parts(path.read_bytes())
    record = json.loads(header["__metadata__"]["optimizer"])
    del record["config"]["weight_decay"]  # as files written before it existed
    path.write_bytes(_edit(_meta("optimizer", json.dumps(record)))(path.read_bytes()))
    old = pm.load_optimizer(path, pm.load(path))
    assert old.weight_decay == 0.0 and old.momentum == 0.5
