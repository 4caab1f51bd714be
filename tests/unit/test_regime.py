"""Regime detector: HMM fit on real data, causal numpy forward filter, registry round trip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from hmmlearn.hmm import GaussianHMM

from registry.families import Family
from registry.runtime import FamilyRuntime
from registry.settings import Settings
from training_hooks.features import REGIME_FEATURE_NAMES, REGIME_MIN_HISTORY, compute_features
from training_hooks.regime.log import log_regime, regime_input_example
from training_hooks.regime.runtime import (
    PARAMS_FILE,
    REGIME_LABELS,
    REGIME_LOOKBACK,
    RegimeModelError,
    RegimeRuntime,
    entropy_nats,
    normalized_entropy,
)
from training_hooks.regime.train import RegimeFit, fit_regime_detector, label_states

CHECK_POINTS = (0, 1, 7, 250, 1800, 3500, 5010)


@pytest.fixture(scope="module")
def fit(market: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory) -> RegimeFit:
    return fit_regime_detector(market, out_dir=tmp_path_factory.mktemp("regime"), n_restarts=2)


@pytest.fixture(scope="module")
def runtime(fit: RegimeFit) -> RegimeRuntime:
    return RegimeRuntime.load(fit.artifact_dir, {})


@pytest.fixture(scope="module")
def spx_filtered(runtime: RegimeRuntime, market: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return runtime.filter_probabilities(market["SPX"])


def _hmmlearn_model(fit: RegimeFit) -> GaussianHMM:
    model = GaussianHMM(n_components=3, covariance_type="full")
    model.startprob_ = np.asarray(fit.params.startprob)
    model.transmat_ = np.asarray(fit.params.transmat)
    model.means_ = np.asarray(fit.params.means)
    model.covars_ = np.asarray(fit.params.covars)
    return model


def test_artifact_is_json_only(fit: RegimeFit) -> None:
    assert sorted(p.name for p in fit.artifact_dir.iterdir()) == [PARAMS_FILE]
    raw = json.loads((fit.artifact_dir / PARAMS_FILE).read_text())
    assert raw["labels"] == list(REGIME_LABELS)
    assert np.asarray(raw["covars"]).shape == (3, 2, 2)
    assert fit.data_start.isoformat() == "1999-01-04" and fit.data_end.isoformat() == "2012-12-31"


def test_labelling_rule_on_real_data(fit: RegimeFit) -> None:
    m = fit.metrics
    sharpe = {
        label: m[f"{label}_mean_return_annualized"] / m[f"{label}_return_vol_annualized"]
        for label in REGIME_LABELS
    }
    assert sharpe["bull"] > sharpe["sideways"] > sharpe["bear"]
    assert m["bear_mean_return_annualized"] < 0 < m["bull_mean_return_annualized"]
    assert m["bull_mean_log_rvol_20"] < m["sideways_mean_log_rvol_20"] < m["bear_mean_log_rvol_20"]
    for label in REGIME_LABELS:
        assert m[f"{label}_expected_duration_bars"] > 10  # persistent regimes, not noise
        assert 0.05 < m[f"{label}_occupancy"] < 0.9
    assert math.isfinite(m["validation_loglik_per_bar"])


def test_label_states_uses_destandardized_sharpe() -> None:
    means = np.array([[0.0, 0.0], [-0.05, 0.0], [-0.3, 0.0]])  # standardized
    covars = np.stack([np.diag([1.0, 1.0]), np.diag([0.01, 1.0]), np.diag([1.0, 1.0])])
    # real mean returns 0.1 %, 0.05 %, −0.2 %; sds 1 %, 0.1 %, 1 % → Sharpe 0.1, 0.5, −0.2
    order = label_states(means, covars, np.array([0.001, 0.0]), np.array([0.01, 1.0]))
    assert dict(zip(REGIME_LABELS, order, strict=True)) == {"bull": 1, "bear": 2, "sideways": 0}


@pytest.mark.parametrize("t", CHECK_POINTS)
def test_filter_is_causal(
    runtime: RegimeRuntime, market: dict[str, pd.DataFrame], spx_filtered: pd.DataFrame, t: int
) -> None:
    """Probabilities at t from bars up to t equal the full-series filter at t."""
    bars = market["SPX"]
    end = t + REGIME_MIN_HISTORY  # t-th filtered row sits on bar t + min_history - 1
    prefix = runtime.filter_probabilities(bars.iloc[:end])
    np.testing.assert_allclose(prefix.to_numpy(), spx_filtered.iloc[: t + 1].to_numpy(), atol=1e-13)
    latest = runtime.latest_probabilities(bars.iloc[:end])
    np.testing.assert_allclose(list(latest.values()), spx_filtered.iloc[t], atol=1e-13)


@pytest.mark.parametrize("t", CHECK_POINTS)
def test_filter_matches_hmmlearn_filtered_posterior(
    fit: RegimeFit, runtime: RegimeRuntime, market: dict[str, pd.DataFrame],
    spx_filtered: pd.DataFrame, t: int,
) -> None:  # fmt: skip
    """hmmlearn's predict_proba on X[:t+1] smooths nothing at its last row: an independent
    computation of the filtered posterior at t."""
    z = runtime.standardize(compute_features(market["SPX"], REGIME_FEATURE_NAMES).to_numpy())
    expected = _hmmlearn_model(fit).predict_proba(z[: t + 1])[-1]
    np.testing.assert_allclose(spx_filtered.iloc[t].to_numpy(), expected, atol=1e-8)


def test_serving_lookback_matches_full_history(
    runtime: RegimeRuntime, market: dict[str, pd.DataFrame], spx_filtered: pd.DataFrame
) -> None:
    bars = market["NASDAQ"]
    full = runtime.filter_probabilities(bars)
    for end in (800, 2000, 3000, 4500, len(bars)):
        windowed = runtime.latest_probabilities(bars.iloc[:end], lookback=REGIME_LOOKBACK)
        np.testing.assert_allclose(
            list(windowed.values()), full.loc[bars.index[end - 1]], atol=1e-9
        )


def test_predict_output_is_valid(runtime: RegimeRuntime, market: dict[str, pd.DataFrame]) -> None:
    assert isinstance(runtime, FamilyRuntime) and RegimeRuntime.family is Family.REGIME
    frame = market["NASDAQ"].iloc[-300:].reset_index()
    output = runtime.predict(frame)
    assert list(output.columns) == ["date", *REGIME_LABELS]
    assert len(output) == 300 - REGIME_MIN_HISTORY + 1
    assert output["date"].iloc[-1] == pd.Timestamp("2018-12-31")
    assert RegimeRuntime.check_output(frame, output) == []
    broken = output.assign(bull=output["bull"] + 0.5)
    assert RegimeRuntime.check_output(frame, broken)


def test_regimes_track_known_market_episodes(spx_filtered: pd.DataFrame) -> None:
    yearly = spx_filtered.groupby(spx_filtered.index.year).mean()
    assert yearly.loc[2008, "bear"] > yearly.loc[2008, "bull"]
    assert yearly.loc[2005, "bull"] > 0.8 and yearly.loc[2017, "bull"] > 0.8


def test_entropy_helpers() -> None:
    assert entropy_nats([1 / 3, 1 / 3, 1 / 3]) == pytest.approx(math.log(3))
    assert normalized_entropy([1 / 3, 1 / 3, 1 / 3]) == pytest.approx(1.0)
    assert entropy_nats([1.0, 0.0, 0.0]) == 0.0 and normalized_entropy([0.0, 1.0, 0.0]) == 0.0
    batch = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    expected = [math.log(2), -(0.2 * math.log(0.2) + 0.3 * math.log(0.3) + 0.5 * math.log(0.5))]
    np.testing.assert_allclose(entropy_nats(batch), expected)
    np.testing.assert_allclose(normalized_entropy(batch), np.array(expected) / math.log(3))


def test_invalid_artifacts_are_rejected(fit: RegimeFit, tmp_path: Path) -> None:
    with pytest.raises(RegimeModelError, match="not found"):
        RegimeRuntime.load(tmp_path, {})
    raw = json.loads((fit.artifact_dir / PARAMS_FILE).read_text())
    raw["transmat"][0] = [0.9, 0.9, 0.9]
    (tmp_path / PARAMS_FILE).write_text(json.dumps(raw))
    with pytest.raises(RegimeModelError, match="rows summing to 1"):
        RegimeRuntime.load(tmp_path, {})


def test_logged_detector_round_trip(
    embedded_registry: Settings, fit: RegimeFit, market: dict[str, pd.DataFrame]
) -> None:
    version = log_regime(fit, market)
    assert (version.name, version.version, version.family) == ("regime-detector", "1", "regime")
    frame = regime_input_example(market["SPX"], n_rows=60)
    via_pyfunc = mlflow.pyfunc.load_model(version.model_uri).predict(frame)
    local = Path(mlflow.artifacts.download_artifacts(version.model_uri))
    downloaded = RegimeRuntime.load(local / "artifacts" / fit.artifact_dir.name, {})
    via_runtime = downloaded.predict(frame)
    in_memory = RegimeRuntime(fit.params).predict(frame)
    assert len(via_pyfunc) == 60
    np.testing.assert_allclose(via_pyfunc[list(REGIME_LABELS)], via_runtime[list(REGIME_LABELS)])
    np.testing.assert_array_equal(via_runtime[list(REGIME_LABELS)], in_memory[list(REGIME_LABELS)])
    assert (pd.to_datetime(via_pyfunc["date"]) == via_runtime["date"]).all()
    client = mlflow.MlflowClient()
    tags = client.get_model_version(version.name, version.version).tags
    assert tags["family"] == "regime" and tags["validation_status"] == "pending"
    assert tags["data_window_end"] == "2012-12-31" and tags["feature_spec_version"]
    run = client.get_run(version.run_id)
    assert run.data.metrics["train_loglik_per_bar"] == pytest.approx(
        fit.metrics["train_loglik_per_bar"]
    )
