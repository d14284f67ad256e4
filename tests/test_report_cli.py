"""``python -m benchmarks.report``: bad arguments end in one line and exit 2 before anything
is measured, and a run that measures nothing leaves no chart of an earlier run behind."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import portable_mlp

ROOT = Path(portable_mlp.__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def report(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "benchmarks.report", *args], cwd=cwd,
                          env=ENV, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args, fragment", [
    (["--backends", "nump"], "--backends: unknown 'nump'; expected a comma-separated list of "),
    (["--configs", "mnst"], "--configs: unknown 'mnst'"),
    (["--configs", ","], "--configs: no name given"),
    (["--fit-configs", "digit"], "--fit-configs: unknown 'digit'"),
    (["--rounds", "0"], "--rounds: expected an integer >= 1, got '0'"),
    (["--sample-s", "nan"], "--sample-s: expected a finite number"),
    (["--threads", "-2"], "--threads: expected an integer >= 1"),
    (["--out", "README.md"], "--out README.md: is not a folder"),
])
def test_bad_arguments_end_in_one_line(args, fragment):
    result = report(*args)
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m benchmarks.report: error: ")
    assert fragment in lines[0]


def test_nothing_measured_leaves_no_stale_chart(tmp_path):
    (tmp_path / "report.png").write_bytes(b"a chart of an earlier run")
    # dask is timed on xor only: its mnist row is skipped without being measured
    result = report("--backends", "dask", "--configs", "mnist", "--rounds", "1",
                    "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "report.png").exists()
    assert "no chart: nothing was measured" in result.stdout
    assert "report.png" not in result.stdout
    assert (tmp_path / "report.json").exists()


def test_help_explains_the_columns_and_the_dashed_line():
    result = report("--help")
    assert result.returncode == 0
    for term in ("GFLOP/s f/h/pm", "pm/hand", "hand/floor", "dashed line"):
        assert term in result.stdout


def test_your_network_is_timed_and_the_fastest_backend_named(tmp_path):
    import json

    result = report("--sizes", "30,64,2", "--batch", "50", "--optimizer", "adam", "--loss",
                    "cross_entropy", "--activation", "relu", "--backends",
                    "numpy,array_api_strict", "--rounds", "2", "--sample-s", "0.01",
                    "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "your network: 30-64-2 relu, cross_entropy, adam, batch 50, float32" in result.stdout
    last = [line for line in result.stdout.splitlines() if line.startswith("fastest")]
    assert len(last) == 1 and "faster than" in last[0] and "(the next)" in last[0]
    saved = json.loads((tmp_path / "report.json").read_text())
    measured = {r["backend"]: r for r in saved["yours"]}
    assert set(measured) == {"numpy", "array_api_strict"}
    assert all(len(r["seconds"]) == 2 for r in measured.values())  # every round is kept
    fastest = min(measured, key=lambda b: measured[b]["median_s"])
    assert last[0].startswith(f"fastest for your network: {fastest}, ")


@pytest.mark.parametrize("sizes", ["30", "30,0,2", "a,b"])
def test_bad_sizes_end_in_one_line(sizes):
    result = report("--sizes", sizes)
    assert result.returncode == 2 and "--sizes" in result.stderr


def test_the_ratios_are_those_of_the_medians_printed():
    from benchmarks import report as rep

    samples = {"floor": [1.0, 1.0, 1.0], "hand": [1.0, 2.0, 3.0],
               "portable_mlp": [2.5, 1.0, 2.9]}
    row = rep.summarize("numpy", "xor", samples, {"floor": 1, "hand": 1, "portable_mlp": 1}, 3)
    # medians 2.5 and 2.0: the column says 1.25, as the two medians beside it do (the median
    # of the per-round ratios, 0.97, would say portable_mlp was the faster)
    assert row["pm_over_hand"] == 2.5 / 2.0
    assert row["per_round_ratios"]["pm_over_hand"] == [2.5, 0.5, 2.9 / 3.0]


def test_fastest_line_names_the_next_backend():
    from benchmarks.yours import fastest_line

    line = fastest_line({"numpy": 2.0e-3, "jax": 1.0e-3, "torch": 4.0e-3}, "mnist")
    assert line.startswith("fastest for mnist: jax, 2.00x faster than numpy (the next)")
