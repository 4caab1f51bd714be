"""Specialist policies: real training on the demo data, runtime contract, registry round trip."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from registry.families import SPECIALIST_ROLES, Family
from registry.runtime import FamilyRuntime
from registry.settings import Settings
from training_hooks.features import FEATURE_NAMES, compute_features, latest_features
from training_hooks.market_data import DEMO_SPLITS
from training_hooks.regime.runtime import RegimeRuntime
from training_hooks.regime.train import fit_regime_detector
from training_hooks.specialist.datasets import (
    BUY,
    HOLD,
    SELL,
    Dataset,
    build_datasets,
    make_action_labels,
)
from training_hooks.specialist.demo import train_demo_specialists
from training_hooks.specialist.runtime import (
    ACTIONS,
    CONFIG_FILE,
    WEIGHTS_FILE,
    SpecialistError,
    SpecialistRuntime,
    TrainingConfig,
)
from training_hooks.specialist.train import SpecialistTraining, train_specialist

FAST = TrainingConfig(max_epochs=40, patience=6)


@pytest.fixture(scope="module")
def regime(
    market: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> RegimeRuntime:
    fit = fit_regime_detector(market, out_dir=tmp_path_factory.mktemp("regime"), n_restarts=1)
    return RegimeRuntime(fit.params)


@pytest.fixture(scope="module")
def datasets(market: dict[str, pd.DataFrame], regime: RegimeRuntime) -> dict[str, Dataset]:
    return build_datasets(market, regime)


@pytest.fixture(scope="module")
def universal(
    datasets: dict[str, Dataset], tmp_path_factory: pytest.TempPathFactory
) -> SpecialistTraining:
    return train_specialist(
        "universal", datasets, tmp_path_factory.mktemp("universal"), training=FAST
    )


def test_action_labels_from_forward_returns() -> None:
    close = np.array([100.0, 102.0, 101.0, 99.0, 99.5, 103.0])
    bars = pd.DataFrame({"close": close}, index=pd.date_range("2020-01-01", periods=6))
    labels = make_action_labels(bars, horizon=2, threshold=0.014)
    assert list(labels.index) == list(bars.index[:4])  # the last 2 bars have no forward window
    # forward 2-bar log returns: +0.98 %, −2.9 %, −1.5 %, +4.0 %
    assert labels.tolist() == [HOLD, SELL, SELL, BUY]
    assert ACTIONS == ("HOLD", "BUY", "SELL")


def test_datasets_respect_splits(datasets: dict[str, Dataset]) -> None:
    train, validation = datasets["train"], datasets["validation"]
    horizon = 5
    assert pd.Timestamp(train.dates.max()) < pd.Timestamp(DEMO_SPLITS.train_end)
    # the last labelled training bar is `horizon` bars before the split end (no peeking)
    assert pd.Timestamp(train.dates.max()) == pd.Timestamp("2012-12-21")
    assert pd.Timestamp(validation.dates.min()) == pd.Timestamp("2013-01-02")
    assert pd.Timestamp(validation.dates.max()) <= pd.Timestamp("2014-12-31") - pd.Timedelta(
        days=horizon
    )
    assert train.features.shape[1] == len(FEATURE_NAMES)
    assert set(np.unique(train.regimes)) == {"bull", "bear", "sideways"}
    assert np.isfinite(train.features).all() and np.isfinite(validation.next_returns).all()


def test_universal_specialist_learns(universal: SpecialistTraining) -> None:
    """On real data the policy beats the constant training-prior baseline on validation."""
    m = universal.metrics
    # seeds 0-4 give accuracy 0.48-0.52 vs 0.35, log-loss 0.99-1.01 vs 1.10, F1 ≥ 0.26 vs 0.17
    assert m["val_accuracy"] > m["val_baseline_accuracy"] + 0.08
    assert m["val_log_loss"] < m["val_baseline_log_loss"] - 0.05
    assert m["val_macro_f1"] > m["val_baseline_macro_f1"] + 0.05
    assert m["best_epoch"] >= 1 and np.isfinite(m["val_sharpe"])
    assert universal.validation_scope == "regime" and universal.early_stopping == "validation"


def test_regime_specialist_warm_starts_and_early_stops_on_its_regime(
    datasets: dict[str, Dataset], universal: SpecialistTraining, tmp_path: Path
) -> None:
    bear = train_specialist("bear", datasets, tmp_path, training=FAST, init=universal.network)
    # 2013–14 has no bear days: early stopping uses the last 20 % of bear training rows
    assert bear.early_stopping == "train_tail" and bear.validation_scope == "all"
    assert bear.metrics["train_rows"] < 0.85 * (datasets["train"].regimes == "bear").sum()
    assert bear.metrics["val_log_loss"] < bear.metrics["val_baseline_log_loss"]


def test_training_is_deterministic(datasets: dict[str, Dataset], tmp_path: Path) -> None:
    config = TrainingConfig(max_epochs=2, patience=2, seed=7)
    first = train_specialist("sideways", datasets, tmp_path / "a", training=config)
    second = train_specialist("sideways", datasets, tmp_path / "b", training=config)
    assert (tmp_path / "a" / WEIGHTS_FILE).read_bytes() == (
        tmp_path / "b" / WEIGHTS_FILE
    ).read_bytes()
    assert first.metrics == second.metrics


def test_runtime_contract(universal: SpecialistTraining, market: dict[str, pd.DataFrame]) -> None:
    runtime = SpecialistRuntime.load(universal.artifact_dir, {"role": "universal"})
    assert isinstance(runtime, FamilyRuntime) and runtime.family is Family.SPECIALIST
    assert sorted(p.name for p in universal.artifact_dir.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    features = compute_features(market["SPX"]).iloc[-64:]
    probs = runtime.probabilities(features.to_numpy())
    assert probs.shape == (64, 3) and ((probs >= 0) & (probs <= 1)).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    single = runtime.probabilities(latest_features(market["SPX"]))
    np.testing.assert_allclose(single[0], probs[-1], rtol=1e-6)
    frame = features[list(reversed(FEATURE_NAMES))].assign(extra=1.0)  # named, any order
    output = runtime.predict(frame)
    assert list(output.columns) == list(ACTIONS)
    np.testing.assert_allclose(output.to_numpy(), probs, rtol=1e-6)
    assert SpecialistRuntime.check_output(frame, output) == []
    assert SpecialistRuntime.check_output(frame, output * 2.0)


def test_runtime_rejects_bad_input(universal: SpecialistTraining) -> None:
    runtime = SpecialistRuntime.load(universal.artifact_dir, {})
    with pytest.raises(SpecialistError, match="lacks feature column"):
        runtime.predict(pd.DataFrame({"ret_1": [0.0]}))
    with pytest.raises(SpecialistError, match=r"shape \[batch, 19\]"):
        runtime.probabilities(np.zeros((2, 5)))
    with pytest.raises(SpecialistError, match="NaN"):
        runtime.probabilities(np.full((1, len(FEATURE_NAMES)), np.nan))
    with pytest.raises(SpecialistError, match="not 'bull'"):
        SpecialistRuntime.load(universal.artifact_dir, {"role": "bull"})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runtime_on_cuda_matches_cpu(universal: SpecialistTraining) -> None:
    cpu = SpecialistRuntime.load(universal.artifact_dir, {})
    gpu = SpecialistRuntime.load(universal.artifact_dir, {}, device="cuda")
    batch = np.random.default_rng(0).normal(size=(256, len(FEATURE_NAMES))) * 0.02
    np.testing.assert_allclose(gpu.probabilities(batch), cpu.probabilities(batch), atol=1e-5)


def test_demo_specialists_register_and_load_back(
    embedded_registry: Settings,
    market: dict[str, pd.DataFrame],
    regime: RegimeRuntime,
    tmp_path: Path,
) -> None:
    versions = train_demo_specialists(
        market, regime, tmp_path, training=TrainingConfig(max_epochs=8, patience=3)
    )
    assert [v.name for v in versions] == [f"specialist-{role}" for role in SPECIALIST_ROLES]
    frame = compute_features(market["NASDAQ"]).iloc[-32:].reset_index(drop=True)
    client = mlflow.MlflowClient()
    for version in versions:
        role = version.name.removeprefix("specialist-")
        via_pyfunc = mlflow.pyfunc.load_model(version.model_uri).predict(frame)
        local = Path(mlflow.artifacts.download_artifacts(version.model_uri))
        runtime = SpecialistRuntime.load(local / "artifacts" / version.name, {"role": role})
        via_runtime = runtime.predict(frame)
        in_memory = SpecialistRuntime.load(tmp_path / version.name, {}).predict(frame)
        assert list(via_pyfunc.columns) == list(ACTIONS)
        np.testing.assert_array_equal(via_pyfunc.to_numpy(), via_runtime.to_numpy())
        np.testing.assert_array_equal(via_runtime.to_numpy(), in_memory.to_numpy())
        tags = client.get_model_version(version.name, version.version).tags
        assert tags["role"] == role and tags["family"] == "specialist"
        assert tags["feature_spec_version"] == runtime.config.feature_spec.version
        metrics = client.get_run(version.run_id).data.metrics
        assert {"val_accuracy", "val_macro_f1", "val_log_loss", "val_sharpe"} <= set(metrics)
