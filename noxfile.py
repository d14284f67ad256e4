"""Test sessions, one per backend; lint, typecheck, docs and benchmarks.

`nox` runs lint and typecheck first (seconds: a mistake fails fast), then the docs
(mkdocs build --strict), the tests of every CPU backend, the generic backend on marray and
ndonnx (generic), CuPy's kernels compiled without a GPU (nvrtc) and scikit-learn's own MLP
tests against our estimators (sklearn_upstream). The backend reaches pytest through
PORTABLE_MLP_BACKEND: a requested backend that fails to import fails the run instead of
skipping. How long each session takes: docs/contributing.md.

torch (the torch and dask sessions, the benchmarks) is installed by `install_torch`:
PORTABLE_MLP_TORCH overrides it with pip arguments of your own, e.g.
`PORTABLE_MLP_TORCH="torch --index-url https://download.pytorch.org/whl/cu126" nox`.
"""

from __future__ import annotations

import os
import shlex
import time
from pathlib import Path

import nox

nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "venv"

CPU_BACKENDS = ["numpy", "array_api_strict", "torch", "jax", "dask"]
# the ONNX tests run in full in the numpy session (onnxruntime, skl2onnx); torch and jax get
# onnx alone, for their exports' graphs against NumPy's
EXTRAS = {"numpy": "test,skl2onnx", "array_api_strict": "test", "torch": "test,onnx",
          "jax": "test,jax,onnx",
          "dask": "test,spmd", "cupy": "test,cuda13"}
TORCH_OVERRIDE = "PORTABLE_MLP_TORCH"
# PyPI's torch for Linux is the multi-GB CUDA build; PyTorch's own index has the CPU one
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
HAS_TORCH = "import importlib.util; print(importlib.util.find_spec('torch') is not None)"


def install_torch(session: nox.Session) -> None:
    """torch, from the first of:

    1. PORTABLE_MLP_TORCH, if set: pip arguments used as they are (``torch==2.13.0``, a
       wheel's path, ``torch --index-url https://download.pytorch.org/whl/cu126``);
    2. a torch wheel that pip's own configuration offers without any index (its
       find-links: a machine that keeps its own wheels, as CI machines without PyTorch's
       index do), then its dependencies as pip finds them;
    3. PyTorch's CPU index (the documented default): ``torch --index-url CPU_INDEX``.

    A reused environment that has torch keeps it (``nox -R`` / ``--no-reuse-existing-virtualenvs``
    to start afresh after changing PORTABLE_MLP_TORCH).
    """
    wanted = os.environ.get(TORCH_OVERRIDE, "").strip()
    if wanted:
        session.install(*shlex.split(wanted))
        return
    if _has_torch(session):
        return
    session.run_install("python", "-m", "pip", "install", "--no-index", "--no-deps", "torch",
                        success_codes=[0, 1], silent=True)
    if _has_torch(session):
        session.install("torch")  # its dependencies; torch itself is satisfied
        return
    session.install("torch", "--index-url", CPU_INDEX)


def _has_torch(session: nox.Session) -> bool:
    out = session.run_install("python", "-c", HAS_TORCH, silent=True)
    return isinstance(out, str) and out.strip().endswith("True")


def install(session: nox.Session, backend: str) -> None:
    if backend in ("torch", "dask"):  # dask: SPMD training sums gradients with torch.distributed
        install_torch(session)
    session.install("-e", f".[{EXTRAS[backend]}]")


# sessions run in the order they are defined here: lint and typecheck first

@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the package, the tests, the benchmarks and the scripts."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "portable_mlp", "tests", "benchmarks", "scripts", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the package (settings in pyproject.toml)."""
    session.install("mypy>=1.11", "-e", ".")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, with warnings as errors: `mkdocs build --strict` into site/.

    `nox -s docs -- --site-dir /tmp/site` passes options to mkdocs build."""
    session.install("-e", ".[docs,sklearn]")
    session.run("mkdocs", "build", "--strict", *session.posargs)


@nox.session
@nox.parametrize("backend", CPU_BACKENDS, ids=CPU_BACKENDS)
def tests(session: nox.Session, backend: str) -> None:
    """The test suite on one backend."""
    install(session, backend)
    session.run("pytest", *session.posargs, env={"PORTABLE_MLP_BACKEND": backend})


@nox.session(default=False)
def tests_cupy(session: nox.Session) -> None:
    """The test suite on CuPy (needs an NVIDIA GPU and CUDA 13)."""
    install(session, "cupy")
    session.run("pytest", *session.posargs, env={"PORTABLE_MLP_BACKEND": "cupy"})


@nox.session
def generic(session: nox.Session) -> None:
    """marray (over NumPy) and ndonnx, libraries no one here wrote, through the generic
    backend: parity with NumPy, fit, predict, gradcheck, save/load, pickling."""
    session.install("-e", ".[test,generic]")
    session.run("pytest", "tests/test_generic.py", *session.posargs,
                env={"PORTABLE_MLP_GENERIC": "marray,ndonnx"})  # a missing one fails


@nox.session
def nvrtc(session: nox.Session) -> None:
    """Every CuPy kernel compiled with NVRTC for sm_90, on a machine without a GPU."""
    session.install("-e", ".[test,nvrtc]")
    session.run("pytest", "tests/test_cupy_kernels.py", *session.posargs)


@nox.session(default=False)
def lite(session: nox.Session) -> None:
    """The quickest check of standard compliance: NumPy and array-api-strict."""
    install(session, "numpy")
    session.run("pytest", "-x", *session.posargs,
                env={"PORTABLE_MLP_BACKEND": "numpy,array_api_strict"})


@nox.session
def sklearn_upstream(session: nox.Session) -> None:
    """scikit-learn's own test_mlp.py against portable_mlp.sklearn, only the import rewritten
    (the expected failures and why: scripts/sklearn_upstream.py)."""
    install(session, "numpy")
    session.run("python", "scripts/sklearn_upstream.py", *session.posargs)


def install_bench(session: nox.Session) -> None:
    install_torch(session)
    session.install("-e", ".[bench,jax,dask]")


@nox.session(default=False)
def bench(session: nox.Session) -> None:
    """The pytest-benchmark suite; keeps the JSON under benchmarks/results/.

    `nox -s bench -- -k "numpy and wide"` runs a slice."""
    install_bench(session)
    Path("benchmarks/results").mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    session.run("pytest", "benchmarks", "--benchmark-only", "-p", "no:cacheprovider",
                f"--benchmark-json=benchmarks/results/bench-{stamp}.json", *session.posargs)
    session.log(f"kept benchmarks/results/bench-{stamp}.json")


@nox.session(default=False)
def bench_report(session: nox.Session) -> None:
    """The side-by-side report (floor / hand-written / portable_mlp), table + JSON + PNG.

    `nox -s bench_report -- --backends numpy --configs wide` runs a slice."""
    install_bench(session)
    session.run("python", "-m", "benchmarks.report", *session.posargs)


@nox.session(default=False)
def reliability(session: nox.Session) -> None:
    """The long reliability runs: a million fuzzed checkpoints, a million XOR steps."""
    install(session, "numpy")
    session.run("python", "scripts/fuzz_loader.py", "--n", "1000000")
    session.run("python", "scripts/memory_flat.py", "--steps", "1000000")
