"""Promotion audit trail, kept in MLflow version tags so it lives with the registry.

Each promotion attempt (passed or failed) writes one tag ``audit.<alias>.<utc stamp>`` on
the version it concerns; the value is an :class:`AuditEntry` as JSON. The history of a
model is the union of those tags over its versions, in time order.

A passed promotion is written ``pending`` before the alias moves and rewritten ``done``
after, so no alias move goes unaudited. If the move fails the entry is removed (or, when
the registry cannot be reached to do so, left pending); readers settle a pending entry by
what the registry shows (:func:`settled`), so the history never claims a move that did not
happen.
"""

from __future__ import annotations

import getpass
import logging
from datetime import UTC, datetime
from typing import Literal

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from pydantic import BaseModel, Field, ValidationError

from registry import store
from registry.settings import get_settings

AUDIT_PREFIX = "audit."
logger = logging.getLogger(__name__)


class AuditEntry(BaseModel):
    """One promotion or rollback attempt on an alias, or a move made outside tradeserve
    (``observed``: the alias had already moved when a service saw it, :mod:`registry.observed`)."""

    event: Literal["promote", "rollback", "observed"]
    name: str
    alias: str
    from_version: str | None = Field(description="Version that held the alias before")
    to_version: str = Field(description="Candidate version")
    actor: str
    time: datetime
    reason: str | None = None
    passed: bool = Field(
        description="Gate result; a failed attempt changes nothing (an observed move happened "
        "anyway: services keep serving the previous version)"
    )
    problems: list[str] = Field(default_factory=list)
    state: Literal["pending", "done"] = Field(
        default="done", description="pending: written before the alias moved, not yet confirmed"
    )

    @property
    def tag_key(self) -> str:
        return f"{AUDIT_PREFIX}{self.alias}.{self.time.strftime('%Y%m%dT%H%M%S%fZ')}"


def current_actor() -> str:
    """Who is promoting: TRADESERVE_ACTOR, else the OS user."""
    configured = get_settings().actor
    if configured:
        return configured
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def now() -> datetime:
    return datetime.now(UTC)


def record(entry: AuditEntry, client: MlflowClient | None = None, key: str | None = None) -> None:
    """Store ``entry`` on the version it concerns, under ``key`` (default: its time stamp;
    writers racing to record the same event pass the same key, so one tag remains)."""
    mlflow_client = client or store.client()
    with store.translate_errors():
        mlflow_client.set_model_version_tag(
            entry.name, entry.to_version, key or entry.tag_key, entry.model_dump_json()
        )


def settle_failed(entry: AuditEntry, client: MlflowClient) -> None:
    """After a failure between writing ``entry`` pending and confirming it: confirm it if
    the alias moved anyway, else remove it. Best effort: if the registry cannot be reached,
    the entry stays pending and :func:`settled` decides it when read."""
    try:
        holder = (client.get_registered_model(entry.name).aliases or {}).get(entry.alias)
        if str(holder) == entry.to_version:
            record(entry.model_copy(update={"state": "done"}), client)
        else:
            client.delete_model_version_tag(entry.name, entry.to_version, entry.tag_key)
    except Exception as error:  # the original failure is what the caller sees
        logger.warning("audit entry %s of '%s' left pending: %s", entry.tag_key, entry.name, error)


def settled(entries: list[AuditEntry], aliases: dict[str, str]) -> list[AuditEntry]:
    """``entries`` (oldest first) with each pending one decided by the registry: done when its
    version held the alias right after it (the next entry on that alias found it there, or,
    for the last one, it holds the alias now), dropped otherwise (the move never happened)."""
    result = []
    for index, entry in enumerate(entries):
        if entry.state == "pending":
            later = [e for e in entries[index + 1 :] if e.alias == entry.alias]
            held = later[0].from_version if later else aliases.get(entry.alias)
            if str(held) != entry.to_version:
                continue
            entry = entry.model_copy(update={"state": "done"})
        result.append(entry)
    return result


def history(
    name: str, alias: str | None = None, client: MlflowClient | None = None
) -> list[AuditEntry]:
    """All audit entries of ``name`` (optionally of one alias), oldest first."""
    mlflow_client = client or store.client()
    with store.translate_errors(f"registered model '{name}'"):
        model = mlflow_client.get_registered_model(name)
        versions = store.versions_of(mlflow_client, name)
    return model_history(versions, dict(model.aliases or {}), alias)


def model_history(
    versions: list[ModelVersion], aliases: dict[str, str], alias: str | None = None
) -> list[AuditEntry]:
    """The settled audit entries stored on ``versions`` (optionally of one alias), oldest
    first; ``aliases`` are the model's current ones."""
    entries = sorted(
        (entry for version in versions for entry in entries_of(version)),
        key=lambda entry: entry.time,
    )
    entries = settled(entries, aliases)
    return entries if alias is None else [entry for entry in entries if entry.alias == alias]


def entries_of(version: ModelVersion) -> list[AuditEntry]:
    """The audit entries stored on one version (unreadable tags are skipped)."""
    entries = []
    for key, value in (version.tags or {}).items():
        if key.startswith(AUDIT_PREFIX):
            try:
                entries.append(AuditEntry.model_validate_json(value))
            except ValidationError:
                continue
    return entries


def champion_stack(entries: list[AuditEntry]) -> list[str]:
    """Versions that held the alias, replaying passed promotions (push) and rollbacks (pop)."""
    stack: list[str] = []
    for entry in entries:
        if not entry.passed:
            continue
        if entry.event == "rollback":
            if stack:
                stack.pop()
            if not stack or stack[-1] != entry.to_version:
                stack.append(entry.to_version)
            continue
        if not stack and entry.from_version and entry.from_version != entry.to_version:
            stack.append(entry.from_version)
        if not stack or stack[-1] != entry.to_version:
            stack.append(entry.to_version)
    return stack
