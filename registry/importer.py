"""Import model_manager artifact directories into the registry as factor models.

:mod:`registry.artifact_scan` reads and checks every group first, so the import is
all-or-nothing: any unusable group stops it before anything is registered. It is
idempotent: a group whose content (model JSON, factors, IC table, training info) equals that
of the latest version of its model is skipped. Every version carries its lineage as tags:
the source model file (``source_path``), the directory's fingerprint and the scan time
(``scanned_at``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

import xgboost as xgb

from registry import store
from registry.artifact_scan import DirectoryScan, ParsedGroup, scan_directory
from training_hooks.factor.log import SHA_TAG, log_factor
from training_hooks.registration import Lineage, RegisteredVersion

log = logging.getLogger(__name__)

WARNINGS_TAG = "import_warnings"
GROUP_SHA_TAG = "source_group_sha256"
SOURCE_PATH_TAG = "source_path"
FINGERPRINT_TAG = "source_fingerprint"
SCANNED_AT_TAG = "scanned_at"


def import_artifact_directory(
    root: Path,
    *,
    lineage_source: str | None = None,
    trusted_dirs: Sequence[Path] | None = None,
) -> list[RegisteredVersion]:
    """Register every artifact group under ``root``; returns only the new versions.

    ``trusted_dirs`` defaults to ``TRADESERVE_TRUSTED_PICKLE_DIRS``; ``lineage_source``
    (default ``model_manager:<root>``) becomes the versions' ``data_source`` tag.
    """
    return register_scan(scan_directory(root, trusted_dirs), lineage_source=lineage_source)


def register_scan(
    scan: DirectoryScan, lineage_source: str | None = None
) -> list[RegisteredVersion]:
    """Register the groups of ``scan`` whose content changed; returns the new versions."""
    source = lineage_source or f"model_manager:{scan.root}"
    created = []
    for group in scan.groups:
        for warning in group.warnings:
            log.warning("%s: %s", group.group_key, warning)
        if _unchanged(group):
            log.info("%s: unchanged (sha256 %s), skipped", group.group_key, group.sha256[:12])
            continue
        created.append(_register(group, scan, source))
    return created


def _register(group: ParsedGroup, scan: DirectoryScan, source: str) -> RegisteredVersion:
    booster = xgb.Booster()
    booster.load_model(bytearray(group.model_json))
    booster.feature_names = group.factors
    info = group.training_info
    model_file = group.files.get("model_json") or group.files.get("model_pkl")
    lineage = Lineage(
        data_source=source,
        data_window_start=_date(info.train_start_date),
        data_window_end=_date(info.train_end_date),
        extra={
            "source_root": str(scan.root),
            "source_group": group.group_key,
            SOURCE_PATH_TAG: str(model_file or ""),
            FINGERPRINT_TAG: scan.fingerprint,
            SCANNED_AT_TAG: scan.scanned_at,
        },
    )
    tags = {SHA_TAG: group.sha256, GROUP_SHA_TAG: group.group_sha256}
    if group.warnings:
        tags[WARNINGS_TAG] = "; ".join(group.warnings)
    return log_factor(
        group.name,
        booster,
        factors=group.factors,
        ic_table=group.ic_table,
        training_info=info,
        lineage=lineage,
        description=f"Imported from model_manager artifacts under {scan.root}",
        tags=tags,
    )


def _unchanged(group: ParsedGroup) -> bool:
    """Whether the latest version of the group's model holds the same content (versions
    imported before the content digest existed compare by model JSON)."""
    client = store.client()
    with store.translate_errors():
        versions = store.versions_of(client, group.name, newest=1)
    if not versions:
        return False
    tags = versions[0].tags
    if GROUP_SHA_TAG in tags:
        return tags[GROUP_SHA_TAG] == group.group_sha256
    return tags.get(SHA_TAG) == group.sha256


def _date(raw: str | None) -> date | None:
    try:
        return datetime.fromisoformat(raw).date() if raw else None
    except ValueError:
        return None
