"""The one place that words install hints: a pip command for an optional part of portable_mlp
(a backend, plotting, scikit-learn), worded for how this copy of portable_mlp was installed.

portable_mlp is not on the package index, so ``pip install 'portable_mlp[torch]'`` would fail.
What works is installing the extra from where this copy came from: the clone it runs from
(``pip install '.[torch]'``), the folder or the URL pip recorded when it was installed
(PEP 610's ``direct_url.json``), or, only for a copy installed from an index, the name.
"""

from __future__ import annotations

import functools
import importlib
import json
import shlex
import urllib.parse
from importlib import metadata
from pathlib import Path
from typing import Any

DIST = "portable_mlp"
CPU_TORCH = "pip install torch --index-url https://download.pytorch.org/whl/cpu"


def pip_install(*extras: str) -> str:
    """The command that installs portable_mlp with ``extras``; several extras are
    alternatives, joined by "or" (``pip_install("cuda12", "cuda13")``)."""
    return " or ".join(f"pip install {shlex.quote(_requirement(extra))}" for extra in extras)


def require(module: str, needed_by: str, extra: str) -> Any:
    """``module`` imported, or an ImportError saying what needs it and how to install it
    (naming the module as Python's own error does)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{needed_by} needs {module} (No module named {module!r}); "
                          f"{pip_install(extra)}") from exc


def _requirement(extra: str) -> str:
    kind, where = _source()
    if kind == "path":
        return f"{_shown(Path(where))}[{extra}]"
    if kind == "url":
        return f"{DIST}[{extra}] @ {where}"
    return f"{DIST}[{extra}]"


@functools.cache
def _source() -> tuple[str, str]:
    """Where this copy came from: ("path", its project folder), ("url", the URL pip
    installed it from) or ("index", "")."""
    package = Path(__file__).resolve().parent
    root = package.parent
    if _is_our_project(root / "pyproject.toml"):  # run from a clone, or installed editable
        return "path", str(root)
    try:
        text = metadata.distribution(DIST).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        text = None
    if not text:
        return "index", ""
    url = json.loads(text).get("url", "")
    parts = urllib.parse.urlsplit(url)
    folder = Path(urllib.parse.unquote(parts.path))
    if parts.scheme == "file" and _is_our_project(folder / "pyproject.toml"):
        return "path", str(folder)
    return ("url", url) if url else ("index", "")


def _is_our_project(pyproject: Path) -> bool:
    try:
        return f'name = "{DIST}"' in pyproject.read_text(encoding="utf-8")
    except OSError:
        return False


def _shown(folder: Path) -> str:
    """``.`` for the current folder, else the absolute path."""
    try:
        here = Path.cwd().resolve()
    except OSError:  # the current folder was deleted
        here = None
    return "." if folder.resolve() == here else str(folder.resolve())
