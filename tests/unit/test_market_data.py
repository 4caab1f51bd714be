"""Market-data store and bar normalization on the real demo data (arch S&P 500 / NASDAQ)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from registry.errors import TradeserveError
from training_hooks.market_data import (
    BAR_COLUMNS,
    DEMO_SPLITS,
    InsufficientHistoryError,
    InvalidBarsError,
    MarketDataStore,
    UnknownSymbolError,
    ensure_demo_market_data,
    normalize_bars,
)


@pytest.fixture
def store(tmp_path: Path) -> MarketDataStore:
    return MarketDataStore(tmp_path / "market")


def test_demo_data_is_normalized(market: dict[str, pd.DataFrame]) -> None:
    assert set(market) == {"SPX", "NASDAQ"}
    for bars in market.values():
        assert list(bars.columns) == list(BAR_COLUMNS)
        assert bars.index.name == "date" and bars.index.tz is None
        assert bars.index.is_monotonic_increasing and bars.index.is_unique
        assert (bars.dtypes == np.float64).all()
        assert bars.index[0] == pd.Timestamp("1999-01-04")
        assert bars.index[-1] == pd.Timestamp("2018-12-31")


@pytest.mark.parametrize("file_format", ["parquet", "csv"])
def test_store_round_trip(
    store: MarketDataStore, market: dict[str, pd.DataFrame], file_format: str
) -> None:
    bars = market["SPX"].iloc[:300]
    path = store.save("spx", bars, file_format=file_format)
    assert path.name == f"SPX.{file_format}"
    assert store.symbols() == ["SPX"]
    pd.testing.assert_frame_equal(store.load("SPX"), bars, check_exact=file_format == "parquet")


def test_reads_csv_with_arch_column_names(store: MarketDataStore) -> None:
    import arch.data.sp500

    raw = arch.data.sp500.load().iloc[:50]
    store.root.mkdir(parents=True)
    raw.to_csv(store.root / "GSPC.csv")
    loaded = store.load("gspc")
    assert list(loaded.columns) == list(BAR_COLUMNS)
    np.testing.assert_allclose(loaded["close"].to_numpy(), raw["Close"].to_numpy())


def test_as_of_excludes_later_bars(store: MarketDataStore, market: dict[str, pd.DataFrame]) -> None:
    store.save("SPX", market["SPX"])
    by_date = store.load("SPX", as_of=date(2012, 12, 31))
    assert by_date.index[-1] == pd.Timestamp("2012-12-31")
    by_instant = store.load("SPX", as_of=datetime(2012, 12, 31, 0, 0))
    assert by_instant.index[-1] == pd.Timestamp("2012-12-31")
    before = store.load("SPX", as_of=datetime(2012, 12, 30, 23, 59))
    assert before.index[-1] == pd.Timestamp("2012-12-28")
    tail = store.load("SPX", as_of=date(2013, 1, 1), lookback=10)
    assert len(tail) == 10 and tail.index[-1] == pd.Timestamp("2012-12-31")
    pd.testing.assert_frame_equal(tail, market["SPX"].loc[:"2012-12-31"].iloc[-10:])
    with pytest.raises(InsufficientHistoryError, match="data starts 1999-01-04"):
        store.load("SPX", as_of=date(1990, 1, 1))


def test_unknown_symbol_names_known_symbols(
    store: MarketDataStore, market: dict[str, pd.DataFrame]
) -> None:
    store.save("SPX", market["SPX"].iloc[:20])
    with pytest.raises(UnknownSymbolError, match="known symbols: SPX") as raised:
        store.load("AAPL")
    assert isinstance(raised.value, TradeserveError)
    assert "AAPL" not in store and "spx" in store


def test_cache_returns_copies_and_follows_file_changes(
    store: MarketDataStore, market: dict[str, pd.DataFrame]
) -> None:
    store.save("SPX", market["SPX"].iloc[:100])
    first = store.load("SPX")
    first.iloc[:, :] = -1.0
    assert (store.load("SPX")["close"] > 0).all()
    store.save("SPX", market["SPX"].iloc[:150])
    assert len(store.load("SPX")) == 150


def test_ensure_demo_market_data_is_idempotent(store: MarketDataStore) -> None:
    assert ensure_demo_market_data(store) == ["SPX", "NASDAQ"]
    assert ensure_demo_market_data(store) == []
    assert store.symbols() == ["NASDAQ", "SPX"]
    assert len(store.load("NASDAQ")) == 5031


def test_normalize_accepts_date_column_tz_and_unsorted_rows(
    market: dict[str, pd.DataFrame],
) -> None:
    bars = market["SPX"].iloc[:30]
    shuffled = bars.iloc[::-1].reset_index()
    shuffled["date"] = shuffled["date"].dt.tz_localize("UTC")
    pd.testing.assert_frame_equal(normalize_bars(shuffled), bars)


def test_normalize_applies_adjusted_close() -> None:
    frame = pd.DataFrame(
        {"Open": [10.0, 11.0], "High": [11.0, 12.0], "Low": [9.0, 10.0], "Close": [10.0, 12.0],
         "Adj Close": [5.0, 6.0], "Volume": [100, 200]},
        index=pd.to_datetime(["2020-01-02", "2020-01-03"]),
    )  # fmt: skip
    bars = normalize_bars(frame)
    np.testing.assert_allclose(bars["close"], [5.0, 6.0])
    np.testing.assert_allclose(bars["open"], [5.0, 5.5])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: f.drop(columns="volume"), "missing column"),
        (
            lambda f: f.assign(close=np.where(np.arange(len(f)) == 3, np.nan, f["close"])),
            "1 bar.s. have missing or non-positive prices .first on 1999-01-07",
        ),
        (lambda f: f.assign(low=-f["low"]), "10 bar.s. have missing or non-positive"),
        (lambda f: pd.concat([f, f.iloc[[2]]]), "duplicate dates"),
        (lambda f: f.assign(volume=-1.0), "volume"),
        (lambda f: f.reset_index(drop=True), "need dates"),
    ],
    ids=[
        "missing-column",
        "nan-close",
        "negative-price",
        "duplicate-date",
        "negative-volume",
        "no-dates",
    ],
)
def test_normalize_rejects_bad_bars(
    market: dict[str, pd.DataFrame], mutate: Callable[[pd.DataFrame], pd.DataFrame], message: str
) -> None:
    bars = market["SPX"].iloc[:10]
    with pytest.raises(InvalidBarsError, match=message):
        normalize_bars(mutate(bars))


def test_insufficient_history_error_says_needed_and_given() -> None:
    error = InsufficientHistoryError(200, 37, "features")
    assert (error.needed, error.given) == (200, 37)
    assert str(error) == "features needs at least 200 bars, got 37"


def test_splits(market: dict[str, pd.DataFrame]) -> None:
    parts = DEMO_SPLITS.split(market["SPX"])
    assert parts["train"].index[-1] == pd.Timestamp("2012-12-31")
    assert parts["validation"].index[0] == pd.Timestamp("2013-01-02")
    assert parts["validation"].index[-1] == pd.Timestamp("2014-12-31")
    assert parts["test"].index[0] == pd.Timestamp("2015-01-02")
    assert sum(len(p) for p in parts.values()) == len(market["SPX"])
