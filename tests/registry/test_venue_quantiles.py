"""Venue quantiles: table schema, runtime, registry round trip, trusted pickles, demo."""

from __future__ import annotations

import os
import pickle
from pathlib import Path, PurePosixPath

import arch.data.sp500
import mlflow
import numpy as np
import pandas as pd
import pytest

from registry import store
from registry.settings import Settings
from registry.trust import UntrustedPickleError
from training_hooks.market_data import load_demo_market_data
from training_hooks.registration import Lineage
from training_hooks.venue_quantiles.demo import (
    build_demo_venue_quantiles,
    register_demo_venue_quantiles,
)
from training_hooks.venue_quantiles.log import log_venue_quantiles
from training_hooks.venue_quantiles.pickles import load_quantiles_pickle, parse_quantiles
from training_hooks.venue_quantiles.runtime import (
    InvalidQuantilesError,
    SymbolThresholds,
    UnknownVenueSymbolError,
    VenueQuantilesRuntime,
    VenueTable,
)

TABLE = VenueTable(
    venue="binance-futures",
    symbols={
        "BTCUSDT": SymbolThresholds(medium_notional_threshold=1e4, large_notional_threshold=5e4),
        "ETHUSDT": SymbolThresholds(medium_notional_threshold=5e3, large_notional_threshold=2e4),
    },
)


def _pickle(path: Path, value: object) -> Path:
    path.write_bytes(pickle.dumps(value))
    return path


def test_thresholds_must_be_positive_and_ordered() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        SymbolThresholds(medium_notional_threshold=10, large_notional_threshold=5)
    with pytest.raises(ValueError, match="greater than 0"):
        SymbolThresholds(medium_notional_threshold=0, large_notional_threshold=5)


def test_runtime_looks_up_symbols_and_names_unknown_ones() -> None:
    runtime = VenueQuantilesRuntime(TABLE)
    frame = pd.DataFrame({"symbol": ["ETHUSDT", "BTCUSDT", "ETHUSDT"]})
    output = runtime.predict(frame)
    assert output["symbol"].tolist() == ["ETHUSDT", "BTCUSDT", "ETHUSDT"]
    assert output["medium_notional_threshold"].tolist() == [5e3, 1e4, 5e3]
    assert output["large_notional_threshold"].tolist() == [2e4, 5e4, 2e4]
    assert runtime.check_output(frame, output) == []
    with pytest.raises(UnknownVenueSymbolError, match=r"no thresholds for DOGEUSDT \(known: BTC"):
        runtime.predict(pd.DataFrame({"symbol": ["BTCUSDT", "DOGEUSDT"]}))
    bad = output.assign(medium_notional_threshold=[3e4, 1e4, 5e3])
    assert runtime.check_output(frame, bad) == [
        "medium_notional_threshold exceeds large_notional_threshold"
    ]
    assert runtime.check_output(frame, output.head(2)) == ["expected 3 output rows, got 2"]


def test_model_manager_formats_are_normalised() -> None:
    expected = {
        "BTCUSDT": SymbolThresholds(medium_notional_threshold=1, large_notional_threshold=2)
    }
    assert parse_quantiles({"BTCUSDT": {"low": 1, "high": 2}}) == expected
    assert (
        parse_quantiles(
            {"BTCUSDT": {"medium_notional_threshold": 1.0, "large_notional_threshold": 2.0}}
        )
        == expected
    )
    assert parse_quantiles([{"symbol": "BTCUSDT", "low": np.float64(1), "high": 2}]) == expected
    with pytest.raises(InvalidQuantilesError, match="needs low/high"):
        parse_quantiles({"BTCUSDT": {"lo": 1}})
    with pytest.raises(InvalidQuantilesError, match="'symbol' key"):
        parse_quantiles([{"low": 1, "high": 2}])


def test_pickles_are_read_only_inside_trusted_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trusted, outside = tmp_path / "trusted", tmp_path / "outside"
    trusted.mkdir()
    outside.mkdir()
    content = [{"symbol": "BTCUSDT", "low": np.float64(1e4), "high": np.float64(5e4)}]
    inside = _pickle(trusted / "order_quantiles.pkl", content)
    stranger = _pickle(outside / "order_quantiles.pkl", content)
    (trusted / "link.pkl").symlink_to(stranger)

    monkeypatch.delenv("TRADESERVE_TRUSTED_PICKLE_DIRS", raising=False)
    with pytest.raises(UntrustedPickleError, match="not inside a trusted directory"):
        load_quantiles_pickle(inside)
    assert load_quantiles_pickle(inside, [trusted])["BTCUSDT"].large_notional_threshold == 5e4
    with pytest.raises(UntrustedPickleError):
        load_quantiles_pickle(stranger, [trusted])
    with pytest.raises(UntrustedPickleError):  # a link out of a trusted dir is not trusted
        load_quantiles_pickle(trusted / "link.pkl", [trusted])

    monkeypatch.setenv("TRADESERVE_TRUSTED_PICKLE_DIRS", os.pathsep.join([str(trusted), "/nope"]))
    assert set(load_quantiles_pickle(inside)) == {"BTCUSDT"}

    # Even trusted pickles may only hold containers of numbers.
    rogue = _pickle(trusted / "rogue.pkl", {"BTCUSDT": {"low": PurePosixPath("/"), "high": 1}})
    with pytest.raises(InvalidQuantilesError, match="references pathlib"):
        load_quantiles_pickle(rogue)


def test_logged_table_loads_back_and_predicts(embedded_registry: Settings) -> None:
    version = log_venue_quantiles(
        "binance-futures", TABLE, lineage=Lineage(data_source="model_manager")
    )
    assert version.name == "venue-quantiles-binance-futures"
    frame = pd.DataFrame({"symbol": ["BTCUSDT", "ETHUSDT"]})
    expected = VenueQuantilesRuntime(TABLE).predict(frame)
    pyfunc = mlflow.pyfunc.load_model(version.model_uri)
    pd.testing.assert_frame_equal(pyfunc.predict(frame), expected)
    model_dir = Path(mlflow.artifacts.download_artifacts(version.model_uri))
    (thresholds,) = model_dir.rglob("thresholds.json")
    runtime = VenueQuantilesRuntime.load(thresholds.parent, {})
    assert runtime.table == TABLE
    tags = store.client().get_model_version(version.name, version.version).tags
    assert tags["venue"] == "binance-futures" and tags["symbol_count"] == "2"
    with pytest.raises(InvalidQuantilesError, match="not binance-margin"):
        log_venue_quantiles("binance-margin", TABLE, lineage=Lineage(data_source="x"))


def test_demo_thresholds_follow_the_documented_rule(embedded_registry: Settings) -> None:
    market = load_demo_market_data()
    table = build_demo_venue_quantiles(market)
    assert table.venue == "us-equities" and set(table.symbols) == {"SPX", "NASDAQ"}
    raw = arch.data.sp500.load().loc[:"2014-12-31"].tail(252)
    base = (raw["Close"] * raw["Volume"]).quantile(0.10)
    spx = table.symbols["SPX"]
    assert spx.medium_notional_threshold == pytest.approx(base * 1e-7, rel=5e-3)
    assert spx.large_notional_threshold == pytest.approx(base * 1e-6, rel=5e-3)
    version = register_demo_venue_quantiles(market)
    assert version.name == "venue-quantiles-us-equities"
    tags = store.client().get_model_version(version.name, version.version).tags
    assert tags["data_window_end"] == "2014-12-31"
    assert tags["data_source"] == "arch.data.nasdaq,arch.data.sp500"
