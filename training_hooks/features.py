"""The one definition of model features, shared by training and serving.

Every feature is scale-free (log returns, ratios, z-scores) and causal: the value at bar
``t`` is a function of a fixed window of bars ending at ``t``. Windows are finite (moving
averages, truncated exponential averages), so the last row computed on the last
``MIN_HISTORY`` bars is bit-for-bit the row computed on the full history; serving calls
:func:`latest_features` on a short tail and gets the numbers training saw.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view
from pydantic import BaseModel, ConfigDict, Field

from registry.errors import TradeserveError
from training_hooks.market_data import BAR_COLUMNS, InsufficientHistoryError, InvalidBarsError

FEATURE_VERSION = "ohlcv-v1"
ANNUALIZATION = 252.0
_EMA_SPAN_MULTIPLE = 4  # a truncated EMA of span s averages the last 4·s bars
_EPS = 1e-12


class FeatureSpecMismatchError(TradeserveError):
    """A model was trained on features that differ from the ones this code computes."""


class FeatureSpec(BaseModel):
    """What a model expects as input; logged with every model that consumes features."""

    model_config = ConfigDict(frozen=True)

    names: tuple[str, ...] = Field(description="Feature columns, in model input order")
    min_history: int = Field(ge=1, description="Bars needed for the first feature row")
    version: str = Field(description="Version of the feature definitions")

    def require_current(self) -> None:
        """Raise unless this spec matches the features this code computes."""
        current = feature_spec(self.names) if set(self.names) <= set(FEATURES) else None
        if current is None or current != self:
            raise FeatureSpecMismatchError(
                f"model expects features {self.version} {list(self.names)} "
                f"(min_history {self.min_history}); this code computes {FEATURE_VERSION} "
                f"{list(FEATURE_NAMES)}: retrain the model or deploy matching code"
            )


class _Bars:
    """Float arrays of one bar frame plus intermediate series shared by several features."""

    def __init__(self, bars: pd.DataFrame) -> None:
        missing = [c for c in BAR_COLUMNS if c not in bars.columns]
        if missing:
            raise InvalidBarsError(f"bars are missing column(s) {', '.join(missing)}")
        self.open, self.high, self.low, self.close, self.volume = (
            bars[c].to_numpy(dtype=np.float64) for c in BAR_COLUMNS
        )
        self.n = len(self.close)

    @cached_property
    def log_close(self) -> np.ndarray:
        return np.log(self.close)

    @cached_property
    def ret_1(self) -> np.ndarray:
        """Daily log returns; element ``i`` is the return into bar ``i + 1``."""
        return np.diff(self.log_close)

    @cached_property
    def true_range(self) -> np.ndarray:
        """True range of bars 1..n-1 (needs the previous close)."""
        previous = self.close[:-1]
        return np.maximum(self.high[1:], previous) - np.minimum(self.low[1:], previous)


def _windows(values: np.ndarray, width: int) -> np.ndarray:
    """Rolling windows as a C-contiguous ``(rows, width)`` array (one reduction per row)."""
    if len(values) < width:
        return np.empty((0, width))
    return np.ascontiguousarray(sliding_window_view(values, width))


def _pad(values: np.ndarray, n: int) -> np.ndarray:
    """Left-pad ``values`` with NaN to length ``n`` (aligning windows to their last bar)."""
    out = np.full(n, np.nan)
    if len(values):
        out[n - len(values) :] = values
    return out


def _rolling_mean(values: np.ndarray, width: int) -> np.ndarray:
    return _windows(values, width).mean(axis=1)


def _truncated_ema(values: np.ndarray, span: int) -> np.ndarray:
    """Exponential average (alpha = 2/(span+1)) over the last ``4·span`` values."""
    length = _EMA_SPAN_MULTIPLE * span
    decay = 1.0 - 2.0 / (span + 1.0)
    weights = decay ** np.arange(length - 1, -1, -1, dtype=np.float64)
    weights /= weights.sum()
    return (_windows(values, length) * weights).sum(axis=1)


def _log_return(k: int) -> Callable[[_Bars], np.ndarray]:
    def compute(b: _Bars) -> np.ndarray:
        return _pad(b.log_close[k:] - b.log_close[:-k], b.n)

    return compute


def _log_realized_vol(width: int) -> Callable[[_Bars], np.ndarray]:
    def compute(b: _Bars) -> np.ndarray:
        std = _windows(b.ret_1, width).std(axis=1, ddof=1)
        return _pad(np.log(std * math.sqrt(ANNUALIZATION) + 1e-8), b.n)

    return compute


def _distance_to_sma(width: int) -> Callable[[_Bars], np.ndarray]:
    def compute(b: _Bars) -> np.ndarray:
        return _pad(b.log_close[width - 1 :] - np.log(_rolling_mean(b.close, width)), b.n)

    return compute


def _rsi(b: _Bars, width: int = 14) -> np.ndarray:
    """Cutler's RSI rescaled to [-1, 1]: (gains − losses) / (gains + losses) over 14 bars."""
    change = np.diff(b.close)
    gains = _rolling_mean(np.maximum(change, 0.0), width)
    losses = _rolling_mean(np.maximum(-change, 0.0), width)
    total = gains + losses
    rsi = np.divide(gains - losses, total, out=np.zeros_like(total), where=total > _EPS)
    return _pad(rsi, b.n)


def _macd_line(b: _Bars) -> np.ndarray:
    """(EMA12 − EMA26) / close, valid from bar 4·26 − 1."""
    slow = _truncated_ema(b.close, 26)
    fast = _truncated_ema(b.close, 12)[-len(slow) :] if len(slow) else slow
    return (fast - slow) / b.close[len(b.close) - len(slow) :]


def _macd(b: _Bars) -> np.ndarray:
    return _pad(_macd_line(b), b.n)


def _macd_histogram(b: _Bars) -> np.ndarray:
    line = _macd_line(b)
    signal = _truncated_ema(line, 9)
    return _pad(line[len(line) - len(signal) :] - signal, b.n)


def _atr_pct(b: _Bars, width: int = 14) -> np.ndarray:
    atr = _rolling_mean(b.true_range, width)
    return _pad(atr / b.close[len(b.close) - len(atr) :], b.n)


def _range_pct(b: _Bars) -> np.ndarray:
    return np.log(b.high / b.low)


def _close_location(b: _Bars) -> np.ndarray:
    """Where the close sits in the day's range, in [-1, 1] (0 for a flat bar)."""
    spread = b.high - b.low
    centered = 2.0 * b.close - b.high - b.low
    return np.divide(centered, spread, out=np.zeros_like(spread), where=spread > _EPS)


def _gap(b: _Bars) -> np.ndarray:
    return _pad(np.log(b.open[1:] / b.close[:-1]), b.n)


def _volume_zscore(b: _Bars, width: int = 20) -> np.ndarray:
    """z-score of log(1 + volume) against its last 20 bars, clipped to ±5 (0 if constant)."""
    log_volume = np.log1p(b.volume)
    windows = _windows(log_volume, width)
    mean, std = windows.mean(axis=1), windows.std(axis=1, ddof=1)
    current = log_volume[width - 1 :]
    z = np.divide(current - mean, std, out=np.zeros_like(std), where=std > 1e-9)
    return _pad(np.clip(z, -5.0, 5.0), b.n)


def _drawdown(width: int) -> Callable[[_Bars], np.ndarray]:
    def compute(b: _Bars) -> np.ndarray:
        high = _windows(b.close, width).max(axis=1)
        return _pad(np.log(b.close[width - 1 :] / high), b.n)

    return compute


@dataclass(frozen=True)
class Feature:
    """One feature: ``lookback`` is the index of its first valid bar."""

    name: str
    lookback: int
    compute: Callable[[_Bars], np.ndarray]
    description: str


_MACD_LOOKBACK = _EMA_SPAN_MULTIPLE * 26 - 1

FEATURES: dict[str, Feature] = {
    f.name: f
    for f in (
        Feature("ret_1", 1, _log_return(1), "1-bar log return"),
        Feature("ret_5", 5, _log_return(5), "5-bar log return"),
        Feature("ret_20", 20, _log_return(20), "20-bar log return"),
        Feature("ret_60", 60, _log_return(60), "60-bar log return"),
        Feature("log_rvol_5", 5, _log_realized_vol(5), "log annualized 5-bar realized vol"),
        Feature("log_rvol_20", 20, _log_realized_vol(20), "log annualized 20-bar realized vol"),
        Feature("log_rvol_60", 60, _log_realized_vol(60), "log annualized 60-bar realized vol"),
        Feature("rsi_14", 14, _rsi, "14-bar RSI rescaled to [-1, 1]"),
        Feature("macd", _MACD_LOOKBACK, _macd, "(EMA12 − EMA26) / close"),
        Feature("macd_hist", _MACD_LOOKBACK + 35, _macd_histogram, "MACD minus its EMA9"),
        Feature("dist_sma_20", 19, _distance_to_sma(20), "log(close / SMA20)"),
        Feature("dist_sma_50", 49, _distance_to_sma(50), "log(close / SMA50)"),
        Feature("dist_sma_200", 199, _distance_to_sma(200), "log(close / SMA200)"),
        Feature("atr_pct_14", 14, _atr_pct, "14-bar average true range / close"),
        Feature("range_pct", 0, _range_pct, "log(high / low) of the bar"),
        Feature("close_location", 0, _close_location, "close position in the bar range"),
        Feature("gap", 1, _gap, "log(open / previous close)"),
        Feature("volume_z_20", 19, _volume_zscore, "z-score of log volume vs 20 bars"),
        Feature("drawdown_200", 199, _drawdown(200), "log(close / 200-bar high close)"),
    )
}

FEATURE_NAMES: tuple[str, ...] = tuple(FEATURES)
REGIME_FEATURE_NAMES: tuple[str, ...] = ("ret_1", "log_rvol_20")


def _check_names(names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in FEATURES]
    if unknown or not names:
        raise FeatureSpecMismatchError(
            f"unknown feature(s) {unknown or '(none given)'}; known: {', '.join(FEATURES)}"
        )


def min_history(names: Sequence[str] = FEATURE_NAMES) -> int:
    """Bars needed before ``names`` have their first valid row."""
    _check_names(names)
    return max(FEATURES[name].lookback for name in names) + 1


MIN_HISTORY: int = min_history(FEATURE_NAMES)
REGIME_MIN_HISTORY: int = min_history(REGIME_FEATURE_NAMES)


def feature_spec(names: Sequence[str] = FEATURE_NAMES) -> FeatureSpec:
    """The spec of ``names`` as computed by this code."""
    return FeatureSpec(names=tuple(names), min_history=min_history(names), version=FEATURE_VERSION)


FEATURE_SPEC: FeatureSpec = feature_spec(FEATURE_NAMES)
REGIME_FEATURE_SPEC: FeatureSpec = feature_spec(REGIME_FEATURE_NAMES)


def compute_features(bars: pd.DataFrame, names: Sequence[str] = FEATURE_NAMES) -> pd.DataFrame:
    """Feature rows (indexed by ``date``) for every bar with enough history.

    ``bars`` are normalized bars (see :func:`~training_hooks.market_data.normalize_bars`):
    a date index or ``date`` column and float ``open, high, low, close, volume``.
    """
    needed = min_history(names)
    dates = _dates(bars)
    matrix = _feature_matrix(bars, names, needed)[needed - 1 :]
    return pd.DataFrame(matrix, index=dates[needed - 1 :], columns=list(names))


def latest_features(bars: pd.DataFrame, names: Sequence[str] = FEATURE_NAMES) -> np.ndarray:
    """Features of the last bar, equal to the last row of :func:`compute_features`.

    Only the last ``min_history(names)`` bars are used, so the cost does not grow with
    the history given.
    """
    needed = min_history(names)
    tail = bars.iloc[-needed:] if len(bars) > needed else bars
    return _feature_matrix(tail, names, needed)[-1]


def _feature_matrix(bars: pd.DataFrame, names: Sequence[str], needed: int) -> np.ndarray:
    if len(bars) < needed:
        raise InsufficientHistoryError(needed, len(bars), "features")
    arrays = _Bars(bars)
    matrix = np.column_stack([FEATURES[name].compute(arrays) for name in names])
    valid = matrix[needed - 1 :]
    if not np.isfinite(valid).all():
        bad = [n for n, ok in zip(names, np.isfinite(valid).all(axis=0), strict=True) if not ok]
        raise InvalidBarsError(
            f"features {', '.join(bad)} are not finite; normalize bars with "
            "normalize_bars (positive prices, non-negative volume) before computing features"
        )
    return matrix


def _dates(bars: pd.DataFrame) -> pd.DatetimeIndex:
    source: Any = bars["date"] if "date" in bars.columns else bars.index
    dates = pd.DatetimeIndex(source)
    dates.name = "date"
    return dates


def describe_features() -> Mapping[str, str]:
    """Feature name -> one-line description, in model input order."""
    return {name: feature.description for name, feature in FEATURES.items()}
