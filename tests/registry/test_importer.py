"""Importing model_manager artifact directories as factor models."""

from __future__ import annotations

import hashlib
import logging
import pickle
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from registry import store
from registry.artifact_scan import ArtifactImportError, parse_group, scan_groups
from registry.importer import import_artifact_directory
from registry.settings import Settings
from registry.trust import UntrustedPickleError
from training_hooks.factor.runtime import FactorRuntime

FACTORS = ["ofi_10", "spread_bp", "depth_imb", "ret_30s"]


def _booster(seed: int, rounds: int = 20) -> xgb.Booster:
    """A real booster trained without feature names, as model_manager's often are."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(300, len(FACTORS)))
    target = data[:, 0] - 0.5 * data[:, 2] + rng.normal(scale=0.1, size=300)
    params = {"max_depth": 3, "eta": 0.3, "nthread": 1, "seed": seed}
    return xgb.train(params, xgb.DMatrix(data, label=target), rounds)


def _write_group(root: Path, group: str, booster: xgb.Booster, factors: list[str]) -> Path:
    """model_manager's files for one group: model JSON, factor list, IC table."""
    root.mkdir(parents=True, exist_ok=True)
    model_json = root / f"{group}_model.json"
    booster.save_model(model_json)
    (root / f"{group}_factors.txt").write_text("\n".join(factors) + "\n")
    symbol, _, return_name = group.partition("_")
    pd.DataFrame(
        {
            "symbol": symbol,
            "factor_name": factors,
            "return_name": return_name,
            "Kendall_tau": np.linspace(0.1, -0.05, len(factors)),
        }
    ).to_csv(root / f"{group}_ic.csv", index=False)
    return model_json


def _runtime(uri: str) -> FactorRuntime:
    return FactorRuntime.load(Path(mlflow.artifacts.download_artifacts(uri)), {})


def test_import_registers_groups_and_is_idempotent(
    embedded_registry: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "artifacts"
    boosters = {"BTCUSDT_mid_chg_1m": _booster(1), "ETHUSDT_mid_chg_1m": _booster(2)}
    paths = {
        group: _write_group(root / group[:3], group, b, FACTORS) for group, b in boosters.items()
    }
    (root / "BTC" / "BTCUSDT_mid_chg_1m_info.pkl").write_bytes(pickle.dumps({"train_samples": 9}))

    with caplog.at_level(logging.WARNING, logger="registry.importer"):
        versions = import_artifact_directory(root, trusted_dirs=[])
    assert [v.name for v in versions] == ["factor-BTCUSDT_mid_chg_1m", "factor-ETHUSDT_mid_chg_1m"]
    assert "BTCUSDT_mid_chg_1m_info.pkl skipped (not in a trusted directory)" in caplog.text

    client = store.client()
    rows = np.random.default_rng(9).normal(size=(16, len(FACTORS)))
    for version, (group, booster) in zip(versions, boosters.items(), strict=True):
        tags = client.get_model_version(version.name, version.version).tags
        assert tags["source_sha256"] == hashlib.sha256(paths[group].read_bytes()).hexdigest()
        assert tags["symbol"] == group[:7] and tags["return_name"] == "mid_chg_1m"
        assert tags["feature_dim"] == "4" and tags["data_source"] == f"model_manager:{root}"
        runtime = _runtime(version.model_uri)
        assert runtime.factors == tuple(FACTORS)
        expected = booster.inplace_predict(rows)
        np.testing.assert_array_equal(runtime.predict_rows(rows), expected)
        pyfunc = mlflow.pyfunc.load_model(version.model_uri)
        frame = pd.DataFrame(rows, columns=FACTORS)[FACTORS[::-1]]
        np.testing.assert_array_equal(np.asarray(pyfunc.predict(frame)).ravel(), expected)
        payload = runtime.payload()
        assert payload.dim_factors[0].factor_name == "ofi_10"
        assert payload.dim_factors[0].kendall_tau == pytest.approx(0.1)

    assert import_artifact_directory(root, trusted_dirs=[]) == []

    _booster(3).save_model(paths["ETHUSDT_mid_chg_1m"])  # retrained: only this group changes
    (changed,) = import_artifact_directory(root, trusted_dirs=[])
    assert (changed.name, changed.version) == ("factor-ETHUSDT_mid_chg_1m", "2")


def test_pickles_need_a_trusted_directory(embedded_registry: Settings, tmp_path: Path) -> None:
    root = tmp_path / "pkl_only"
    root.mkdir()
    booster = _booster(4)
    (root / "SOLUSDT_mid_chg_1m_model.pkl").write_bytes(pickle.dumps(booster))
    (root / "SOLUSDT_mid_chg_1m_factors.txt").write_text("\n".join(FACTORS))
    ic_df = pd.DataFrame({"symbol": "SOLUSDT", "factor_name": FACTORS, "Kendall_tau": 0.02})
    info = {
        "symbol": "SOLUSDT",
        "return_name": "mid_chg_1m",
        "train_window": (1_700_000_000, 1_710_000_000),
        "train_start_date": pd.Timestamp("2023-11-14"),
        "train_end_date": pd.Timestamp("2024-03-09"),
        "train_samples": 123_456,
        "train_time": 42.5,
        "original_factors_count": 80,
        "final_factors_count": 4,
        "selected_factors": FACTORS,
        "ic_df": ic_df,
    }
    (root / "SOLUSDT_mid_chg_1m_info.pkl").write_bytes(pickle.dumps(info))

    with pytest.raises(UntrustedPickleError, match=r"SOLUSDT_mid_chg_1m_model\.pkl"):
        import_artifact_directory(root, trusted_dirs=[tmp_path / "elsewhere"])
    assert store.client().search_registered_models() == []

    (version,) = import_artifact_directory(root, trusted_dirs=[tmp_path])
    runtime = _runtime(version.model_uri)
    rows = np.random.default_rng(5).normal(size=(8, len(FACTORS)))
    np.testing.assert_array_equal(runtime.predict_rows(rows), booster.inplace_predict(rows))
    metadata = runtime.payload().metadata
    assert (metadata.train_samples, metadata.train_time_sec) == (123_456, 42.5)
    assert metadata.train_window_start_ts == 1_700_000_000
    assert metadata.train_start_date == "2023-11-14T00:00:00"
    assert runtime.metadata.training_info.original_factors_count == 80


def test_factor_count_must_cover_the_model(tmp_path: Path) -> None:
    longer = tmp_path / "longer"
    _write_group(longer, "BTCUSDT_ret_5m", _booster(6), [*FACTORS, "unused_factor"])
    parsed = parse_group("BTCUSDT_ret_5m", scan_groups(longer)["BTCUSDT_ret_5m"], [])
    assert parsed.warnings == ["factors count 5 differs from feature_dim 4"]
    assert parsed.factors == FACTORS  # dims 0..3, as model_manager's dim_factors

    shorter = tmp_path / "shorter"
    _write_group(shorter, "ETHUSDT_ret_5m", _booster(7), FACTORS[:3])
    with pytest.raises(ArtifactImportError, match="reads 4 features but only 3 factors"):
        import_artifact_directory(shorter, trusted_dirs=[])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ArtifactImportError, match="no model_manager artifacts"):
        import_artifact_directory(empty, trusted_dirs=[])
