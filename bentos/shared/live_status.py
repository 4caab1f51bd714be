"""What live-updating workers publish for ``GET /admin/models``: one JSON file per worker in a
folder under ``TRADESERVE_HOME`` that every worker of the service shares."""

from __future__ import annotations

import os
import threading
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from bentos.shared.lineage import ModelRef
from registry.settings import get_settings


class PendingUpdate(BaseModel):
    """A promoted version this worker is fetching, or will fetch again after a transient
    failure (registry or artifact store unreachable, 5xx, timeout): never a rejection."""

    version: str
    state: Literal["downloading", "retrying"]
    attempts: int = Field(description="Downloads tried so far")
    last_error: str | None = Field(default=None, description="Why the last one failed")
    retry_in_s: float | None = Field(
        default=None, description="Seconds until the next try (POST /admin/reload: now)"
    )


class ServedStatus(BaseModel):
    """What one worker serves for one model."""

    model: ModelRef
    loaded_at: datetime
    status: Literal["serving"] = "serving"
    rejected: str | None = Field(default=None, description="rejected version N: reason")
    pending: PendingUpdate | None = None
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


def publish(status: WorkerStatus) -> None:
    """Write ``status`` where every worker (and /admin/models) can read it, atomically."""
    path = live_dir(status.service) / f"worker-{status.worker}.json"
    # two threads of a worker (poller, download) may publish at once: one temp file each
    temporary = path.with_suffix(f".{threading.get_ident()}.tmp")
    temporary.write_text(status.model_dump_json())
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
