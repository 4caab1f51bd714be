"""Live promotion: running services follow their models' alias without a rebuild.

Every worker process polls the registry (``TRADESERVE_POLL_INTERVAL_S``, default 10 s).
When a served model's alias points at another version, the worker downloads and loads it,
runs its logged input example through the family checks of the promotion gate (which is
also the warm-up), and only then swaps it in atomically; requests already running finish
on the old version. A version that fails is never served and is reported. An unreachable
registry keeps the loaded versions serving and is retried with backoff.

Workers share one folder under ``TRADESERVE_HOME``: a request to reload (``POST
/admin/reload``, a registry webhook) touches a marker that every worker watches, and each
worker publishes its status there for ``GET /admin/models``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from prometheus_client import Counter
from pydantic import BaseModel, Field

from bentos.shared.lineage import ModelRef
from bentos.shared.model_source import ModelSet, ServedModel
from registry.errors import RegistryUnavailableError, TradeserveError
from registry.gate import check_loaded
from registry.loading import load_version
from registry.resolve import ResolvedVersion, resolve
from registry.settings import get_settings

logger = logging.getLogger("tradeserve.live")

SWAPS = Counter(
    "tradeserve_model_swaps",
    "Model versions swapped in or rejected by live promotion",
    ["service", "model", "outcome"],
)
MARKER_POLL_S = 0.5
MAX_BACKOFF_S = 30.0


class ServedStatus(BaseModel):
    """What one worker serves for one model."""

    model: ModelRef
    loaded_at: datetime
    status: Literal["serving"] = "serving"
    rejected: str | None = Field(default=None, description="rejected version N: reason")
    fallback_from: str | None = Field(
        default=None, description="Promoted version that failed the gate at start-up"
    )
    fallback_reason: str | None = Field(default=None, description="Why it failed")


class RegistryStatus(BaseModel):
    reachable: bool = True
    last_success: datetime | None = None
    last_error: str | None = None
    consecutive_failures: int = 0


class WorkerStatus(BaseModel):
    """One worker's view, published for ``GET /admin/models``."""

    service: str
    worker: int
    pid: int
    live: bool
    updated_at: datetime
    registry: RegistryStatus
    models: list[ServedStatus]


def live_dir(service: str) -> Path:
    return get_settings().home_dir / "live" / service


class LiveUpdater:
    """Follows the alias of every model in ``models`` from a background thread."""

    def __init__(
        self, service: str, model_sets: Sequence[ModelSet], interval_s: float, worker: int
    ) -> None:
        self.service = service
        self.model_sets = list(model_sets)
        self.interval_s = interval_s
        self.worker = worker
        self.registry = RegistryStatus()
        # name -> (version, reason); a start-up fallback is a rejection of the promoted one
        self.rejected: dict[str, tuple[str, str]] = {
            name: (served.fallback_from, served.fallback_reason or "")
            for name, served in self._served().items()
            if served.fallback_from is not None
        }
        self._check_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._folder = live_dir(service)
        self._folder.mkdir(parents=True, exist_ok=True)
        self._marker = self._folder / "reload-requested"
        self._seen_marker = self._marker_mtime()

    def start(self) -> None:
        self.publish()
        self._thread = threading.Thread(target=self._run, name="tradeserve-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        (self._folder / f"worker-{self.worker}.json").unlink(missing_ok=True)

    def request_reload(self) -> None:
        """Ask every worker of this service to check the registry now."""
        self._marker.touch()

    def check_now(self) -> None:
        """Resolve every served model and swap in any newly promoted, valid version."""
        with self._check_lock:
            try:
                targets = {name: resolve(name) for name in self._served()}
            except (RegistryUnavailableError, OSError) as error:
                self._registry_failed(error)
                return
            except TradeserveError as error:  # e.g. alias removed: keep serving what works
                logger.warning("live: cannot resolve served models: %s", error)
                targets = {}
            self.registry = RegistryStatus(last_success=datetime.now(UTC))
            served = self._served()
            for name, target in targets.items():
                already_rejected = self.rejected.get(name, ("",))[0] == target.version
                if target.version != served[name].ref.version and not already_rejected:
                    self._try_swap(target)
            self.publish()

    def _served(self) -> dict[str, ServedModel]:
        return {name: m for models in self.model_sets for name, m in models.models.items()}

    def _set_of(self, name: str) -> ModelSet:
        return next(models for models in self.model_sets if name in models.models)

    def _try_swap(self, target: ResolvedVersion) -> None:
        try:
            loaded = load_version(target, device=self._set_of(target.name).device)
            problems = check_loaded(loaded)
        except Exception as error:  # any load failure rejects the version
            problems = [f"cannot load: {type(error).__name__}: {error}"]
        if problems:
            reason = "; ".join(problems)
            self.rejected[target.name] = (target.version, reason)
            SWAPS.labels(self.service, target.name, "rejected").inc()
            logger.error(
                "live: rejected %s version %s: %s (still serving version %s)",
                target.name,
                target.version,
                reason,
                self._served()[target.name].ref.version,
            )
            return
        self._set_of(target.name).replace(
            ServedModel(
                ref=ModelRef(name=target.name, version=target.version, alias=target.alias),
                family=target.family,
                runtime=loaded.runtime,
                metadata=loaded.metadata,
            )
        )
        self.rejected.pop(target.name, None)
        SWAPS.labels(self.service, target.name, "swapped").inc()
        logger.info("live: now serving %s version %s", target.name, target.version)

    def _registry_failed(self, error: Exception) -> None:
        failures = self.registry.consecutive_failures + 1
        self.registry = RegistryStatus(
            reachable=False,
            last_success=self.registry.last_success,
            last_error=str(error),
            consecutive_failures=failures,
        )
        logger.warning("live: registry unreachable (%s); keeping loaded versions", error)
        self.publish()

    def _next_delay(self) -> float:
        failures = self.registry.consecutive_failures
        if not failures:
            return self.interval_s
        return min(self.interval_s * 2 ** (failures - 1), max(MAX_BACKOFF_S, self.interval_s))

    def _run(self) -> None:
        due = time.monotonic() + self.interval_s
        while not self._stop.wait(MARKER_POLL_S):
            marker = self._marker_mtime()
            if marker != self._seen_marker or time.monotonic() >= due:
                self._seen_marker = marker
                try:
                    self.check_now()
                except Exception:  # never let the poller die
                    logger.exception("live: unexpected error while checking the registry")
                due = time.monotonic() + self._next_delay()

    def _marker_mtime(self) -> float:
        try:
            return self._marker.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def status(self) -> WorkerStatus:
        return WorkerStatus(
            service=self.service,
            worker=self.worker,
            pid=os.getpid(),
            live=True,
            updated_at=datetime.now(UTC),
            registry=self.registry,
            models=[
                ServedStatus(
                    model=served.ref,
                    loaded_at=served.loaded_at,
                    rejected=(
                        f"rejected version {self.rejected[name][0]}: {self.rejected[name][1]}"
                        if name in self.rejected
                        else None
                    ),
                    fallback_from=served.fallback_from,
                    fallback_reason=served.fallback_reason,
                )
                for name, served in sorted(self._served().items())
            ],
        )

    def publish(self) -> None:
        """Write this worker's status where every worker (and /admin/models) can read it."""
        path = self._folder / f"worker-{self.worker}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_text(self.status().model_dump_json())
        temporary.replace(path)


def worker_statuses(service: str) -> list[WorkerStatus]:
    """Every running worker's published status (files of dead processes are skipped)."""
    statuses = []
    for path in sorted(live_dir(service).glob("worker-*.json")):
        try:
            status = WorkerStatus.model_validate_json(path.read_text())
        except (OSError, ValueError):
            continue
        if _alive(status.pid):
            statuses.append(status)
    return statuses


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_live_updates(service: str, *model_sets: ModelSet) -> LiveUpdater | None:
    """Start following promotions when live mode is on (default: serving from the registry)."""
    import bentoml

    from bentos.shared.model_source import source_kind
    from bentos.shared.settings import get_serving_settings

    settings = get_serving_settings()
    live = settings.live if settings.live is not None else source_kind() == "registry"
    if not live:
        return None
    worker = bentoml.server_context.worker_index or os.getpid()
    updater = LiveUpdater(service, model_sets, settings.poll_interval_s, worker)
    updater.start()
    return updater
