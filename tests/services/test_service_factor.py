"""FactorModels served by `bentoml serve` on the demo registry."""

from __future__ import annotations

import json
import math

import bentoml
import httpx
import numpy as np
import pytest
import xgboost as xgb

from registry.loading import load_version
from registry.resolve import resolve
from registry.settings import get_settings
from tests.conftest import clear_mlflow_uris

MODEL = "factor-SPX_ret_1d"


@pytest.fixture(scope="module")
def reference(demo_home):
    """The promoted SPX factor model loaded in-process, and some real-looking rows."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("TRADESERVE_HOME", str(demo_home))
        clear_mlflow_uris(monkeypatch)
        get_settings.cache_clear()
        runtime = load_version(resolve(MODEL)).runtime
    get_settings.cache_clear()
    rows = np.random.default_rng(3).normal(scale=0.02, size=(5, len(runtime.factors)))
    return runtime, rows.astype(np.float32)


def test_rows_predict_like_the_in_process_model(factor_server, reference) -> None:
    runtime, rows = reference
    with bentoml.SyncHTTPClient(factor_server.url) as client:
        body = client.predict(model=MODEL, rows=rows.tolist())
    assert body["model"] == {"name": MODEL, "version": "1", "alias": "champion"}
    np.testing.assert_allclose(body["predictions"], runtime.predict_rows(rows), rtol=1e-6)


def test_named_columns_in_any_order_match_rows(factor_server, reference) -> None:
    runtime, rows = reference
    features = {name: rows[:, i].tolist() for i, name in enumerate(runtime.factors)}
    shuffled = dict(reversed(list(features.items())))
    response = httpx.post(
        f"{factor_server.url}/predict", json={"model": MODEL, "features": shuffled}, timeout=30
    )
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(
        response.json()["predictions"], runtime.predict_rows(rows), rtol=1e-6
    )


def test_missing_values_are_accepted_as_null(factor_server, reference) -> None:
    runtime, rows = reference
    row = rows[0].tolist()
    row[0] = None
    response = httpx.post(
        f"{factor_server.url}/predict", json={"model": MODEL, "rows": [row]}, timeout=30
    )
    assert response.status_code == 200, response.text
    expected = runtime.predict_rows(np.asarray([[np.nan, *rows[0, 1:]]], dtype=np.float32))
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-6)


def test_payload_holds_a_booster_that_predicts_the_same(factor_server, reference) -> None:
    runtime, rows = reference
    response = httpx.post(f"{factor_server.url}/payload", json={"model": MODEL}, timeout=30)
    assert response.status_code == 200, response.text
    payload = response.json()
    booster = xgb.Booster()
    booster.load_model(bytearray(payload["model_json"].encode()))
    np.testing.assert_allclose(booster.inplace_predict(rows), runtime.predict_rows(rows), rtol=1e-6)
    assert [d["factor_name"] for d in payload["dim_factors"]] == list(runtime.factors)
    assert payload["metadata"]["feature_dim"] == len(runtime.factors)
    assert payload["model"]["version"] == "1"


def test_venue_quantiles(factor_server) -> None:
    response = httpx.post(
        f"{factor_server.url}/venue_quantiles",
        json={"venue": "us-equities", "symbol": "SPX"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    thresholds = response.json()["symbols"]["SPX"]
    assert 0 < thresholds["medium_notional_threshold"] <= thresholds["large_notional_threshold"]
    unknown = httpx.post(
        f"{factor_server.url}/venue_quantiles",
        json={"venue": "us-equities", "symbol": "BTCUSDT"},
        timeout=30,
    )
    assert unknown.status_code == 404 and "BTCUSDT" in unknown.text


def test_bad_requests_get_clear_client_errors(factor_server, reference) -> None:
    runtime, rows = reference
    url = f"{factor_server.url}/predict"
    features = {name: [0.0] for name in runtime.factors}
    cases = [
        ({"model": "factor-nope", "rows": rows.tolist()}, 404, "factor-nope"),
        ({"model": MODEL, "rows": [rows[0].tolist()[:-1]]}, 400, runtime.factors[0]),
        ({"model": MODEL, "rows": []}, 400, "at least one"),
        ({"model": MODEL}, 400, "exactly one"),
        ({"model": MODEL, "rows": [["x"] * len(runtime.factors)]}, 400, "rows"),
        (
            {"model": MODEL, "features": {**features, "bogus": [1.0]}},
            400,
            "bogus",
        ),
        (
            {"model": MODEL, "features": dict(list(features.items())[1:])},
            400,
            runtime.factors[0],
        ),
    ]
    for body, status, message in cases:
        response = httpx.post(url, json=body, timeout=30)
        assert response.status_code == status, (body, response.text)
        assert message in response.text, (body, response.text)
    inf_row = httpx.post(
        url,
        content=json.dumps({"model": MODEL, "rows": [[math.inf] * len(runtime.factors)]}),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert inf_row.status_code == 400 and "inf" in inf_row.text
    assert httpx.get(f"{factor_server.url}/readyz", timeout=10).status_code == 200


def test_row_limit_holds_at_its_default(factor_server, reference) -> None:
    """10,000 rows per /predict request (README, settings)."""
    _, rows = reference
    url = f"{factor_server.url}/predict"
    row = rows[0].tolist()
    at_limit = httpx.post(url, json={"model": MODEL, "rows": [row] * 10_000}, timeout=60)
    assert at_limit.status_code == 200, at_limit.text[:300]
    assert len(at_limit.json()["predictions"]) == 10_000
    too_many = httpx.post(url, json={"model": MODEL, "rows": [row] * 10_001}, timeout=60)
    assert too_many.status_code == 400
    assert "10001 rows in one request; the limit is 10000" in too_many.json()["error"]
