"""ModelManager's parts that need no server: the directory fingerprint, the operator's roots,
ONNX conversion checked against XGBoost, model_manager's Redis format, its symbol rules and
its settings (the service itself: tests/services/test_model_manager.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from bentos.model_manager.compat import (
    DuplicateSymbolError,
    SymbolNotFoundError,
    check_unique_symbols,
    select_record,
    snapshot_of,
    unique_record,
)
from bentos.model_manager.onnx import OnnxConversionError, check, convert
from bentos.model_manager.publisher import redact, threshold_values
from bentos.model_manager.roots import OutsideRootsError, require_under_roots
from bentos.model_manager.settings import SEED_VENUES, ModelManagerSettings
from registry.artifact_scan import fingerprint, scan_directory
from tests.services.model_manager_world import train as train_booster
from tests.services.model_manager_world import write_group
from training_hooks.venue_quantiles.runtime import VenueTable

ROWS = np.random.default_rng(5).normal(size=(16, 4)).astype(np.float32)


def test_fingerprint_follows_artifact_files_only(tmp_path: Path) -> None:
    assert fingerprint(tmp_path / "nope") == "missing"
    write_group(tmp_path, "BTCUSDT_ret_1m", train_booster(1))
    first = fingerprint(tmp_path)
    (tmp_path / "notes.txt").write_text("not an artifact")
    assert fingerprint(tmp_path) == first
    model = tmp_path / "BTCUSDT_ret_1m_model.json"
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    touched = fingerprint(tmp_path)
    assert touched != first
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ETHUSDT_ret_1m_factors.txt").write_text("a\n")
    assert fingerprint(tmp_path) not in (first, touched)


def test_only_paths_under_the_roots_are_read(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "models").mkdir(parents=True)
    outside.mkdir()
    (root / "link").symlink_to(outside)
    assert require_under_roots(str(root / "models"), [root], "root_path") == root / "models"
    for path in (outside, root / "link", root / ".." / "outside"):
        with pytest.raises(OutsideRootsError, match="outside TRADESERVE_MODEL_ROOTS"):
            require_under_roots(str(path), [root], "root_path")
    with pytest.raises(OutsideRootsError, match="until the operator sets TRADESERVE_MODEL_ROOTS"):
        require_under_roots(str(root / "models"), [], "root_path")
    assert OutsideRootsError.http_status == 403


@pytest.mark.parametrize("objective", ["reg:squarederror", "binary:logistic", "multi:softprob"])
def test_onnx_conversion_predicts_like_xgboost(objective: str) -> None:
    import onnxruntime

    booster = train_booster(3, objective) if objective != "multi:softprob" else _multiclass()
    session = onnxruntime.InferenceSession(convert(booster), providers=["CPUExecutionProvider"])
    got = np.stack([session.run(None, {"input": row[None, :]})[-1].ravel() for row in ROWS])
    expected = booster.inplace_predict(ROWS)
    if objective == "binary:logistic":
        got = got[:, 1]
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-5, atol=1e-5)


def _multiclass() -> xgb.Booster:
    rng = np.random.default_rng(4)
    data = rng.normal(size=(300, 4))
    labels = np.digitize(data[:, 0], [-0.5, 0.5])
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 1}
    return xgb.train(params, xgb.DMatrix(data, label=labels), 10)


def test_an_onnx_model_that_disagrees_is_refused() -> None:
    with pytest.raises(OnnxConversionError, match="differs from the booster"):
        check(convert(train_booster(1)), train_booster(2))


def test_redis_values_are_model_managers_json() -> None:
    table = VenueTable.model_validate(
        {
            "venue": "binance-futures",
            "symbols": {
                "BTCUSDT": {"medium_notional_threshold": 1e4, "large_notional_threshold": 5e4}
            },
        }
    )
    assert threshold_values(table) == {
        "binance-futures:BTCUSDT:amount-threshold": '{"symbol": "BTCUSDT", '
        '"medium_notional_threshold": 10000.0, "large_notional_threshold": 50000.0}'
    }
    assert redact("redis://user:secret@redis:6379/0") == "redis://user:***@redis:6379/0"
    assert redact("redis://localhost:6379/0") == "redis://localhost:6379/0"


def test_one_group_per_symbol(tmp_path: Path) -> None:
    write_group(tmp_path, "BTCUSDT_ret_1m", train_booster(1))
    write_group(tmp_path, "BTCUSDT_ret_5m", train_booster(2))
    write_group(tmp_path, "ETHUSDT_ret_1m", train_booster(3))
    snapshot = snapshot_of("dup", scan_directory(tmp_path, trusted_dirs=[]))
    with pytest.raises(DuplicateSymbolError, match="BTCUSDT: BTCUSDT_ret_1m, BTCUSDT_ret_5m"):
        check_unique_symbols(snapshot)
    with pytest.raises(SymbolNotFoundError, match="multiple groups"):
        unique_record(snapshot, "btcusdt")
    assert unique_record(snapshot, " ethusdt ").group_key == "ETHUSDT_ret_1m"
    assert select_record(snapshot, "BTCUSDT", "BTCUSDT_ret_1m").group_key == "BTCUSDT_ret_1m"
    with pytest.raises(SymbolNotFoundError, match="'SOLUSDT' not found"):
        select_record(snapshot, "SOLUSDT", None)


def test_settings_read_model_managers_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "MODEL_MANAGER_WATCH_ENABLED",
        "MODEL_MANAGER_WATCH_INTERVAL",
        "MODEL_MANAGER_WATCH_DEBOUNCE",
        "TRADESERVE_MODEL_ROOTS",
        "TRADESERVE_REDIS_URL",
        "TRADESERVE_MODEL_MANAGER_VENUES",
    ):
        monkeypatch.delenv(name, raising=False)
    defaults = ModelManagerSettings()
    assert (defaults.watch_enabled, defaults.watch_interval_s, defaults.watch_debounce_s) == (
        True,
        5.0,
        2.0,
    )
    assert defaults.redis_url == "redis://localhost:6379/0"
    assert defaults.venues == list(SEED_VENUES) and "binance-futures" in SEED_VENUES
    assert len(SEED_VENUES) == 10 and defaults.model_roots == []
    monkeypatch.setenv("MODEL_MANAGER_WATCH_ENABLED", "0")
    monkeypatch.setenv("MODEL_MANAGER_WATCH_INTERVAL", "1")
    monkeypatch.setenv("TRADESERVE_MODEL_ROOTS", f"/data/a{os.pathsep}/data/b")
    monkeypatch.setenv("TRADESERVE_MODEL_MANAGER_VENUES", "us-equities, binance-futures")
    configured = ModelManagerSettings()
    assert (configured.watch_enabled, configured.watch_interval_s) == (False, 1.0)
    assert configured.model_roots == [Path("/data/a"), Path("/data/b")]
    assert configured.venues == ["us-equities", "binance-futures"]
