"""The reference is complete: every public function, class and method documents every
parameter (numpydoc ``Parameters`` section), the README stays the front door, and the docs'
Python blocks run.

"Public" is what a user reaches: the names in ``__all__`` of the package and of the
modules below, and the public methods of those classes defined in portable_mlp.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import portable_mlp

ROOT = Path(portable_mlp.__file__).resolve().parent.parent
MODULES = ["portable_mlp", "portable_mlp.optim", "portable_mlp.datasets", "portable_mlp.losses",
           "portable_mlp.initializers", "portable_mlp.threads", "portable_mlp.distributed",
           "portable_mlp.sklearn", "portable_mlp.plot"]
OPTIONAL = {"portable_mlp.sklearn": "sklearn", "portable_mlp.plot": "matplotlib",
            "portable_mlp.distributed": "distributed"}
SECTION = re.compile(r"^([ \t]*)Parameters[ \t]*\n[ \t]*-{3,}[ \t]*\n(.*?)"
                     r"(?:\n[ \t]*\n[ \t]*\w[\w ]*\n[ \t]*-{3,}|\Z)", re.M | re.S)


def _modules():
    for name in MODULES:
        needs = OPTIONAL.get(name)
        if needs and importlib.util.find_spec(needs) is None:
            continue
        yield importlib.import_module(name)


def public_names() -> dict[str, object]:
    """Qualified name -> object, for every public function, class and method."""
    found: dict[str, object] = {}
    for module in _modules():
        names = getattr(module, "__all__", None) or [
            n for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", "") == module.__name__
            and (inspect.isfunction(v) or inspect.isclass(v))]
        for name in names:
            obj = getattr(module, name)
            if inspect.ismodule(obj) or not callable(obj):
                continue
            found[f"{obj.__module__}.{obj.__qualname__}"] = obj
            if inspect.isclass(obj):
                found.update(_methods(obj))
    return found


def _methods(cls: type) -> dict[str, object]:
    """The public methods a user calls on ``cls``, defined in portable_mlp (inherited ones
    included, under the name of the class that defines them)."""
    out = {}
    for owner in cls.__mro__:
        if not owner.__module__.startswith("portable_mlp"):
            continue
        for name, member in vars(owner).items():
            if name.startswith("_") and name != "__call__":
                continue
            func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
            if inspect.isfunction(func):
                out[f"{owner.__module__}.{owner.__qualname__}.{name}"] = func
    return out


def _parameters(obj: object) -> list[str]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    if not getattr(target, "__module__", "").startswith("portable_mlp"):
        return []  # an inherited constructor (an exception's): documented where it is defined
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    names = []
    for p in signature.parameters.values():
        if p.name in ("self", "cls"):
            continue
        prefix = {p.VAR_POSITIONAL: "*", p.VAR_KEYWORD: "**"}.get(p.kind, "")
        names.append(prefix + p.name)
    return names


def documented(doc: str) -> set[str]:
    """The names a numpydoc ``Parameters`` section lists (``a, b : type`` lists two)."""
    doc = inspect.cleandoc(doc)
    found = SECTION.search(doc)
    if not found:
        return set()
    indent = len(found.group(1))
    names = set()
    for line in found.group(2).splitlines():
        if line.strip() and len(line) - len(line.lstrip()) == indent:
            head = line.split(" : ")[0].strip()
            names.update(n.strip() for n in head.split(","))
    return names


def _docs(qualname: str, obj: object, names: dict[str, object]) -> str:
    """``obj``'s docstring; an override without one (or with a one-line summary) is
    documented by the method it overrides, as numpydoc and mkdocstrings inherit it."""
    doc = inspect.getdoc(obj) or ""
    if documented(doc) or not inspect.isfunction(obj):
        return doc
    owner = _owner(qualname, obj)
    for base in owner.__mro__[1:] if owner else ():
        found = vars(base).get(obj.__name__)
        if inspect.isfunction(found) and documented(inspect.getdoc(found) or ""):
            return inspect.getdoc(found) or ""
    return doc


def _owner(qualname: str, obj: object) -> type | None:
    module = importlib.import_module(obj.__module__)
    parts = obj.__qualname__.split(".")[:-1]
    owner: object = module
    for part in parts:
        owner = getattr(owner, part, None)
    return owner if inspect.isclass(owner) else None


def missing() -> dict[str, list[str]]:
    out = {}
    names = public_names()
    for qualname, obj in names.items():
        wanted = _parameters(obj)
        if not wanted:
            continue
        doc = _docs(qualname, obj, names)
        absent = [n for n in wanted if n not in documented(doc)]
        if absent:
            out[qualname] = absent
    return out


def test_every_public_name_documents_every_parameter():
    gaps = missing()
    assert not gaps, "parameters without a numpydoc entry:\n" + "\n".join(
        f"  {name}: {', '.join(params)}" for name, params in sorted(gaps.items()))


def test_the_parameter_check_sees_a_gap():
    def documented_fn(a, b=1):
        """Do it.

        Parameters
        ----------
        a : int
            The first.
        b : int, default 1
            The second.
        """

    def half_documented(a, b=1):
        """Do it.

        Parameters
        ----------
        a : int
            The first.

        Returns
        -------
        b : nothing
            Not a parameter.
        """

    assert documented(documented_fn.__doc__) == {"a", "b"}
    assert documented(half_documented.__doc__) == {"a"}
    assert documented("No sections.") == set()


def test_the_public_names_include_the_entry_points():
    names = public_names()
    for name in ("portable_mlp.train.fit", "portable_mlp.train.Trainer.fit",
                 "portable_mlp.callbacks.EarlyStopping", "portable_mlp.model.MLP"):
        assert name in names


def test_mlp_lists_its_activations():
    doc = inspect.getdoc(portable_mlp.MLP)
    for name in ("sigmoid", "tanh", "relu", "identity", "softmax"):
        assert f'"{name}"' in doc


def test_the_readme_is_the_front_door():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    assert "nox -s lite" in text and "UTC" not in text  # no timestamped measurement logs
    for page in ("docs/quickstart.md", "docs/guide/threads.md", "docs/benchmarks.md"):
        assert page in text and (ROOT / page).exists()
