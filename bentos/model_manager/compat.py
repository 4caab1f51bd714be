"""model_manager's views over tradeserve's objects: scans become its snapshots and symbol
records, a served factor version its payload, and its symbol rules (upper-cased match,
one group per symbol) are applied here and nowhere else."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bentos.model_manager.schemas import ArtifactFile, PayloadResponse, Snapshot, SymbolRecord
from bentos.shared.model_source import ServedModel
from registry.artifact_scan import DirectoryScan, ParsedGroup
from registry.errors import TradeserveError
from registry.importer import SCANNED_AT_TAG
from training_hooks.factor.runtime import FactorRuntime

MAX_LISTED_DUPLICATES = 8


class SymbolNotFoundError(TradeserveError):
    """A symbol maps to no group (or, for the payload routes, to several)."""

    http_status = 404


class DuplicateSymbolError(TradeserveError):
    """A directory holds several groups of one symbol (model_manager refused it)."""


def snapshot_of(model_name: str, scan: DirectoryScan) -> Snapshot:
    """model_manager's snapshot of a scanned directory."""
    records = [record_of(group) for group in scan.groups]
    return Snapshot(
        model_name=model_name,
        root_path=str(scan.root),
        scanned_at=scan.scanned_at,
        symbol_count=len({record.symbol for record in records if record.symbol}),
        group_count=len(records),
        warnings=[f"{r.group_key}: {warning}" for r in records for warning in r.warnings],
        symbols=records,
    )


def failed_snapshot(model_name: str, root_path: str, scanned_at: str, error: str) -> Snapshot:
    """What model_manager kept for a directory it could not scan: no symbols, one warning."""
    return Snapshot(
        model_name=model_name,
        root_path=root_path,
        scanned_at=scanned_at,
        symbol_count=0,
        group_count=0,
        warnings=[f"scan failed: {error}"],
        symbols=[],
    )


def record_of(group: ParsedGroup) -> SymbolRecord:
    info = group.training_info
    taus = {entry.factor_name: entry.kendall_tau for entry in group.ic_table}
    return SymbolRecord(
        symbol=info.symbol,
        group_key=group.group_key,
        return_name=info.return_name,
        feature_dim=len(group.factors),
        factor_count=len(group.factors),
        grpc_ready=bool(group.factors),
        **info.window(),
        factors=group.factors,
        dim_factors=[
            {"dim": dim, "factor_name": factor, "kendall_tau": taus.get(factor)}
            for dim, factor in enumerate(group.factors)
        ],
        ic_rows=[
            {
                "symbol": info.symbol,
                "factor_name": entry.factor_name,
                "return_name": info.return_name,
                "Kendall_tau": entry.kendall_tau,
            }
            for entry in group.ic_table
        ],
        info_summary={
            **info.model_dump(exclude={"selected_factors"}),
            "selected_factors_count": len(info.selected_factors),
        },
        model_meta=_model_meta(group.model_json),
        artifacts={kind: _artifact(path) for kind, path in group.files.items() if path.is_file()},
        warnings=group.warnings,
        registered_name=group.name,
    )


def _model_meta(model_json: bytes) -> dict[str, Any]:
    """model_manager's ``model_meta`` from the booster JSON."""
    payload = json.loads(model_json)
    learner = payload.get("learner") or {}
    trees = ((learner.get("gradient_booster") or {}).get("model") or {}).get(
        "gbtree_model_param"
    ) or {}
    return {
        "feature_dim": int((learner.get("learner_model_param") or {}).get("num_feature") or 0),
        "objective": (learner.get("objective") or {}).get("name"),
        "num_trees": _int(trees.get("num_trees")),
        "num_parallel_tree": _int(trees.get("num_parallel_tree")),
        "version": payload.get("version"),
    }


def _int(raw: Any) -> int | None:
    try:
        return None if raw in (None, "") else int(raw)
    except (TypeError, ValueError):
        return None


def _artifact(path: Path) -> ArtifactFile:
    stat = path.stat()
    modified = datetime.fromtimestamp(stat.st_mtime, UTC).replace(microsecond=0)
    return ArtifactFile(path=str(path), size_bytes=stat.st_size, modified_at=modified.isoformat())


# ── symbol rules ─────────────────────────────────────────────────────────────────────


def check_unique_symbols(snapshot: Snapshot) -> None:
    """model_manager's rule for registering a directory: one group per symbol."""
    groups: dict[str, set[str]] = {}
    for record in snapshot.symbols:
        if record.symbol.strip():
            groups.setdefault(record.symbol.strip().upper(), set()).add(record.group_key)
    duplicates = sorted((s, sorted(g)) for s, g in groups.items() if len(g) > 1)
    if not duplicates:
        return
    listed = "; ".join(f"{s}: {', '.join(g)}" for s, g in duplicates[:MAX_LISTED_DUPLICATES])
    if len(duplicates) > MAX_LISTED_DUPLICATES:
        listed += f"; ... ({len(duplicates)} duplicated symbols total)"
    raise DuplicateSymbolError(
        f"symbol must be unique per model root, duplicated symbols found in model "
        f"'{snapshot.model_name}': {listed}"
    )


def matching(snapshot: Snapshot, symbol: str) -> list[SymbolRecord]:
    wanted = symbol.strip().upper()
    if not wanted:
        raise SymbolNotFoundError("symbol must not be empty")
    found = [r for r in snapshot.symbols if r.symbol.strip().upper() == wanted]
    if not found:
        raise SymbolNotFoundError(f"symbol '{wanted}' not found in model '{snapshot.model_name}'")
    return found


def select_record(snapshot: Snapshot, symbol: str, group_key: str | None) -> SymbolRecord:
    """The symbol's group (``group_key`` picks one; else the newest training)."""
    found = matching(snapshot, symbol)
    if group_key:
        for record in found:
            if record.group_key == group_key.strip():
                return record
        raise SymbolNotFoundError(
            f"group_key '{group_key}' not found for symbol '{symbol.strip().upper()}'"
        )
    return max(found, key=lambda r: (r.grpc_ready, r.train_end_date or "", r.group_key))


def unique_record(snapshot: Snapshot, symbol: str) -> SymbolRecord:
    """The one group of ``symbol`` (the payload routes refuse an ambiguous symbol)."""
    found = matching(snapshot, symbol)
    if len(found) > 1:
        groups = ", ".join(sorted(r.group_key for r in found))
        raise SymbolNotFoundError(
            f"symbol '{symbol.strip().upper()}' has multiple groups in model "
            f"'{snapshot.model_name}' ({groups}); require unique symbol for model payload API"
        )
    return found[0]


# ── payload ──────────────────────────────────────────────────────────────────────────


def payload_response(
    snapshot: Snapshot, served: ServedModel[FactorRuntime], tags: dict[str, str]
) -> PayloadResponse:
    """The promoted version's payload as model_manager answered it: ``model_name`` is the
    directory's name, ``source_root_path`` its root, ``scanned_at`` when the version was
    imported; ``model_json_path`` says where the registry keeps the booster."""
    payload = served.runtime.payload()
    payload.metadata = payload.metadata.model_copy(
        update={
            "model_name": snapshot.model_name,
            "source_root_path": snapshot.root_path,
            "scanned_at": tags.get(SCANNED_AT_TAG, payload.metadata.scanned_at),
        }
    )
    return PayloadResponse(payload=payload, model=served.ref)
