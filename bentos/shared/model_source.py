"""Which model versions a service serves, and loading them onto the right device.

Models come from the MLflow registry (resolved through the promotion alias at start-up)
or, in a built bento, from the bento's own BentoML model store, where ``tradeserve build``
imported them with their registry lineage as labels. The set of served models is
replaced as a whole, so a request always sees one consistent set. From the registry, a
promoted version that fails the gate's check is not served: the newest version that passed
the gate is (:func:`registry.gate.load_servable`), and the fallback is logged, counted and
kept on the served model for ``/admin/models`` and live promotion.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from bentos.shared.lineage import ModelRef
from bentos.shared.metrics import STARTUP_FALLBACKS
from bentos.shared.runtime_config import configured_threads, configured_workers
from bentos.shared.settings import ServingSettings, get_serving_settings
from registry.catalog import list_models
from registry.errors import ModelNotFoundError, NotPromotedError
from registry.families import Family
from registry.gate import Servable, load_servable
from registry.loading import load_runtime
from registry.resolve import ResolvedVersion
from registry.runtime import FamilyRuntime
from registry.settings import get_settings

logger = logging.getLogger("tradeserve.serving")
R = TypeVar("R", bound=FamilyRuntime)

# Labels `tradeserve build` puts on models it imports into the BentoML store.
LABEL_FAMILY = "family"
LABEL_NAME = "registered_name"
LABEL_VERSION = "registered_version"
LABEL_ALIAS = "alias"
MLFLOW_MODEL_DIR = "mlflow_model"


@dataclass(frozen=True)
class ServedModel(Generic[R]):
    """One loaded version and where it came from."""

    ref: ModelRef
    family: Family
    runtime: R
    metadata: dict[str, Any] = field(default_factory=dict)
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    # Set when start-up served this version because the promoted one failed the gate.
    fallback_from: str | None = None  # the promoted version that is not served
    fallback_reason: str | None = None


def choose_device(settings: ServingSettings | None = None) -> str:
    """``cuda`` when configured or (auto) available, else ``cpu``."""
    settings = settings or get_serving_settings()
    if settings.device != "auto":
        return settings.device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def torch_device(service: str, *, tiny_models: bool = False) -> str:
    """Device for a torch service's models (:func:`choose_device`). On CPU it also sets
    torch's intra-op threads: ``TRADESERVE_TORCH_THREADS``, else 1 for ``tiny_models``
    (handing a 6k-parameter network between threads costs ~15x its math), else the
    process's cores divided among the model calls that run at once (workers x threads),
    so calls do not fight over cores."""
    settings = get_serving_settings()
    device = choose_device(settings)
    if device == "cpu":
        import torch

        cores = len(os.sched_getaffinity(0))
        threads = settings.torch_threads or (
            1
            if tiny_models
            else max(1, cores // (configured_workers(service) * configured_threads(service)))
        )
        torch.set_num_threads(threads)
        logger.info("%s: torch on CPU with %d intra-op thread(s)", service, threads)
    return device


def running_from_bento() -> bool:
    """True when the service code runs from a built bento (its ``bento.yaml`` beside src)."""
    return bento_yaml() is not None


def bento_yaml() -> Path | None:
    """The ``bento.yaml`` of the built bento this code runs from, if it runs from one."""
    # This file sits at <bento>/src/bentos/shared/ in a bento; the cwd of a served bento's
    # workers is <bento>/src.
    candidates = (Path(__file__).resolve().parents[3], Path.cwd().parent, Path.cwd())
    return next((c / "bento.yaml" for c in candidates if (c / "bento.yaml").is_file()), None)


def bento_model_tags() -> list[str] | None:
    """Tags of the models baked into the running bento (None outside a bento).

    ``bentoml serve TAG`` from the local bento store reads models from the shared model
    store, which may hold other versions too; only the bento's own list counts.
    """
    import yaml

    path = bento_yaml()
    if path is None:
        return None
    info = yaml.safe_load(path.read_text()) or {}
    return [str(model["tag"]) for model in info.get("models") or []]


def source_kind(settings: ServingSettings | None = None) -> str:
    settings = settings or get_serving_settings()
    if settings.model_source != "auto":
        return settings.model_source
    return "bento" if running_from_bento() else "registry"


class ModelSet(Generic[R]):
    """The models of one family that a service serves (``ModelSet[FactorRuntime]``)."""

    def __init__(self, family: Family, names: Iterable[str] | None = None, device: str = "cpu"):
        self.family = family
        self.requested = list(names) if names else None
        self.device = device
        self._models: dict[str, ServedModel[R]] = {}
        self._lock = threading.Lock()

    def load(self, kind: str | None = None) -> None:
        """Load every served model (start-up), from the registry through the gate
        (:func:`registry.gate.load_servable`); raises if one cannot be served."""
        kind = kind or source_kind()
        loaded = self._load_from_bento() if kind == "bento" else self._load_from_registry()
        if not loaded:
            where = (
                "in this bento's model store"
                if kind == "bento"
                else f"in the registry at {get_settings().effective_tracking_uri}"
            )
            raise NotPromotedError(
                f"no promoted {self.family.value} model to serve {where}; run `tradeserve demo` "
                "or promote one with `tradeserve promote NAME VERSION`"
            )
        with self._lock:
            self._models = {served.ref.name: served for served in loaded}
        for served in loaded:
            logger.info(
                "serving %s version %s (%s) on %s",
                served.ref.name,
                served.ref.version,
                served.ref.alias,
                self.device,
            )

    def get(self, name: str) -> ServedModel[R]:
        """The served model ``name``; 404-class error naming the served ones otherwise."""
        models = self._models
        if name not in models:
            raise ModelNotFoundError(
                f"model '{name}' is not served here; served {self.family.value} models: "
                f"{', '.join(sorted(models)) or 'none'}"
            )
        return models[name]

    def replace(self, served: ServedModel[R]) -> None:
        """Swap one model in atomically (the dict is replaced, never mutated)."""
        with self._lock:
            self._models = {**self._models, served.ref.name: served}

    @property
    def models(self) -> dict[str, ServedModel[R]]:
        return self._models

    @property
    def ready(self) -> bool:
        return bool(self._models)

    def _names_from_registry(self) -> list[str]:
        if self.requested:
            return self.requested
        return [
            summary.name
            for summary in list_models()
            if summary.family == self.family.value and summary.version is not None
        ]

    def _load_from_registry(self) -> list[ServedModel[R]]:
        served = []
        for name in self._names_from_registry():
            servable = load_servable(name, device=self.device)
            resolved, promoted = servable.loaded.resolved, servable.fallback_from
            if promoted is not None:
                _report_fallback(promoted, servable)
            served.append(
                ServedModel(
                    ref=ModelRef(name=name, version=resolved.version, alias=resolved.alias),
                    family=self.family,
                    runtime=servable.loaded.runtime,
                    metadata=servable.loaded.metadata,
                    fallback_from=promoted.version if promoted else None,
                    fallback_reason=servable.reason,
                )
            )
        return served

    def _load_from_bento(self) -> list[ServedModel[R]]:
        import bentoml

        served = []
        tags = bento_model_tags()
        stored = bentoml.models.list() if tags is None else [bentoml.models.get(t) for t in tags]
        for bento_model in stored:
            labels = bento_model.info.labels
            if labels.get(LABEL_FAMILY) != self.family.value:
                continue
            name = labels[LABEL_NAME]
            if self.requested and name not in self.requested:
                continue
            model_dir = Path(bento_model.path_of(MLFLOW_MODEL_DIR))
            runtime, metadata = load_runtime(model_dir, self.family, self.device)
            served.append(
                ServedModel(
                    ref=ModelRef(
                        name=name,
                        version=labels[LABEL_VERSION],
                        alias=labels.get(LABEL_ALIAS) or None,
                    ),
                    family=self.family,
                    runtime=runtime,
                    metadata=metadata,
                )
            )
        return served


def _report_fallback(promoted: ResolvedVersion, servable: Servable) -> None:
    """Log and count a start-up that serves a validated version instead of ``promoted``."""
    import bentoml

    resolved = servable.loaded.resolved
    STARTUP_FALLBACKS.labels(bentoml.server_context.service_name or "", resolved.name).inc()
    logger.warning(
        "not serving %s version %s (%s): it fails the gate: %s; serving version %s, the newest "
        "that passed the gate",
        promoted.name,
        promoted.version,
        promoted.alias or promoted.stage,
        servable.reason,
        resolved.version,
    )
