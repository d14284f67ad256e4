"""The traps a newcomer fell into (issue 24): threads, callback order, dtypes kept,
early stopping's message, labels as users hold them, and validation_split."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import threads as pool


def _data(n=200, seed=0):
    X, y = pm.datasets.xor(n=n, seed=seed)
    return X, y


def _net(seed=0):
    return pm.MLP([2, 8, 2], activation="tanh", output="identity", seed=seed)


# --- threads -------------------------------------------------------------------------------

def _blas_threads():
    from threadpoolctl import threadpool_info

    return [p["num_threads"] for p in threadpool_info()]


def test_threads_limit_the_pools_for_the_call_only():
    X, y = _data()
    before = _blas_threads()
    seen = []
    pm.fit(_net(), X, y, loss="cross_entropy", epochs=2, progress=False, threads=1,
           callbacks=[lambda t, e, logs: seen.append(_blas_threads())])
    assert seen and all(count == 1 for counts in seen for count in counts)
    assert _blas_threads() == before


def test_threads_set_torch_for_the_call_and_put_it_back():
    torch = pytest.importorskip("torch")
    X, y = _data()
    before = torch.get_num_threads()
    seen = []
    model = pm.MLP([2, 8, 2], output="identity", backend="torch")
    trainer = pm.Trainer(model, loss="cross_entropy", threads=1)
    trainer.fit(X, y, epochs=2, progress=False,
                callbacks=[lambda t, e, logs: seen.append(torch.get_num_threads())])
    assert seen == [1, 1] and torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_threads_must_be_a_positive_int(bad):
    with pytest.raises(ValueError, match="threads must be None or a positive int"):
        pm.Trainer(_net(), threads=bad)


def test_too_many_threads_for_the_idle_cores_warn_once_with_the_advice(monkeypatch):
    monkeypatch.setattr(pool, "_warned", False)
    monkeypatch.setattr(pool, "idle_cores", lambda: 0.3)
    monkeypatch.setattr(pool, "pool_threads", lambda: 4)
    X, y = _data()
    with pytest.warns(pool.ThreadOversubscriptionWarning, match="threads=1"):
        pm.fit(_net(), X, y, loss="cross_entropy", epochs=1, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pm.fit(_net(), X, y, loss="cross_entropy", epochs=1, progress=False)  # once only


def test_threads_given_or_enough_idle_cores_do_not_warn(monkeypatch):
    monkeypatch.setattr(pool, "_warned", False)
    monkeypatch.setattr(pool, "idle_cores", lambda: 0.3)
    monkeypatch.setattr(pool, "pool_threads", lambda: 4)
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pm.fit(_net(), X, y, loss="cross_entropy", epochs=1, progress=False, threads=1)
        monkeypatch.setattr(pool, "idle_cores", lambda: 8.0)
        pm.fit(_net(), X, y, loss="cross_entropy", epochs=1, progress=False)


def test_the_estimators_take_threads(monkeypatch):
    pytest.importorskip("sklearn")
    from portable_mlp.sklearn import MLPClassifier, _stochastic

    seen = []
    original = _stochastic.fit

    def spy(*args, **kwargs):
        seen.append(_blas_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(_stochastic, "fit", spy)
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged in 3 iterations
        est = MLPClassifier((8,), max_iter=3, threads=1, random_state=0).fit(X, y)
    assert est.get_params()["threads"] == 1
    assert seen and all(count == 1 for count in seen[0])
    with pytest.raises(ValueError, match="threads"):
        MLPClassifier(threads=0).fit(X, y)


# --- callbacks: a defined file whatever their order --------------------------------------

def _overfitting_fit(callbacks):
    """Validation labels are the training labels flipped: val_loss is best at epoch 1 and
    rises from there, so EarlyStopping(patience=2) stops at epoch 3 and restores epoch 1."""
    X, y = _data()
    model = _net(seed=3)
    history = pm.fit(model, X, y, loss="cross_entropy", optimizer=pm.Adam(lr=0.05), epochs=20,
                     progress=False, validation_data=(X, 1 - y), callbacks=callbacks)
    return model, history


@pytest.mark.parametrize("order", ["checkpoint first", "early stopping first"])
def test_checkpoint_holds_the_returned_model_whatever_the_order(tmp_path, order):
    path = tmp_path / "m.safetensors"
    stop = pm.EarlyStopping(monitor="val_loss", patience=2)
    ckpt = pm.Checkpoint(path)
    callbacks = [ckpt, stop] if order == "checkpoint first" else [stop, ckpt]
    model, history = _overfitting_fit(callbacks)
    assert stop.best_epoch == 1 and stop.stopped_epoch == len(history["loss"]) == 3
    assert stop.best == history["val_loss"][0]
    for saved, kept in zip(pm.load(path).host_params(), model.host_params(), strict=True):
        np.testing.assert_array_equal(saved, kept)


@pytest.mark.parametrize("order", ["checkpoint first", "early stopping first"])
def test_save_best_only_holds_the_best_epoch_whatever_the_order(tmp_path, order):
    path = tmp_path / "best.safetensors"
    stop = pm.EarlyStopping(monitor="val_loss", patience=2, restore_best=False)
    ckpt = pm.Checkpoint(path, save_best_only=True, monitor="val_loss")
    callbacks = [ckpt, stop] if order == "checkpoint first" else [stop, ckpt]
    model, history = _overfitting_fit(callbacks)
    assert ckpt.best_epoch == 1 and ckpt.saved == 1
    best = pm.load(path)
    X, y = _data()
    trainer = pm.Trainer(best, loss="cross_entropy")
    assert trainer.evaluate(X, 1 - y)["loss"] == pytest.approx(history["val_loss"][0])
    assert not all(np.array_equal(a, b) for a, b in zip(best.host_params(),
                                                        model.host_params()))


def test_checkpoint_refuses_a_monitor_this_fit_does_not_log(tmp_path):
    X, y = _data()
    ckpt = pm.Checkpoint(tmp_path / "m.safetensors", save_best_only=True, monitor="val_loss")
    with pytest.raises(ValueError, match="validation_data"):
        pm.fit(_net(), X, y, loss="cross_entropy", epochs=1, progress=False, callbacks=[ckpt])
    with pytest.raises(ValueError, match="cannot monitor"):
        pm.Checkpoint(tmp_path / "m.safetensors", monitor="f1")


def test_early_stopping_says_when_it_stops_and_what_it_restored(capsys):
    _overfitting_fit([pm.EarlyStopping(monitor="val_loss", patience=2, verbose=True)])
    out = capsys.readouterr().out
    assert "EarlyStopping: stopped at epoch 3: val_loss did not improve for 2 epochs" in out
    assert "EarlyStopping: restored the parameters of epoch 1 (val_loss " in out


def test_early_stopping_is_quiet_by_default(capsys):
    _overfitting_fit([pm.EarlyStopping(monitor="val_loss", patience=2)])
    assert "EarlyStopping" not in capsys.readouterr().out


# --- dtypes kept ---------------------------------------------------------------------------

def test_to_another_backend_keeps_float64():
    torch = pytest.importorskip("torch")
    model = pm.MLP([2, 3, 2], seed=0)
    moved = model.to("torch")
    assert moved.dtype == torch.float64
    for a, b in zip(moved.host_params(), model.host_params(), strict=True):
        np.testing.assert_array_equal(a, b)  # no rounding through float32
    assert model.to("torch", dtype="float32").dtype == torch.float32  # asked for: honoured


def test_to_jax_without_x64_refuses_float64_as_load_does(tmp_path):
    pytest.importorskip("jax")
    code = textwrap.dedent("""
        import portable_mlp as pm
        model = pm.MLP([2, 3, 2])
        pm.save(model, "m.safetensors")
        for move in (lambda: model.to("jax"), lambda: pm.load("m.safetensors", backend="jax")):
            try:
                move()
            except ValueError as exc:
                print("refused:", "jax_enable_x64" in str(exc))
        print(model.to("jax", dtype="float32").dtype)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env=_env())
    assert out.stdout.split("\n")[:3] == ["refused: True", "refused: True", "float32"], out.stderr


def _env():
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "PORTABLE_MLP"))}
    env["PYTHONPATH"] = root
    return env


# --- labels as users hold them -------------------------------------------------------------

def test_a_pandas_series_of_labels_fits_as_its_array():
    pd = pytest.importorskip("pandas")
    X, y = _data()
    a, b = _net(), _net()
    pm.fit(a, X, pd.Series(y), loss="cross_entropy", epochs=3, progress=False)
    pm.fit(b, X, y, loss="cross_entropy", epochs=3, progress=False)
    for p, q in zip(a.host_params(), b.host_params(), strict=True):
        np.testing.assert_array_equal(p, q)


def test_a_dask_series_of_labels_fits_a_dask_model():
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    X, y = _data()
    model = pm.MLP([2, 8, 2], output="identity", backend="dask")
    Xd = dd.from_pandas(pd.DataFrame(X), npartitions=2)
    yd = dd.from_pandas(pd.Series(y), npartitions=2)
    history = pm.fit(model, Xd, yd, loss="cross_entropy", epochs=2, progress=False)
    assert len(history["loss"]) == 2


@pytest.mark.parametrize("labels", [np.array(["no", "yes"]), np.array(["no", "yes"], dtype=object)])
def test_string_labels_are_told_how_to_encode_them(labels):
    X, y = _data()
    with pytest.raises(ValueError, match=r"np\.unique\(y, return_inverse=True\)") as info:
        pm.fit(_net(), X, labels[y], loss="cross_entropy", epochs=1, progress=False)
    assert "floats" not in str(info.value)


def test_float_labels_are_told_to_become_integers():
    X, y = _data()
    with pytest.raises(ValueError, match="held as floats"):
        pm.fit(_net(), X, y.astype(float), loss="cross_entropy", epochs=1, progress=False)


def test_the_estimators_take_a_dask_series_on_dask():
    dd = pytest.importorskip("dask.dataframe")
    pd = pytest.importorskip("pandas")
    pytest.importorskip("sklearn")
    from portable_mlp.sklearn import MLPClassifier

    X, y = _data()
    Xd = dd.from_pandas(pd.DataFrame(X), npartitions=2).to_dask_array(lengths=True)
    yd = dd.from_pandas(pd.Series(y), npartitions=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged
        est = MLPClassifier((8,), max_iter=2, backend="dask", random_state=0).fit(Xd, yd)
    assert est.n_iter_ == 2


@pytest.mark.parametrize("kind", ["string", "category"])
def test_the_estimators_take_string_and_categorical_series(kind):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("sklearn")
    from portable_mlp.sklearn import MLPClassifier

    X, y = _data()
    labels = pd.Series(np.array(["no", "yes"])[y]).astype(kind if kind == "category" else str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged
        est = MLPClassifier((8,), max_iter=3, random_state=0).fit(X, labels)
    assert set(est.predict(X)) <= {"no", "yes"}


def test_evaluate_takes_what_fit_takes():
    X, y = _data()
    model = _net()
    trainer = pm.Trainer(model, loss="cross_entropy")
    by_labels = trainer.evaluate(X, y)
    by_rows = trainer.evaluate(X, pm.one_hot(y, 2))
    assert by_labels == by_rows and 0.0 <= by_labels["accuracy"] <= 1.0
    weights = np.where(y == 1, 1.0, 0.0)
    weighted = trainer.evaluate(X, y, sample_weight=weights)
    subset = trainer.evaluate(X[y == 1], y[y == 1])
    assert weighted == pytest.approx(subset, rel=1e-12)
    with pytest.raises(ValueError, match="different lengths"):
        trainer.evaluate(X, y[:10])


# --- validation_split ------------------------------------------------------------------------

def test_validation_split_holds_out_the_last_rows_as_keras_does():
    X, y = _data()
    split = pm.fit(_net(), X, y, loss="cross_entropy", epochs=3, progress=False,
                   validation_split=0.25)
    by_hand = pm.fit(_net(), X[:150], y[:150], loss="cross_entropy", epochs=3,
                     progress=False, validation_data=(X[150:], y[150:]))
    assert split == by_hand and len(split["val_loss"]) == 3


def test_validation_split_splits_the_sample_weights_too():
    X, y = _data()
    w = np.linspace(0.5, 1.5, 200)
    split = pm.fit(_net(), X, y, loss="cross_entropy", epochs=2, progress=False,
                   sample_weight=w, validation_split=0.5)
    by_hand = pm.fit(_net(), X[:100], y[:100], loss="cross_entropy", epochs=2,
                     progress=False, sample_weight=w[:100], validation_data=(X[100:], y[100:]))
    assert split == by_hand


@pytest.mark.parametrize("fraction, message", [(1.0, r"\[0, 1\)"), (-0.1, r"\[0, 1\)"),
                                               ("0.2", r"\[0, 1\)"), (0.001, "at least one")])
def test_validation_split_refuses_what_it_cannot_do(fraction, message):
    X, y = _data()
    model = _net()
    before = model.host_params()
    with pytest.raises(ValueError, match=message):
        pm.fit(model, X, y, loss="cross_entropy", epochs=1, progress=False,
               validation_split=fraction)
    with pytest.raises(ValueError, match="not both"):
        pm.fit(model, X, y, epochs=1, progress=False, validation_split=0.2,
               validation_data=(X, y))
    for a, b in zip(model.host_params(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fit_spells_out_its_parameters():
    import inspect

    params = inspect.signature(pm.fit).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())
    fit_params = set(inspect.signature(pm.Trainer.fit).parameters) - {"self"}
    assert fit_params <= set(params)


# --- the scikit-learn estimators: an install hint, and moving a fitted one ----------------

BLOCK = """
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] == {module!r}:
            raise ModuleNotFoundError("No module named " + repr(name))
sys.meta_path.insert(0, Block())
"""


def _run_without(module, code, tmp_path):
    return subprocess.run([sys.executable, "-c", BLOCK.format(module=module) + code],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_env())


def test_the_sklearn_module_without_scikit_learn_says_how_to_install_it(tmp_path):
    out = _run_without("sklearn", "import portable_mlp.sklearn", tmp_path)
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: portable_mlp.sklearn needs sklearn"), last
    assert "pip install" in last and "[sklearn]" in last


def test_a_fitted_estimator_moves_to_numpy_and_unpickles_without_torch(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    import pickle

    from portable_mlp.sklearn import MLPClassifier

    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged
        est = MLPClassifier((8,), max_iter=3, backend="torch", random_state=0).fit(X, y)
    proba = est.predict_proba(X)
    assert est.set_params(backend="numpy") is est
    assert est.model_.backend == "numpy" and est.placement_.backend == "numpy"
    assert est.model_.dtype == np.float64  # the fitted model's dtype is kept
    np.testing.assert_allclose(est.predict_proba(X), proba, rtol=1e-12)
    est.partial_fit(X, y)  # the optimizer's state moved too: training continues on NumPy
    (tmp_path / "est.pkl").write_bytes(pickle.dumps(est))
    np.save(tmp_path / "X.npy", X)
    code = ("import pickle, numpy as np\n"
            "est = pickle.loads(open('est.pkl', 'rb').read())\n"
            "print(est.predict(np.load('X.npy'))[:5].tolist(), 'torch' in sys.modules)")
    out = _run_without("torch", code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{est.predict(X)[:5].tolist()} False"


def test_to_moves_a_fitted_estimator_and_refuses_an_unfitted_one():
    pytest.importorskip("sklearn")
    from sklearn.exceptions import NotFittedError

    from portable_mlp.sklearn import MLPRegressor

    with pytest.raises(NotFittedError):
        MLPRegressor().to("numpy")
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # not converged
        est = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, random_state=0)
        est.fit(X, y.astype(float))
    before = est.predict(X)
    est.to("numpy", dtype="float32")
    assert est.model_.dtype == np.float32 and est.get_params()["dtype"] == "float32"
    np.testing.assert_allclose(est.predict(X), before, rtol=1e-5)
