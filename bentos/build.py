"""``tradeserve build``: bake the promoted registry versions into one bento per family.

For each bento target the promoted version of every model it serves is resolved first (so
nothing is built when something is not promoted, or promoted without passing the gate:
``--force`` builds those anyway), imported into the BentoML model store
(:mod:`bentos.model_store`), and the target's ``bentofile.yaml`` is built with those models
added to its ``models:`` list. The bento then carries its models, its code, its runtime
configuration (``configuration.yaml``, pointed at by ``BENTOML_CONFIG``) and
``TRADESERVE_MODEL_SOURCE=bento``, so it serves with no registry at all.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from bentos.model_store import ImportedModel, import_version
from bentos.pins import pinned_closure
from registry.catalog import list_models
from registry.errors import GateError, NotPromotedError, TradeserveError
from registry.families import FAMILIES, Family
from registry.promotion import VALIDATION_TAG
from registry.resolve import ResolvedVersion, resolve
from registry.settings import get_settings

REPO_ROOT = Path(__file__).resolve().parents[1]
BENTO_CONFIG_PATH = "/home/bentoml/bento/src/configuration.yaml"  # the bento's src/ in images
# Environment every bento must carry (added to a bentofile that lacks it).
RUNTIME_ENVS = {"TRADESERVE_MODEL_SOURCE": "bento", "BENTOML_CONFIG": BENTO_CONFIG_PATH}
MODEL_LABEL_PREFIX = "model/"
Progress = Callable[[str], object]


class BentoTarget(BaseModel):
    """One bento ``tradeserve build`` can produce and the models it bakes in."""

    model_config = ConfigDict(frozen=True)

    key: str = Field(description="Name used with --family; its folder under bentos/")
    families: tuple[Family, ...] = Field(description="Families whose promoted models it bakes")
    required_families: tuple[Family, ...] = Field(
        description="Families that must have at least one promoted model"
    )

    @property
    def bentofile(self) -> Path:
        """Its ``bentofile.yaml``, relative to the repository root."""
        return Path("bentos") / self.key / "bentofile.yaml"

    @property
    def bentofile_path(self) -> Path:
        return REPO_ROOT / self.bentofile


# Bentos of services that bake no model in: they read (and write) the MLflow registry at run
# time, so their bentofile sets TRADESERVE_MODEL_SOURCE=registry and they serve no family.
REGISTRY_SERVICE_TARGETS = ("model_manager",)


def _targets() -> tuple[BentoTarget, ...]:
    """The build targets named by the family table, in its order, then the registry
    services'. The composite (``regime_blend``) runs the regime detector in-process and
    Specialists as its dependency inside the same bento."""
    keys = dict.fromkeys(key for spec in FAMILIES for key in spec.bentos)
    families = tuple(
        BentoTarget(
            key=key,
            families=tuple(Family(s.value) for s in FAMILIES if key in s.bentos),
            required_families=tuple(
                Family(s.value) for s in FAMILIES if key in s.bentos and s.required
            ),
        )
        for key in keys
    )
    services = tuple(
        BentoTarget(key=key, families=(), required_families=()) for key in REGISTRY_SERVICE_TARGETS
    )
    return (*families, *services)


TARGETS: tuple[BentoTarget, ...] = _targets()
TARGET_KEYS = tuple(target.key for target in TARGETS)


class BakedModel(BaseModel):
    """A registered version inside a bento."""

    name: str
    version: str
    alias: str | None
    bentoml_tag: str
    reused: bool = Field(description="Already in the BentoML model store before this build")


class BuiltBento(BaseModel):
    """One bento that was built."""

    target: str
    tag: str
    models: list[BakedModel]
    seconds: float = Field(description="Build time (import of the models included)")
    size_bytes: int = Field(description="Bento files plus the models it carries")
    path: str


class BuildReport(BaseModel):
    """What one ``tradeserve build`` produced."""

    bentos: list[BuiltBento] = Field(default_factory=list)
    bentoml_home: str


def select_targets(keys: Sequence[str] | None = None) -> list[BentoTarget]:
    """The targets named by ``keys`` (all when empty); unknown names are a user error."""
    if not keys:
        return list(TARGETS)
    wanted = [_normalize(key) for key in keys]
    unknown = [key for key, norm in zip(keys, wanted, strict=True) if norm not in TARGET_KEYS]
    if unknown:
        raise TradeserveError(
            f"unknown bento family {', '.join(unknown)}; choose from {', '.join(TARGET_KEYS)}"
        )
    return [target for target in TARGETS if target.key in wanted]


def plan(targets: Iterable[BentoTarget], force: bool = False) -> dict[str, list[ResolvedVersion]]:
    """Resolve the promoted version of every model each target bakes in.

    Every registered model of a target's families must be promoted and every required family
    must have one; otherwise :class:`NotPromotedError` names what to promote. Unless
    ``force``, each version must have passed the promotion gate (a version promoted in the
    MLflow UI has not): :class:`GateError` otherwise. Nothing is imported or built before the
    whole plan resolves.
    """
    summaries = list_models()
    plans: dict[str, list[ResolvedVersion]] = {}
    for target in targets:
        names = [s.name for s in summaries if s.family in {f.value for f in target.families}]
        resolved = [resolve(name) for name in sorted(names)]
        if not force:
            for version in resolved:
                _require_validated(version)
        for family in target.required_families:
            if not any(version.family is family for version in resolved):
                raise NotPromotedError(
                    f"the {target.key} bento needs a promoted {family.value} model and the "
                    f"registry at {get_settings().effective_tracking_uri} has none; run "
                    "`tradeserve demo` or register and promote one"
                )
        plans[target.key] = resolved
    return plans


def build(
    keys: Sequence[str] | None = None, progress: Progress = print, force: bool = False
) -> BuildReport:
    """Build the bentos named by ``keys`` (default: every target, composite and ModelManager
    included); ``force`` bakes promoted versions that have not passed the gate."""
    import bentoml
    from bentoml._internal.configuration.containers import BentoMLContainer

    targets = select_targets(keys)
    missing = [t for t in targets if not t.bentofile_path.is_file()]
    if missing:
        raise TradeserveError(
            "missing bentofile: " + ", ".join(str(t.bentofile_path) for t in missing)
        )
    report = BuildReport(bentoml_home=str(BentoMLContainer.bentoml_home.get()))
    plans = plan(targets, force=force)
    for target in targets:
        started = time.perf_counter()
        imported = [import_version(version) for version in plans[target.key]]
        for model in imported:
            state = "reused" if model.reused else "imported"
            progress(f"{target.key}: {state} {model.name} version {model.version} as {model.tag}")
        progress(f"{target.key}: building {target.bentofile} ...")
        bento = _build_bento(target, imported)
        report.bentos.append(
            BuiltBento(
                target=target.key,
                tag=str(bento.tag),
                models=[_baked(model) for model in imported],
                seconds=round(time.perf_counter() - started, 1),
                size_bytes=_bento_size(bento, bentoml),
                path=str(bento.path),
            )
        )
        progress(f"{target.key}: built {bento.tag}")
    return report


def _require_validated(version: ResolvedVersion) -> None:
    status = version.tags.get(VALIDATION_TAG)
    if status != "passed":
        raise GateError(
            f"{version.name} version {version.version} ({version.alias or version.stage}) has "
            f"not passed the promotion gate (validation_status: {status or 'none'}); promote a "
            f"version through it with `tradeserve promote {version.name} VERSION`, or pass "
            "--force to build it anyway"
        )


def bentofile_with_models(bentofile: Path, models: Sequence[ImportedModel]) -> dict[str, Any]:
    """The bentofile's content with ``models``, their labels and the runtime envs added.

    Package locking is switched off unless the bentofile asks for it: the bentofiles pin
    exact versions, and locking would run a resolver over the network on every build.
    Instead ``packages`` grows to their whole dependency closure at the ``constraints.txt``
    versions (:func:`bentos.pins.pinned_closure`): every image installs the tested set.
    """
    config: dict[str, Any] = yaml.safe_load(bentofile.read_text()) or {}
    declared = [entry for entry in config.get("models") or [] if entry]
    config["models"] = [*declared, *({"tag": model.tag} for model in models)]
    labels = dict(config.get("labels") or {})
    labels.update({f"{MODEL_LABEL_PREFIX}{m.name}": f"v{m.version}" for m in models})
    config["labels"] = labels
    python = dict(config.get("python") or {})
    python.setdefault("lock_packages", False)  # locking runs a resolver over the network
    if python.get("packages"):
        python["packages"] = pinned_closure(python["packages"])
    config["python"] = python
    envs = list(config.get("envs") or [])
    present = {env.get("name") for env in envs}
    envs += [{"name": k, "value": v} for k, v in RUNTIME_ENVS.items() if k not in present]
    config["envs"] = envs
    return config


def _build_bento(target: BentoTarget, models: Sequence[ImportedModel]) -> Any:
    import bentoml

    config = bentofile_with_models(target.bentofile_path, models)
    with tempfile.TemporaryDirectory(prefix=f"bentofile-{target.key}-") as folder:
        generated = Path(folder) / "bentofile.yaml"
        generated.write_text(yaml.safe_dump(config, sort_keys=False))
        return bentoml.bentos.build_bentofile(str(generated), build_ctx=str(REPO_ROOT))


def _bento_size(bento: Any, bentoml: Any) -> int:
    files = sum(p.stat().st_size for p in Path(bento.path).rglob("*") if p.is_file())
    models = 0
    for info in bento.info.all_models:
        model_path = Path(bentoml.models.get(info.tag).path)
        models += sum(p.stat().st_size for p in model_path.rglob("*") if p.is_file())
    return files + models


def _baked(model: ImportedModel) -> BakedModel:
    return BakedModel(
        name=model.name,
        version=model.version,
        alias=model.alias,
        bentoml_tag=model.tag,
        reused=model.reused,
    )


def _normalize(key: str) -> str:
    key = key.strip().lower().replace("-", "_")
    return {"specialist": "specialists", "composite": "regime_blend"}.get(key, key)
