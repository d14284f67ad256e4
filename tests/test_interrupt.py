"""Ctrl-C stops fit at a step boundary; a killed save leaves a loadable checkpoint."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import portable_mlp as pm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
posix_only = pytest.mark.skipif(os.name != "posix", reason="signals as on POSIX")


@pytest.fixture
def default_sigint():
    """Python's own SIGINT handler: a shell without job control starts background jobs
    with SIGINT ignored, and fit leaves an ignored or foreign handler alone."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _setup(batch_size):
    X, y = pm.datasets.xor(n=300, seed=0)
    Y = np.asarray(pm.one_hot(y, 2))
    model = pm.MLP([2, 16, 2], seed=5)
    return pm.Trainer(model, optimizer=pm.Adam(lr=0.01)), X, Y


def _replay(steps, batch_size):
    """The state after exactly ``steps`` steps of fit(shuffle=False)."""
    trainer, X, Y = _setup(batch_size)
    n = X.shape[0]
    starts = list(range(0, n, batch_size))
    for k in range(steps):
        start = starts[k % len(starts)]
        trainer.step(X[start:start + batch_size], Y[start:start + batch_size])
    return trainer


def _assert_same_params(a, b):
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


@posix_only
@pytest.mark.usefixtures("default_sigint")
def test_sigint_stops_at_a_step_boundary_with_history():
    trainer, X, Y = _setup(30)

    def press_ctrl_c(trainer, epoch, logs):
        if epoch == 2:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(pm.TrainingInterrupted) as info:
        trainer.fit(X, Y, epochs=50, batch_size=30, shuffle=False, progress=False,
                    callbacks=[press_ctrl_c])
    assert isinstance(info.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert len(info.value.history["loss"]) == 3 and info.value.step == trainer.steps == 30
    _assert_same_params(trainer.model.host_params(), _replay(30, 30).model.host_params())


TRAIN = textwrap.dedent("""
    import signal
    import sys
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    import numpy as np
    import portable_mlp as pm
    sys.path.insert(0, {tests!r})
    from test_interrupt import _setup
    trainer, X, Y = _setup(30)
    ready = pm.LambdaCallback(lambda t, e, logs: None)
    ready.on_train_begin = lambda t: print("READY", flush=True)
    try:
        trainer.fit(X, Y, epochs=10**6, batch_size=30, shuffle=False, progress=False,
                    callbacks=[ready, pm.Checkpoint({ckpt!r}, every=3)])
    except pm.TrainingInterrupted as exc:
        pm.save(trainer.model, {final!r})
        print("STEPS", exc.step, len(exc.history["loss"]), flush=True)
""")


START_TIMEOUT = 120.0  # seconds for a worker to import and print READY on a busy machine


def _start(code, tmp_path):
    """A worker that has printed READY; any other line before it is kept for the report.
    A worker that exits or stays silent fails with its exit status and its stderr."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    seen = []
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if not selector.select(timeout=deadline - time.monotonic()):
                continue
            line = proc.stdout.readline()
            if line.strip() == "READY":
                return proc
            if not line:  # the worker exited
                break
            seen.append(line)
    proc.kill()
    _, err = proc.communicate(timeout=30)
    raise AssertionError(f"worker did not start (exit status {proc.returncode}); stdout "
                         f"before READY: {''.join(seen)!r}; stderr:\n{err}")


@posix_only
@pytest.mark.slow
def test_sigint_at_random_moments_leaves_a_completed_step(tmp_path):
    rng = np.random.default_rng(0)
    ckpt, final = str(tmp_path / "ckpt.safetensors"), str(tmp_path / "final.safetensors")
    code = TRAIN.format(tests=os.path.join(ROOT, "tests"), ckpt=ckpt, final=final)
    for _ in range(4):
        proc = _start(code, tmp_path)
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        steps, epochs = map(int, out.split()[-2:])
        assert epochs == steps // 10  # ten steps per epoch
        model = pm.load(final)
        _assert_same_params(model.host_params(), _replay(steps, 30).model.host_params())
        if epochs >= 3:  # the last checkpoint loads, with its optimizer, at a completed step
            saved = pm.load(ckpt)
            opt = pm.load_optimizer(ckpt, saved)
            assert opt.state["step"] % 30 == 0 and opt.state["step"] <= steps
            replay = _replay(opt.state["step"], 30)
            _assert_same_params(saved.host_params(), replay.model.host_params())
        os.remove(final)


SAVE = textwrap.dedent("""
    import portable_mlp as pm
    models = [pm.MLP([32, 384, 384, 8], seed=s) for s in (1, 2)]
    pm.save(models[0], {path!r})
    print("READY", flush=True)
    i = 0
    while True:
        i += 1
        pm.save(models[i % 2], {path!r})
""")


@posix_only
@pytest.mark.slow
def test_sigkill_during_save_leaves_a_loadable_checkpoint(tmp_path):
    rng = np.random.default_rng(1)
    path = str(tmp_path / "m.safetensors")
    candidates = [pm.MLP([32, 384, 384, 8], seed=s).host_params() for s in (1, 2)]
    for _ in range(8):
        proc = _start(SAVE.format(path=path), tmp_path)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.kill()  # SIGKILL: no cleanup runs
        proc.communicate(timeout=30)  # reaps it and closes the pipes
        params = pm.load(path).host_params()
        assert any(all(np.array_equal(a, b) for a, b in zip(params, c, strict=True))
                   for c in candidates)


@posix_only
def test_an_ignored_sigint_stays_ignored():
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        trainer, X, Y = _setup(30)
        trainer.fit(X, Y, epochs=3, progress=False,
                    callbacks=[lambda t, e, logs: os.kill(os.getpid(), signal.SIGINT)])
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        assert trainer.steps == 3
    finally:
        signal.signal(signal.SIGINT, previous)
