"""`tradeserve evaluate`: walk-forward replay of RegimeBlend's decisions on held-out data."""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from bentos.regime_blend.evaluate import (
    EvaluationConfig,
    buy_and_hold,
    evaluate,
    load_promoted_models,
    symbol_signals,
)
from registry.loading import load_version
from registry.resolve import resolve
from tests.demo_fixtures import TRADESERVE, demo_env
from training_hooks.market_data import MarketDataStore
from training_hooks.regime.runtime import REGIME_LABELS

WINDOW = (date(2015, 1, 1), date(2018, 12, 31))


def test_regime_probabilities_use_only_data_up_to_each_date(demo_registry: Any) -> None:
    """The evaluator filters once over the whole series; each date must equal a filter run
    on the bars up to that date, and rewriting the future must not change the past."""
    models = load_promoted_models()
    regime = load_version(resolve("regime-detector")).runtime
    bars = MarketDataStore().load("SPX")
    signals = symbol_signals(bars, models, *WINDOW)
    assert signals.dates[0] >= pd.Timestamp(WINDOW[0]) and len(signals.dates) > 900
    for i in range(0, len(signals.dates), 97):
        day = signals.dates[i]
        alone = regime.filter_probabilities(bars.loc[:day]).iloc[-1]
        np.testing.assert_allclose(
            signals.regime[i], alone[list(REGIME_LABELS)].to_numpy(), rtol=0, atol=1e-15
        )
    cut = signals.dates[400]
    future = bars.index > cut
    rewritten = bars.copy()
    rewritten.loc[future, ["open", "high", "low", "close"]] *= np.linspace(0.5, 2.0, future.sum())[
        :, None
    ]
    changed = symbol_signals(rewritten, models, *WINDOW)
    np.testing.assert_array_equal(changed.regime[:401], signals.regime[:401])
    for role in models.specialists:
        np.testing.assert_array_equal(
            changed.probabilities[role][:401], signals.probabilities[role][:401]
        )
    assert not np.allclose(changed.regime[401:], signals.regime[401:])


def test_walk_forward_metrics_are_consistent(demo_registry: Any, tmp_path: Path) -> None:
    config = EvaluationConfig(start="2016-01-01", end="2016-12-31")
    report = evaluate(config, log_to_mlflow=False, out_dir=tmp_path)
    assert set(report.metrics) == {"argmax", "mixture", "buy_and_hold"}
    assert set(report.models) == {
        "regime-detector",
        "specialist-bull",
        "specialist-bear",
        "specialist-sideways",
        "specialist-universal",
    }
    curves = pd.read_csv(tmp_path / "equity_curves.csv", index_col="date", parse_dates=True)
    assert len(curves) == report.metrics["argmax"].days == 252
    for name, metrics in report.metrics.items():
        curve = curves[name]
        assert metrics.final_equity == pytest.approx(curve.iloc[-1])
        assert metrics.pnl == pytest.approx(curve.iloc[-1] - config.initial_capital)
        peak = np.maximum.accumulate(np.r_[config.initial_capital, curve.to_numpy()])
        drawdown = 1 - np.r_[config.initial_capital, curve.to_numpy()] / peak
        assert metrics.max_drawdown == pytest.approx(drawdown.max())
        assert metrics.turnover >= 0
    store = MarketDataStore()
    held = [
        store.load(s, as_of=config.end).loc[str(config.start) :]["close"] for s in ("SPX", "NASDAQ")
    ]
    expected = np.mean([c.iloc[-1] / c.iloc[0] for c in held]) * (1 - 1e-4) - 1
    assert report.metrics["buy_and_hold"].total_return == pytest.approx(expected, rel=1e-9)
    decisions = pd.read_csv(tmp_path / "decisions.csv")
    assert set(decisions["mode"]) == {"argmax", "mixture"}
    assert (decisions.loc[decisions["action"] == "HOLD", "traded"] == 0).all()
    seed = decisions[(decisions["mode"] == "argmax") & (decisions["action"] != "HOLD")]
    p = seed[list(REGIME_LABELS)].to_numpy()
    entropy = -(p * np.log(np.where(p > 0, p, 1))).sum(axis=1)
    expected_qty = np.maximum(1, np.trunc(100 * seed["confidence"] * (1 - entropy)))
    np.testing.assert_array_equal(seed["quantity"].to_numpy(), expected_qty.astype(int))
    assert (decisions["traded"] <= decisions["quantity"]).all()


def test_buy_and_hold_holds(demo_registry: Any) -> None:
    models = load_promoted_models()
    signals = {"SPX": symbol_signals(MarketDataStore().load("SPX"), models, *WINDOW)}
    sim = buy_and_hold(signals, EvaluationConfig(cost_bps=0))
    close = signals["SPX"].close
    np.testing.assert_allclose(sim.equity.to_numpy(), 1_000_000 * close / close[0])


def test_tradeserve_evaluate_logs_an_mlflow_run(demo_home: Path) -> None:
    done = subprocess.run(
        [str(TRADESERVE), "evaluate"],
        env=demo_env(demo_home),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "buy_and_hold" in done.stdout and "Sharpe" in done.stdout
    run_id = done.stdout.split("MLflow run ", 1)[1].split()[0]
    client = MlflowClient(tracking_uri=f"sqlite:///{demo_home / 'mlflow.db'}")
    run = client.get_run(run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "tradeserve"
    assert run.data.tags["run_type"] == "evaluation"
    for name in ("regime-detector", "specialist-bull", "specialist-universal"):
        assert run.data.tags[f"model.{name}"] == resolve_version(client, name)
    for strategy in ("argmax", "mixture", "buy_and_hold"):
        for metric in ("pnl", "sharpe", "max_drawdown", "turnover", "total_return"):
            assert f"{strategy}_{metric}" in run.data.metrics
    assert run.data.params["start"] == "2015-01-01" and run.data.params["end"] == "2018-12-31"
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"equity_curve.png", "equity_curves.csv", "decisions.csv", "metrics.json"} <= artifacts
    png = Path(client.download_artifacts(run_id, "equity_curve.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def resolve_version(client: MlflowClient, name: str) -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)
