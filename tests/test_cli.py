"""``portable-mlp`` end to end, in a subprocess: exit codes, what it prints, what it writes."""

import importlib.util
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

import portable_mlp
from portable_mlp import _backend, backends, cli
from portable_mlp.threads import limited

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
    return importlib.util.find_spec(backends.get(name).library) is not None


def final_accuracy(stdout):
    return float(re.search(r"final accuracy (\S+)", stdout).group(1))


def assert_user_error(result, *fragments):
    """Exit 2, nothing on stdout, and one line on stderr that says what is wrong."""
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("portable-mlp: error: ")  # as the README says
    for fragment in fragments:
        assert fragment in lines[0]


def test_xor_default_learns_xor_and_prints_plain_lines_when_not_a_terminal():
    result = run("xor")
    assert result.returncode == 0, result.stderr
    assert "2-8-2 sigmoid MLP on XOR (300 points)" in result.stdout
    assert re.search(r"^epoch 100/1000 - loss \S+ - accuracy \S+$", result.stdout, re.M)
    assert re.search(r"^epoch 1000/1000 - loss \S+ - accuracy \S+$", result.stdout, re.M)
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
    assert not re.search(r"^epoch \d+/\d+ - loss", out, re.M)  # no plain lines beside the bar
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
    rows = {line.split()[0]: line.split() for line in lines[1:len(backends.names()) + 1]}
    assert set(rows) == set(backends.names())  # the registry's: marray, ndonnx too
    assert rows["numpy"][1:2] == ["yes"] and "float64" in rows["numpy"] and "cpu" in rows["numpy"]
    for name, row in rows.items():
        installed = _installed(name)
        assert row[1] == ("yes" if installed else "no")
        if not installed:
            assert f"{name}: {_backend.install_hint(name)}" in result.stdout


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
    (["xor", "--threads", "99999"], ["--threads", "expected a thread count from 1 to"]),
    (["xor", "--hidden", "0"], ["--hidden"]),
    (["train", "--dataset", "mnist"], ["invalid choice: 'mnist'"]),
    (["train", "--dataset", "xor", "--noise", "0.1"], ["--noise does not apply to xor"]),
    (["train", "--dataset", "moons", "--classes", "3"], ["--classes applies to"]),
    (["xor", "--device", "tpu:7"], ["device 'tpu:7' is not available on backend 'numpy'"]),
    ([], ["required: COMMAND"]),
])
def test_bad_arguments_end_with_one_line(args, fragments):
    assert_user_error(run(*args), *fragments)


def test_an_uninstalled_backend_says_how_to_install_it(tmp_path):
    missing = [n for n in _backend.BACKENDS if not _installed(n)]
    if not missing:
        pytest.skip("every backend is installed here")
    assert_user_error(run("xor", "--backend", missing[0], cwd=tmp_path), "is not installed",
                      f"pip install '{ROOT}[")  # run from elsewhere: the checkout's path


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




@pytest.mark.parametrize("make, fragment", [
    (os.mkfifo, "is not a regular file"),  # opening it to write would block: a hang
    (lambda path: os.symlink("missing/target.png", path), "symbolic link to a missing file"),
])
def test_plot_onto_a_fifo_or_a_dangling_symlink_is_refused(tmp_path, make, fragment):
    if not hasattr(os, "mkfifo"):
        pytest.skip("POSIX only")
    make(tmp_path / "xor.png")
    assert_user_error(run("xor", "--plot", "xor.png", cwd=tmp_path), "--plot xor.png", fragment)
    assert [p.name for p in tmp_path.iterdir()] == ["xor.png"]  # the link kept, no target made
    assert not (tmp_path / "missing").exists()


def test_an_empty_plot_name_is_named_as_given():
    assert_user_error(run("xor", "--plot", ""), "--plot", "expected a file name, got ''")


@pytest.mark.parametrize("args, fragments", [
    (["--hidden", "100000000"], ["of memory", "network 2-100000000-2", "--hidden"]),
    (["--hidden", "200000", "200000"], ["of memory", "network 2-200000-200000-2"]),
])
def test_a_run_too_big_for_memory_is_refused_before_it_starts(args, fragments):
    assert_user_error(run("xor", *args), *fragments)


def test_too_many_samples_for_memory_are_refused_before_any_is_drawn():
    assert_user_error(run("train", "--samples", str(10**15)), "of memory", "--samples")


def test_an_allocation_failure_is_one_line(monkeypatch, capsys):
    def moons(*args, **kwargs):
        raise MemoryError("Unable to allocate 3 TiB for an array")

    monkeypatch.setattr(portable_mlp.datasets, "moons", moons)
    assert cli.main(["train", "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("portable-mlp: error: out of memory (Unable to allocate 3 TiB")
    assert err.count("\n") == 1


@pytest.mark.parametrize("args, fragment", [
    (["--dataset", "spirals", "--samples", "2"],
     "--samples 2: spirals with 3 arms need at least 3"),
    (["--dataset", "spirals", "--classes", "10", "--samples", "5"],
     "--samples 5: spirals with 10 arms need at least 10"),
])
def test_too_few_samples_are_named_as_the_flag(args, fragment):
    assert_user_error(run("train", *args), fragment)


def test_version():
    result = run("--version")
    assert result.returncode == 0 and result.stdout == f"portable-mlp {portable_mlp.__version__}\n"


@pytest.mark.parametrize("command", [[], ["xor"], ["train"], ["info"]])
def test_help_is_plain_text_that_names_no_jargon(command):
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "``" not in result.stdout and "the seed's" not in result.stdout


def test_diverging_run_names_the_flags_that_help():
    result = run("train", "--activation", "relu", "--optimizer", "sgd", "--momentum", "0",
                 "--lr", "1e300", "--loss", "mse", "--epochs", "20", "--quiet")
    assert result.returncode == 2, result
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("portable-mlp: error: training diverged at step")
    assert "--lr (now 1e+300)" in last and "--clip-norm 1.0" in last and "clip_norm" not in last


def test_clip_norm_is_a_flag():
    result = run("xor", "--clip-norm", "0.5", "--epochs", "3")
    assert result.returncode == 0, result.stderr
    assert "clip norm 0.5" in result.stdout


def test_cpu_and_cpu0_name_one_device():
    for device in ("cpu", "cpu:0"):
        result = run("xor", "--device", device, "--epochs", "1", "--quiet")
        assert result.returncode == 0, result.stderr


def test_a_backend_that_cannot_help_at_this_size_says_so():
    result = run("xor", "--backend", "array_api_strict", "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("portable-mlp: note: a step here is about")
    assert "--backend numpy is faster" in result.stderr and result.stderr.count("\n") == 1
    assert "note:" not in run("xor", "--backend", "array_api_strict", "--epochs", "2",
                              "--quiet").stderr


def test_threads_limits_torch_and_blas_for_the_run_only():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    with limited(1):
        assert torch.get_num_threads() == 1
        assert all(p["num_threads"] == 1 for p in threadpoolctl.threadpool_info()
                   if p["user_api"] == "blas")
    assert torch.get_num_threads() == before
    assert [p["num_threads"] for p in threadpoolctl.threadpool_info()
            if p["user_api"] == "blas"][:len(blas)] == [p["num_threads"] for p in blas]


def test_threads_flag_runs():
    result = run("xor", "--threads", "1", "--epochs", "2", "--quiet")
    assert result.returncode == 0, result.stderr


def test_ctrl_c_says_where_it_stopped_and_still_writes_the_picture(tmp_path):
    pytest.importorskip("matplotlib")
    if not hasattr(signal, "SIGINT") or os.name != "posix":
        pytest.skip("POSIX signals")
    # a shell without job control starts background jobs with SIGINT ignored: restore Python's
    # handler in the child (not with preexec_fn: forking runs the at-fork hooks of JAX here)
    code = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler);"
            " sys.argv = ['portable-mlp', *sys.argv[1:]];"
            " runpy.run_module('portable_mlp.cli', run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", code, "xor", "--epochs", "1000000", "--plot",
                             "xor.png"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path, env=ENV)
    assert proc.stdout.readline().startswith("training ")
    time.sleep(1.0)  # some epochs
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert re.fullmatch(r"portable-mlp: interrupted in epoch (\d+) of 1000000 \(step \d+\); "
                        r"last loss \d\.\d+, accuracy \d\.\d+\n", err), err
    assert "wrote xor.png" in out and (tmp_path / "xor.png").stat().st_size > 0


# --- install hints: one pip command, worded for where this copy came from -----------

@pytest.fixture
def elsewhere(monkeypatch, tmp_path):
    """portable_mlp as if installed into site-packages; ``use(direct_url)`` sets what pip
    recorded (None: installed from an index)."""
    from portable_mlp import _install

    monkeypatch.setattr(_install, "__file__", str(tmp_path / "site" / "portable_mlp" / "x.py"))

    def use(direct_url):
        class Dist:
            def read_text(self, name):
                return None if direct_url is None else json.dumps(direct_url)

        monkeypatch.setattr(_install.metadata, "distribution", lambda name: Dist())
        _install._source.cache_clear()
        return _install

    yield use
    _install._source.cache_clear()


def test_install_hint_from_a_checkout_names_the_checkout(tmp_path, monkeypatch):
    from portable_mlp import _install

    monkeypatch.chdir(ROOT)
    assert _install.pip_install("torch") == "pip install '.[torch]'"
    monkeypatch.chdir(tmp_path)
    assert _install.pip_install("cuda12", "cuda13") == (
        f"pip install '{ROOT}[cuda12]' or pip install '{ROOT}[cuda13]'")
    assert _backend.install_hint("torch").startswith(f"pip install '{ROOT}[torch]' (")
    assert "https://download.pytorch.org/whl/cpu" in _backend.install_hint("torch")


def test_install_hint_after_pip_install_of_a_folder(elsewhere, tmp_path, monkeypatch):
    clone = tmp_path / "my clone"
    clone.mkdir()
    (clone / "pyproject.toml").write_text('[project]\nname = "portable_mlp"\n')
    install = elsewhere({"url": (clone.as_uri()), "dir_info": {}})
    assert install.pip_install("plot") == f"pip install '{clone}[plot]'"
    monkeypatch.chdir(clone)
    assert install.pip_install("plot") == "pip install '.[plot]'"


def test_install_hint_after_pip_install_of_a_url(elsewhere):
    url = "git+https://example.org/portable_mlp.git@0123abc"
    install = elsewhere({"url": url, "vcs_info": {"vcs": "git", "commit_id": "0123abc"}})
    assert install.pip_install("jax") == f"pip install 'portable_mlp[jax] @ {url}'"


def test_install_hint_after_pip_install_from_an_index(elsewhere):
    assert elsewhere(None).pip_install("dask") == "pip install 'portable_mlp[dask]'"


def test_info_imports_the_backends_in_processes_of_their_own(tmp_path):
    """Importing torch, JAX and Dask one after the other took most of info's 4.7 s: they
    are described side by side, each in its own process, none in the command's."""
    code = ("import sys, contextlib, io\n"
            "from portable_mlp import cli\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    cli.main(['info'])\n"
            "print(sorted(m for m in ('torch', 'jax', 'dask', 'cupy') if m in sys.modules))\n"
            "print('torch ' in out.getvalue() and 'jax ' in out.getvalue())")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["[]", "True"]


def test_new_activations_and_dropout_train():
    result = run("train", "--activation", "gelu", "--dropout", "0.1", "--optimizer", "adamw",
                 "--epochs", "30", "--quiet")
    assert result.returncode == 0, result.stderr
    assert final_accuracy(result.stdout) > 0.5
    loud = run("train", "--activation", "elu", "--dropout", "0.1", "--epochs", "2")
    assert "elu MLP" in loud.stdout and "dropout 0.1" in loud.stdout
    assert_user_error(run("train", "--dropout", "1.5"), "--dropout", "[0, 1)")
