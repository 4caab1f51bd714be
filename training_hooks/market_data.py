"""Daily OHLCV bars: one normalized schema, a file-per-symbol store and the demo data set.

Normalized bars are a frame with a tz-naive, sorted, unique ``DatetimeIndex`` named ``date``
and float columns ``open, high, low, close, volume``. The store keeps one Parquet (or CSV)
file per symbol and caches parsed frames in memory keyed by file modification time, so
services can call :meth:`MarketDataStore.load` on every request.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from registry.errors import TradeserveError
from registry.settings import get_settings

BAR_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
PRICE_COLUMNS: tuple[str, ...] = ("open", "high", "low", "close")
DEMO_SOURCES: dict[str, str] = {"SPX": "arch.data.sp500", "NASDAQ": "arch.data.nasdaq"}

_SYMBOL_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,31}$")
_SUFFIXES = (".parquet", ".csv")
_DATE_COLUMNS = ("date", "datetime", "timestamp", "time")


class MarketDataError(TradeserveError):
    """Base class for market-data problems."""


class InvalidBarsError(MarketDataError):
    """Bars that do not follow the OHLCV schema (missing columns, bad prices, bad dates)."""


class UnknownSymbolError(MarketDataError):
    """No bars are stored for the requested symbol."""

    http_status = 404


class InsufficientHistoryError(MarketDataError):
    """Fewer bars than a computation needs."""

    http_status = 422

    def __init__(self, needed: int, given: int, what: str = "this computation") -> None:
        self.needed = needed
        self.given = given
        super().__init__(f"{what} needs at least {needed} bars, got {given}")


class DataSplits(BaseModel):
    """Date boundaries (inclusive ends) shared by training, validation and evaluation."""

    model_config = ConfigDict(frozen=True)

    train_end: date = date(2012, 12, 31)
    validation_end: date = date(2014, 12, 31)
    test_end: date = date(2018, 12, 31)

    def split(self, frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
        """Rows of a date-indexed frame by split: ``train``, ``validation``, ``test``."""
        index = frame.index
        train = index <= _end_of_day(self.train_end)
        validation = ~train & (index <= _end_of_day(self.validation_end))
        test = (index > _end_of_day(self.validation_end)) & (index <= _end_of_day(self.test_end))
        return {"train": frame[train], "validation": frame[validation], "test": frame[test]}


DEMO_SPLITS = DataSplits()


def normalize_symbol(symbol: str) -> str:
    """Upper-cased, validated symbol (letters, digits, ``._-``; at most 32 characters)."""
    normalized = str(symbol).strip().upper()
    if not _SYMBOL_PATTERN.match(normalized):
        raise MarketDataError(
            f"invalid symbol {symbol!r}: use 1-32 letters, digits, '.', '_' or '-'"
        )
    return normalized


def normalize_bars(frame: pd.DataFrame) -> pd.DataFrame:
    """Bars in the normalized schema, validated.

    Accepts arch/Yahoo column names (``Open``, ``Adj Close``, ...) case-insensitively and
    a date index or a ``date``/``timestamp`` column. When an adjusted close is present and
    differs from the close, open/high/low/close are scaled by ``adj_close / close`` so that
    returns include dividends and splits. Unsorted input is sorted; duplicate dates,
    non-positive or missing prices and negative or missing volume raise
    :class:`InvalidBarsError`.
    """
    if not isinstance(frame, pd.DataFrame):
        raise InvalidBarsError(f"bars must be a pandas DataFrame, got {type(frame).__name__}")
    renamed = frame.rename(columns=_canonical_column)
    renamed = _with_date_index(renamed)
    missing = [column for column in BAR_COLUMNS if column not in renamed.columns]
    if missing:
        raise InvalidBarsError(
            f"bars are missing column(s) {', '.join(missing)}; expected {', '.join(BAR_COLUMNS)}"
        )
    bars = _to_float(renamed, [*BAR_COLUMNS, *(["adj_close"] if "adj_close" in renamed else [])])
    if "adj_close" in bars:
        bars = _apply_adjustment(bars)
    bars = bars[list(BAR_COLUMNS)]
    if not bars.index.is_monotonic_increasing:
        bars = bars.sort_index(kind="stable")
    _validate(bars)
    return bars


def _canonical_column(name: object) -> str:
    text = str(name).strip().lower().replace(" ", "_")
    return {"adjclose": "adj_close", "adj._close": "adj_close", "vol": "volume"}.get(text, text)


def _with_date_index(frame: pd.DataFrame) -> pd.DataFrame:
    date_column = next((c for c in _DATE_COLUMNS if c in frame.columns), None)
    if date_column is not None:
        frame = frame.set_index(date_column)
    if pd.api.types.is_numeric_dtype(frame.index.dtype):  # a RangeIndex is not a date
        raise InvalidBarsError("bars need dates: a DatetimeIndex or a 'date' column")
    try:
        index = pd.DatetimeIndex(pd.to_datetime(frame.index))
    except (TypeError, ValueError) as error:
        raise InvalidBarsError(
            "bars need dates: a DatetimeIndex or a 'date' column of parseable dates"
        ) from error
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    index = index.as_unit("ns")
    index.name = "date"
    out = frame.copy()
    out.index = index
    return out


def _to_float(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    try:
        return frame[columns].astype("float64")
    except (TypeError, ValueError) as error:
        raise InvalidBarsError(f"bar columns must be numeric: {error}") from error


def _apply_adjustment(bars: pd.DataFrame) -> pd.DataFrame:
    adj, close = bars["adj_close"].to_numpy(), bars["close"].to_numpy()
    if np.allclose(adj, close, rtol=1e-9, atol=0.0, equal_nan=True):
        return bars
    factor = adj / close
    adjusted = bars.copy()
    for column in PRICE_COLUMNS:
        adjusted[column] = bars[column].to_numpy() * factor
    return adjusted


def _validate(bars: pd.DataFrame) -> None:
    if bars.empty:
        raise InvalidBarsError("bars are empty")
    if bars.index.hasnans:
        raise InvalidBarsError("bars have missing dates")
    if not bars.index.is_unique:
        duplicates = bars.index[bars.index.duplicated()].unique()[:3]
        raise InvalidBarsError(
            "bars have duplicate dates: " + ", ".join(str(d.date()) for d in duplicates)
        )
    prices = bars[list(PRICE_COLUMNS)].to_numpy()
    bad_rows = ~np.isfinite(prices).all(axis=1) | (prices <= 0).any(axis=1)
    if bad_rows.any():
        first = bars.index[bad_rows][0]
        raise InvalidBarsError(
            f"{int(bad_rows.sum())} bar(s) have missing or non-positive prices "
            f"(first on {first.date()}); open, high, low and close must be positive numbers"
        )
    volume = bars["volume"].to_numpy()
    if not (np.isfinite(volume) & (volume >= 0)).all():
        raise InvalidBarsError("volume must be a non-negative number on every bar")
    if (bars["high"].to_numpy() < bars["low"].to_numpy()).any():
        raise InvalidBarsError("some bars have high < low")


def _end_of_day(day: date | datetime) -> pd.Timestamp:
    """The last instant that still counts as ``day`` (a datetime is taken as is)."""
    stamp = pd.Timestamp(day)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    if isinstance(day, datetime):
        return stamp
    return stamp + pd.Timedelta(days=1) - pd.Timedelta(1, "ns")


class _CacheEntry(NamedTuple):
    stamp: tuple[int, int]  # (mtime_ns, size) of the file the frame was parsed from
    bars: pd.DataFrame


_CACHE: dict[Path, _CacheEntry] = {}
_CACHE_LOCK = threading.Lock()


class MarketDataStore:
    """One file per symbol (``<SYMBOL>.parquet``, or ``<SYMBOL>.csv``) under ``root``."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root) if root is not None else get_settings().market_data_dir

    def __repr__(self) -> str:
        return f"MarketDataStore({str(self.root)!r})"

    def symbols(self) -> list[str]:
        """Stored symbols, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            {p.stem for p in self.root.iterdir() if p.suffix in _SUFFIXES and p.is_file()}
        )

    def __contains__(self, symbol: str) -> bool:
        return self._path(normalize_symbol(symbol)) is not None

    def save(self, symbol: str, bars: pd.DataFrame, file_format: str = "parquet") -> Path:
        """Normalize and write ``bars`` for ``symbol`` atomically; returns the file path."""
        symbol = normalize_symbol(symbol)
        if file_format not in ("parquet", "csv"):
            raise MarketDataError(f"unknown file format {file_format!r}; use parquet or csv")
        normalized = normalize_bars(bars)
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"{symbol}.{file_format}"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        if file_format == "parquet":
            normalized.to_parquet(tmp)
        else:
            normalized.to_csv(tmp, date_format="%Y-%m-%dT%H:%M:%S")
        os.replace(tmp, path)
        for other in _SUFFIXES:
            stale = path.with_suffix(other)
            if stale != path:
                stale.unlink(missing_ok=True)
        return path

    def load(
        self,
        symbol: str,
        as_of: date | datetime | None = None,
        lookback: int | None = None,
    ) -> pd.DataFrame:
        """Bars of ``symbol`` up to ``as_of`` (a date includes that whole day), newest last.

        ``lookback`` keeps at most that many of the latest bars. Raises
        :class:`UnknownSymbolError` for a symbol that is not stored and
        :class:`InsufficientHistoryError` when no bar is on or before ``as_of``.
        """
        symbol = normalize_symbol(symbol)
        bars = self._cached(symbol)
        end = len(bars)
        if as_of is not None:
            end = int(bars.index.searchsorted(_end_of_day(as_of), side="right"))
            if end == 0:
                raise InsufficientHistoryError(
                    1, 0, f"{symbol} as of {as_of} (data starts {bars.index[0].date()})"
                )
        start = 0
        if lookback is not None:
            if lookback < 1:
                raise MarketDataError(f"lookback must be a positive number of bars, got {lookback}")
            start = max(0, end - lookback)
        return bars.iloc[start:end].copy()

    def _path(self, symbol: str) -> Path | None:
        for suffix in _SUFFIXES:
            path = self.root / f"{symbol}{suffix}"
            if path.is_file():
                return path
        return None

    def _cached(self, symbol: str) -> pd.DataFrame:
        path = self._path(symbol)
        if path is None:
            known = ", ".join(self.symbols()) or "none"
            raise UnknownSymbolError(
                f"no market data for symbol '{symbol}' in {self.root}; known symbols: {known}"
            )
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        key = path.resolve()
        entry = _CACHE.get(key)
        if entry is not None and entry.stamp == stamp:
            return entry.bars
        bars = _read_file(path)
        with _CACHE_LOCK:
            _CACHE[key] = _CacheEntry(stamp, bars)
        return bars


def _read_file(path: Path) -> pd.DataFrame:
    try:
        parquet = path.suffix == ".parquet"
        raw = pd.read_parquet(path) if parquet else pd.read_csv(path, index_col=0)
    except (OSError, ValueError) as error:
        raise MarketDataError(f"cannot read market data file {path}: {error}") from error
    try:
        return normalize_bars(raw)
    except InvalidBarsError as error:
        raise InvalidBarsError(f"{path}: {error}") from error


def load_demo_market_data() -> dict[str, pd.DataFrame]:
    """The demo data set, normalized: S&P 500 as ``SPX`` and NASDAQ Composite as ``NASDAQ``."""
    import arch.data.nasdaq
    import arch.data.sp500

    return {
        "SPX": normalize_bars(arch.data.sp500.load()),
        "NASDAQ": normalize_bars(arch.data.nasdaq.load()),
    }


def ensure_demo_market_data(store: MarketDataStore | None = None) -> list[str]:
    """Write the demo symbols that ``store`` lacks; returns the symbols written (idempotent)."""
    store = store or MarketDataStore()
    missing = [symbol for symbol in DEMO_SOURCES if symbol not in store]
    if not missing:
        return []
    demo = load_demo_market_data()
    for symbol in missing:
        store.save(symbol, demo[symbol])
    return missing


def data_window(market: Mapping[str, pd.DataFrame], end: date | None = None) -> tuple[date, date]:
    """First and last bar date across ``market`` (limited to ``end`` when given)."""
    starts, ends = [], []
    for bars in market.values():
        index = bars.index if end is None else bars.index[bars.index <= _end_of_day(end)]
        if len(index):
            starts.append(index[0].date())
            ends.append(index[-1].date())
    if not starts:
        raise InsufficientHistoryError(1, 0, "a data window")
    return min(starts), max(ends)
