"""What a logged model needs to load where tradeserve is not installed: code and requirements.

A tradeserve pyfunc runs tradeserve code (the adapter and its family's runtime), so it is
logged with that code as MLflow ``code_paths``: only the project modules it imports, found
by reading their imports, laid out as packages (``code/registry``, ``code/training_hooks``).
Its pip requirements are MLflow plus every distribution that code imports, pinned to the
installed versions (the ones constraints.txt fixes for every tradeserve environment), and
everything those depend on is pinned in the model's ``constraints.txt``, so a fresh
environment gets the versions the model was logged and checked with. Native flavors
(XGBoost, scikit-learn) ship no code and name their distributions directly.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

PROJECT_PACKAGES = ("registry", "training_hooks")
SOURCE_ROOT = Path(__file__).resolve().parents[1]  # holds registry/ and training_hooks/
CONSTRAINTS_FILE = "constraints.txt"
# What MLflow's native flavors import to load and predict (they ship no tradeserve code).
FLAVOR_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "xgboost": ("xgboost-cpu", "pandas", "numpy"),
    "sklearn": ("scikit-learn", "pandas", "numpy"),
}


@dataclass(frozen=True)
class ModelDependencies:
    """``log_model`` arguments: ``code_paths`` (None for native flavors), ``pip_requirements``."""

    code_paths: list[str] | None
    pip_requirements: list[str]


@contextlib.contextmanager
def model_dependencies(
    *, modules: Sequence[str] = (), flavor: str | None = None
) -> Iterator[ModelDependencies]:
    """What to log with a pyfunc whose loading runs ``modules`` (dotted project modules: the
    adapter and the family runtime), or with a model of MLflow's native ``flavor``.

    The staged code and constraints file live until the context exits (log inside it).
    """
    shipped = code_modules(modules)
    native = FLAVOR_DISTRIBUTIONS[flavor] if flavor else ()
    needed = {"mlflow", *native, *third_party(shipped, lazy_in=set(modules))}
    with tempfile.TemporaryDirectory(prefix="tradeserve-model-deps-") as tmp:
        staging = Path(tmp)
        code_paths = _stage(shipped, staging / "code") if shipped else None
        pins = pinned(sorted(needed, key=str.lower))
        constraints = staging / CONSTRAINTS_FILE
        constraints.write_text(
            "".join(f"{pin}\n" for pin in closure_pins(needed, exclude=needed)), encoding="utf-8"
        )
        yield ModelDependencies(
            code_paths=code_paths, pip_requirements=[*pins, f"-c {constraints}"]
        )


# ── code ─────────────────────────────────────────────────────────────────────────────


def module_file(module: str) -> Path | None:
    """The source file of project module ``module`` (a package's ``__init__.py``), if any."""
    base = SOURCE_ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def code_modules(roots: Iterable[str]) -> list[str]:
    """``roots``, every project module they import (lazily too) and their packages, sorted."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        if module_file(module) is None:
            raise ValueError(f"{module} is not a module of {', '.join(PROJECT_PACKAGES)}")
        seen.add(module)
        parts = module.split(".")
        todo.extend(".".join(parts[:end]) for end in range(1, len(parts)))
        todo.extend(name for name, _ in _imports(module) if _is_project(name))
    return sorted(seen)


def third_party(modules: Iterable[str], lazy_in: set[str]) -> set[str]:
    """Distributions imported by ``modules``: at module level, and inside functions of the
    modules in ``lazy_in`` (a runtime importing its framework on load). Lazy imports of
    shared helpers (the demo data set's loader) are features a model never uses."""
    distributions = set()
    for module in modules:
        for name, lazy in _imports(module):
            top = name.split(".")[0]
            skipped = lazy and module not in lazy_in
            if skipped or _is_project(name) or top in sys.stdlib_module_names:
                continue
            if (distribution := _distribution_of(top)) is not None:
                distributions.add(distribution)
    return distributions


def _is_project(name: str) -> bool:
    return name.split(".")[0] in PROJECT_PACKAGES


@cache
def _imports(module: str) -> tuple[tuple[str, bool], ...]:
    """``(imported module, inside a function)`` of every import ``module`` runs (not those
    under ``if TYPE_CHECKING``); ``from a import b`` names ``a.b`` when that is a module."""
    path = module_file(module)
    assert path is not None
    found: list[tuple[str, bool]] = []

    def visit(nodes: Iterable[ast.AST], lazy: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.orelse, lazy)
                continue
            if isinstance(node, ast.Import):
                found.extend((alias.name, lazy) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    child = f"{node.module}.{alias.name}"
                    is_module = _is_project(child) and module_file(child) is not None
                    found.append((child if is_module else node.module, lazy))
            inner = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(ast.iter_child_nodes(node), lazy or inner)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)).body, lazy=False)
    return tuple(found)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _stage(modules: Iterable[str], destination: Path) -> list[str]:
    """Copy the files of ``modules`` under ``destination`` as packages; one code path per
    top-level package."""
    tops = set()
    for module in modules:
        source = module_file(module)
        assert source is not None
        target = destination / source.relative_to(SOURCE_ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        tops.add(module.split(".")[0])
    return [str(destination / top) for top in sorted(tops)]


# ── requirements ─────────────────────────────────────────────────────────────────────


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@cache
def _import_names() -> dict[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _distribution_of(top_level: str) -> str | None:
    """The installed distribution providing import ``top_level`` (``xgboost`` ->
    ``xgboost-cpu``); the one named like it when several share it (``mlflow``)."""
    candidates = _import_names().get(top_level, [])
    named = [c for c in candidates if _normalize(c) == _normalize(top_level)]
    if named or len(candidates) == 1:
        return (named or candidates)[0]
    if candidates:
        raise ValueError(f"import {top_level} is provided by several distributions: {candidates}")
    return None  # not installed: code that imports it guards the import


def version_of(distribution: str) -> str:
    """The installed version without its local label (torch ``2.13.0+cpu`` -> ``2.13.0``:
    ``==2.13.0`` still picks the local CPU wheel where one is offered)."""
    return importlib.metadata.version(distribution).split("+")[0]


def pinned(distributions: Iterable[str]) -> list[str]:
    """``name==version`` of each installed distribution."""
    return [f"{name}=={version_of(name)}" for name in distributions]


def closure_pins(distributions: Iterable[str], exclude: Iterable[str] = ()) -> list[str]:
    """Pins of everything ``distributions`` require, transitively (extras they ask for
    included, markers evaluated here), minus ``exclude``."""
    environment = default_environment()
    skip = {_normalize(name) for name in exclude}
    seen: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(name, frozenset()) for name in distributions]
    visited: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = (_normalize(name), extras)
        if key in visited:
            continue
        visited.add(key)
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # required only where it does not apply here (an unmet marker upstream)
        seen[_normalize(name)] = distribution.metadata["Name"]
        for line in distribution.requires or []:
            requirement = Requirement(line)
            wanted = ["", *sorted(extras)]
            if requirement.marker is None or any(
                requirement.marker.evaluate({**environment, "extra": extra}) for extra in wanted
            ):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return pinned(sorted((real for norm, real in seen.items() if norm not in skip), key=str.lower))
