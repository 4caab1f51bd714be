"""Venue quantiles family: per-venue, per-symbol order-size (notional) thresholds.

A version holds one ``thresholds.json`` (a :class:`VenueTable`) and is logged as a
tradeserve pyfunc named ``venue-quantiles-<venue>``. model_manager's pickle files can be
converted with :func:`load_quantiles_pickle`, which only reads pickles that sit inside a
directory the operator trusts (``TRADESERVE_TRUSTED_PICKLE_DIRS``) and even then only
accepts plain containers and numbers.

Demo rule (:func:`build_demo_venue_quantiles`): dollar volume ``DV = close × volume`` per
session over the last 252 sessions up to 2014-12-31; ``base`` = its 10th percentile (a quiet
day, so thresholds hold on thin days too); ``medium = 1e-7 × base`` and ``large = 1e-6 ×
base`` (an order is medium at 0.1 ppm and large at 1 ppm of a quiet day's dollar volume),
rounded to three significant digits.
"""

from __future__ import annotations

import io
import math
import pickle
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, PositiveFloat, ValidationError, model_validator

from registry.errors import TradeserveError
from registry.families import Family, venue_quantiles_name
from registry.importer import require_trusted
from training_hooks.market_data import DEMO_SOURCES, DEMO_SPLITS
from training_hooks.registration import Lineage, RegisteredVersion, log_pyfunc_model

THRESHOLDS_FILE = "thresholds.json"
DEMO_VENUE = "us-equities"
DEMO_CUTOFF = pd.Timestamp(DEMO_SPLITS.validation_end)
DEMO_LOOKBACK = 252
DEMO_BASE_QUANTILE = 0.10
DEMO_MEDIUM_FRACTION = 1e-7
DEMO_LARGE_FRACTION = 1e-6
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


# ── logging ──────────────────────────────────────────────────────────────────────────


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


# ── model_manager pickles ────────────────────────────────────────────────────────────

# What a quantiles pickle may reference: numbers (numpy scalars included) in containers.
_SAFE_GLOBALS = {
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "float"),
    ("builtins", "int"),
    ("builtins", "str"),
    ("collections", "OrderedDict"),
    ("numpy", "dtype"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "scalar"),
}


class _NumbersUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _SAFE_GLOBALS:
            raise InvalidQuantilesError(
                f"quantiles pickle references {module}.{name}; only dicts/lists of numbers "
                "are accepted"
            )
        return super().find_class(module, name)


def load_quantiles_pickle(
    path: Path, trusted_dirs: Sequence[Path] | None = None
) -> dict[str, SymbolThresholds]:
    """Parse a model_manager ``order_quantiles.pkl`` (only inside a trusted directory).

    Accepts ``{symbol: {low, high}}``, ``{symbol: {medium_notional_threshold,
    large_notional_threshold}}`` or a list of such dicts with a ``symbol`` key; ``low`` is
    the medium threshold and ``high`` the large one (model_manager's normalisation).
    ``trusted_dirs`` defaults to ``TRADESERVE_TRUSTED_PICKLE_DIRS``.
    """
    resolved = require_trusted(Path(path), trusted_dirs)
    try:
        raw = _NumbersUnpickler(io.BytesIO(resolved.read_bytes())).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
        raise InvalidQuantilesError(f"{resolved} is not a readable pickle: {error}") from error
    return parse_quantiles(raw, source=str(resolved))


def parse_quantiles(raw: Any, source: str = "quantiles") -> dict[str, SymbolThresholds]:
    """Normalise model_manager's quantile structures to ``{symbol: SymbolThresholds}``."""
    if isinstance(raw, Mapping):
        items = [(str(symbol), value) for symbol, value in raw.items()]
    elif isinstance(raw, list | tuple):
        items = [(_symbol_of(entry, source), entry) for entry in raw]
    else:
        raise InvalidQuantilesError(
            f"{source}: expected a dict by symbol or a list of dicts, got {type(raw).__name__}"
        )
    return {symbol: _thresholds(symbol, value, source) for symbol, value in items}


def _symbol_of(entry: Any, source: str) -> str:
    if not isinstance(entry, Mapping) or not entry.get("symbol"):
        raise InvalidQuantilesError(f"{source}: every list entry needs a 'symbol' key: {entry!r}")
    return str(entry["symbol"])


def _thresholds(symbol: str, value: Any, source: str) -> SymbolThresholds:
    if not isinstance(value, Mapping):
        raise InvalidQuantilesError(f"{source}: {symbol} maps to {type(value).__name__}")
    medium = value.get("medium_notional_threshold", value.get("low"))
    large = value.get("large_notional_threshold", value.get("high"))
    if medium is None or large is None:
        raise InvalidQuantilesError(
            f"{source}: {symbol} needs low/high or medium_notional_threshold/"
            f"large_notional_threshold, got keys {sorted(map(str, value))}"
        )
    try:
        return SymbolThresholds(
            medium_notional_threshold=float(medium), large_notional_threshold=float(large)
        )
    except (TypeError, ValueError) as error:
        raise InvalidQuantilesError(f"{source}: {symbol}: {error}") from error


# ── demo: thresholds from real dollar volume ─────────────────────────────────────────


def demo_thresholds(bars: pd.DataFrame, cutoff: pd.Timestamp = DEMO_CUTOFF) -> SymbolThresholds:
    """Thresholds of one symbol from its daily bars by the module's documented rule."""
    window = _dollar_volume(bars).loc[:cutoff].dropna().tail(DEMO_LOOKBACK)
    window = window[window > 0]
    if len(window) < DEMO_LOOKBACK // 2:
        raise InvalidQuantilesError(
            f"need at least {DEMO_LOOKBACK // 2} sessions with volume up to {cutoff.date()}, "
            f"got {len(window)}"
        )
    base = float(window.quantile(DEMO_BASE_QUANTILE))
    return SymbolThresholds(
        medium_notional_threshold=_round_sig(base * DEMO_MEDIUM_FRACTION),
        large_notional_threshold=_round_sig(base * DEMO_LARGE_FRACTION),
    )


def build_demo_venue_quantiles(market: Mapping[str, pd.DataFrame]) -> VenueTable:
    """``us-equities`` thresholds for every symbol of ``market`` (daily OHLCV bars)."""
    rule = (
        f"DV=close*volume over the last {DEMO_LOOKBACK} sessions up to {DEMO_CUTOFF.date()}; "
        f"base=P{DEMO_BASE_QUANTILE * 100:g}(DV); medium={DEMO_MEDIUM_FRACTION:g}*base; "
        f"large={DEMO_LARGE_FRACTION:g}*base"
    )
    symbols = {symbol: demo_thresholds(bars) for symbol, bars in sorted(market.items())}
    return VenueTable(venue=DEMO_VENUE, symbols=symbols, rule=rule)


def register_demo_venue_quantiles(market: Mapping[str, pd.DataFrame]) -> RegisteredVersion:
    """Build the demo table from ``market`` and register it as ``venue-quantiles-us-equities``."""
    table = build_demo_venue_quantiles(market)
    starts = [
        _dollar_volume(bars).loc[:DEMO_CUTOFF].tail(DEMO_LOOKBACK).index[0]
        for bars in market.values()
    ]
    lineage = Lineage(
        data_source=_data_source(market),
        data_window_start=min(starts).date(),
        data_window_end=DEMO_CUTOFF.date(),
        extra={"threshold_rule": table.rule or ""},
    )
    return log_venue_quantiles(
        DEMO_VENUE,
        table,
        lineage=lineage,
        description="Order-size thresholds per symbol derived from daily dollar volume.",
    )


def _data_source(market: Mapping[str, pd.DataFrame]) -> str:
    return ",".join(DEMO_SOURCES.get(symbol, symbol) for symbol in sorted(market))


def _dollar_volume(bars: pd.DataFrame) -> pd.Series:
    """close × volume of normalized bars (see ``market_data.normalize_bars``)."""
    missing = [column for column in ("close", "volume") if column not in bars.columns]
    if missing:
        raise InvalidQuantilesError(f"bars lack column(s) {', '.join(missing)}")
    return bars["close"] * bars["volume"]


def _round_sig(value: float, digits: int = 3) -> float:
    if value <= 0 or not math.isfinite(value):
        raise InvalidQuantilesError(f"cannot derive a threshold from {value}")
    return round(value, digits - 1 - math.floor(math.log10(value)))
