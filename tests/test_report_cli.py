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
