"""The layout rules of DESIGN.md, checked on the source: imports flow one way, services never
import training code, and every bento ships exactly the code its service imports."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest
import yaml
from pathspec import PathSpec

from harness.bento import REPO_ROOT

PACKAGES = ("registry", "training_hooks", "bentos", "harness", "tests", "bench")
# Sit on top of the registry core and may import anything.
REGISTRY_TOP = {"registry.cli", "registry.importer", "registry.artifact_scan"}
# Training-side modules of training_hooks: never imported by a runtime or a service.
TRAINING_MODULES = ("log", "train", "demo", "builders", "sources", "registration", "datasets")
# Training itself (fitting, demo data): not even a service that registers versions uses it.
FITTING_MODULES = ("train", "demo", "builders", "sources", "datasets")
# Services that register versions (ModelManager imports artifact directories and quantile
# pickles over HTTP): like the CLI they use the importer and the families' logging hooks, and
# their bento ships that code, but never training itself.
REGISTRY_WRITERS = ("bentos.model_manager",)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every project module by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


@cache
def imports_of(module: str) -> frozenset[str]:
    """Project modules ``module`` imports anywhere in its body (lazy imports included)."""
    known = modules()
    tree = ast.parse(known[module].read_text(), filename=str(known[module]))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from a.b import c": a.b.c when c is a module, else a.b
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.split(".")[0] in PACKAGES:
                found.add(name)
    found.discard(module)
    return frozenset(found)


def closure(roots: set[str]) -> set[str]:
    """``roots`` and every project module they import, transitively."""
    seen, todo = set(), list(roots)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(imports_of(module))
    return seen


def is_training(module: str) -> bool:
    parts = module.split(".")
    return parts[0] == "training_hooks" and parts[-1] in TRAINING_MODULES


def runtime_side() -> set[str]:
    """The family runtimes, the shared features and market data, and everything they import:
    all of training_hooks that serving may use."""
    runtimes = {m for m in modules() if m.startswith("training_hooks.") and m.endswith(".runtime")}
    return closure(runtimes | {"training_hooks.features", "training_hooks.market_data"})


def is_registry_writer(module: str) -> bool:
    return any(module == w or module.startswith(f"{w}.") for w in REGISTRY_WRITERS)


def allowed(module: str, target: str) -> bool:
    """Whether ``module`` may import ``target`` (DESIGN.md: registry core <- training_hooks <-
    bentos; the CLI and the importer on top; tests and bench import anything but product code
    never imports them, and bench never imports tests)."""
    top, target_top = module.split(".")[0], target.split(".")[0]
    if target_top == "tests":
        return top == "tests"
    if target_top == "bench":
        return top == "bench"
    if target_top == "harness":
        return top in ("harness", "tests", "bench")
    if top == "registry" and module not in REGISTRY_TOP:
        return target_top == "registry" and target not in REGISTRY_TOP
    if top == "training_hooks":
        return target_top == "training_hooks" or (
            target_top == "registry" and target not in REGISTRY_TOP
        )
    if top == "bentos" and is_registry_writer(module):
        if target_top == "training_hooks":
            return target.split(".")[-1] not in FITTING_MODULES
        return target_top in ("bentos", "registry") and target != "registry.cli"
    if top == "bentos":
        if target_top == "training_hooks":
            return target in runtime_side()
        return target_top in ("bentos", "registry") and target not in REGISTRY_TOP
    return True  # the CLI, the importer, harness, tests and bench


def test_imports_flow_one_way() -> None:
    wrong = sorted(
        f"{module} imports {target}"
        for module in modules()
        for target in imports_of(module)
        if not allowed(module, target)
    )
    assert not wrong, "imports against DESIGN.md's direction:\n" + "\n".join(wrong)


def test_runtimes_import_no_training_code() -> None:
    side = runtime_side()
    assert side, "no family runtime found"
    assert not sorted(m for m in side if is_training(m))


def test_every_family_has_its_runtime_module() -> None:
    from registry.families import FAMILIES, runtime_class
    from registry.runtime import FamilyRuntime

    for spec in FAMILIES:
        module = spec.runtime.split(":")[0]
        assert module == f"training_hooks.{spec.package}.runtime", spec.value
        runtime = runtime_class(spec.value)
        assert runtime.family.value == spec.value
        members = {name for name in dir(FamilyRuntime) if not name.startswith("_")}
        assert members <= set(dir(runtime)), f"{spec.value}: {members - set(dir(runtime))}"


def test_the_import_checker_catches_a_wrong_direction() -> None:
    assert not allowed("registry.gate", "training_hooks.factor.runtime")
    assert not allowed("registry.loading", "bentos.shared.model_source")
    assert not allowed("training_hooks.factor.log", "bentos.factor.service")
    assert not allowed("bentos.factor.service", "training_hooks.factor.log")
    assert not allowed("bentos.factor.service", "registry.cli")
    assert not allowed("bench.load", "tests.unit.test_layout")
    assert not allowed("bentos.shared.live", "harness.process")
    assert allowed("bentos.factor.service", "training_hooks.factor.runtime")
    assert allowed("registry.cli", "bentos.build")
    assert allowed("bentos.model_manager.venues", "training_hooks.venue_quantiles.log")
    assert allowed("bentos.model_manager.directories", "registry.importer")
    assert not allowed("bentos.model_manager.api", "registry.cli")
    assert not allowed("bentos.model_manager.api", "training_hooks.factor.train")
    assert not allowed("bentos.factor.service", "registry.importer")


def bentofiles() -> list[Path]:
    return sorted((REPO_ROOT / "bentos").glob("*/bentofile.yaml"))


def included(config: dict, relative: str) -> bool:
    """Whether ``bentoml build`` copies the file: gitignore patterns, as BentoML matches
    ``include`` and ``exclude`` (``*`` stops at ``/``, ``**`` does not)."""
    include, exclude = (
        PathSpec.from_lines("gitwildmatch", config.get(key) or []) for key in ("include", "exclude")
    )
    return include.match_file(relative) and not exclude.match_file(relative)


@pytest.mark.parametrize("bentofile", bentofiles(), ids=lambda p: p.parent.name)
def test_bento_ships_what_its_service_imports_and_no_training_code(bentofile: Path) -> None:
    config = yaml.safe_load(bentofile.read_text())
    service_module = config["service"].split(":")[0]
    needed = closure({service_module})
    runtime_families = {
        m.split(".")[1] for m in needed if m.startswith("training_hooks.") and m.count(".") == 2
    }
    missing = sorted(
        str(modules()[m].relative_to(REPO_ROOT))
        for m in needed
        if not included(config, str(modules()[m].relative_to(REPO_ROOT)))
    )
    assert not missing, f"{bentofile}: the service imports files the bento leaves out"
    shipped = [
        module
        for module, path in modules().items()
        if included(config, str(path.relative_to(REPO_ROOT)))
    ]
    training = [m for m in shipped if is_training(m)]
    if is_registry_writer(service_module):  # its logging hooks, nothing more
        training = [m for m in training if m not in needed or m.split(".")[-1] in FITTING_MODULES]
    assert not training, "training code shipped"
    assert not [m for m in shipped if m.split(".")[0] in ("tests", "bench", "harness")]
    unneeded_families = {
        m.split(".")[1] for m in shipped if m.startswith("training_hooks.") and m.count(".") == 2
    } - runtime_families
    assert not unneeded_families, f"{bentofile}: ships other families' code"
