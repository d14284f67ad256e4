"""What fit's history means, checked against a manual computation on every backend."""

from __future__ import annotations

import io

import numpy as np
import pytest

import portable_mlp as pm
from portable_mlp import _backend


def _data(n=90):
    X, y = pm.datasets.xor(n=n, seed=3)
    return X, np.asarray(pm.one_hot(y, 2))


def _manual_epoch(model, X, Y, w, batch_size, seed):
    """One epoch by hand with Trainer.step's math: each batch's loss and hits from the
    forward pass before its update, weighted as the docs say."""
    trainer = pm.Trainer(model, optimizer=pm.SGD(lr=0.5, momentum=0.5), compile=False)
    order = np.random.default_rng(seed).permutation(len(X))
    loss_sum = hit_sum = seen = 0.0
    for start in range(0, len(X), batch_size):
        rows = order[start:start + batch_size]
        wb = np.ones(len(rows)) if w is None else w[rows]
        if wb.sum() == 0:
            continue
        out = _backend.to_host(model(X[rows]))
        loss = np.sum(wb[:, None] * (out - Y[rows]) ** 2) / (2 * wb.sum())
        hits = np.sum(wb * (out.argmax(1) == Y[rows].argmax(1)))
        loss_sum, hit_sum, seen = loss_sum + loss * wb.sum(), hit_sum + hits, seen + wb.sum()
        trainer._step(*[model.placement.from_host(a) for a in (X[rows], Y[rows])],
                      w=None if w is None else model.placement.from_host(wb))
    return loss_sum / seen, hit_sum / seen


@pytest.mark.parametrize("weighted", [False, True])
def test_history_is_the_running_mean_of_the_steps(backend, weighted):
    X, Y = _data()
    w = None
    if weighted:
        w = np.random.default_rng(0).uniform(0.0, 2.0, len(X))
        w[:20] = 0.0
    ref = pm.MLP([2, 6, 2], seed=1, backend=backend, dtype="float64")
    manual = _manual_epoch(ref, X, Y, w, batch_size=20, seed=5)
    model = pm.MLP([2, 6, 2], seed=1, backend=backend, dtype="float64")
    history = pm.fit(model, X, Y, optimizer=pm.SGD(lr=0.5, momentum=0.5), epochs=1,
                     batch_size=20, seed=5, sample_weight=w, progress=False)
    assert history["loss"][0] == pytest.approx(manual[0], rel=1e-10)
    assert history["accuracy"][0] == pytest.approx(manual[1], rel=1e-10)


def test_evaluate_history_is_the_model_after_each_epoch(backend):
    X, Y = _data()
    model = pm.MLP([2, 6, 2], seed=1, backend=backend, dtype="float64")
    trainer = pm.Trainer(model, optimizer=pm.SGD(lr=0.5))
    history = trainer.fit(X, Y, epochs=2, batch_size=30, epoch_loss="evaluate", progress=False,
                          validation_data=(X[:40], Y[:40]))
    placed = [model.placement.from_host(a) for a in (X, Y)]
    after = trainer.evaluate(*placed)
    out = _backend.to_host(model(X))
    assert history["loss"][-1] == pytest.approx(np.sum((out - Y) ** 2) / (2 * len(X)), rel=1e-10)
    assert history["loss"][-1] == pytest.approx(after["loss"], rel=1e-12)
    assert history["accuracy"][-1] == pytest.approx(np.mean(out.argmax(1) == Y.argmax(1)))
    val_out = out[:40]
    assert history["val_loss"][-1] == pytest.approx(np.sum((val_out - Y[:40]) ** 2) / 80,
                                                    rel=1e-10)


def test_verbose_prints_a_line_every_k_epochs_without_a_terminal(capsys):
    X, Y = _data()
    model = pm.MLP([2, 4, 2], seed=0)
    pm.fit(model, X, Y, epochs=7, verbose=3, progress=True)  # stderr is not a terminal here
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" - ")[0] for line in lines] == ["epoch 3/7", "epoch 6/7", "epoch 7/7"]
    assert "loss " in lines[0] and "accuracy " in lines[0]


@pytest.mark.parametrize("verbose", [-1, 1.5, "2"])
def test_verbose_must_be_a_count_of_epochs(verbose):
    X, Y = _data()
    model = pm.MLP([2, 4, 2], seed=0)
    before = model.host_params()
    with pytest.raises(ValueError, match="verbose"):
        pm.fit(model, X, Y, epochs=2, verbose=verbose)
    for a, b in zip(before, model.host_params()):
        np.testing.assert_array_equal(a, b)


def test_lines_go_to_the_stream_given():
    from portable_mlp.progress import Lines

    stream = io.StringIO()
    lines = Lines(epochs=2, every=5, stream=stream)
    lines.update({"loss": 0.5})
    lines.update({"loss": 0.25})
    assert stream.getvalue() == "epoch 2/2 - loss 0.25\n"


def test_training_leaves_torchs_thread_settings_alone():
    torch = pytest.importorskip("torch")
    before = (torch.get_num_threads(), torch.get_num_interop_threads())
    X, Y = _data()
    pm.fit(pm.MLP([2, 4, 2], seed=0, backend="torch"), X, Y, epochs=2, batch_size=30,
           progress=False)
    assert (torch.get_num_threads(), torch.get_num_interop_threads()) == before
