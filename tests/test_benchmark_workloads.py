"""The benchmarks' workloads still run against the library. CI does not time them; this
catches a workload that a change in the library broke. It runs each variant of the step
report's rows for the session's backend once, on ``xor``, and the fit benchmark's two loops,
which must agree."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

from benchmarks import _fit_loops as fl
from benchmarks import _workloads as w


def test_the_step_report_rows_of_this_backend_run(backend):
    config = w.CONFIGS["xor"]
    rows = [row for row, (name, _) in w.BACKEND_ROWS.items()
            if name == backend and w.availability(row, config) is None]
    if not rows:
        pytest.skip(f"no row of the step report runs on {backend} here")
    for row in rows:
        work = w.build(row, config)
        for variant in w.VARIANTS:
            assert w.time_steps(work, variant, 2) > 0.0


def test_the_fit_benchmark_loops_run_and_agree(backend):
    if backend not in ("numpy", "torch", "jax"):
        pytest.skip(f"the fit benchmark has no hand loop for {backend}")
    config = dataclasses.replace(fl.FIT_CONFIGS["xor"], epochs=3)
    work = fl.build(backend, config)
    hand, ours = work.hand(), work.portable_mlp()
    assert ours == pytest.approx(hand, rel=1e-9)  # the same training: the same last epoch


@pytest.mark.parametrize("name", ["xor", "digits"])
def test_the_lean_torch_loop_trains_as_autograd_does(backend, name):
    """benchmarks.fit's lean torch loop (manual chain rule, in-place foreach Adam) is
    the same training as the autograd loop and as pm.fit: the same last epoch."""
    if backend != "torch":
        pytest.skip("the lean loop is torch's")
    pytest.importorskip("sklearn")
    config = dataclasses.replace(fl.FIT_CONFIGS[name], epochs=2)
    work = fl.build(backend, config)
    assert work.lean is not None
    lean, hand, ours = work.lean(), work.hand(), work.portable_mlp()
    rel = 1e-9 if config.dtype == "float64" else 1e-4
    assert lean == pytest.approx(hand, rel=rel)
    assert lean == pytest.approx(ours, rel=rel)


def test_the_dropout_benchmarks_hand_step_takes_the_librarys_steps():
    """benchmarks.dropout: its hand-written step draws the library's masks (the same
    weights after three steps), and every row runs."""
    import numpy as np

    from benchmarks import dropout as bench

    config = dataclasses.replace(w.CONFIGS["mnist"], sizes=(20, 16, 16, 3), batch=40,
                                 dtype="float64")
    model = bench.network(config, 0.3)
    ws = [p.copy() for p in model.params]
    ours, hand = bench.pm_step(model, config), bench.hand_step(ws, config, 0.3)
    for _ in range(3):
        ours()
        hand()
    for a, b in zip(model.params, ws, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert not np.allclose(ws[0], bench.network(config, 0.0).params[0])  # it trained
    times = bench.measure(config, rounds=1, steps=1)
    with_torch = importlib.util.find_spec("torch") is not None
    assert len(times) == (6 if with_torch else 4) and all(t > 0 for t in times.values())
