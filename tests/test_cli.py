"""``portable-mlp`` end to end, in a subprocess: exit codes, what it prints, what it writes."""

import importlib.util
import os
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

import portable_mlp
from portable_mlp import _backend

PROG = [sys.executable, "-m", "portable_mlp.cli"]
# the subprocesses import this checkout's portable_mlp, installed or not, from any directory
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(portable_mlp.__file__)))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}


def run(*args, cwd=None):
    return subprocess.run([*PROG, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=ENV, timeout=120)


def _installed(name):
    """Whether a backend's library is installed, without importing it here."""
    return importlib.util.find_spec(_backend._MODULES[name][0].split(".")[0]) is not None


def final_accuracy(stdout):
    return float(re.search(r"final accuracy (\S+)", stdout).group(1))


def assert_user_error(result, *fragments):
    """Exit 2, nothing on stdout, and one line on stderr that says what is wrong."""
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("portable-mlp") and ": error: " in lines[0]
    for fragment in fragments:
        assert fragment in lines[0]


def test_xor_default_learns_xor_and_prints_plain_lines_when_not_a_terminal():
    result = run("xor")
    assert result.returncode == 0, result.stderr
    assert "2-8-2 sigmoid MLP on XOR (300 points)" in result.stdout
    assert re.search(r"^epoch +1000  loss \S+  accuracy \S+$", result.stdout, re.M)
    assert final_accuracy(result.stdout) >= 0.99
    assert result.stderr == ""


def test_xor_quiet_prints_only_the_result():
    result = run("xor", "--hidden", "3", "--no-bias", "--epochs", "50", "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("final accuracy")


def test_xor_shows_a_progress_bar_on_a_terminal():
    pytest.importorskip("tqdm")
    fcntl, pty, termios = (pytest.importorskip(m) for m in ("fcntl", "pty", "termios"))  # POSIX
    leader, follower = pty.openpty()
    # a terminal of 24 rows and 100 columns (a new pty has 0 columns: no room for a bar)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen([*PROG, "xor", "--epochs", "2000"], stdout=follower,
                            stderr=follower, stdin=subprocess.DEVNULL, env=ENV)
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: the command has ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    assert proc.wait(timeout=120) == 0
    out = b"".join(chunks).decode(errors="replace")
    assert "epoch/s" in out and "loss=" in out and "acc=" in out
    assert not re.search(r"^epoch +\d+  loss", out, re.M)  # no plain lines beside the bar
    assert "final accuracy" in out


@pytest.mark.parametrize("dataset", ["moons", "circles", "spirals", "xor"])
def test_train_runs_on_each_dataset(dataset):
    result = run("train", "--dataset", dataset, "--epochs", "40", "--hidden", "8")
    assert result.returncode == 0, result.stderr
    classes = 3 if dataset == "spirals" else 2
    assert f"2-8-{classes} tanh MLP on" in result.stdout and "cross_entropy, Adam" in result.stdout
    assert 0.0 <= final_accuracy(result.stdout) <= 1.0


def test_train_spirals_learns_with_the_defaults():
    result = run("train", "--dataset", "spirals", "--classes", "4", "--samples", "200", "--quiet")
    assert result.returncode == 0, result.stderr
    assert final_accuracy(result.stdout) >= 0.95


def test_info_lists_every_backend():
    result = run("info")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["backend", "installed", "version", "default", "dtype", "devices",
                                "pip", "extra"]
    rows = {line.split()[0]: line.split() for line in lines[1:len(_backend.BACKENDS) + 1]}
    assert set(rows) == set(_backend.BACKENDS)
    assert rows["numpy"][1:2] == ["yes"] and "float64" in rows["numpy"] and "cpu" in rows["numpy"]
    for name, row in rows.items():
        installed = _installed(name)
        assert row[1] == ("yes" if installed else "no")
        if not installed:
            assert f"{name}: pip install 'portable_mlp[" in result.stdout


def test_plot_and_gif_are_written(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    pytest.importorskip("matplotlib")
    result = run("xor", "--plot", "xor.png", "--gif", "xor.gif", "--frames", "4", "--quiet",
                 cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote xor.png" in result.stdout and "wrote xor.gif (4 frames)" in result.stdout
    with Image.open(tmp_path / "xor.gif") as gif:
        assert gif.n_frames == 4
    image = np.asarray(Image.open(tmp_path / "xor.png").convert("RGB"), dtype=float)
    assert image.shape == (288, 960, 3)
    # the middle panel is painted with both classes' region colours (tab10 blue and orange,
    # lightened), in roughly equal parts on XOR
    middle = image[:, 360:600].reshape(-1, 3)
    for rgb in ((177, 207, 229), (255, 210, 171)):
        share = (np.abs(middle - rgb).max(axis=1) <= 3).mean()
        assert 0.15 < share < 0.6, (rgb, share)


def test_import_does_not_need_matplotlib():
    code = "import sys, portable_mlp; sys.exit('matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], env=ENV, timeout=60).returncode == 0


# --- errors a user can make: one line, exit 2, before any training ------------

@pytest.mark.parametrize("args, fragments", [
    (["xor", "--backend", "nope"], ["invalid choice: 'nope'"]),
    (["xor", "--lr", "-1"], ["--lr", "expected a positive number"]),
    (["xor", "--lr", "nan"], ["--lr"]),
    (["xor", "--epochs", "ten"], ["--epochs", "expected a positive integer"]),
    (["xor", "--momentum", "1.5"], ["--momentum"]),
    (["xor", "--hidden", "0"], ["--hidden"]),
    (["train", "--dataset", "mnist"], ["invalid choice: 'mnist'"]),
    (["train", "--dataset", "xor", "--noise", "0.1"], ["--noise does not apply to xor"]),
    (["train", "--dataset", "moons", "--classes", "3"], ["--classes applies to"]),
    (["xor", "--device", "tpu:7"], ["device 'tpu:7' is not available on backend 'numpy'"]),
    ([], ["required: COMMAND"]),
])
def test_bad_arguments_end_with_one_line(args, fragments):
    assert_user_error(run(*args), *fragments)


def test_an_uninstalled_backend_says_how_to_install_it():
    missing = [n for n in _backend.BACKENDS if not _installed(n)]
    if not missing:
        pytest.skip("every backend is installed here")
    assert_user_error(run("xor", "--backend", missing[0]), "is not installed",
                      "pip install 'portable_mlp[")


@pytest.mark.parametrize("flag, name, fragment", [
    ("--plot", "missing-dir/xor.png", "cannot write there"),
    ("--plot", "xor.txt", "ending in .png"),
    ("--gif", "xor.png", "ending in .gif"),
    ("--plot", "a-dir.png", "is a directory"),
])
def test_unwritable_outputs_are_refused_before_training(tmp_path, flag, name, fragment):
    pytest.importorskip("matplotlib")
    (tmp_path / "a-dir.png").mkdir()
    assert_user_error(run("xor", flag, name, cwd=tmp_path), f"{flag} {name}", fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-dir.png"]  # nothing left behind


def test_install_hints_are_pip_commands_one_extra_each():
    assert _backend.install_hint("torch") == "pip install 'portable_mlp[torch]'"
    assert _backend.install_hint("cupy") == ("pip install 'portable_mlp[cuda12]' or "
                                             "pip install 'portable_mlp[cuda13]'")
