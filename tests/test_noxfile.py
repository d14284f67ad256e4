"""The noxfile: lint and typecheck run first, the docs build in the default run, and torch
comes through an override with PyTorch's CPU index as the default, never a machine's path."""

import ast
import re
from pathlib import Path

import portable_mlp

NOXFILE = Path(portable_mlp.__file__).resolve().parent.parent / "noxfile.py"


def sessions() -> list[tuple[str, bool]]:
    """(name, runs by default) of every session, in the order nox runs them."""
    found = []
    for node in ast.parse(NOXFILE.read_text(encoding="utf-8")).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for dec in node.decorator_list:
            call = dec if isinstance(dec, ast.Call) else None
            target = call.func if call else dec
            if isinstance(target, ast.Attribute) and target.attr == "session":
                default = not any(k.arg == "default" and isinstance(k.value, ast.Constant)
                                  and k.value.value is False for k in (call.keywords if call
                                                                       else []))
                found.append((node.name, default))
    return found


def test_lint_and_typecheck_run_first_and_docs_by_default():
    default = [name for name, runs in sessions() if runs]
    assert default[:2] == ["lint", "typecheck"]
    assert "docs" in default and "tests" in default


def test_torch_comes_through_an_override_with_the_cpu_index_as_default():
    text = NOXFILE.read_text(encoding="utf-8")
    assert "PORTABLE_MLP_TORCH" in text
    assert "https://download.pytorch.org/whl/cpu" in text
    assert not re.search(r"[\"'](/opt|/home|/work|/tmp|[A-Z]:\\)", text)  # no machine's path


def test_the_docs_session_builds_strict():
    text = NOXFILE.read_text(encoding="utf-8")
    assert '"mkdocs", "build", "--strict"' in text
