"""Factor family: logging with the xgboost flavor, loading back, alignment, payload, demo."""

from __future__ import annotations

import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from registry import store
from registry.artifact_scan import parse_group, scan_groups
from registry.importer import import_artifact_directory
from registry.loading import load_version
from registry.resolve import get_version
from registry.settings import Settings
from training_hooks.factor.demo import train_demo_factor_models
from training_hooks.factor.log import ic_table_for, log_factor, model_json_sha256
from training_hooks.factor.runtime import (
    FactorInputError,
    FactorMismatchError,
    FactorModelError,
    FactorRuntime,
    named_booster,
)
from training_hooks.factor.schemas import FactorMetadata, FactorTrainingInfo
from training_hooks.factor.train import demo_dataset
from training_hooks.features import FEATURE_NAMES
from training_hooks.market_data import load_demo_market_data
from training_hooks.registration import Lineage

FACTORS = ["mom_5", "vol_20", "rsi_14", "gap", "range_pct"]
INFO = FactorTrainingInfo(symbol="TEST", return_name="ret_1d", train_samples=400)


def _data(rows: int = 400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(rows, len(FACTORS))), columns=FACTORS)
    target = 0.5 * frame["mom_5"] - 0.3 * frame["gap"] + rng.normal(scale=0.1, size=rows)
    return frame, target.to_numpy()


def _booster(objective: str = "reg:squarederror") -> xgb.Booster:
    frame, target = _data()
    label = (target > 0).astype(int) if objective.startswith("binary") else target
    params = {"objective": objective, "max_depth": 3, "eta": 0.2, "nthread": 1, "seed": 0}
    return xgb.train(params, xgb.DMatrix(frame, label=label), 30)


def _reference(booster: xgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    return booster.predict(xgb.DMatrix(frame[FACTORS]))


def _saved_runtime(tmp_path: Path, booster: xgb.Booster) -> FactorRuntime:
    """Save like log_factor does, without a registry, and load the runtime."""
    metadata = FactorMetadata(
        model_name="factor-TEST_ret_1d",
        group_key="TEST_ret_1d",
        objective=json.loads(booster.save_config())["learner"]["objective"]["name"],
        factors=FACTORS,
        training_info=INFO,
    )
    path = tmp_path / "model"
    mlflow.xgboost.save_model(
        booster,
        path,
        model_format="json",
        metadata=metadata.model_dump(mode="json"),
        pip_requirements=["xgboost-cpu"],  # skips requirement inference (a subprocess)
    )
    return FactorRuntime.load(path, {})


def test_logged_model_loads_back_everywhere_and_predicts_identically(
    embedded_registry: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    booster = _booster()
    frame, target = _data(seed=1)
    version = log_factor(
        "factor-TEST_ret_1d",
        booster,
        factors=FACTORS,
        ic_table=ic_table_for(frame, target),
        training_info=INFO,
        lineage=Lineage(data_source="synthetic", data_window_end=date(2012, 12, 31)),
        metrics={"val_rmse": 0.1},
        input_example=frame.head(3),
    )
    assert version.model_uri == "models:/factor-TEST_ret_1d/1"
    expected = _reference(booster, frame)
    shuffled = frame[FACTORS[::-1]]

    pyfunc = mlflow.pyfunc.load_model(version.model_uri, dst_path=str(tmp_path))
    np.testing.assert_array_equal(np.asarray(pyfunc.predict(shuffled)).ravel(), expected)

    # As services load it: from a temporary download, removed once the model is in memory.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    loaded = load_version(get_version(version.name, version.version))
    assert list(scratch.iterdir()) == []  # the temporary download is gone
    runtime = loaded.runtime
    payload = runtime.payload()  # needs none of the removed files
    published = xgb.Booster(model_file=bytearray(payload.model_json.encode()))
    assert published.num_features() == len(FACTORS)
    source = payload.metadata.source_root_path
    assert source.startswith("file://") and source.endswith("/artifacts")
    assert payload.metadata.model_json_path.startswith(source + "/")
    assert runtime.factors == tuple(FACTORS)
    np.testing.assert_array_equal(runtime.predict(shuffled)["prediction"].to_numpy(), expected)
    np.testing.assert_array_equal(runtime.predict_rows(frame[FACTORS].to_numpy()), expected)
    columns = {name: frame[name].tolist() for name in reversed(FACTORS)}
    np.testing.assert_array_equal(runtime.predict_rows(runtime.align_columns(columns)), expected)
    assert runtime.check_output(frame, runtime.predict(frame)) == []

    client = store.client()
    tags = client.get_model_version(version.name, version.version).tags
    assert tags["symbol"] == "TEST" and tags["return_name"] == "ret_1d"
    assert tags["feature_dim"] == str(len(FACTORS))
    assert tags["family"] == "factor" and tags["validation_status"] == "pending"
    assert tags["source_sha256"] == model_json_sha256(runtime.booster)
    artifacts = {a.path for a in client.list_artifacts(version.run_id, "factor")}
    assert artifacts == {
        f"factor/TEST_ret_1d_{s}" for s in ("model.json", "factors.txt", "ic.csv", "info.json")
    }
    assert client.get_run(version.run_id).data.metrics["val_rmse"] == 0.1
    assert [entry.factor_name for entry in runtime.metadata.ic_table] == FACTORS


def test_payload_model_json_predicts_the_same(tmp_path: Path) -> None:
    booster = _booster()
    runtime = _saved_runtime(tmp_path, booster)
    payload = runtime.payload()
    rebuilt = xgb.Booster()
    rebuilt.load_model(bytearray(payload.model_json.encode()))
    frame, _ = _data(seed=2)
    np.testing.assert_array_equal(
        rebuilt.predict(xgb.DMatrix(frame[FACTORS])), _reference(booster, frame)
    )
    assert [(d.dim, d.factor_name) for d in payload.dim_factors] == list(enumerate(FACTORS))
    assert payload.metadata.feature_dim == len(FACTORS)
    assert payload.metadata.symbol == "TEST" and payload.metadata.train_samples == 400
    assert set(json.loads(payload.model_dump_json())) == {"model_json", "metadata", "dim_factors"}


def test_classifier_adds_class_probabilities(tmp_path: Path) -> None:
    booster = _booster("binary:logistic")
    runtime = _saved_runtime(tmp_path, booster)
    frame, _ = _data(seed=3)
    output = runtime.predict(frame)
    expected = _reference(booster, frame)
    np.testing.assert_allclose(output["proba_1"], expected)
    np.testing.assert_allclose(output["proba_0"], 1.0 - expected)
    assert (output["prediction"] == (expected > 0.5).astype(int)).all()


def test_misnamed_inputs_are_errors_that_name_the_factors(tmp_path: Path) -> None:
    runtime = _saved_runtime(tmp_path, _booster())
    features = {name: [0.1, 0.2] for name in FACTORS if name != "gap"} | {"spread": [1, 2]}
    with pytest.raises(
        FactorMismatchError, match="missing factors: gap; unexpected factors: spread"
    ):
        runtime.align_columns(features)
    frame, _ = _data(rows=2)
    with pytest.raises(FactorMismatchError, match="missing factors: rsi_14"):
        runtime.predict(frame.drop(columns="rsi_14"))
    with pytest.raises(FactorInputError, match="same length"):
        runtime.align_columns({name: [0.1] * (2 + (name == "gap")) for name in FACTORS})
    with pytest.raises(FactorInputError, match=r"shape \(N, 5\)"):
        runtime.predict_rows(np.zeros((2, 4)))
    with pytest.raises(FactorModelError, match="6 factors"):
        named_booster(_booster(), [*FACTORS, "extra"])


def test_predict_rows_is_thread_safe(tmp_path: Path) -> None:
    runtime = _saved_runtime(tmp_path, _booster())
    frame, _ = _data(rows=64, seed=4)
    rows = frame[FACTORS].to_numpy(dtype=np.float32)
    expected = runtime.predict_rows(rows)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda i: runtime.predict_rows(rows[i : i + 1]), range(64)))
    np.testing.assert_array_equal(np.concatenate(results), expected)


def test_demo_dataset_never_reaches_past_validation() -> None:
    market = load_demo_market_data()
    data = demo_dataset(market["SPX"])
    train, valid = data["train"], data["validation"]
    assert data["test"].empty
    # Rows are split by the day their target return is realized (the next session).
    assert train.index.max() < pd.Timestamp("2012-12-31") == valid.index.min()
    assert valid.index.max() == pd.Timestamp("2014-12-30")
    log_close = np.log(market["SPX"]["close"])
    day = valid.index[10]
    following = market["SPX"].index[market["SPX"].index.get_loc(day) + 1]
    assert valid.loc[day, "target"] == pytest.approx(log_close[following] - log_close[day])


def test_demo_trains_registers_and_exports(embedded_registry: Settings, tmp_path: Path) -> None:
    market = load_demo_market_data()
    versions = train_demo_factor_models(market, tmp_path / "export")
    assert [v.name for v in versions] == ["factor-SPX_ret_1d", "factor-NASDAQ_ret_1d"]
    client = store.client()
    for version in versions:
        run = client.get_run(version.run_id)
        assert {"val_rmse", "val_ic", "val_hit_rate"} <= set(run.data.metrics)
        assert 0.3 < run.data.metrics["val_hit_rate"] < 0.7
        tags = client.get_model_version(version.name, version.version).tags
        assert tags["data_window_end"] <= "2014-12-31"
        runtime = FactorRuntime.load(
            Path(mlflow.artifacts.download_artifacts(version.model_uri)), {}
        )
        info = runtime.metadata.training_info
        assert set(runtime.factors) <= set(FEATURE_NAMES)
        assert info.original_factors_count == len(FEATURE_NAMES)
        assert info.final_factors_count == len(runtime.factors) == 10
        assert info.train_end_date is not None and info.train_end_date <= "2012-12-31"
    # The export is model_manager's layout of the same models: importing it adds nothing,
    # and its pickle-free _info.json carries the same training info.
    assert import_artifact_directory(tmp_path / "export") == []
    exported = parse_group("NASDAQ_ret_1d", scan_groups(tmp_path / "export")["NASDAQ_ret_1d"])
    assert exported.training_info == info and exported.factors == list(runtime.factors)


def test_models_without_factor_metadata_are_refused(tmp_path: Path) -> None:
    mlflow.xgboost.save_model(_booster(), tmp_path / "plain", pip_requirements=["xgboost-cpu"])
    with pytest.raises(FactorModelError, match="no tradeserve factor metadata"):
        FactorRuntime.load(tmp_path / "plain", {})
