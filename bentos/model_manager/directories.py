"""Registered artifact directories: scanned, imported into the registry, auto-promoted.

:class:`DirectoryManager` is what ``POST /api/models``, its refresh, the watcher and
``tradeserve import`` share. An import registers every changed group as a factor-model
version (``registry.importer``: all-or-nothing, idempotent, lineage tags) and, when the
directory's ``auto_promote`` is on, promotes through the gate each version it created and the
latest version of any group that has no promoted version yet; a version the gate refuses is
reported and the previous one keeps serving. ``on_promoted`` hears which registered models
may have a new promoted version (the service loads them).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel

from bentos.model_manager.compat import check_unique_symbols, failed_snapshot, snapshot_of
from bentos.model_manager.schemas import ImportedVersion, RefreshResponse, Snapshot
from bentos.model_manager.state import DirectoryRow, DirectoryStore
from registry import store
from registry.artifact_scan import DirectoryScan, scan_directory
from registry.errors import GateError, ModelNotFoundError, TradeserveError
from registry.importer import register_scan
from registry.promotion import VALIDATION_TAG, current_holder, promote
from registry.resolve import latest_version
from registry.settings import get_settings

logger = logging.getLogger("tradeserve.model_manager")
FAILED = "failed"


class GroupClaimedError(TradeserveError):
    """A group key already belongs to another registered directory."""

    http_status = 409


class Imported(BaseModel):
    """What one import of a directory did."""

    row: DirectoryRow
    snapshot: Snapshot
    versions: list[ImportedVersion]

    def response(self) -> RefreshResponse:
        """model_manager's answer to a refresh (plus the versions and auto-promote)."""
        snapshot = self.snapshot
        return RefreshResponse(
            model_name=snapshot.model_name,
            root_path=snapshot.root_path,
            scanned_at=snapshot.scanned_at,
            symbol_count=snapshot.symbol_count,
            group_count=snapshot.group_count,
            warnings=snapshot.warnings,
            auto_promote=self.row.auto_promote,
            versions=self.versions,
        )


class DirectoryManager:
    """The registered directories, their last scans and their imports (thread-safe)."""

    def __init__(
        self,
        directories: DirectoryStore,
        *,
        trusted_dirs: Sequence[Path] | None = None,
        on_promoted: Callable[[Iterable[str]], None] | None = None,
    ) -> None:
        self.directories = directories
        self._trusted_dirs = trusted_dirs
        self._on_promoted = on_promoted or (lambda names: None)
        self._snapshots: dict[str, Snapshot] = {}
        self._lock = threading.RLock()

    # ── reading ──────────────────────────────────────────────────────────────────────

    def rows(self) -> list[DirectoryRow]:
        return self.directories.list()

    def row(self, model_name: str) -> DirectoryRow:
        row = self.directories.get(model_name.strip())
        if row is None:
            raise ModelNotFoundError(f"model not found: {model_name}")
        return row

    def snapshot(self, model_name: str) -> Snapshot:
        """The directory's last scan (scanned now if this process has none yet)."""
        snapshot = self._snapshots.get(model_name)
        if snapshot is None:
            snapshot = self._load(self.row(model_name))
        return snapshot

    def cached(self, model_name: str) -> Snapshot | None:
        return self._snapshots.get(model_name)

    def sync(self) -> None:
        """Follow rows added or removed elsewhere (``tradeserve import``, another replica):
        scan new ones and load their promoted versions, forget removed ones."""
        with self._lock:  # rows read under the lock: an import may be adding one
            rows = {row.model_name: row for row in self.rows()}
            for name in set(self._snapshots) - set(rows):
                self._snapshots.pop(name, None)
            for name in set(rows) - set(self._snapshots):
                self._load(rows[name])

    def _load(self, row: DirectoryRow) -> Snapshot:
        """Scan a registered directory without importing (start-up; soft failure)."""
        try:
            scan = scan_directory(Path(row.root_path), self._trusted_dirs)
            snapshot = snapshot_of(row.model_name, scan)
        except TradeserveError as error:
            logger.warning("%s: cannot scan %s: %s", row.model_name, row.root_path, error)
            snapshot = failed_snapshot(row.model_name, row.root_path, row.updated_at, str(error))
        with self._lock:
            self._snapshots[row.model_name] = snapshot
        self._on_promoted([record.registered_name for record in snapshot.symbols])
        return snapshot

    # ── writing ──────────────────────────────────────────────────────────────────────

    def add(self, model_name: str, root: Path, auto_promote: bool = True) -> Imported:
        """Register ``root`` as ``model_name`` (or re-register it) and import it."""
        return self._import(model_name.strip(), Path(root), auto_promote)

    def refresh(self, model_name: str) -> Imported:
        """Import the registered directory again (new versions for what changed)."""
        row = self.row(model_name)
        return self._import(row.model_name, Path(row.root_path), row.auto_promote)

    def delete(self, model_name: str) -> None:
        """Forget the directory; its registry versions stay."""
        if not self.directories.delete(model_name.strip()):
            raise ModelNotFoundError(f"model not found: {model_name}")
        with self._lock:
            self._snapshots.pop(model_name.strip(), None)

    def _import(self, model_name: str, root: Path, auto_promote: bool) -> Imported:
        if not model_name:
            raise TradeserveError("model_name must not be empty")
        with self._lock:
            self.sync()  # every registered directory's groups, for the claims check
            scan = scan_directory(root, self._trusted_dirs)
            snapshot = snapshot_of(model_name, scan)
            check_unique_symbols(snapshot)
            self._check_claims(model_name, scan)
            created = register_scan(scan)
            versions = [
                ImportedVersion(name=v.name, version=v.version, promoted=False) for v in created
            ]
            if auto_promote:
                versions = self._auto_promote(model_name, scan, versions)
            row = self.directories.upsert(
                model_name, str(scan.root), auto_promote, scan.fingerprint
            )
            self._snapshots[model_name] = snapshot
        promoted = [v.name for v in versions if v.promoted]
        logger.info(
            "%s: imported %s (%d new version(s), %d promoted)",
            model_name, scan.root, len(created), len(promoted),
        )  # fmt: skip
        self._on_promoted([record.registered_name for record in snapshot.symbols])
        return Imported(row=row, snapshot=snapshot, versions=versions)

    def _check_claims(self, model_name: str, scan: DirectoryScan) -> None:
        """A group (registered model ``factor-<group>``) belongs to one directory root."""
        mine = {group.group_key for group in scan.groups}
        for other, snapshot in self._snapshots.items():
            if other == model_name or Path(snapshot.root_path) == scan.root:
                continue
            shared = sorted(mine & {record.group_key for record in snapshot.symbols})
            if shared:
                raise GroupClaimedError(
                    f"group(s) {', '.join(shared)} already belong to model '{other}' "
                    f"({snapshot.root_path}); each group is one registered model, "
                    "factor-<group>, fed by one directory"
                )

    def _auto_promote(
        self, model_name: str, scan: DirectoryScan, created: list[ImportedVersion]
    ) -> list[ImportedVersion]:
        """Promote the new versions and the latest of every group never promoted."""
        alias = get_settings().alias
        candidates = {version.name: version for version in created}
        for group in scan.groups:
            if group.name in candidates or current_holder(group.name, alias, store.client()):
                continue
            latest = latest_version(group.name)
            if latest.tags.get(VALIDATION_TAG) != FAILED:
                candidates[group.name] = ImportedVersion(
                    name=latest.name, version=latest.version, promoted=False
                )
        results = []
        for candidate in candidates.values():
            reason = f"model_manager '{model_name}': auto-promote of {scan.root}"
            try:
                promote(candidate.name, candidate.version, reason=reason)
                results.append(candidate.model_copy(update={"promoted": True}))
            except GateError as error:
                logger.error("%s: %s", model_name, error)
                results.append(candidate.model_copy(update={"problems": [str(error)]}))
        return results
