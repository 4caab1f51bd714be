"""The shared feature definition: causal, exact between training and serving, scale-free."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training_hooks.features import (
    FEATURE_NAMES,
    FEATURE_SPEC,
    FEATURES,
    MIN_HISTORY,
    REGIME_FEATURE_NAMES,
    REGIME_MIN_HISTORY,
    FeatureSpec,
    FeatureSpecMismatchError,
    compute_features,
    latest_features,
    min_history,
)
from training_hooks.market_data import InsufficientHistoryError, load_demo_market_data

CHECK_POINTS = (MIN_HISTORY - 1, MIN_HISTORY, MIN_HISTORY + 7, 1000, 2517, 3999, 5030)


@pytest.fixture(scope="module")
def bars() -> pd.DataFrame:
    return load_demo_market_data()["NASDAQ"]  # has zero-volume days: a harder case


@pytest.fixture(scope="module")
def full(bars: pd.DataFrame) -> pd.DataFrame:
    return compute_features(bars)


def test_shape_and_finiteness(bars: pd.DataFrame, full: pd.DataFrame) -> None:
    assert 12 <= len(FEATURE_NAMES) <= 20
    assert list(full.columns) == list(FEATURE_NAMES)
    assert len(full) == len(bars) - MIN_HISTORY + 1
    assert full.index[0] == bars.index[MIN_HISTORY - 1] and full.index.name == "date"
    assert np.isfinite(full.to_numpy()).all()


@pytest.mark.parametrize("t", CHECK_POINTS)
def test_features_are_causal(bars: pd.DataFrame, full: pd.DataFrame, t: int) -> None:
    """Row t computed from bars[:t+1] is bit-for-bit row t of the full computation."""
    prefix = compute_features(bars.iloc[: t + 1])
    np.testing.assert_array_equal(prefix.iloc[-1].to_numpy(), full.loc[bars.index[t]].to_numpy())
    np.testing.assert_array_equal(prefix.to_numpy(), full.loc[: bars.index[t]].to_numpy())


def test_future_bars_do_not_change_the_past(bars: pd.DataFrame, full: pd.DataFrame) -> None:
    t = 3000
    shocked = bars.copy()
    shocked.iloc[t + 1 :, :4] *= 3.0
    shocked.iloc[t + 1 :, 4] = 0.0
    changed = compute_features(shocked)
    np.testing.assert_array_equal(
        changed.loc[: bars.index[t]].to_numpy(), full.loc[: bars.index[t]].to_numpy()
    )
    assert not np.allclose(changed.iloc[-1].to_numpy(), full.iloc[-1].to_numpy())


@pytest.mark.parametrize("t", CHECK_POINTS)
def test_latest_features_equals_last_row(bars: pd.DataFrame, full: pd.DataFrame, t: int) -> None:
    latest = latest_features(bars.iloc[: t + 1])
    assert latest.shape == (len(FEATURE_NAMES),)
    np.testing.assert_array_equal(latest, full.loc[bars.index[t]].to_numpy())


def test_latest_features_accepts_date_column(bars: pd.DataFrame, full: pd.DataFrame) -> None:
    framed = bars.iloc[-MIN_HISTORY:].reset_index()
    np.testing.assert_array_equal(latest_features(framed), full.iloc[-1].to_numpy())
    assert compute_features(framed).index[-1] == bars.index[-1]


def test_each_feature_declares_its_exact_lookback(bars: pd.DataFrame) -> None:
    for name, feature in FEATURES.items():
        needed = min_history([name])
        assert needed == feature.lookback + 1
        assert len(compute_features(bars.iloc[:needed], [name])) == 1
        with pytest.raises(InsufficientHistoryError):
            compute_features(bars.iloc[: needed - 1], [name])
    assert max(f.lookback for f in FEATURES.values()) + 1 == MIN_HISTORY


def test_insufficient_history_reports_numbers(bars: pd.DataFrame) -> None:
    with pytest.raises(InsufficientHistoryError, match=f"at least {MIN_HISTORY} bars, got 50"):
        latest_features(bars.iloc[:50])


def test_features_are_scale_free(bars: pd.DataFrame, full: pd.DataFrame) -> None:
    rescaled = bars.copy()
    rescaled[["open", "high", "low", "close"]] *= 37.5
    rescaled["volume"] *= 1000.0
    scaled = compute_features(rescaled)
    np.testing.assert_allclose(scaled.to_numpy(), full.to_numpy(), rtol=1e-6, atol=0.02)
    price_only = [n for n in FEATURE_NAMES if n != "volume_z_20"]  # log1p(v) is not exact
    np.testing.assert_allclose(scaled[price_only], full[price_only], rtol=1e-7, atol=1e-9)


def test_regime_features_subset(bars: pd.DataFrame, full: pd.DataFrame) -> None:
    assert set(REGIME_FEATURE_NAMES) <= set(FEATURE_NAMES)
    regime = compute_features(bars, REGIME_FEATURE_NAMES)
    assert len(regime) == len(bars) - REGIME_MIN_HISTORY + 1
    np.testing.assert_array_equal(
        regime.loc[full.index].to_numpy(), full[list(REGIME_FEATURE_NAMES)].to_numpy()
    )


def test_feature_spec() -> None:
    assert FEATURE_SPEC.names == FEATURE_NAMES and FEATURE_SPEC.min_history == MIN_HISTORY
    FeatureSpec.model_validate_json(FEATURE_SPEC.model_dump_json()).require_current()
    for stale in (
        FEATURE_SPEC.model_copy(update={"version": "ohlcv-v0"}),
        FEATURE_SPEC.model_copy(update={"names": (*FEATURE_NAMES[:-1], "unknown")}),
    ):
        with pytest.raises(FeatureSpecMismatchError, match="retrain"):
            stale.require_current()
