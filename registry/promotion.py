"""Gated promotion and rollback of registered versions, with an audit entry for each.

A promotion moves the alias (``champion`` by default) and mirrors the legacy stage
``Production`` (archiving the previous one) so stage-based clients and the MLflow UI's stage
view agree. Nothing changes unless the candidate passes :mod:`registry.gate`. The audit
entry is written (pending) before the alias moves and confirmed after, so a failure in
between never leaves a move without its entry (:mod:`registry.audit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from mlflow import MlflowClient
from pydantic import BaseModel

from registry import audit, description, store
from registry.errors import GateError, NotPromotedError, TradeserveError
from registry.gate import GateReport, MetricThreshold, threshold_problems, validate_version
from registry.resolve import ResolvedVersion, get_version, resolve
from registry.settings import get_settings

VALIDATION_TAG = description.VALIDATION_TAG
VALIDATION_ERROR_TAG = description.VALIDATION_ERROR_TAG


class PromotionResult(BaseModel):
    """What a promotion or rollback did."""

    event: Literal["promote", "rollback"]
    name: str
    alias: str
    from_version: str | None
    to_version: str
    changed: bool
    report: GateReport

    def summary(self) -> str:
        if not self.changed:
            return f"{self.name}@{self.alias} is already version {self.to_version} (re-validated)"
        before = f"version {self.from_version}" if self.from_version else "no version"
        return f"{self.name}@{self.alias}: {before} -> version {self.to_version} ({self.event})"


def promote(
    name: str,
    version: str | int,
    alias: str | None = None,
    reason: str | None = None,
    thresholds: Sequence[MetricThreshold] = (),
    client: MlflowClient | None = None,
) -> PromotionResult:
    """Validate ``name`` version ``version`` and, if it passes, make it the ``alias`` holder.

    ``thresholds`` (the CLI's ``--require``) are checked first, on the version's metrics
    (training run and logged model: walk-forward results of ``tradeserve evaluate``); an
    unmet or missing one refuses the promotion before the gate runs. The refusal is audited
    but leaves ``validation_status`` alone: the version is not broken, it misses this bar.
    """
    mlflow_client = client or store.client()
    alias = alias or get_settings().alias
    candidate = get_version(name, version, mlflow_client)
    return _move_alias("promote", candidate, alias, reason, thresholds, mlflow_client)


def rollback(
    name: str,
    alias: str | None = None,
    reason: str | None = None,
    client: MlflowClient | None = None,
) -> PromotionResult:
    """Return ``alias`` to the version that held it before the current one (gated too)."""
    mlflow_client = client or store.client()
    alias = alias or get_settings().alias
    current = current_holder(name, alias, mlflow_client)
    stack = audit.champion_stack(audit.history(name, alias, mlflow_client))
    if current is not None and stack and stack[-1] != current.version:
        target = stack[-1]  # the alias was moved outside tradeserve: go back to our last one
    elif len(stack) >= 2:
        target = stack[-2]
    else:
        raise TradeserveError(
            f"no earlier {alias} of '{name}' is recorded, so there is nothing to roll back to; "
            f"promote a version explicitly with `tradeserve promote {name} VERSION`"
        )
    candidate = get_version(name, target, mlflow_client)
    return _move_alias("rollback", candidate, alias, reason, (), mlflow_client)


def current_holder(name: str, alias: str, client: MlflowClient) -> ResolvedVersion | None:
    """The version holding ``alias`` (no stage fallback), or None."""
    try:
        resolved = resolve(name, alias, client)
    except NotPromotedError:
        return None
    return resolved if resolved.alias == alias else None


def mirror_stage(name: str, alias: str, version: str, client: MlflowClient) -> None:
    """Give ``version``, the new holder of ``alias``, the legacy stage (``Production``,
    archiving the previous holder) when ``alias`` is the promotion alias, so stage-based
    clients and the UI's stage column agree with it. Idempotent."""
    settings = get_settings()
    if alias == settings.alias:
        client.transition_model_version_stage(
            name, version, settings.legacy_stage, archive_existing_versions=True
        )


def _move_alias(
    event: Literal["promote", "rollback"],
    candidate: ResolvedVersion,
    alias: str,
    reason: str | None,
    thresholds: Sequence[MetricThreshold],
    client: MlflowClient,
) -> PromotionResult:
    previous = current_holder(candidate.name, alias, client)
    unmet = threshold_problems(candidate, thresholds, client) if thresholds else []
    report = (
        GateReport(name=candidate.name, version=candidate.version, family=candidate.family)
        if unmet
        else validate_version(candidate, (), client)
    )
    report.problems.extend(unmet)
    if thresholds:
        report.checks.append("metric thresholds")
    entry = audit.AuditEntry(
        event=event,
        name=candidate.name,
        alias=alias,
        from_version=previous.version if previous else None,
        to_version=candidate.version,
        actor=audit.current_actor(),
        time=audit.now(),
        reason=reason,
        passed=report.passed,
        problems=report.problems,
    )
    with store.translate_errors():
        if unmet:
            audit.record(entry, client)
            description.refresh(candidate.name, [candidate.version], client)
            stays = f"version {previous.version}" if previous else "unset"
            raise GateError(
                f"version {candidate.version} of '{candidate.name}' does not meet the promotion "
                f"requirements: {'; '.join(unmet)}. {alias} stays {stays}"
            )
        if not report.passed:
            client.set_model_version_tag(
                candidate.name, candidate.version, VALIDATION_TAG, "failed"
            )
            client.set_model_version_tag(
                candidate.name, candidate.version, VALIDATION_ERROR_TAG, "; ".join(report.problems)
            )
            audit.record(entry, client)
            description.refresh(candidate.name, [candidate.version], client)
            stays = f"version {previous.version}" if previous else "unset"
            raise GateError(
                f"version {candidate.version} of '{candidate.name}' failed the promotion gate: "
                f"{'; '.join(report.problems)}. {alias} stays {stays}"
            )
        client.set_model_version_tag(candidate.name, candidate.version, VALIDATION_TAG, "passed")
        if VALIDATION_ERROR_TAG in candidate.tags:
            client.delete_model_version_tag(candidate.name, candidate.version, VALIDATION_ERROR_TAG)
        pending = entry.model_copy(update={"state": "pending"})
        audit.record(pending, client)
        try:
            client.set_registered_model_alias(candidate.name, alias, candidate.version)
            mirror_stage(candidate.name, alias, candidate.version, client)
        except BaseException:
            audit.settle_failed(pending, client)
            raise
        audit.record(entry, client)
    touched = [candidate.version, *([previous.version] if previous else [])]
    description.refresh(candidate.name, touched, client)
    return PromotionResult(
        event=event,
        name=candidate.name,
        alias=alias,
        from_version=entry.from_version,
        to_version=candidate.version,
        changed=entry.from_version != candidate.version,
        report=report,
    )
