"""Alias moves made outside tradeserve (MLflow UI, REST API, a webhook-driven tool), recorded
when a service first sees them.

MLflow keeps no history of aliases, and a move through the UI skips ``tradeserve promote``,
so nothing records it and the legacy stage stays on the old version. Every live-updating
worker that finds the alias on a version it has not seen calls :func:`record_observed` with
the gate's verdict on it; the first call writes an ``observed`` audit entry (previous and new
version, time, verdict) and, if the version passed, mirrors the stage as a promotion would.

Several workers of several services observe the same move, at nearly the same time. The
check "the newest move in the audit already names this version" settles the calls that come
after one is written; for the ones that race, the entry's tag key is derived from the move
itself (the alias and how many moves the audit holds before it) rather than from the clock,
and the tag goes on the new version: racing writers write the same key on the same version,
so one entry remains. MLflow's tags are last-writer-wins (the last writer's time and actor
stay), or, in a store whose set-tag is read-then-insert, the loser fails on the unique key,
finds the winner's entry and writes nothing. Mirroring the stage is idempotent; it is done
only while the alias still points at the version, and re-done by any later observer that
finds the holder's stage behind (services do, at their next poll).
"""

from __future__ import annotations

import logging

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from registry import audit, description, store
from registry.promotion import mirror_stage
from registry.resolve import ResolvedVersion
from registry.settings import get_settings

logger = logging.getLogger(__name__)


def record_observed(
    seen: ResolvedVersion,
    passed: bool,
    problems: list[str],
    observer: str,
    client: MlflowClient | None = None,
) -> audit.AuditEntry | None:
    """Record the move of ``seen.alias`` to ``seen.version`` unless the audit already has it
    (a tradeserve promotion, or another observer); mirror the stage if ``passed``. Returns
    the entry written, None when there was nothing to write. Registry errors are raised
    (callers retry at their next look)."""
    alias = seen.alias
    if alias is None:  # found through the legacy stage: no alias moved
        return None
    mlflow_client = client or store.client()
    with store.translate_errors(f"registered model '{seen.name}'"):
        aliases = dict(mlflow_client.get_registered_model(seen.name).aliases or {})
        versions = store.versions_of(mlflow_client, seen.name)
    if str(aliases.get(alias)) != seen.version:
        return None  # moved on already: the newer move is observed in its turn
    moves = alias_moves(audit.model_history(versions, aliases, alias))
    entry = None
    if not moves or moves[-1].to_version != seen.version:
        entry = audit.AuditEntry(
            event="observed",
            name=seen.name,
            alias=alias,
            from_version=moves[-1].to_version if moves else _stage_holder(versions, seen),
            to_version=seen.version,
            actor=observer,
            time=audit.now(),
            reason="alias moved outside tradeserve (MLflow UI or API); recorded when first seen",
            passed=passed,
            problems=problems,
        )
        try:
            audit.record(entry, mlflow_client, key=observed_key(alias, len(moves)))
        except Exception:
            # a racing writer of the same key may lose on the store's unique constraint
            # instead of overwriting: then the winner's entry is there
            if not _on_record(seen, mlflow_client):
                raise
            entry = None
    if entry is not None:
        touched = [seen.version, *([entry.from_version] if entry.from_version else [])]
        description.refresh(seen.name, touched, mlflow_client)  # the UI's page shows it
        logger.info(
            "recorded %s@%s: version %s -> %s, moved outside tradeserve (gate %s)",
            seen.name,
            alias,
            entry.from_version,
            seen.version,
            "passed" if passed else "failed",
        )
    holder = next((v for v in versions if str(v.version) == seen.version), None)
    if passed and holder is not None and holder.current_stage != get_settings().legacy_stage:
        with store.translate_errors(f"registered model '{seen.name}'"):
            mirror_stage(seen.name, alias, seen.version, mlflow_client)
    return entry


def _on_record(seen: ResolvedVersion, client: MlflowClient) -> bool:
    """Whether the newest recorded move of ``seen.alias`` is to ``seen.version``."""
    moves = alias_moves(audit.history(seen.name, seen.alias, client))
    return bool(moves) and moves[-1].to_version == seen.version


def alias_moves(entries: list[audit.AuditEntry]) -> list[audit.AuditEntry]:
    """The entries (of one alias, oldest first) that moved it: passed promotions and
    rollbacks, and every observed move (it happened whatever the gate says)."""
    return [entry for entry in entries if entry.passed or entry.event == "observed"]


def observed_key(alias: str, moves_before: int) -> str:
    """Tag key of the observed move that follows ``moves_before`` recorded moves of
    ``alias``: the same for every observer of that move."""
    return f"{audit.AUDIT_PREFIX}{alias}.observed-{moves_before:06d}"


def _stage_holder(versions: list[ModelVersion], seen: ResolvedVersion) -> str | None:
    """With no audit at all, the previous holder is the one in the legacy stage, which every
    promotion mirrors."""
    stage = get_settings().legacy_stage
    staged = [v for v in versions if v.current_stage == stage and str(v.version) != seen.version]
    return str(max(staged, key=lambda v: int(v.version)).version) if staged else None
