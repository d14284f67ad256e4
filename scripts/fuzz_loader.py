"""Feed the checkpoint loader random and mutated files; count what it raised.

Every input must either load (a mutation that still describes a valid model, e.g. a
flipped bit inside a weight) or raise ValueError. The mutations: random bytes, byte
flips, cuts, splices, forged lengths, edits of the header's fields, types
substituted into any field of the header or of the JSON held in its metadata, and
hostile values put into, removed from or added to the optimizer record. A file that
loads must hold what ``save`` writes: its optimizer record is the one save writes for
the optimizer it describes (the same JSON types, a step count in range).
Anything else is a bug: the script prints it and exits with status 1.

    python scripts/fuzz_loader.py --n 1000000 --seed 0
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import struct
import sys
import tempfile
import time
import traceback

import numpy as np

import portable_mlp as pm
from portable_mlp import checkpoint, optim

CODES = [*checkpoint.ALL_CODES, "F128", "", "f64", None, 3]


def base_files() -> list[bytes]:
    X, y = pm.datasets.xor(n=40, seed=0)
    Y = pm.one_hot(y, 2)
    out = []
    for sizes, bias, opt, dtype in [([2, 3, 2], False, None, "float64"),
                                    ([2, 3, 2], True, pm.Adam(lr=0.01), "float64"),
                                    ([2, 4, 1], True, pm.SGD(lr=0.1, momentum=0.9), "float32"),
                                    ([2, 2], True, pm.SGD(lr=0.1), "float64")]:
        model = pm.MLP(sizes, bias=bias, seed=1, dtype=dtype)
        if opt is not None:
            pm.Trainer(model, optimizer=opt).fit(X, Y[:, :sizes[-1]], epochs=3, progress=False)
        out.append(checkpoint.dumps(model, opt))
    return out


def pick(rng: np.random.Generator, options: list) -> object:
    return options[rng.integers(len(options))]


def split(data: bytes) -> tuple[dict, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + n]), data[8 + n:]


def join(header: dict | str, body: bytes, pad: bool = True) -> bytes:
    text = (header if isinstance(header, str) else json.dumps(header)).encode("utf-8",
                                                                             "surrogatepass")
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + body


SUBSTITUTES: list[object] = [[], ["F64"], [1, 2], {}, {"a": 1}, {"name": "sgd"}, None, 0, -1,
                             3, 2**70, 2.5, float("nan"), True, "", "x", "sgd", "F64"]


def paths(node: object, path: tuple = ()) -> list[tuple]:
    """Every path into a JSON value, the value itself included."""
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += paths(value, (*path, i))
    return out


def substituted(rng: np.random.Generator, node: object) -> object:
    """``node`` with one field (or itself) replaced by a value of another type."""
    value = json.loads(json.dumps(pick(rng, SUBSTITUTES)))
    path = pick(rng, paths(node))
    if not path:
        return value
    copy = json.loads(json.dumps(node))
    parent = copy
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return copy


def substitute_type(rng: np.random.Generator, data: bytes) -> bytes:
    """A type substituted into one field of the header, or of the JSON in a metadata
    string (the pieces, the optimizer record)."""
    header, body = split(data)
    meta = header["__metadata__"]
    inner = [k for k in ("pieces", "optimizer") if k in meta]
    if inner and rng.integers(2):
        key = pick(rng, inner)
        meta[key] = json.dumps(substituted(rng, json.loads(meta[key])))
        return join(header, body)
    return join(substituted(rng, header), body)


HOSTILE: list[object] = [None, True, False, 0, 1, -1, 0.0, 0.5, 1.0, -0.5, 1.5, 2**31,
                         2**53, 2**53 + 1, 2**63, 2**64, 1e308, float("inf"), "", "no", "0.1",
                         "sgd", "adam", [], [1], {}, {"lr": 0.1}]


def mutate_optimizer(rng: np.random.Generator, bases: list[bytes]) -> bytes:
    """A file whose optimizer record has one field set to a hostile value, removed, or
    one key added next to it."""
    data = pick(rng, [b for b in bases if "optimizer" in split(b)[0]["__metadata__"]])
    header, body = split(data)
    record = json.loads(header["__metadata__"]["optimizer"])
    path = pick(rng, paths(record)[1:])
    parent = record
    for key in path[:-1]:
        parent = parent[key]
    action = rng.integers(4)
    if action == 0 and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == 1 and isinstance(parent, dict):
        parent[pick(rng, ["lr", "momentum", "nesterov", "beta1", "eps", "extra", "step"])] = \
            json.loads(json.dumps(pick(rng, HOSTILE)))
    else:
        parent[path[-1]] = json.loads(json.dumps(pick(rng, HOSTILE)))
    header["__metadata__"]["optimizer"] = json.dumps(record)
    return join(header, body)


def check_saved_form(data: bytes) -> None:
    """A file that loaded holds an optimizer record that save writes (AssertionError
    otherwise): its config is exactly what save writes for the optimizer it builds (JSON
    types included: true is not 1), its schedule a string, its step in range."""
    record = checkpoint._Checkpoint(data).optimizer
    if record is None:
        return
    opt = optim.OPTIMIZERS[record["name"]](**record["config"])
    again = checkpoint._optimizer_config(opt, None)["config"]
    assert json.dumps(again, sort_keys=True) == json.dumps(record["config"], sort_keys=True), \
        f"loaded the config {record['config']}, which save writes as {again}"
    assert isinstance(record["schedule"], str), f"loaded the schedule {record['schedule']!r}"
    step = record.get("step", 0)
    assert type(step) is int and 0 <= step <= checkpoint.MAX_STEP, f"loaded step {step!r}"


def mutate_header(rng: np.random.Generator, data: bytes) -> bytes:
    header, body = split(data)
    names = [k for k in header if k != "__metadata__"]
    name = names[rng.integers(len(names))]
    meta = header["__metadata__"]
    kind = rng.integers(22)
    if kind == 0:
        header[name]["data_offsets"][rng.integers(2)] += int(rng.integers(-9, 10))
    elif kind == 1:
        shape = header[name]["shape"]
        if shape:
            shape[rng.integers(len(shape))] = pick(rng, [0, 1, -1, 2**63, 2**70, 10**6])
        else:
            shape.append(1)
    elif kind == 2:
        header[name]["dtype"] = CODES[rng.integers(len(CODES))]
    elif kind == 3:  # duplicate name
        text = json.dumps(header)
        entry = json.dumps({name: header[name]})[1:-1]
        return join(text[:-1] + ", " + entry + "}", body)
    elif kind == 4:
        header[name + "\x00"] = header.pop(name)
    elif kind == 5:
        del header[name]
    elif kind == 6:
        header["extra"] = dict(header[name])
    elif kind == 7:
        meta.pop(list(meta)[rng.integers(len(meta))])
    elif kind == 8:
        meta["pieces"] = pick(rng, ["[]", "{}", "[1]", '[{"type": "Linear"}]', "nan",
                                     '[{"type": "Linear", "in_features": 2, "out_features": '
                                     '99999999999, "bias": false, "init": "uniform"}]',
                                     '[{"type": ["x"]}]', "[" * 100000, '"x"'])
    elif kind == 9:
        meta["optimizer"] = pick(rng, ['{"name": "adam"}', '{"name": "sgd", "config": '
                                        '{"lr": -1}}', "[]", '{"name": "rmsprop", "config": {}}',
                                        '{"name": "sgd", "config": {"lr": 0.1}, "step": 1, '
                                        '"slots": [9, 9]}', '{"name": "sgd", "config": '
                                        '{"lr": 1e999}}'])
    elif kind == 10:
        meta["dtype"] = pick(rng, ["float16", "int8", "", "float32", "float64"])
    elif kind == 11:
        meta["n_params"] = pick(rng, ["0", "-1", "x", "99"])
    elif kind == 12:
        header["__metadata__"] = pick(rng, [None, [], {"format": 1}, "x"])
    elif kind == 13:
        header[name]["shape"] = pick(rng, [None, "2", [2.0, 3], [True, 3], [[2]], [1] * 40])
    elif kind == 14:
        header[name]["data_offsets"] = pick(rng, [None, [0], [0, 1, 2], [-8, 0], [5, 2],
                                                   [0, 2**64], ["0", "8"]])
    elif kind == 15:
        header[name]["extra"] = 1
    elif kind == 16:
        return join(header, body, pad=False) + b"\x00" * int(rng.integers(1, 9))
    elif kind == 17:
        return join(header, body[:int(rng.integers(len(body) + 1))])
    elif kind == 18:
        meta["format_version"] = "2"
    elif kind == 19:
        meta["surprise"] = "1"
    elif kind == 20:
        return join(json.dumps(header).replace('"', "'", 1), body)
    else:
        text = json.dumps(header)
        cut = int(rng.integers(len(text)))
        return join(text[:cut] + chr(int(rng.integers(0, 0x10FFFF))) + text[cut + 1:], body)
    return join(header, body)


def mutate(rng: np.random.Generator, bases: list[bytes]) -> bytes:
    data = bases[rng.integers(len(bases))]
    kind = rng.integers(11)
    if kind == 0:
        return rng.bytes(int(rng.integers(0, 300)))
    if kind == 1:
        buf = bytearray(data)
        for _ in range(int(rng.integers(1, 8))):
            buf[rng.integers(len(buf))] = int(rng.integers(256))
        return bytes(buf)
    if kind == 2:
        return data[:int(rng.integers(len(data)))]
    if kind == 3:
        return data + rng.bytes(int(rng.integers(1, 64)))
    if kind == 4:
        return struct.pack("<Q", int(rng.integers(0, 2**63))) + data[8:]
    if kind == 5:
        other = bases[rng.integers(len(bases))]
        cut = int(rng.integers(len(data)))
        return data[:cut] + other[cut:]
    if kind == 6:  # a byte flip inside the header only
        buf = bytearray(data)
        (n,) = struct.unpack("<Q", data[:8])
        buf[8 + int(rng.integers(n))] = int(rng.integers(256))
        return bytes(buf)
    if kind == 7:
        return substitute_type(rng, data)
    if kind == 8:
        return mutate_optimizer(rng, bases)
    return mutate_header(rng, data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--file-every", type=int, default=100,
                        help="every k-th input goes through a real file and pm.load")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    bases = base_files()
    for data in bases:  # the unmutated files load
        checkpoint.loads(data)
    counts: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    bad = 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzz.safetensors")
        for i in range(args.n):
            data = mutate(rng, bases)
            try:
                if args.file_every and i % args.file_every == 0:
                    with open(path, "wb") as f:
                        f.write(data)
                    pm.load(path)
                else:
                    checkpoint.loads(data)
                check_saved_form(data)
                counts["loaded"] += 1
            except ValueError as exc:
                counts["ValueError"] += 1
                reasons[str(exc).split(":")[1].strip()[:40] if ":" in str(exc) else "?"] += 1
            except Exception as exc:
                counts[type(exc).__name__] += 1
                bad += 1
                if bad <= 5:
                    traceback.print_exc()
                    print(repr(data[:200]), file=sys.stderr)
            if (i + 1) % 100_000 == 0:
                print(f"{i + 1} files, {time.perf_counter() - start:.0f} s: {dict(counts)}",
                      flush=True)
    print(f"\n{args.n} files in {time.perf_counter() - start:.0f} s: {dict(counts)}")
    print("most common ValueError reasons:")
    for reason, count in reasons.most_common(15):
        print(f"  {count:8d}  {reason}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
