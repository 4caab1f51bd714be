"""Venue quantiles runtime: a version's ``thresholds.json`` (a :class:`VenueTable`) loaded
for serving, and the thresholds of the symbols in a frame looked up from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, PositiveFloat, ValidationError, model_validator

from registry.errors import TradeserveError
from registry.families import Family

THRESHOLDS_FILE = "thresholds.json"
OUTPUT_COLUMNS = ("symbol", "medium_notional_threshold", "large_notional_threshold")


class UnknownVenueSymbolError(TradeserveError):
    """A symbol has no thresholds in the venue table."""

    http_status = 404


class InvalidQuantilesError(TradeserveError):
    """A quantiles file or table has a format tradeserve cannot read."""


class SymbolThresholds(BaseModel):
    """Notional thresholds of one symbol: medium <= large, both positive."""

    medium_notional_threshold: PositiveFloat
    large_notional_threshold: PositiveFloat

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.medium_notional_threshold > self.large_notional_threshold:
            raise ValueError(
                f"medium_notional_threshold {self.medium_notional_threshold} exceeds "
                f"large_notional_threshold {self.large_notional_threshold}"
            )
        return self


class VenueTable(BaseModel):
    """All symbols of one venue; what ``thresholds.json`` holds."""

    venue: str
    symbols: dict[str, SymbolThresholds] = Field(min_length=1)
    rule: str | None = Field(default=None, description="How the thresholds were derived")


class VenueQuantilesRuntime:
    """Looks up the thresholds of the symbols in a frame."""

    family: ClassVar[Family] = Family.VENUE_QUANTILES

    def __init__(self, table: VenueTable) -> None:
        self._table = table

    @classmethod
    def load(cls, artifact_dir: Path, config: Mapping[str, Any], device: str = "cpu") -> Self:
        """Read ``thresholds.json`` from ``artifact_dir``."""
        path = Path(artifact_dir) / THRESHOLDS_FILE
        try:
            return cls(VenueTable.model_validate_json(path.read_bytes()))
        except (OSError, ValidationError) as error:
            raise InvalidQuantilesError(f"cannot read venue table {path}: {error}") from error

    @property
    def table(self) -> VenueTable:
        return self._table

    @property
    def venue(self) -> str:
        return self._table.venue

    def thresholds(self, symbol: str) -> SymbolThresholds:
        """Thresholds of one symbol (raises :class:`UnknownVenueSymbolError`)."""
        try:
            return self._table.symbols[symbol]
        except KeyError:
            raise self._unknown([symbol]) from None

    def predict(self, frame: pd.DataFrame, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """``symbol, medium_notional_threshold, large_notional_threshold`` per input row."""
        if "symbol" not in frame.columns:
            raise InvalidQuantilesError("venue quantiles input needs a 'symbol' column")
        symbols = [str(symbol) for symbol in frame["symbol"]]
        unknown = sorted({s for s in symbols if s not in self._table.symbols})
        if unknown:
            raise self._unknown(unknown)
        rows = [self._table.symbols[symbol] for symbol in symbols]
        return pd.DataFrame(
            {
                "symbol": symbols,
                "medium_notional_threshold": [row.medium_notional_threshold for row in rows],
                "large_notional_threshold": [row.large_notional_threshold for row in rows],
            },
            index=frame.index,
        )

    @classmethod
    def check_output(
        cls, frame: pd.DataFrame, output: pd.DataFrame, params: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Row count, columns, positive thresholds and medium <= large."""
        missing = [column for column in OUTPUT_COLUMNS if column not in output.columns]
        if missing:
            return [f"output lacks columns {', '.join(missing)}"]
        problems = []
        if len(output) != len(frame):
            problems.append(f"expected {len(frame)} output rows, got {len(output)}")
        medium = output["medium_notional_threshold"].to_numpy(dtype=float)
        large = output["large_notional_threshold"].to_numpy(dtype=float)
        if not (np.isfinite(medium).all() and np.isfinite(large).all()):
            problems.append("thresholds must be finite")
        elif (medium <= 0).any() or (large <= 0).any():
            problems.append("thresholds must be positive")
        elif (medium > large).any():
            problems.append("medium_notional_threshold exceeds large_notional_threshold")
        return problems

    def _unknown(self, symbols: Sequence[str]) -> UnknownVenueSymbolError:
        known = ", ".join(sorted(self._table.symbols))
        return UnknownVenueSymbolError(
            f"venue {self.venue} has no thresholds for {', '.join(symbols)} (known: {known})"
        )
