"""Venue quantiles logging: register a :class:`VenueTable` as a tradeserve pyfunc version
of ``venue-quantiles-<venue>``."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
from pydantic import ValidationError

from registry.families import Family, venue_quantiles_name
from training_hooks.registration import Lineage, RegisteredVersion, log_pyfunc_model
from training_hooks.venue_quantiles.runtime import (
    THRESHOLDS_FILE,
    InvalidQuantilesError,
    SymbolThresholds,
    VenueTable,
)


def log_venue_quantiles(
    venue: str,
    table: VenueTable | Mapping[str, SymbolThresholds | Mapping[str, float]],
    *,
    lineage: Lineage,
    metrics: Mapping[str, float] | None = None,
    description: str | None = None,
) -> RegisteredVersion:
    """Register ``table`` as a new version of ``venue-quantiles-<venue>``."""
    name = venue_quantiles_name(venue)
    table = _as_table(venue, table)
    example = pd.DataFrame({"symbol": sorted(table.symbols)})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / THRESHOLDS_FILE).write_text(table.model_dump_json(indent=2), encoding="utf-8")
        return log_pyfunc_model(
            name=name,
            family=Family.VENUE_QUANTILES,
            artifact_dir=Path(tmp),
            model_config={},
            input_example=example,
            lineage=lineage,
            metrics=metrics,
            tags={"venue": venue, "symbol_count": str(len(table.symbols))},
            description=description,
        )


def _as_table(
    venue: str, table: VenueTable | Mapping[str, SymbolThresholds | Mapping[str, float]]
) -> VenueTable:
    if isinstance(table, VenueTable):
        if table.venue != venue:
            raise InvalidQuantilesError(f"table is for venue {table.venue}, not {venue}")
        return table
    try:
        return VenueTable(venue=venue, symbols=dict(table))
    except ValidationError as error:
        raise InvalidQuantilesError(f"invalid venue table for {venue}: {error}") from error
