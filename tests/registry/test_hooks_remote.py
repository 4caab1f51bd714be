"""Every training hook against the real ``mlflow server`` (PostgreSQL rows, S3 artifacts).

For each family the hook logs a version to the server; the version then loads back through
``mlflow.pyfunc.load_model`` and through ``registry.loading.load_version`` (what the gate
and the services use) and must predict exactly what the in-memory model predicts. The bytes
must be in the moto bucket behind the server, the version rows in PostgreSQL, and the
version must pass the promotion gate there.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import numpy as np
import pandas as pd
import psycopg2
import pytest
import torch
import xgboost as xgb

from registry import store
from registry.loading import load_version
from registry.promotion import promote
from registry.resolve import get_version
from registry.settings import Settings
from tests.registry.conftest import ServerStack
from tests.specialist_versions import log_saved_specialist
from training_hooks.chronos.builders import build_random_chronos
from training_hooks.chronos.log import log_chronos
from training_hooks.chronos.runtime import ChronosRuntime, quantile_key
from training_hooks.chronos.validation import ChronosKind
from training_hooks.factor.log import ic_table_for, log_factor
from training_hooks.factor.schemas import FactorTrainingInfo
from training_hooks.features import compute_features
from training_hooks.market_data import load_demo_market_data
from training_hooks.regime.log import log_regime, regime_input_example
from training_hooks.regime.runtime import REGIME_LABELS, RegimeRuntime
from training_hooks.regime.train import RegimeFit, fit_regime_detector
from training_hooks.registration import Lineage, RegisteredVersion
from training_hooks.specialist.runtime import (
    PolicyNetwork,
    SpecialistConfig,
    SpecialistRuntime,
    save_specialist,
)
from training_hooks.venue_quantiles.log import log_venue_quantiles
from training_hooks.venue_quantiles.runtime import (
    SymbolThresholds,
    VenueQuantilesRuntime,
    VenueTable,
)

pytestmark = [pytest.mark.server, pytest.mark.usefixtures("single_torch_thread")]

CHRONOS_NAMES: dict[ChronosKind, str] = {
    "t5": "chronos-t5-tiny",
    "bolt": "chronos-bolt-tiny",
    "chronos2": "chronos-2",
}
FACTORS = ["mom_5", "vol_20", "rsi_14", "gap"]
LINEAGE = Lineage(data_source="synthetic")


@pytest.fixture(scope="module")
def market() -> dict[str, pd.DataFrame]:
    return load_demo_market_data()


# ------------------------------------------------------------------------------ checks


def as_numbers(column: pd.Series) -> np.ndarray:
    """A column as an array: list cells (forecast steps) stacked, dates as datetime64."""
    first = column.iloc[0]
    if isinstance(first, list | tuple | np.ndarray):
        return np.stack([np.asarray(cell, dtype=np.float64) for cell in column])
    if column.name == "date":
        return pd.to_datetime(column).to_numpy()
    return column.to_numpy()


def assert_identical(actual: Any, expected: pd.DataFrame) -> None:
    """Same columns, same rows, bit-identical numbers."""
    actual = actual if isinstance(actual, pd.DataFrame) else pd.DataFrame(actual)
    assert list(actual.columns) == list(expected.columns)
    assert len(actual) == len(expected)
    for name in expected.columns:
        np.testing.assert_array_equal(
            as_numbers(actual[name]), as_numbers(expected[name]), err_msg=str(name)
        )


def loaded_everywhere(
    version: RegisteredVersion, frame: pd.DataFrame, params: Mapping[str, Any] | None = None
) -> tuple[Any, pd.DataFrame]:
    """Predictions of the registered version through MLflow's pyfunc and through tradeserve."""
    via_pyfunc = mlflow.pyfunc.load_model(version.model_uri).predict(
        frame, params=dict(params) if params else None
    )
    loaded = load_version(get_version(version.name, version.version))
    assert loaded.resolved.family == version.family
    return via_pyfunc, loaded.runtime.predict(frame, params)


def assert_stored_on_the_server(
    stack: ServerStack, version: RegisteredVersion, weights: Path | str
) -> None:
    """Registry rows in PostgreSQL; the model's files in S3 (a local ``weights`` file byte
    for byte, or just a file of that name)."""
    client = store.client()
    model_version = client.get_model_version(version.name, version.version)
    with (
        contextlib.closing(psycopg2.connect(stack.libpq_url)) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "SELECT v.version, v.source, t.value FROM model_versions v "
            "JOIN model_version_tags t ON t.name = v.name AND t.version = v.version "
            "WHERE v.name = %s AND t.key = 'family'",
            (version.name,),
        )
        rows = cursor.fetchall()
    assert rows == [(int(version.version), model_version.source, version.family.value)]

    location = client.get_logged_model(model_version.source.removeprefix("models:/"))
    parsed = urlparse(location.artifact_location)
    assert parsed.scheme == "mlflow-artifacts", location.artifact_location
    prefix = f"{stack.artifact_prefix}/{parsed.path.strip('/')}/"
    keys = stack.s3.object_keys(prefix)
    assert f"{prefix}MLmodel" in keys, keys
    filename = weights.name if isinstance(weights, Path) else weights
    (key,) = (k for k in keys if k.endswith(f"/{filename}"))
    stored = stack.s3.read(key)
    if isinstance(weights, Path):
        assert stored == weights.read_bytes()
    else:
        assert stored, key


def assert_passes_the_gate(version: RegisteredVersion) -> None:
    result = promote(version.name, version.version, reason="remote hook check")
    assert result.report.passed and result.changed
    champion = store.client().get_model_version_by_alias(version.name, "champion")
    assert str(champion.version) == version.version


# ------------------------------------------------------------------------------ chronos


@pytest.fixture(scope="module")
def chronos_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[ChronosKind, Path]:
    root = tmp_path_factory.mktemp("chronos")
    return {kind: build_random_chronos(kind, "test", root / kind) for kind in CHRONOS_NAMES}


def forecast_request(kind: ChronosKind) -> tuple[pd.DataFrame, dict[str, Any]]:
    rng = np.random.default_rng(0)
    walk = 50.0 + rng.normal(size=70).cumsum()
    walk[[5, 30]] = np.nan  # gaps inside a series
    frame = pd.DataFrame(
        {
            "item_id": ["sine", "walk"],
            "target": [(10.0 + np.sin(np.arange(90) / 3.0)).tolist(), walk.tolist()],
        }
    )
    params: dict[str, Any] = {"prediction_length": 12, "quantile_levels": [0.1, 0.5, 0.9]}
    if kind == "t5":
        params |= {"num_samples": 16, "seed": 7}
    return frame, params


@pytest.mark.parametrize("kind", list(CHRONOS_NAMES))
def test_chronos_round_trip(
    kind: ChronosKind,
    chronos_dirs: dict[ChronosKind, Path],
    remote_registry: Settings,
    mlflow_pg_s3_stack: ServerStack,
) -> None:
    folder = chronos_dirs[kind]
    version = log_chronos(CHRONOS_NAMES[kind], folder, lineage=LINEAGE, untrained=True)
    frame, params = forecast_request(kind)
    expected = ChronosRuntime.load(folder, {}).predict(frame, params)
    assert list(expected.columns) == ["item_id", "mean", *map(quantile_key, [0.1, 0.5, 0.9])]

    via_pyfunc, via_tradeserve = loaded_everywhere(version, frame, params)
    assert_identical(via_pyfunc, expected)
    assert_identical(via_tradeserve, expected)
    assert_stored_on_the_server(mlflow_pg_s3_stack, version, folder / "model.safetensors")
    assert_passes_the_gate(version)


# ------------------------------------------------------------------------------ factor


def test_factor_round_trip(remote_registry: Settings, mlflow_pg_s3_stack: ServerStack) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(300, len(FACTORS))), columns=FACTORS)
    target = 0.5 * frame["mom_5"] - 0.3 * frame["gap"] + rng.normal(scale=0.1, size=300)
    booster = xgb.train(
        {"objective": "reg:squarederror", "max_depth": 3, "eta": 0.2, "nthread": 1, "seed": 0},
        xgb.DMatrix(frame, label=target),
        25,
    )
    version = log_factor(
        "factor-REMOTE_ret_1d",
        booster,
        factors=FACTORS,
        ic_table=ic_table_for(frame, target),
        training_info=FactorTrainingInfo(symbol="REMOTE", return_name="ret_1d", train_samples=300),
        lineage=LINEAGE,
        metrics={"val_rmse": 0.1},
        input_example=frame.head(3),
    )
    request = frame.sample(40, random_state=1)[FACTORS[::-1]]  # any column order
    expected = booster.predict(xgb.DMatrix(request[FACTORS]))

    via_pyfunc, via_tradeserve = loaded_everywhere(version, request)
    np.testing.assert_array_equal(np.asarray(via_pyfunc).ravel(), expected)
    np.testing.assert_array_equal(via_tradeserve["prediction"].to_numpy(), expected)
    assert_stored_on_the_server(mlflow_pg_s3_stack, version, "model.json")  # xgboost JSON
    assert_passes_the_gate(version)


# ------------------------------------------------------------------------------ regime


@pytest.fixture(scope="module")
def regime_fit(
    market: dict[str, pd.DataFrame], tmp_path_factory: pytest.TempPathFactory
) -> RegimeFit:
    out_dir = tmp_path_factory.mktemp("regime") / "regime-detector"
    return fit_regime_detector(market, out_dir=out_dir, n_restarts=1)


def test_regime_round_trip(
    regime_fit: RegimeFit,
    market: dict[str, pd.DataFrame],
    remote_registry: Settings,
    mlflow_pg_s3_stack: ServerStack,
) -> None:
    version = log_regime(regime_fit, market)
    frame = regime_input_example(market["NASDAQ"], n_rows=40)
    expected = RegimeRuntime(regime_fit.params).predict(frame)
    assert list(expected.columns) == ["date", *REGIME_LABELS] and len(expected) == 40

    via_pyfunc, via_tradeserve = loaded_everywhere(version, frame)
    assert_identical(via_pyfunc, expected)
    assert_identical(via_tradeserve, expected)
    (params_file,) = regime_fit.artifact_dir.iterdir()
    assert_stored_on_the_server(mlflow_pg_s3_stack, version, params_file)
    assert_passes_the_gate(version)


# ------------------------------------------------------------------------------ specialist


def test_specialist_round_trip(
    market: dict[str, pd.DataFrame],
    remote_registry: Settings,
    mlflow_pg_s3_stack: ServerStack,
    tmp_path: Path,
) -> None:
    config = SpecialistConfig(role="universal")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        network = PolicyNetwork(config.architecture)
    features = compute_features(market["NASDAQ"])
    network.set_standardization(features.mean().to_numpy(), features.std().to_numpy())
    folder = save_specialist(config, network, tmp_path / "specialist-universal")
    version = log_saved_specialist(
        "universal",
        folder,
        network,
        features.iloc[-5:].reset_index(drop=True),
        data_source="arch.data.nasdaq",
        train_window=(features.index[0].date(), features.index[-1].date()),
    )
    frame = features.iloc[-64:].reset_index(drop=True)
    expected = SpecialistRuntime(config, network).predict(frame)

    via_pyfunc, via_tradeserve = loaded_everywhere(version, frame)
    assert_identical(via_pyfunc, expected)
    assert_identical(via_tradeserve, expected)
    assert_stored_on_the_server(mlflow_pg_s3_stack, version, folder / "model.safetensors")
    assert_passes_the_gate(version)


# ------------------------------------------------------------------------------ venue quantiles


def test_venue_quantiles_round_trip(
    remote_registry: Settings, mlflow_pg_s3_stack: ServerStack, tmp_path: Path
) -> None:
    table = VenueTable(
        venue="binance-futures",
        symbols={
            "BTCUSDT": SymbolThresholds(
                medium_notional_threshold=1e4, large_notional_threshold=5e4
            ),
            "ETHUSDT": SymbolThresholds(
                medium_notional_threshold=5e3, large_notional_threshold=2e4
            ),
        },
    )
    version = log_venue_quantiles("binance-futures", table, lineage=LINEAGE)
    frame = pd.DataFrame({"symbol": ["ETHUSDT", "BTCUSDT", "ETHUSDT"]})
    expected = VenueQuantilesRuntime(table).predict(frame)

    via_pyfunc, via_tradeserve = loaded_everywhere(version, frame)
    assert_identical(via_pyfunc, expected)
    assert_identical(via_tradeserve, expected)
    thresholds = tmp_path / "thresholds.json"
    thresholds.write_text(table.model_dump_json(indent=2), encoding="utf-8")  # as the hook does
    assert_stored_on_the_server(mlflow_pg_s3_stack, version, thresholds)
    assert_passes_the_gate(version)
