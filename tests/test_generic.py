"""Libraries no one here wrote, through the public API and nothing else: marray (masked
arrays over NumPy) and ndonnx (ONNX-backed arrays), each against NumPy in float64.

``nox -s generic`` runs this file with both installed (``pip install .[generic]``); there a
missing library fails the run (PORTABLE_MLP_GENERIC), elsewhere it skips with the reason.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend, backends, cli
from portable_mlp.sklearn import MLPClassifier

LIBRARIES = {"marray": "marray", "ndonnx": "ndonnx"}  # backend name: module to import
REQUIRED = [n for n in os.environ.get("PORTABLE_MLP_GENERIC", "").split(",") if n]
TOL = 1e-12


@pytest.fixture(params=list(LIBRARIES))
def name(request: pytest.FixtureRequest) -> str:
    try:
        importlib.import_module(LIBRARIES[request.param])
    except ImportError as exc:
        if request.param in REQUIRED:
            pytest.fail(f"{request.param} was required but cannot be imported: {exc}")
        pytest.skip(f"{request.param} is not installed ({exc}); pip install .[generic]")
    return request.param


def namespace_of(name: str):
    """The library's namespace as a user holds it (not through portable_mlp)."""
    if name == "marray":
        import marray

        return marray.masked_namespace(np)
    return importlib.import_module(name)


@pytest.fixture
def data():
    X, y = pm.datasets.spirals(n=30, n_classes=3, seed=0)  # ndonnx: ~0.5 s a step
    return X, np.asarray(pm.one_hot(y, 3))


def host(a) -> np.ndarray:
    return np.asarray(_backend.to_host(a), dtype=np.float64)


def gap(model, reference) -> float:
    return max(float(np.max(np.abs(host(p) - host(q))))
               for p, q in zip(model.params, reference.params))


def fitted(backend, X, Y, **kwargs):
    model = pm.MLP([2, 6, 3], activation="tanh", seed=3, backend=backend, dtype="float64")
    pm.fit(model, X, Y, optimizer="adam", epochs=2, batch_size=10, shuffle=True, seed=5,
           progress=False, **kwargs)
    return model


@pytest.mark.parametrize("given", ["name", "namespace"])
@pytest.mark.parametrize("placed", [False, True], ids=["host data", "library's arrays"])
def test_shuffled_fit_equals_numpy(name, data, given, placed):
    X, Y = data
    backend = name if given == "name" else namespace_of(name)
    if placed:
        xp = namespace_of(name)
        X, Y = xp.asarray(X), xp.asarray(Y)
    model = fitted(backend, X, Y)
    assert model.placement.backend == name
    assert _backend.array_backend(model.params[0]) == name
    assert gap(model, fitted("numpy", *data)) <= TOL


def test_shuffling_changes_the_trajectory(name, data):
    """A library whose ``take`` ignored the permutation would train as unshuffled."""
    X, Y = data
    model = pm.MLP([2, 6, 3], activation="tanh", seed=3, backend=name, dtype="float64")
    pm.fit(model, X, Y, optimizer="adam", epochs=2, batch_size=10, shuffle=False,
           progress=False)
    assert gap(model, fitted(name, X, Y)) > 1e-6  # a million times the parity bound


def test_value_and_grad_and_gradcheck_equal_numpy(name, data):
    X, Y = data
    model = pm.MLP([2, 6, 3], activation="sigmoid", seed=1, backend=name, dtype="float64")
    twin = pm.MLP([2, 6, 3], activation="sigmoid", seed=1, backend="numpy", dtype="float64")
    value, grads = pm.value_and_grad(model, X, Y)  # the default loss, mse: its sum of squares
    want, want_grads = pm.value_and_grad(twin, X, Y)
    assert abs(float(host(value)) - float(want)) <= TOL
    for g, w in zip(grads, want_grads):
        np.testing.assert_allclose(host(g), w, rtol=0, atol=TOL)
    small = pm.MLP([2, 2, 3], activation="sigmoid", seed=1, backend=name, dtype="float64")
    assert pm.gradcheck(small, X[:4], Y[:4]) <= 1.0


def test_predict_returns_the_library_s_arrays(name, data):
    X, Y = data
    model = fitted(name, X, Y)
    out = model.predict(namespace_of(name).asarray(X))
    assert _backend.array_backend(out) == name
    np.testing.assert_allclose(host(out), fitted("numpy", X, Y).predict(X), rtol=0, atol=TOL)


def test_save_load_and_pickle_in_another_process(name, data, tmp_path):
    X, Y = data
    model = fitted(name, X, Y)
    pm.save(model, tmp_path / "m.safetensors")
    loaded = pm.load(tmp_path / "m.safetensors", backend=name)
    assert loaded.placement == model.placement and gap(loaded, model) == 0
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(model))
    np.save(tmp_path / "X.npy", X)
    code = ("import pickle, sys, numpy as np; from portable_mlp import _backend; "
            "m = pickle.load(open(sys.argv[1], 'rb')); "
            "out = m.predict(np.load(sys.argv[2])); "
            "print(_backend.array_backend(out), m.placement.device); "
            "np.save(sys.argv[3], _backend.to_host(out))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), *sys.path])}
    done = subprocess.run([sys.executable, "-c", code, tmp_path / "m.pkl", tmp_path / "X.npy",
                           tmp_path / "out.npy"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [name, model.placement.device]
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), host(model.predict(X)))


def test_estimator_fits_and_predicts(name, data):
    X, Y = data
    y = np.argmax(Y, axis=1)
    kwargs = {"hidden_layer_sizes": (6,), "max_iter": 2, "random_state": 0, "dtype": "float64",
              "batch_size": 10}
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours = MLPClassifier(backend=name, **kwargs).fit(X, y)
        ref = MLPClassifier(backend="numpy", **kwargs).fit(X, y)
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), rtol=0, atol=TOL)


def test_a_numpy_model_refuses_the_library_s_arrays_by_name(name, data):
    X = data[0]
    model = pm.MLP([2, 6, 3], seed=0)
    with pytest.raises(TypeError, match=f"X is a {name} array"):
        model.predict(namespace_of(name).asarray(X))


def test_the_generic_path_refuses_a_library_without_a_host_transfer(data):
    pytest.importorskip("ndonnx")
    bare = backends.Backend("bare_ndonnx", "ndonnx")  # ndonnx without its registered hook
    with pytest.raises(TypeError, match="neither through DLPack nor __array__"):
        bare.to_host(bare.xp.asarray(data[0]))



def test_masked_entries_are_refused_as_numpy_masked_arrays_are(data):
    marray = pytest.importorskip("marray")
    X, Y = data
    mask = np.zeros(X.shape, bool)
    mask[4, 1] = True
    mx = marray.masked_namespace(np)
    masked = mx.asarray(X, mask=mask)
    for backend in ("marray", "numpy"):  # the model's own library, and another one
        model = pm.MLP([2, 6, 3], seed=0, backend=backend)
        with pytest.raises(TypeError, match="X is a masked array"):
            pm.fit(model, masked, Y, epochs=1, progress=False)
    with pytest.raises(TypeError, match="X is a masked array"):
        pm.fit(pm.MLP([2, 6, 3], seed=0), np.ma.masked_array(X, mask), Y, epochs=1,
               progress=False)
    trainer = pm.Trainer(pm.MLP([2, 6, 3], seed=0, backend="marray", dtype="float64"))
    with pytest.raises(TypeError, match="X is a masked array"):  # the step's fast path too
        trainer.step(masked, mx.asarray(Y))
    unmasked = fitted("marray", mx.asarray(X, mask=np.zeros(X.shape, bool)), Y)
    assert gap(unmasked, fitted("numpy", X, Y)) <= TOL  # a mask of False only: kept


def test_register_backend_gives_a_name_the_estimators_and_another_process_accept(
        data, monkeypatch):
    pytest.importorskip("ndonnx")
    registry = dict(backends._REGISTRY)
    del registry["ndonnx"]  # as if ndonnx had no file of its own here
    monkeypatch.setattr(backends, "_REGISTRY", registry)
    calls = []

    def to_host(x):
        calls.append(x.shape)
        return np.asarray(x.unwrap_numpy())

    pm.register_backend("onnx_arrays", "ndonnx", to_host=to_host)
    model = fitted("onnx_arrays", *data)
    out = model.predict(data[0])
    assert _backend.array_backend(out) == "onnx_arrays" and model.placement.backend == "onnx_arrays"
    _backend.to_host(out)
    assert calls == [out.shape]
    assert gap(model, fitted("numpy", *data)) <= TOL
    assert MLPClassifier(backend="onnx_arrays", max_iter=1)._validate_params() is None
    with pytest.raises(ValueError, match="unknown backend 'no_such_lib'"):
        pm.MLP([2, 2], backend="no_such_lib")
    with pytest.raises(TypeError, match="takes no other arguments"):
        pm.register_backend(backends.Backend("x"), to_host=to_host)


def test_the_cli_offers_every_registered_backend(monkeypatch):
    monkeypatch.setattr(backends, "_REGISTRY", dict(backends._REGISTRY))
    pm.register_backend("late_library", "array_api_strict")  # after portable_mlp's import
    args = cli.build_parser().parse_args(["xor", "--backend", "late_library"])
    assert args.backend == "late_library"
    for name in ("marray", "ndonnx"):
        assert cli.build_parser().parse_args(["xor", "--backend", name]).backend == name


PACKAGE = Path(pm.__file__).parent
NAMES = "|".join(backends.BUILTIN + tuple(LIBRARIES))


def test_no_backend_name_is_branched_on_outside_the_backends_folder():
    branch = re.compile(rf"""(==|!=|\bin)\s*\(?["'](?:{NAMES})["']""")
    found = [f"{path.relative_to(PACKAGE)}:{i}: {line.strip()}"
             for path in PACKAGE.rglob("*.py") if path.parent.name != "backends"
             for i, line in enumerate(path.read_text().splitlines(), 1) if branch.search(line)]
    assert found == []


def test_no_backend_file_is_over_250_lines():
    lengths = {p.name: len(p.read_text().splitlines()) for p in (PACKAGE / "backends").glob("*.py")}
    assert max(lengths.values()) <= 250, lengths
