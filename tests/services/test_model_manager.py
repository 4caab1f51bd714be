"""ModelManager served by a real ``bentoml serve`` with a real ``redis-server``, on an embedded
registry in a temporary TRADESERVE_HOME, over model_manager-layout directories built here
(``tests/services/model_manager_world.py``).

model_manager's routes with its shapes and status codes; payloads and ONNX files that predict
what the source boosters predict; a file changed in a watched directory served by a live
FactorModels; venue tables in Redis in the seed's format, following promotions and surviving a
Redis outage; paths outside the operator's roots and untrusted pickles refused.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import onnxruntime
import pytest
import xgboost as xgb

from harness.bento import BentoServer, bento_server
from harness.redis import RedisServer, redis_server
from harness.wait import wait_until
from registry import store
from registry.artifact_scan import fingerprint
from registry.promotion import rollback
from registry.settings import get_settings
from tests.conftest import clear_mlflow_uris
from tests.demo_fixtures import TRADESERVE
from tests.services.model_manager_world import (
    BTC,
    ETH,
    FACTORS,
    SOL,
    World,
    build_world,
    seed_values,
    train,
)

PAYLOAD_METADATA = {
    "model_name", "symbol", "return_name", "feature_dim", "train_window_start_ts",
    "train_window_end_ts", "train_start_date", "train_end_date", "train_samples",
    "train_time_sec", "model_json_path", "source_root_path", "scanned_at",
}  # fmt: skip
MODEL_ENTRY = {
    "model_name", "root_path", "created_at", "updated_at", "symbol_count", "group_count",
    "scanned_at", "warnings",
}  # fmt: skip
ROWS = np.random.default_rng(11).normal(size=(32, len(FACTORS))).astype(np.float32)
BINANCE = seed_values({"BTCUSDT": (10000.0, 50000.0), "ETHUSDT": (5000.0, 20000.0)})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("model-manager"))


@pytest.fixture(scope="module")
def redis(world: World) -> Iterator[RedisServer]:
    with redis_server(world.home.parent / "redis") as server:
        yield server


@pytest.fixture(scope="module")
def manager(world: World, redis: RedisServer) -> Iterator[BentoServer]:
    logs = world.home.parent / "model-manager-logs"
    env = world.env(
        logs,
        TRADESERVE_MODEL_ROOTS=str(world.roots),
        TRADESERVE_TRUSTED_PICKLE_DIRS=str(world.trusted),
        TRADESERVE_REDIS_URL=redis.redis_url,
        TRADESERVE_MODEL_MANAGER_REDIS_RESYNC_S="1",
        TRADESERVE_POLL_INTERVAL_S="1",
        MODEL_MANAGER_WATCH_INTERVAL="0.5",
        MODEL_MANAGER_WATCH_DEBOUNCE="0.5",
    )
    with bento_server("bentos.model_manager.service:ModelManager", env, logs / "serve.log") as s:
        yield s


@pytest.fixture(scope="module")
def client(manager: BentoServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=manager.url, timeout=120) as http:
        yield http


def register(client: httpx.Client, name: str, path: Path) -> httpx.Response:
    return client.post("/api/models", json={"model_name": name, "root_path": str(path)})


def put_venue(client: httpx.Client, venue: str, pkl: Path) -> httpx.Response:
    return client.put(f"/api/venues/{venue}/quantiles", json={"pkl_path": str(pkl)})


@pytest.fixture(scope="module")
def registered(client: httpx.Client, world: World) -> dict[str, httpx.Response]:
    """``prod`` and ``live`` registered (auto-promoted) before anything else is served."""
    return {name: register(client, name, world.trusted / name) for name in ("prod", "live")}


@pytest.fixture(scope="module")
def factor_models(world: World, registered: dict) -> Iterator[BentoServer]:
    """FactorModels in live mode on the same registry (it serves what ModelManager promoted)."""
    logs = world.home.parent / "factor-logs"
    env = world.env(
        logs,
        TRADESERVE_POLL_INTERVAL_S="1",
        BENTOML_CONFIG_OPTIONS="services.FactorModels.workers=1",
    )
    with bento_server("bentos.factor.service:FactorModels", env, logs / "serve.log") as server:
        yield server


@pytest.fixture(scope="module")
def binance(client: httpx.Client, world: World) -> dict:
    return ok(put_venue(client, "binance-futures", world.trusted / "binance.pkl"))


@pytest.fixture(scope="module")
def here(world: World) -> Iterator[None]:
    """This test process on the same registry (to read tags and to promote)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        clear_mlflow_uris(monkeypatch)
        monkeypatch.setenv("TRADESERVE_HOME", str(world.home))
        get_settings.cache_clear()
        store.configure()
        yield
    get_settings.cache_clear()


def ok(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def refused(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    for word in words:
        assert word in response.json()["detail"], response.text


def registered_names() -> set[str]:
    return {model.name for model in store.client().search_registered_models()}


# ── directories ──────────────────────────────────────────────────────────────────────


def test_registering_imports_every_group_with_lineage(
    client: httpx.Client, registered: dict, world: World, here: None
) -> None:
    body = ok(registered["prod"])
    assert (body["model_name"], body["root_path"]) == ("prod", str(world.trusted / "prod"))
    assert (body["symbol_count"], body["group_count"], body["auto_promote"]) == (2, 2, True)
    assert body["symbols"] == ["BTCUSDT", "ETHUSDT"]
    assert {(v["name"], v["version"], v["promoted"]) for v in body["versions"]} == {
        (f"factor-{BTC}", "1", True),
        (f"factor-{ETH}", "1", True),
    }
    tags = store.client().get_model_version(f"factor-{BTC}", "1").tags
    assert tags["source_path"] == str(world.trusted / "prod" / f"{BTC}_model.json")
    assert (tags["source_root"], tags["scanned_at"]) == (body["root_path"], body["scanned_at"])
    assert len(tags["source_fingerprint"]) == 64
    (entry,) = [i for i in ok(client.get("/api/models"))["items"] if i["model_name"] == "prod"]
    assert set(entry) >= MODEL_ENTRY and (entry["symbol_count"], entry["group_count"]) == (2, 2)


def test_listing_routes_answer_the_seeds_shapes(client: httpx.Client, registered: dict) -> None:
    assert ok(client.get("/api/health"))["status"] == "ok"
    items = ok(client.get("/api/models/prod/symbols"))["items"]
    assert [(i["symbol"], i["group_key"], i["feature_dim"], i["grpc_ready"]) for i in items] == [
        ("BTCUSDT", BTC, 4, True),
        ("ETHUSDT", ETH, 4, True),
    ]
    assert items[0]["model"] == {"name": f"factor-{BTC}", "version": "1", "alias": "champion"}
    factors = ok(client.get("/api/models/prod/factors"))
    assert factors["factors"] == FACTORS
    assert (factors["factor_count"], factors["symbol_count"], factors["group_count"]) == (4, 2, 2)

    detail = ok(client.get("/api/models/prod/symbols/btcusdt", params={"group_key": BTC}))
    assert (detail["symbol"], detail["return_name"]) == ("BTCUSDT", "mid_chg_1m")
    assert (detail["train_samples"], detail["train_time_sec"]) == (400, 2.5)
    assert detail["dim_factors"][0] == {"dim": 0, "factor_name": "ofi_10", "kendall_tau": 0.12}
    assert detail["ic_rows"][2]["Kendall_tau"] == 0.08
    assert detail["model_meta"]["num_trees"] == 15
    assert set(detail["artifacts"]) == {"model_json", "factors_txt", "ic_csv", "info_pkl"}
    refused(client.get("/api/models/prod/symbols/BTCUSDT", params={"group_key": "x"}), 404, "x")
    refused(client.get("/api/models/prod/symbols/NOPE"), 404, "NOPE")
    for route in ("symbols", "factors", "model/BTCUSDT", "model_onnx/BTCUSDT"):
        refused(client.get(f"/api/models/unknown/{route}"), 404, "model not found: unknown")


def test_refresh_and_delete(client: httpx.Client, registered: dict, world: World, here: None):
    refreshed = ok(client.post("/api/models/prod/refresh"))
    assert (refreshed["versions"], refreshed["group_count"]) == ([], 2)  # nothing changed
    ok(register(client, "extra", world.trusted / "extra"))
    deleted = ok(client.delete("/api/models/extra"))
    assert deleted == {"ok": True, "model_name": "extra", "deleted": True}
    refused(client.get("/api/models/extra/symbols"), 404, "model not found")
    refused(client.delete("/api/models/extra"), 404, "model not found")
    refused(client.post("/api/models/extra/refresh"), 404, "model not found")
    assert store.client().get_model_version("factor-XRPUSDT_ret_5m", "1")  # versions stay


def test_unusable_directories_get_400_and_claimed_groups_409(
    client: httpx.Client, registered: dict, world: World, here: None
) -> None:
    refused(register(client, "dup", world.trusted / "dup"), 400, "DOGEUSDT", "unique")
    refused(register(client, "none", world.trusted / "missing"), 400, "not a directory")
    refused(register(client, "empty", world.trusted / "empty"), 400, "no model_manager artifacts")
    refused(register(client, "conflict", world.trusted / "conflict"), 409, BTC, "'prod'")
    assert client.post("/api/models", json={"model_name": "x"}).status_code == 422
    assert register(client, "", world.trusted / "prod").status_code == 422
    assert not {"factor-DOGEUSDT_ret_1m", "factor-DOGEUSDT_ret_5m"} & registered_names()


def test_paths_outside_the_roots_and_untrusted_pickles_are_refused(
    client: httpx.Client, world: World, here: None
) -> None:
    for path in (world.outside / "models", world.roots / "escape"):  # escape: a symlink out
        refused(register(client, "out", path), 403, "outside TRADESERVE_MODEL_ROOTS")
    untrusted = world.roots / "untrusted"
    refused(register(client, "ltc", untrusted / "pkl"), 403, "not inside a trusted directory")
    outside = put_venue(client, "okex-futures", world.outside / "q.pkl")
    refused(outside, 403, "outside TRADESERVE_MODEL_ROOTS")
    pickle = put_venue(client, "okex-futures", untrusted / "q.pkl")
    refused(pickle, 403, "not inside a trusted directory")
    refused_names = {
        "factor-BNBUSDT_ret_1m",
        "factor-LTCUSDT_ret_1m",
        "venue-quantiles-okex-futures",
    }
    assert not refused_names & registered_names()


# ── payloads ─────────────────────────────────────────────────────────────────────────


def test_payload_is_the_promoted_version_with_the_seeds_fields(
    client: httpx.Client, registered: dict, world: World
) -> None:
    for group, symbol in ((BTC, "BTCUSDT"), (ETH, "ethusdt")):
        body = ok(client.get(f"/api/models/prod/model/{symbol}"))
        assert (body["ok"], body["message"]) == (True, "ok")
        assert set(body["payload"]) == {"model_json", "metadata", "dim_factors"}
        metadata = body["payload"]["metadata"]
        assert set(metadata) == PAYLOAD_METADATA
        assert (metadata["model_name"], metadata["symbol"]) == ("prod", symbol.upper())
        assert (metadata["feature_dim"], metadata["source_root_path"]) == (
            4, str(world.trusted / "prod")
        )  # fmt: skip
        assert body["model"] == {"name": f"factor-{group}", "version": "1", "alias": "champion"}
        assert [d["factor_name"] for d in body["payload"]["dim_factors"]] == FACTORS
        booster = xgb.Booster()
        booster.load_model(bytearray(body["payload"]["model_json"].encode()))
        np.testing.assert_array_equal(
            booster.inplace_predict(ROWS), world.boosters[group].inplace_predict(ROWS)
        )
    btc = ok(client.get("/api/models/prod/model/BTCUSDT"))["payload"]
    window = (btc["metadata"]["train_samples"], btc["metadata"]["train_window_start_ts"])
    assert window == (400, 1_700_000_000)
    assert btc["dim_factors"][2] == {"dim": 2, "factor_name": "depth_imb", "kendall_tau": 0.08}
    refused(client.get("/api/models/prod/model/NOPE"), 404, "NOPE")


def test_large_answers_are_gzip_compressed(client: httpx.Client, registered: dict) -> None:
    payload = client.get("/api/models/prod/model/BTCUSDT", headers={"accept-encoding": "gzip"})
    assert payload.headers["content-encoding"] == "gzip"
    assert int(payload.headers["content-length"]) < len(payload.content)
    health = client.get("/api/health", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in health.headers  # under 1 KB


def onnx_predictions(content: bytes, classifier: bool) -> np.ndarray:
    session = onnxruntime.InferenceSession(content, providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("input", [1, len(FACTORS)])]
    outputs = [session.run(None, {"input": row[None, :]}) for row in ROWS]
    if classifier:  # label, probabilities
        return np.array([out[1][0, 1] for out in outputs])
    return np.array([out[0].ravel()[0] for out in outputs])


def test_onnx_files_predict_like_xgboost(
    client: httpx.Client, registered: dict, world: World, here: None
) -> None:
    for group, symbol, classifier in ((BTC, "BTCUSDT", False), (ETH, "ETHUSDT", True)):
        response = client.get(f"/api/models/prod/model_onnx/{symbol}")
        assert response.status_code == 200, response.text
        digest = hashlib.sha256(response.content).hexdigest()
        assert {k: response.headers[k] for k in ("content-type", "x-model-feature-dim",
                "x-model-name", "x-model-symbol", "x-model-sha256")} == {
            "content-type": "application/octet-stream", "x-model-feature-dim": "4",
            "x-model-name": "prod", "x-model-symbol": symbol, "x-model-sha256": digest,
        }  # fmt: skip
        expected = world.boosters[group].inplace_predict(ROWS)
        got = onnx_predictions(response.content, classifier)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        assert client.get(f"/api/models/prod/model_onnx/{symbol}").content == response.content
        # converted once, kept with the version in the registry
        tags = store.client().get_model_version(f"factor-{group}", "1").tags
        assert tags["onnx_sha256"] == digest


# ── the watcher, a live FactorModels, the CLI ───────────────────────────────────────


def test_a_changed_file_becomes_a_promoted_version_served_live(
    client: httpx.Client, factor_models: BentoServer, world: World, here: None
) -> None:
    name, rows = f"factor-{SOL}", ROWS[:4]

    def predict() -> dict:
        body = {"model": name, "rows": rows.tolist()}
        return ok(httpx.post(f"{factor_models.url}/predict", json=body, timeout=30))

    before = predict()
    assert before["model"]["version"] == "1"
    expected = world.boosters[SOL].inplace_predict(rows)
    np.testing.assert_allclose(before["predictions"], expected, rtol=1e-6)

    retrained = train(42)
    retrained.save_model(world.trusted / "live" / f"{SOL}_model.json")
    served = wait_until(
        lambda: (answer := predict())["model"]["version"] == "2" and answer,
        timeout=15,  # the bound: watched, imported, promoted and swapped in
        interval=0.2,
        what="FactorModels to serve the retrained model",
    )
    np.testing.assert_allclose(served["predictions"], retrained.inplace_predict(rows), rtol=1e-6)
    assert ok(client.get("/api/models/live/model/SOLUSDT"))["model"]["version"] == "2"
    tags = store.client().get_model_version(name, "2").tags
    assert tags["source_fingerprint"] == fingerprint(world.trusted / "live")
    assert tags["validation_status"] == "passed"


def test_the_cli_registers_a_directory_the_service_then_serves(
    client: httpx.Client, registered: dict, world: World
) -> None:
    command = [str(TRADESERVE), "import", str(world.trusted / "cli"), "--name", "cli", "--json"]
    env = world.env(world.home.parent / "cli")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["versions"] == [
        {"name": "factor-ADAUSDT_ret_5m", "version": "1", "promoted": True, "problems": []}
    ]
    # the service finds the new mapping at its next poll and serves the promoted version
    body = wait_until(
        lambda: (r := client.get("/api/models/cli/model/ADAUSDT")).status_code == 200 and r.json(),
        timeout=60,
        what="ModelManager to serve the directory the CLI registered",
    )
    assert body["model"]["name"] == "factor-ADAUSDT_ret_5m"


# ── venue quantiles and Redis ────────────────────────────────────────────────────────


def redis_holds(redis: RedisServer, venue: str, expected: dict[str, str]) -> None:
    """Wait until exactly ``expected`` (symbol -> value) is under ``venue`` in Redis."""

    def current() -> dict[str, str]:
        with redis.client() as connection:
            keys = connection.scan_iter(match=f"{venue}:*:amount-threshold")
            return {key.split(":")[1]: connection.get(key) for key in keys}

    wait_until(lambda: current() == expected, 30, 0.1, f"{venue} in Redis", ignore=(OSError,))


def test_venue_tables_are_served_and_published_in_the_seeds_format(
    client: httpx.Client, binance: dict, redis: RedisServer, world: World
) -> None:
    assert (binance["venue"], binance["symbol_count"]) == ("binance-futures", 2)
    (item,) = [i for i in ok(client.get("/api/venues"))["items"] if i["venue"] == "binance-futures"]
    assert item["pkl_path"] == str(world.trusted / "binance.pkl") and item["updated_at"]
    btc = {"medium_notional_threshold": 10000.0, "large_notional_threshold": 50000.0}
    eth = {"medium_notional_threshold": 5000.0, "large_notional_threshold": 20000.0}
    assert ok(client.get("/api/venues/binance-futures/quantiles")) == {
        "venue": "binance-futures",
        "symbols": {"BTCUSDT": btc, "ETHUSDT": eth},
    }
    one = ok(client.get("/api/venues/binance-futures/quantiles/ETHUSDT"))
    assert one == {"venue": "binance-futures", "symbol": "ETHUSDT", **eth}
    assert BINANCE["BTCUSDT"] == (
        '{"symbol": "BTCUSDT", "medium_notional_threshold": 10000.0, '
        '"large_notional_threshold": 50000.0}'
    )
    redis_holds(redis, "binance-futures", BINANCE)


def test_venue_errors(client: httpx.Client, binance: dict, world: World) -> None:
    refused(put_venue(client, "nyse-spot", world.trusted / "binance.pkl"), 400, "unknown venue")
    refused(put_venue(client, "okex-margin", world.trusted / "missing.pkl"), 400, "not found")
    refused(put_venue(client, "okex-margin", world.trusted / "not_numbers.pkl"), 400, "BTCUSDT")
    refused(put_venue(client, "okex-margin", world.trusted / "inverted.pkl"), 400, "exceeds")
    assert client.put("/api/venues/okex-margin/quantiles", json={}).status_code == 422
    refused(client.get("/api/venues/okex-margin/quantiles"), 404, "venue not registered")
    refused(client.get("/api/venues/binance-futures/quantiles/NOPE"), 404, "NOPE")


def test_redis_follows_every_promotion_of_a_venue_table(
    client: httpx.Client, redis: RedisServer, world: World, here: None
) -> None:
    venue = "bybit-futures"
    first = seed_values({"BTCUSDT": (1000.0, 2000.0), "ETHUSDT": (500.0, 900.0),
                         "SOLUSDT": (10.0, 20.0)})  # fmt: skip
    ok(put_venue(client, venue, world.trusted / "bybit_a.pkl"))
    redis_holds(redis, venue, first)
    second = ok(put_venue(client, venue, world.trusted / "bybit_b.pkl"))
    assert second["model"]["version"] == "2"  # SOLUSDT dropped: its key goes too
    redis_holds(redis, venue, seed_values({"BTCUSDT": (1500.0, 2500.0), "ETHUSDT": (600.0, 950.0)}))
    # promoted outside the service (a gated rollback here): live mode follows, Redis too
    assert rollback(f"venue-quantiles-{venue}", reason="test").to_version == "1"
    redis_holds(redis, venue, first)
    solusdt = ok(client.get(f"/api/venues/{venue}/quantiles/SOLUSDT"))
    assert solusdt["large_notional_threshold"] == 20.0


def test_a_redis_outage_is_logged_retried_and_never_fatal(
    client: httpx.Client, binance: dict, redis: RedisServer, world: World
) -> None:
    redis.stop()
    try:
        assert (
            ok(put_venue(client, "gate-futures", world.trusted / "gate.pkl"))["symbol_count"] == 1
        )
        status = wait_until(
            lambda: (h := ok(client.get("/api/health"))["redis"])["reachable"] is False and h,
            timeout=30,
            what="the publisher to notice the outage",
        )
        assert "gate-futures" in status["pending_venues"] and status["last_error"]
        gate = ok(client.get("/api/venues/gate-futures/quantiles/BTCUSDT"))
        assert gate["large_notional_threshold"] == 2.0
    finally:
        redis.start()
    redis_holds(redis, "gate-futures", seed_values({"BTCUSDT": (1.0, 2.0)}))
    redis_holds(redis, "binance-futures", BINANCE)  # the empty Redis gets earlier tables too
    assert ok(client.get("/api/health"))["redis"]["reachable"] is True
