"""Serving exports: pm.export_onnx against the model, the skl2onnx converters against the
estimators, export_torch against the model, and the CLI's --onnx.

onnx, onnxruntime, skl2onnx and torch are optional: a test whose library is missing skips
with the reason (the numpy nox session installs the ONNX ones; torch and jax, onnx alone).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import cli, export

TOL = {"float32": 1e-6, "float64": 1e-12}


def session(proto):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def every_piece(dtype: str = "float64") -> pm.Sequential:
    """A model that holds every piece type (and a Linear without bias)."""
    return pm.Sequential([pm.Linear(5, 8), pm.Tanh(), pm.Linear(8, 8, bias=False), pm.ReLU(),
                          pm.Linear(8, 6), pm.Sigmoid(), pm.Identity(), pm.Linear(6, 3),
                          pm.Softmax()], seed=3, dtype=dtype)


def rows(n: int, dtype: str, features: int = 5) -> np.ndarray:
    return np.random.default_rng(n).normal(scale=2.0, size=(n, features)).astype(dtype)


# --- export_onnx ------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 10_000])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_piece_runs_as_numpy_computes_it(dtype, n):
    pytest.importorskip("onnx")
    model = every_piece(dtype)
    proto = export.to_onnx(model, probabilities=True, label=True)
    X = rows(n, dtype)
    out, proba, label = session(proto).run(None, {"input": X})
    assert out.dtype == proba.dtype == np.dtype(dtype) and label.dtype == np.int64
    assert np.abs(out - model(X)).max() <= TOL[dtype]
    assert np.abs(proba - model.predict_proba(X)).max() <= TOL[dtype]
    np.testing.assert_array_equal(label, model.predict(X))


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("output", ["sigmoid", "identity", "softmax", "tanh", "relu"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_outputs_are_model_predict_proba_and_predict(output, k, dtype):
    """Each output piece, with one output and several: output, probabilities, label."""
    pytest.importorskip("onnx")
    model = pm.MLP([5, 7, k], activation="relu", output=output, seed=k, dtype=dtype)
    has_proba = output in ("sigmoid", "identity", "softmax")
    proto = export.to_onnx(model, probabilities=has_proba, label=True)
    X = rows(2000, dtype)
    got = dict(zip([o.name for o in proto.graph.output], session(proto).run(None, {"input": X})))
    assert np.abs(got["output"] - model(X)).max() <= TOL[dtype]
    if has_proba:
        assert got["probabilities"].shape == (2000, max(k, 2))
        assert np.abs(got["probabilities"] - model.predict_proba(X)).max() <= TOL[dtype]
    np.testing.assert_array_equal(got["label"], model.predict(X))


def test_export_casts_to_the_dtype_asked_for(tmp_path):
    pytest.importorskip("onnx")
    model = every_piece("float64")
    proto = pm.export_onnx(model, tmp_path / "m.onnx", dtype="float32")
    X = rows(100, "float32")
    (out,) = session(proto).run(None, {"input": X})
    assert out.dtype == np.float32
    assert np.abs(out - model.to(dtype="float32")(X)).max() <= TOL["float32"]


def test_nodes_per_piece_and_the_probes_seven():
    pytest.importorskip("onnx")
    model = pm.MLP([64, 100, 10])
    assert len(export.to_onnx(model).graph.node) == 4
    assert len(export.to_onnx(model, probabilities=True, label=True).graph.node) == 7
    assert [n.op_type for n in export.to_onnx(model).graph.node] == ["Gemm", "Sigmoid"] * 2
    model = every_piece()
    assert len(export.to_onnx(model).graph.node) <= 2 * len(model.pieces)


def test_written_file_has_a_dynamic_batch_and_metadata(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = pm.MLP([4, 6, 2], output="identity", dtype="float32")
    pm.export_onnx(model, tmp_path / "m.onnx", label=True)
    proto = onnx.load(tmp_path / "m.onnx")
    onnx.checker.check_model(proto, full_check=True)
    (inp,) = proto.graph.input
    assert inp.name == "input"
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == ["batch", 4]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["portable_mlp_version"] == pm.__version__
    assert meta["architecture"] == "4-6-2"
    assert [pm.layers.from_config(c) for c in __import__("json").loads(meta["pieces"])] \
        == model.pieces
    assert [o.name for o in proto.graph.output] == ["output", "label"]


def test_a_model_on_any_backend_exports_numpys_graph(backend):
    """Trained on ``backend``: the same graph, byte for byte, as the model moved to NumPy."""
    pytest.importorskip("onnx")
    X, y = pm.datasets.xor(n=64, seed=0)
    model = pm.MLP([2, 4, 2], output="identity", backend=backend, dtype="float64")
    pm.fit(model, X, pm.one_hot(y, 2), loss="cross_entropy", epochs=3, batch_size=16)
    on_numpy = model.to(backend="numpy", dtype="float64")
    assert export.to_onnx(model, label=True).SerializeToString() \
        == export.to_onnx(on_numpy, label=True).SerializeToString()


class Doubler(pm.Piece):
    """A piece without an ONNX mapping."""

    def forward(self, ops, params, x):
        return 2 * x, lambda dy, need_dx=True: (2 * dy, [])


@pytest.mark.parametrize("kwargs, error, match", [
    ({"opset": 12}, ValueError, "opset must be an integer from 13"),
    ({"opset": 10_000}, ValueError, "opset must be an integer"),
    ({"opset": "17"}, ValueError, "opset must be an integer"),
    ({"dtype": "float16"}, ValueError, "dtype must be float32 or float64"),
    ({"label": 1}, TypeError, "label must be True or False"),
])
def test_bad_arguments_are_refused_before_writing(tmp_path, kwargs, error, match):
    pytest.importorskip("onnx")
    target = tmp_path / "m.onnx"
    with pytest.raises(error, match=match):
        pm.export_onnx(pm.MLP([2, 3, 1]), target, **kwargs)
    assert not target.exists()


def test_unmapped_piece_missing_folder_and_no_probabilities_are_refused(tmp_path):
    pytest.importorskip("onnx")
    model = pm.Sequential([pm.Linear(2, 3), Doubler()])
    with pytest.raises(TypeError, match=r"piece 1 \(Doubler\(\)\) has no ONNX mapping"):
        pm.export_onnx(model, tmp_path / "m.onnx")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pm.export_onnx(pm.MLP([2, 3, 1]), tmp_path / "no" / "m.onnx")
    with pytest.raises(ValueError, match="probabilities=True needs a model that ends with"):
        pm.export_onnx(pm.MLP([2, 3, 1], output="tanh"), tmp_path / "m.onnx",
                       probabilities=True)
    with pytest.raises(TypeError, match="must be a portable_mlp model"):
        pm.export_onnx("model", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_new_piece_adds_one_registry_entry():
    pytest.importorskip("onnx")

    @export.converts(Doubler)
    def doubler(g, piece, params, x, y):
        g.node("Add", [x, x], y)

    try:
        model = pm.Sequential([pm.Linear(2, 3), Doubler()], dtype="float64")
        X = rows(10, "float64", features=2)
        (out,) = session(export.to_onnx(model)).run(None, {"input": X})
        assert np.abs(out - model(X)).max() <= TOL["float64"]
    finally:
        del export.CONVERTERS[Doubler]


# --- export_torch ------------------------------------------------------------------------

def test_torch_module_equals_the_model_and_exports(tmp_path):
    torch = pytest.importorskip("torch")
    model = every_piece("float64")
    module = model.to_torch_module()
    assert isinstance(module, torch.nn.Sequential)
    assert [type(m).__name__ for m in module] == [
        "Linear", "Tanh", "Linear", "ReLU", "Linear", "Sigmoid", "Identity", "Linear", "Softmax"]
    X = rows(500, "float64")
    Xt = torch.from_numpy(X)
    want = model(X)
    with torch.no_grad():
        assert np.abs(module(Xt).numpy() - want).max() <= 1e-12
        exported = torch.export.export(module, (Xt,))
        assert np.abs(exported.module()(Xt).numpy() - want).max() <= 1e-12
        with warnings.catch_warnings():  # TorchScript is deprecated in newer torch
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.script(module)
        assert np.abs(scripted(Xt).numpy() - want).max() <= 1e-12


def test_torch_module_dtype_and_refusals():
    torch = pytest.importorskip("torch")
    module = pm.export_torch(pm.MLP([2, 3, 1]), dtype="float32")
    assert module[0].weight.dtype == torch.float32
    with pytest.raises(TypeError, match="has no torch module"):
        pm.export_torch(pm.Sequential([pm.Linear(2, 3), Doubler()]))
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        pm.export_torch(pm.MLP([2, 3, 1]), dtype="int64")


# --- the CLI -----------------------------------------------------------------------------

def test_cli_writes_the_export_after_training(tmp_path, capsys):
    pytest.importorskip("onnx")
    target = tmp_path / "xor.onnx"
    assert cli.main(["xor", "--epochs", "20", "--quiet", "--onnx", str(target)]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    X, _ = pm.datasets.xor(n=300, seed=0)
    import onnx

    proto = onnx.load(target)
    label, proba = session(proto).run(["label", "probabilities"],
                                      {"input": X.astype(np.float64)})
    assert label.shape == (300,) and proba.shape == (300, 2)


def test_cli_refuses_a_bad_onnx_path_before_training(tmp_path, capsys):
    assert cli.main(["xor", "--epochs", "5", "--onnx", str(tmp_path / "m.txt")]) == 2
    err = capsys.readouterr()
    assert "--onnx" in err.err and "training" not in err.out


# --- scikit-learn pipelines through skl2onnx -------------------------------------------

@pytest.fixture(scope="module")
def skl2onnx():
    skl2onnx = pytest.importorskip("skl2onnx")
    pytest.importorskip("onnxruntime")
    from portable_mlp.sklearn import register_onnx_converters

    register_onnx_converters()
    return skl2onnx


def fitted(estimator, X, y):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(StandardScaler(), estimator)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return pipe.fit(X, y)


def run_pipe(skl2onnx, pipe, X, options=None):
    proto = skl2onnx.to_onnx(pipe, X[:1], options=options)
    sess = session(proto)
    return sess.run(None, {sess.get_inputs()[0].name: X})


@pytest.mark.parametrize("data", ["digits", "breast_cancer"])
def test_classifier_pipelines_give_predicts_labels(skl2onnx, data):
    """Digits (10 int classes) and breast cancer (2 string classes): float32 with ZipMap
    (as scikit-learn's MLPs convert), float64 without."""
    from sklearn import datasets
    from sklearn.model_selection import train_test_split

    from portable_mlp.sklearn import MLPClassifier

    X, y = getattr(datasets, f"load_{data}")(return_X_y=True)
    if data == "breast_cancer":
        y = np.array(["malignant", "benign"])[y]
    Xtr, Xte, ytr, _ = train_test_split(X, y, random_state=0)
    pipe = fitted(MLPClassifier((32,), max_iter=40, random_state=0), Xtr, ytr)
    label, zipped = run_pipe(skl2onnx, pipe, Xte.astype(np.float32))
    np.testing.assert_array_equal(label, pipe.predict(Xte))
    proba = np.array([[row[c] for c in pipe.classes_] for row in zipped])
    assert np.abs(proba - pipe.predict_proba(Xte)).max() <= 1e-5
    label, proba = run_pipe(skl2onnx, pipe, Xte, {MLPClassifier: {"zipmap": False}})
    np.testing.assert_array_equal(label, pipe.predict(Xte))
    assert np.abs(proba - pipe.predict_proba(Xte)).max() <= 1e-12


def test_one_class_and_multilabel_convert_without_zipmap(skl2onnx):
    from portable_mlp.sklearn import MLPClassifier

    X = rows(200, "float64")
    one = {MLPClassifier: {"zipmap": False}}
    for y in (np.full(200, 7), (X[:, :3] > 0).astype(int)):
        pipe = fitted(MLPClassifier((8,), max_iter=5, random_state=0), X, y)
        label, proba = run_pipe(skl2onnx, pipe, X, one)
        np.testing.assert_array_equal(label, pipe.predict(X))
        assert np.abs(proba - pipe.predict_proba(X)).max() <= 1e-12
        with pytest.raises(ValueError, match="convert it with options="):
            run_pipe(skl2onnx, pipe, X)


@pytest.mark.parametrize("loss", ["squared_error", "poisson"])
def test_regressor_pipelines_give_predict(skl2onnx, loss):
    from sklearn.datasets import load_diabetes

    from portable_mlp.sklearn import MLPRegressor

    X, y = load_diabetes(return_X_y=True)
    pipe = fitted(MLPRegressor(loss, (16,), max_iter=40, random_state=0), X, y)
    (out,) = run_pipe(skl2onnx, pipe, X)
    want = pipe.predict(X)
    assert out.shape == (X.shape[0], 1)
    assert np.abs(out[:, 0] - want).max() <= 1e-12 * np.abs(want).max()


def test_the_serving_benchmark_runs():
    pytest.importorskip("onnxruntime")
    from benchmarks import serving

    times = serving.measure([4, 5, 2], "float64", rounds=2, threads=1)
    assert set(times) == {"onnxruntime", "predict"} and min(times.values()) > 0.0


# --- the pieces of issue 23 ------------------------------------------------------------

def new_pieces(dtype: str = "float64", approximate: str = "tanh") -> pm.Sequential:
    """A model that holds every newer piece type, with settings away from the defaults."""
    model = pm.Sequential([pm.Linear(5, 8), pm.GELU(approximate), pm.Dropout(0.5),
                           pm.Linear(8, 8), pm.LayerNorm(8, eps=1e-3), pm.SiLU(),
                           pm.Linear(8, 8), pm.LeakyReLU(0.2), pm.Linear(8, 8), pm.ELU(0.5),
                           pm.Linear(8, 3), pm.Softplus()], seed=4, dtype=dtype)
    host = model.host_params()
    rng = np.random.default_rng(5)  # a LayerNorm scale and shift that are not 1 and 0
    host[4], host[5] = rng.uniform(0.5, 2.0, 8), rng.standard_normal(8)
    model.load_params(host)
    return model


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_new_pieces_run_in_onnxruntime_as_numpy_computes_them(dtype):
    pytest.importorskip("onnx")
    model = new_pieces(dtype)
    X = rows(2000, dtype)
    (out,) = session(export.to_onnx(model)).run(None, {"input": X})
    assert np.abs(out - model(X)).max() <= TOL[dtype] * 10


def test_exact_gelu_exports_with_erf():
    pytest.importorskip("onnx")
    torch = pytest.importorskip("torch")
    model = new_pieces("float32", approximate="none").to("torch")  # the namespace with erf
    X = rows(500, "float32")
    proto = export.to_onnx(model)  # float32: onnxruntime has no float64 Erf
    (out,) = session(proto).run(None, {"input": X})
    assert np.abs(out - model(torch.from_numpy(X)).numpy()).max() <= 1e-5
    assert "Erf" in [n.op_type for n in proto.graph.node]


@pytest.mark.parametrize("approximate", ["tanh", "none"])
def test_new_pieces_torch_module_equals_the_model(approximate):
    torch = pytest.importorskip("torch")
    model = new_pieces("float64", approximate)
    module = model.to_torch_module()
    assert [type(m).__name__ for m in module][1:7] == [
        "GELU", "Dropout", "Linear", "LayerNorm", "SiLU", "Linear"]
    X = rows(500, "float64")
    with torch.no_grad():
        got = module(torch.from_numpy(X)).numpy()
    want = model.to("torch", dtype="float64")(X).numpy()  # torch: the namespace with erf
    assert np.abs(got - want).max() <= 1e-12
