"""Market inputs of a decision: the as-of bar, its features and its regime probabilities.

Bars come inline with the request or from the market-data store (one CSV/Parquet file per
symbol). For stored symbols the features and the causal regime filter are computed once
over the whole file and cached per (file version, regime-detector version): history is
immutable, the filter is causal, so the row of the as-of bar is exactly what a computation
on the bars up to that bar gives, and a request costs one binary search. Inline bars are
computed per request (features on the last ``MIN_HISTORY`` bars, the filter over at most
``REGIME_LOOKBACK`` bars).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from bentos.regime_blend.storage import mirror_prefix
from bentos.shared.lineage import ModelRef
from bentos.shared.model_source import ServedModel
from training_hooks.features import FEATURE_NAMES, MIN_HISTORY, compute_features, latest_features
from training_hooks.market_data import (
    InsufficientHistoryError,
    MarketDataStore,
    normalize_bars,
    normalize_symbol,
)
from training_hooks.regime.runtime import REGIME_LABELS, REGIME_LOOKBACK, RegimeRuntime

_SUFFIXES = (".parquet", ".csv")
logger = logging.getLogger("tradeserve.regime_blend")
MAX_CACHED_SYMBOLS = 256


@dataclass(frozen=True)
class SymbolSeries:
    """Per-bar features and filtered regime probabilities of one symbol (NaN before the
    first bar with enough history)."""

    dates: np.ndarray  # datetime64[ns], ascending
    close: np.ndarray
    features: np.ndarray  # [bars, FEATURE_NAMES]
    regime: np.ndarray  # [bars, REGIME_LABELS]
    digest: str | None = None  # sha256 of the stored file the bars came from

    def index_at(self, when: datetime | pd.Timestamp | None) -> int:
        """Index of the last bar at or before ``when`` (the latest bar when None); -1 if none."""
        if when is None:
            return len(self.dates) - 1
        return int(np.searchsorted(self.dates, as_naive_utc(when), side="right")) - 1


def build_series(bars: pd.DataFrame, regime: RegimeRuntime) -> SymbolSeries:
    """Features and the causal regime filter over all ``bars`` (normalized bars)."""
    n = len(bars)
    features = np.full((n, len(FEATURE_NAMES)), np.nan)
    if n >= MIN_HISTORY:
        rows = compute_features(bars).to_numpy(np.float64)
        features[n - len(rows) :] = rows
    probabilities = np.full((n, len(REGIME_LABELS)), np.nan)
    if n >= regime.min_history:
        filtered = regime.filter_probabilities(bars)[list(REGIME_LABELS)].to_numpy(np.float64)
        probabilities[n - len(filtered) :] = filtered
    return SymbolSeries(
        dates=bars.index.to_numpy(dtype="datetime64[ns]"),
        close=bars["close"].to_numpy(np.float64),
        features=features,
        regime=probabilities,
    )


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def as_naive_utc(when: datetime | pd.Timestamp) -> np.datetime64:
    stamp = pd.Timestamp(when)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.to_datetime64().astype("datetime64[ns]")


@dataclass(frozen=True)
class Snapshot:
    """What the models see for one decision."""

    symbol: str
    as_of: datetime  # timestamp of the bar used
    price: float  # its close
    features: np.ndarray
    regime: np.ndarray
    detector: ModelRef  # the regime detector version that computed ``regime``
    source: str  # "store" or "request"
    bars_digest: str | None = None


def _snapshot_at(
    symbol: str, series: SymbolSeries, detector: ModelRef, index: int, source: str
) -> Snapshot:
    features, regime = series.features[index], series.regime[index]
    if index < 0 or np.isnan(features).any() or np.isnan(regime).any():
        raise InsufficientHistoryError(
            MIN_HISTORY, index + 1, f"a decision on {symbol} (features and regime filter)"
        )
    return Snapshot(
        symbol=symbol,
        as_of=pd.Timestamp(series.dates[index]).to_pydatetime(),
        price=float(series.close[index]),
        features=features,
        regime=regime,
        detector=detector,
        source=source,
        bars_digest=series.digest,  # the decision names its data: symbol, bar, file digest
    )


class MarketMirror:
    """An ``s3://`` market-data prefix mirrored into the local folder ``MarketSource`` reads:
    once before the service starts, then every ``interval_s`` on a daemon thread (a changed
    object replaces its file atomically; the series cache follows the file's new stamp)."""

    def __init__(self, uri: str, folder: Path, interval_s: float) -> None:
        self.uri = uri
        self.folder = folder
        self.interval_s = interval_s
        self._stop = threading.Event()

    def start(self) -> MarketMirror:
        mirror_prefix(self.uri, self.folder, _SUFFIXES)
        threading.Thread(target=self._loop, name="market-mirror", daemon=True).start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                mirror_prefix(self.uri, self.folder, _SUFFIXES)
            except Exception as error:  # keep serving the last good copy
                logger.error("market data mirror of %s failed: %s", self.uri, error)

    def stop(self) -> None:
        self._stop.set()


class MarketSource:
    """Snapshots from the market-data store (cached) or from bars sent with a request."""

    def __init__(self, root: Path, regime: Callable[[], ServedModel[RegimeRuntime]]) -> None:
        self.store = MarketDataStore(root)
        self._regime = regime
        self._series: OrderedDict[tuple, SymbolSeries] = OrderedDict()
        self._lock = threading.Lock()

    def _stamp(self, symbol: str) -> tuple[str, int, int] | None:
        for suffix in _SUFFIXES:
            try:
                stat = os.stat(self.store.root / f"{symbol}{suffix}")
            except FileNotFoundError:
                continue
            return suffix, stat.st_mtime_ns, stat.st_size
        return None

    def series(self, symbol: str) -> SymbolSeries:
        """The cached series of a stored symbol (rebuilt when its file or the detector changes)."""
        return self._series_by(symbol, self._regime())

    def _series_by(self, symbol: str, served: ServedModel[RegimeRuntime]) -> SymbolSeries:
        symbol = normalize_symbol(symbol)
        stamp = self._stamp(symbol)
        if stamp is None:
            self.store.load(symbol)  # raises UnknownSymbolError naming the known symbols
        key = (symbol, stamp, served.ref.name, served.ref.version)
        cached = self._series.get(key)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._series.get(key)
            if cached is None:
                cached = dataclasses.replace(
                    build_series(self.store.load(symbol), served.runtime),
                    digest=_file_digest(self.store.root / f"{symbol}{stamp[0]}") if stamp else None,
                )
                for old in [k for k in self._series if k[0] == symbol]:
                    del self._series[old]
                self._series[key] = cached
                while len(self._series) > MAX_CACHED_SYMBOLS:
                    self._series.popitem(last=False)
        return cached

    def snapshot(self, symbol: str, when: datetime | None) -> Snapshot:
        """The last stored bar at or before ``when`` (nothing after it is used)."""
        symbol = normalize_symbol(symbol)
        served = self._regime()  # read once: a live swap must not mix two versions
        series = self._series_by(symbol, served)
        index = series.index_at(when)
        if index < 0:
            first = pd.Timestamp(series.dates[0]).date() if len(series.dates) else "never"
            raise InsufficientHistoryError(1, 0, f"{symbol} as of {when} (data starts {first})")
        return _snapshot_at(symbol, series, served.ref, index, "store")

    def from_bars(self, symbol: str, frame: pd.DataFrame, when: datetime | None) -> Snapshot:
        """A snapshot from bars sent with the request, cut at ``when``."""
        symbol = normalize_symbol(symbol)
        bars = normalize_bars(frame)
        if when is not None:
            bars = bars.loc[: pd.Timestamp(as_naive_utc(when))]
        if len(bars) < MIN_HISTORY:
            raise InsufficientHistoryError(
                MIN_HISTORY, len(bars), f"a decision on {symbol} from the request's bars"
            )
        served = self._regime()
        runtime = served.runtime
        probabilities = runtime.latest_probabilities(bars, lookback=REGIME_LOOKBACK)
        digest = hashlib.sha256(
            bars.index.asi8.tobytes() + bars.to_numpy(np.float64).tobytes()
        ).hexdigest()
        return Snapshot(
            symbol=symbol,
            as_of=bars.index[-1].to_pydatetime(),
            price=float(bars["close"].iloc[-1]),
            features=latest_features(bars),
            regime=np.array([probabilities[label] for label in REGIME_LABELS]),
            detector=served.ref,
            source="request",
            bars_digest=digest,
        )

    def warm(self) -> list[str]:
        """Build the series of every stored symbol (so first requests are fast)."""
        warmed = []
        for symbol in self.store.symbols():
            try:
                self.series(symbol)
                warmed.append(symbol)
            except Exception:  # a broken file must not stop the service; requests report it
                continue
        return warmed
