"""The layout's rules, checked over every module of ``src/vitrina`` (docs/architecture.md).

Imports run one way: pipelines → models / training / export / store / datasets →
utilities. ``models/`` imports nothing from ``vitrina.datasets`` or
``vitrina.pipelines``; ``datasets/`` nothing from ``vitrina.pipelines``. No module imports
another module's private ``_name`` (nor reads it as ``module._name``), and none is over 450
lines. Imports inside functions count as much as those at the top.

Each module is parsed with :mod:`ast` (nothing is imported); relative imports are resolved
against the module's package with :func:`importlib.util.resolve_name`.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

SRC = REPO / "src"
PACKAGE = SRC / "vitrina"
MAX_LINES = 450


@dataclass(frozen=True)
class Module:
    """One module of the package: dotted name, path, source lines and syntax tree."""

    name: str
    path: Path
    is_package: bool
    lines: int
    tree: ast.Module

    @property
    def package(self) -> str:
        return self.name if self.is_package else self.name.rpartition(".")[0]


def modules() -> list[Module]:
    """Every ``.py`` file under ``src/vitrina`` (migrations included), parsed."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        text = path.read_text(encoding="utf-8")
        found.append(
            Module(
                ".".join(parts),
                path,
                is_package,
                len(text.splitlines()),
                ast.parse(text, str(path)),
            )
        )
    return found


MODULES = modules()
NAMES = {m.name for m in MODULES}


@dataclass(frozen=True)
class Import:
    """One imported thing: the module it comes from, the name taken from it ('' for a
    plain ``import a.b``), and where."""

    module: str
    name: str
    line: int


def imports(module: Module) -> list[Import]:
    """Every import of ``module``, relative ones resolved to absolute module names."""
    found = []
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, "", node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                source = importlib.util.resolve_name("." * node.level + source, module.package)
            for alias in node.names:
                name = alias.name
                if f"{source}.{name}" in NAMES:  # `from pkg import submodule`
                    found.append(Import(f"{source}.{name}", "", node.lineno))
                else:
                    found.append(Import(source, name, node.lineno))
    return found


def private_uses(module: Module) -> list[str]:
    """``module._name`` reads of another vitrina module bound by an import
    (``from vitrina import demo; demo._layout``)."""
    bound: dict[str, str] = {}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in NAMES:
                    bound[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                source = importlib.util.resolve_name("." * node.level + source, module.package)
            for alias in node.names:
                if f"{source}.{alias.name}" in NAMES:
                    bound[alias.asname or alias.name] = f"{source}.{alias.name}"
    uses = []
    for node in ast.walk(module.tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
            and is_private(node.attr)
            and bound[node.value.id] != module.name
        ):
            uses.append(f"{module.name}:{node.lineno} {bound[node.value.id]}.{node.attr}")
    return uses


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def wrong_way(importer: str, forbidden: tuple[str, ...]) -> list[str]:
    """``module:line imported`` for every import of a ``forbidden`` package by a module
    under ``importer``."""
    return [
        f"{m.name}:{i.line} {i.module}"
        for m in MODULES
        if within(m.name, importer)
        for i in imports(m)
        if any(within(i.module, f) for f in forbidden)
    ]


def private_imports() -> list[str]:
    """``module:line source._name`` for every private name imported from another vitrina
    module (``from __future__`` and dunders such as ``__version__`` are not private)."""
    found = [
        f"{m.name}:{i.line} {i.module}.{i.name}"
        for m in MODULES
        for i in imports(m)
        if within(i.module, "vitrina") and i.module != m.name and is_private(i.name)
    ]
    return found + [use for m in MODULES for use in private_uses(m)]


def long_modules() -> list[str]:
    return [f"{m.name} ({m.lines} lines)" for m in MODULES if m.lines > MAX_LINES]


def test_the_scan_sees_the_whole_package():
    """The checks below are only as good as the scan: it must find the modules and their
    imports, relative and inside functions included."""
    assert {"vitrina.models", "vitrina.pipelines.tuning.wiring", "vitrina.demo.text"} <= NAMES
    tuning = next(m for m in MODULES if m.name == "vitrina.pipelines.tuning.wiring")
    found = {(i.module, i.name) for i in imports(tuning)}
    assert ("vitrina.pipelines.tuning.probing_target", "ProbingTarget") in found  # relative
    assert ("vitrina.pipelines.clip_finetune.pipeline", "base_from_catalogue") in found  # lazy


def test_the_checks_catch_planted_offenders():
    """Relative, lazy and attribute forms of a wrong-way or private import are found."""
    source = (
        "from __future__ import annotations\n"
        "from ..datasets import embeddings\n"
        "from vitrina.demo import text\n"
        "def f():\n"
        "    from vitrina.pipelines.tuning.nodes import _probing\n"
        "    return text._make_model, text.make_rows, text.__name__\n"
    )
    planted = Module("vitrina.models.planted", Path("planted.py"), False, 6, ast.parse(source))
    found = {(i.module, i.name) for i in imports(planted)}
    assert ("vitrina.datasets.embeddings", "") in found  # `from ..datasets import embeddings`
    assert ("vitrina.pipelines.tuning.nodes", "_probing") in found  # inside a function
    assert ("__future__", "annotations") in found and not is_private("annotations")
    assert private_uses(planted) == ["vitrina.models.planted:6 vitrina.demo.text._make_model"]


def test_models_import_neither_datasets_nor_pipelines():
    assert wrong_way("vitrina.models", ("vitrina.datasets", "vitrina.pipelines")) == []


def test_datasets_do_not_import_pipelines():
    assert wrong_way("vitrina.datasets", ("vitrina.pipelines",)) == []


def test_no_module_imports_another_modules_private_names():
    assert private_imports() == []


def test_no_module_is_over_450_lines():
    assert long_modules() == []
