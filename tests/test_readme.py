"""Every ```python block of README.md and of the docs' pages runs on its own, as a newcomer
would paste it: in a fresh interpreter, in an empty folder, with none of this test suite's
settings. The docs' blocks run once, in the session that tests NumPy (or with no backend
requested); the README's in every session. A sketch that cannot run as it is (it names a
cluster's address) is fenced ```py instead, and is not run.

A block that needs an optional library that is not installed here (a backend, scikit-learn,
matplotlib) skips with the reason; any other failure fails, so that the README cannot go
stale unnoticed.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import portable_mlp

ROOT = Path(portable_mlp.__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)
# what a missing optional library looks like when a block ends
MISSING = [re.compile(r"No module named '([\w.]+)'"),
           re.compile(r"backend '(\w+)' is not installed")]
MODULE_OF = {"dask": "dask", "array_api_strict": "array_api_strict", "sklearn": "sklearn"}


DOCS = sorted(p for p in (ROOT / "docs").rglob("*.md") if "reference" not in p.parts)
REQUESTED = [b for b in os.environ.get("PORTABLE_MLP_BACKEND", "").split(",") if b]


def blocks(page: Path = README) -> list[tuple[int, str]]:
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in BLOCK.finditer(text)]


def doc_blocks() -> list[tuple[str, int, str]]:
    return [(str(page.relative_to(ROOT)), line, code) for page in DOCS
            for line, code in blocks(page)]


def clean_env() -> dict[str, str]:
    """A newcomer's environment: no PORTABLE_MLP_BACKEND, no SCIPY_ARRAY_API or JAX flags
    that conftest or CI set; this checkout importable."""
    keep = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["PYTHONPATH"] = str(ROOT)
    return env


def absent(stderr: str) -> str | None:
    """The optional library whose absence ended the block, if that is why it failed."""
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    for pattern in MISSING:
        found = pattern.search(last)
        if found:
            module = found.group(1).split(".")[0]
            if importlib.util.find_spec(MODULE_OF.get(module, module)) is None:
                return module
    return None


def test_the_readme_has_python_blocks():
    assert len(blocks()) >= 1


def run_block(where: str, code: str, tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=clean_env(),
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        missing = absent(result.stderr)
        if missing:
            pytest.skip(f"{where} needs {missing}, not installed here")
    assert result.returncode == 0, f"{where}:\n{result.stderr}"


@pytest.mark.parametrize("line, code", blocks(), ids=[f"line{n}" for n, _ in blocks()])
def test_readme_block_runs_on_its_own(line, code, tmp_path):
    run_block(f"README.md line {line}", code, tmp_path)


@pytest.mark.skipif(bool(REQUESTED) and "numpy" not in REQUESTED,
                    reason="the docs' blocks run once, in the numpy session")
@pytest.mark.parametrize("page, line, code", doc_blocks(),
                         ids=[f"{p}:{n}" for p, n, _ in doc_blocks()])
def test_docs_block_runs_on_its_own(page, line, code, tmp_path):
    run_block(f"{page} line {line}", code, tmp_path)


def test_the_docs_have_python_blocks():
    assert len(doc_blocks()) >= 5


def test_only_a_missing_optional_library_skips_a_block():
    def ending(line):
        return f"Traceback (most recent call last):\n  File \"<string>\", line 1\n{line}\n"

    assert absent(ending("ModuleNotFoundError: No module named 'no_such_lib'")) == "no_such_lib"
    cupy_absent = None if importlib.util.find_spec("cupy") else "cupy"
    assert absent(ending("portable_mlp._backend.BackendUnavailable: backend 'cupy' is not "
                         "installed (No module named 'cupy'); try: ...")) == cupy_absent
    # an installed library that fails, or any other error, fails the block
    assert absent(ending("ModuleNotFoundError: No module named 'numpy'")) is None
    assert absent(ending("NameError: name 'X' is not defined")) is None
    assert absent("") is None
