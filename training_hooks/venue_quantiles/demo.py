"""Venue quantiles demo: thresholds from real dollar volume, registered as
``venue-quantiles-us-equities``.

Rule (:func:`build_demo_venue_quantiles`): dollar volume ``DV = close × volume`` per
session over the last 252 sessions up to 2014-12-31; ``base`` = its 10th percentile (a quiet
day, so thresholds hold on thin days too); ``medium = 1e-7 × base`` and ``large = 1e-6 ×
base`` (an order is medium at 0.1 ppm and large at 1 ppm of a quiet day's dollar volume),
rounded to three significant digits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from training_hooks.market_data import DEMO_SOURCES, DEMO_SPLITS
from training_hooks.registration import Lineage, RegisteredVersion
from training_hooks.venue_quantiles.log import log_venue_quantiles
from training_hooks.venue_quantiles.runtime import (
    InvalidQuantilesError,
    SymbolThresholds,
    VenueTable,
)

DEMO_VENUE = "us-equities"
DEMO_CUTOFF = pd.Timestamp(DEMO_SPLITS.validation_end)
DEMO_LOOKBACK = 252
DEMO_BASE_QUANTILE = 0.10
DEMO_MEDIUM_FRACTION = 1e-7
DEMO_LARGE_FRACTION = 1e-6


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
