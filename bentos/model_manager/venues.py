"""Venue quantile tables: model_manager's pickles imported as registry versions, the promoted
ones served and published to Redis.

``PUT /api/venues/{venue}/quantiles`` reads the pickle (under the operator's roots, inside a
trusted folder, numbers only: ``training_hooks.venue_quantiles.pickles``), registers it as a
version of ``venue-quantiles-<venue>`` (unless the latest version holds the same table) and
promotes it through the gate. Every table this service serves, at start-up and whenever a
promotion swaps one in (here, with ``tradeserve promote``/``rollback`` or in the MLflow UI,
followed by live mode), is published to Redis.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from bentos.model_manager.publisher import RedisPublisher
from bentos.model_manager.roots import require_under_roots
from bentos.model_manager.schemas import VenueItem
from bentos.model_manager.versions import version_lineage
from bentos.shared.model_source import ModelSet, ServedModel
from registry.artifact_scan import utc_now_iso
from registry.errors import ModelNotFoundError, NotPromotedError, TradeserveError
from registry.families import Family, venue_quantiles_name
from registry.importer import SCANNED_AT_TAG, SHA_TAG
from registry.promotion import promote
from registry.resolve import latest_version
from training_hooks.registration import Lineage
from training_hooks.venue_quantiles.log import log_venue_quantiles
from training_hooks.venue_quantiles.pickles import load_quantiles_pickle
from training_hooks.venue_quantiles.runtime import (
    SymbolThresholds,
    UnknownVenueSymbolError,
    VenueQuantilesRuntime,
    VenueTable,
)

SOURCE_PKL_TAG = "source_pkl"


class InvalidVenueError(TradeserveError):
    """A venue outside the configured list."""


class VenueNotFoundError(TradeserveError):
    http_status = 404


class PublishedVenues(ModelSet[VenueQuantilesRuntime]):
    """The served venue tables; each one swapped in is published to Redis."""

    def __init__(self, publisher: RedisPublisher) -> None:
        super().__init__(Family.VENUE_QUANTILES)
        self.publisher = publisher

    def replace(self, served: ServedModel[VenueQuantilesRuntime]) -> None:
        super().replace(served)
        self.publisher.publish(served.runtime.table)

    def publish_all(self) -> None:
        for served in self.models.values():
            self.publisher.publish(served.runtime.table)


class VenueTables:
    """PUT, list and look up the venue tables (model_manager's quantiles store)."""

    def __init__(
        self, publisher: RedisPublisher, venues: Sequence[str], roots: Sequence[Path]
    ) -> None:
        self.served = PublishedVenues(publisher)
        self._venues = list(venues)
        self._roots = list(roots)

    def load(self) -> None:
        """Serve (and publish) every promoted table; none promoted is fine."""
        try:
            self.served.load()
        except NotPromotedError:
            return
        self.served.publish_all()

    def put(self, venue: str, pkl_path: str) -> ServedModel[VenueQuantilesRuntime]:
        """Import ``pkl_path`` as ``venue``'s table, promote it and serve it."""
        if venue not in self._venues:
            raise InvalidVenueError(
                f"unknown venue: {venue} (allowed: {', '.join(self._venues)}; "
                "TRADESERVE_MODEL_MANAGER_VENUES configures the list)"
            )
        path = require_under_roots(pkl_path, self._roots, "pkl_path")
        if not path.is_file():
            raise TradeserveError(f"pkl file not found: {path}")
        table = VenueTable(venue=venue, symbols=load_quantiles_pickle(path))
        name = venue_quantiles_name(venue)
        digest = hashlib.sha256(table.model_dump_json().encode()).hexdigest()
        version = self._same_table(name, digest) or self._register(table, path, digest)
        promote(name, version, reason=f"model_manager: {path}")
        one: ModelSet[VenueQuantilesRuntime] = ModelSet(Family.VENUE_QUANTILES, [name])
        one.load(kind="registry")
        served = one.get(name)
        self.served.replace(served)
        return served

    def _same_table(self, name: str, digest: str) -> str | None:
        try:
            latest = latest_version(name)
        except ModelNotFoundError:
            return None
        return latest.version if latest.tags.get(SHA_TAG) == digest else None

    def _register(self, table: VenueTable, path: Path, digest: str) -> str:
        lineage = Lineage(
            data_source=f"model_manager:{path}",
            extra={SOURCE_PKL_TAG: str(path), SCANNED_AT_TAG: utc_now_iso(), SHA_TAG: digest},
        )
        return log_venue_quantiles(
            table.venue, table, lineage=lineage, description="Imported from model_manager"
        ).version

    def table(self, venue: str) -> VenueTable:
        served = self.served.models.get(_name_or_none(venue) or "")
        if served is None:
            raise VenueNotFoundError(f"venue not registered: {venue}")
        return served.runtime.table

    def thresholds(self, venue: str, symbol: str) -> SymbolThresholds:
        """``symbol``'s thresholds at ``venue`` (404 for either unknown)."""
        table = self.table(venue)
        if symbol not in table.symbols:
            raise UnknownVenueSymbolError(f"symbol {symbol} not found in venue {venue}")
        return table.symbols[symbol]

    def items(self) -> list[VenueItem]:
        items = []
        for served in sorted(self.served.models.values(), key=lambda s: s.runtime.venue):
            lineage = version_lineage(served.ref.name, served.ref.version)
            items.append(
                VenueItem(
                    venue=served.runtime.venue,
                    pkl_path=lineage.tags.get(SOURCE_PKL_TAG),
                    updated_at=lineage.tags.get(SCANNED_AT_TAG, lineage.created_at),
                    model=served.ref,
                )
            )
        return items


def _name_or_none(venue: str) -> str | None:
    try:
        return venue_quantiles_name(venue)
    except TradeserveError:
        return None
