"""Promotion audit trail, kept in MLflow version tags so it lives with the registry.

Each promotion attempt (passed or failed) writes one tag ``audit.<alias>.<utc stamp>`` on
the version it concerns; the value is an :class:`AuditEntry` as JSON. The history of a
model is the union of those tags over its versions, in time order.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime
from typing import Literal

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from pydantic import BaseModel, Field, ValidationError

from registry import store
from registry.settings import get_settings

AUDIT_PREFIX = "audit."


class AuditEntry(BaseModel):
    """One promotion or rollback attempt on an alias."""

    event: Literal["promote", "rollback"]
    name: str
    alias: str
    from_version: str | None = Field(description="Version that held the alias before")
    to_version: str = Field(description="Candidate version")
    actor: str
    time: datetime
    reason: str | None = None
    passed: bool = Field(description="Gate result; a failed attempt changes nothing")
    problems: list[str] = Field(default_factory=list)

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


def record(entry: AuditEntry, client: MlflowClient | None = None) -> None:
    """Store ``entry`` on the version it concerns."""
    mlflow_client = client or store.client()
    with store.translate_errors():
        mlflow_client.set_model_version_tag(
            entry.name, entry.to_version, entry.tag_key, entry.model_dump_json()
        )


def history(
    name: str, alias: str | None = None, client: MlflowClient | None = None
) -> list[AuditEntry]:
    """All audit entries of ``name`` (optionally of one alias), oldest first."""
    mlflow_client = client or store.client()
    with store.translate_errors(f"registered model '{name}'"):
        mlflow_client.get_registered_model(name)
        versions = mlflow_client.search_model_versions(f"name = '{name}'")
    entries = [entry for version in versions for entry in entries_of(version)]
    if alias is not None:
        entries = [entry for entry in entries if entry.alias == alias]
    return sorted(entries, key=lambda entry: entry.time)


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
