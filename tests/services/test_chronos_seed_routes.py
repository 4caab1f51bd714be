"""Sapheneia's and AleutianLocal's routes on ChronosForecaster (`bentoml serve`, demo registry):
the seeds' request shapes, exact response keys and status codes, and the same forecasts as
the native `/forecast`."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from bentos.chronos.compat import host_alias, normalize_model_name
from harness.bento import BentoServer
from harness.metrics import sample_totals
from tests.services.conftest import serve_demo

KEY = "seed-key-0123456789abcdef0123456789ab"
CLOSES = (np.cumsum(np.random.default_rng(3).normal(size=60)) + 400.0).round(2).tolist()
MODELS = ["chronos-2", "chronos-bolt-tiny", "chronos-t5-tiny"]
SEED_KEYS = ["10", "20", "30", "40", "50", "60", "70", "80", "90"]
INFERENCE = "/forecast/v1/chronos/inference"
LEGACY = "/v1/timeseries/forecast"
PREDICT = "/orchestration/v1/predict"
JSON = {"Accept": "application/json"}


def post(server: BentoServer, path: str, body: object, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=60, **kwargs)


def get(server: BentoServer, path: str, **kwargs) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", timeout=30, **kwargs)


def native(server: BentoServer, model: str, horizon: int, **parameters) -> dict:
    """The native /forecast answer for CLOSES at the seeds' levels."""
    levels = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    body = {
        "inputs": [{"target": CLOSES}],
        "parameters": {
            "model": model,
            "prediction_length": horizon,
            "quantile_levels": levels,
            **parameters,
        },
    }
    response = post(server, "/forecast", body)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]


def inference_body(model: str, horizon: int = 6) -> dict:
    body = {"context": CLOSES, "prediction_length": horizon, "model_variant": model}
    if model.startswith("chronos-t5"):
        body |= {"num_samples": 12, "seed": 5}
    return body


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("amazon/chronos-t5-tiny", "chronos-t5-tiny"),
        ("Amazon/Chronos-T5-Tiny", "chronos-t5-tiny"),
        ("Chronos T5 (Tiny)", "chronos-t5-tiny"),
        ("chronos_bolt_base", "chronos-bolt-base"),
        ("google/timesfm-1.0-200m", "timesfm-1-0-200m"),
        ("amazon/chronos-2", "chronos-2"),
    ],
)
def test_model_names_normalise_as_aleutianlocal_does(name: str, slug: str) -> None:
    assert normalize_model_name(name) == slug


def test_forecast_host_names_name_their_model() -> None:
    assert host_alias("forecast-chronos-t5-tiny:8000") == "chronos-t5-tiny"
    assert host_alias("forecast-chronos-2.tradeserve.svc.cluster.local") == "chronos-2"
    assert host_alias("forecast-service:8000") is None
    assert host_alias("127.0.0.1:3001") is None


# --- Sapheneia: /forecast/v1/chronos/* ---------------------------------------------------


def test_initialization_reports_loaded_models_ready(chronos_server) -> None:
    default = get(chronos_server, "/forecast/v1/chronos/status").json()
    assert default == {"model_status": "ready", "details": "Model: chronos-bolt-tiny"}

    response = post(chronos_server, "/forecast/v1/chronos/initialization", {})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"message", "model_status", "model_info"}
    assert body["message"] == "Model already initialized"
    assert body["model_status"] == "ready"
    assert body["model_info"]["model_variant"] == "chronos-bolt-tiny"

    named = post(
        chronos_server,
        "/forecast/v1/chronos/initialization",
        {"model_variant": "amazon/chronos-t5-tiny", "device": "cpu"},
    ).json()["model_info"]
    assert named == {
        "model_variant": "chronos-t5-tiny",
        "device": "cpu",
        "status": "ready",
        "version": "1",
        "alias": "champion",
    }


def test_unknown_variant_is_404_with_the_served_list(chronos_server) -> None:
    response = post(
        chronos_server,
        "/forecast/v1/chronos/initialization",
        {"model_variant": "amazon/chronos-t5-large"},
    )
    assert response.status_code == 404
    body = response.json()
    assert body["available_models"] == MODELS
    assert "chronos-t5-large" in body["error"] and "chronos-t5-large" in body["detail"]
    status = get(chronos_server, "/forecast/v1/chronos/status?model_variant=chronos-t5-large")
    assert status.status_code == 200
    assert status.json()["model_status"] == "error"


@pytest.mark.parametrize("model", MODELS)
def test_inference_answers_the_seed_shape_with_native_medians(chronos_server, model) -> None:
    response = post(chronos_server, INFERENCE, inference_body(model))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"prediction", "execution_metadata"}
    prediction, execution = body["prediction"], body["execution_metadata"]
    assert set(prediction) == {"median", "mean", "quantiles", "samples", "metadata"}
    assert list(prediction["quantiles"]) == SEED_KEYS
    assert set(prediction["metadata"]) == {
        "context_length",
        "prediction_length",
        "num_samples",
        "model_variant",
        "inference_time_seconds",
    }
    assert prediction["metadata"]["context_length"] == len(CLOSES)
    assert prediction["metadata"]["prediction_length"] == 6
    assert prediction["metadata"]["model_variant"] == model
    assert set(execution) == {"total_time_seconds", "model_version", "api_version", "model"}
    assert execution["api_version"] == "1.0.0"
    assert execution["model_version"] == "1"
    assert execution["model"] == {"name": model, "version": "1", "alias": "champion"}

    quantiles = np.asarray([prediction["quantiles"][key] for key in SEED_KEYS])
    assert quantiles.shape == (9, 6)
    assert prediction["median"] == prediction["quantiles"]["50"]

    seeded = {"num_samples": 12, "seed": 5} if model.startswith("chronos-t5") else {}
    reference = native(chronos_server, model, 6, **seeded)
    np.testing.assert_allclose(prediction["median"], reference["0.5"], rtol=1e-6)
    np.testing.assert_allclose(prediction["mean"], reference["mean"], rtol=1e-6)
    for key in SEED_KEYS:
        np.testing.assert_allclose(prediction["quantiles"][key], reference[f"0.{key[0]}"])
    if model.startswith("chronos-t5"):  # quantiles of its sample paths
        assert np.asarray(prediction["samples"]).shape == (12, 6)
        assert (np.diff(quantiles, axis=0) >= 0).all(), "quantiles rise with the level"
        assert prediction["metadata"]["num_samples"] == 12
    else:  # native quantiles, no sample paths
        assert prediction["samples"] == []
        assert prediction["metadata"]["num_samples"] == 0


def test_inference_uses_the_default_and_host_aliases(chronos_server) -> None:
    body = {"context": CLOSES, "prediction_length": 3}
    default = post(chronos_server, INFERENCE, body).json()
    assert default["prediction"]["metadata"]["model_variant"] == "chronos-bolt-tiny"
    aliased = post(chronos_server, INFERENCE, body, headers={"Host": "forecast-chronos-2:8000"})
    assert aliased.json()["prediction"]["metadata"]["model_variant"] == "chronos-2"
    unserved = post(chronos_server, INFERENCE, body, headers={"Host": "forecast-chronos-t5-large"})
    assert unserved.status_code == 404
    assert unserved.json()["available_models"] == MODELS


def test_inference_refuses_bad_input_as_forecast_does(chronos_server) -> None:
    short = post(chronos_server, INFERENCE, {"context": [1.0, 2.0], "prediction_length": 3})
    same = post(chronos_server, "/forecast", {"inputs": [{"target": [1.0, 2.0]}]})
    assert short.status_code == same.status_code == 400
    assert short.json()["error"] == same.json()["error"]
    for bad in [
        {"context": CLOSES, "prediction_length": 0},
        {"context": CLOSES, "prediction_length": 3, "top_p": 1.5},
        {"context": CLOSES, "prediction_length": 3, "num_samples": 0},
        {"prediction_length": 3},
    ]:
        response = post(chronos_server, INFERENCE, bad)
        assert response.status_code == 422, bad
        assert response.json()["detail"], bad


def test_t5_honours_temperature_top_k_and_top_p(chronos_server) -> None:
    body = inference_body("chronos-t5-tiny")  # seeded: only the knobs differ

    def samples(**knobs: float) -> list[list[float]]:
        response = post(chronos_server, INFERENCE, {**body, **knobs})
        assert response.status_code == 200, response.text
        return response.json()["prediction"]["samples"]

    default = samples()
    assert samples() == default  # the seed makes it reproducible, so a knob is what changes it
    greedy = samples(top_k=1)  # the most likely token at every step: one path, 12 times
    assert greedy != default and all(path == greedy[0] for path in greedy)
    # a random-weight T5 has nearly flat logits: a temperature near 0 makes it greedy too
    assert samples(temperature=0.001) == greedy
    assert samples(top_p=0.5) not in (default, greedy)


def test_shutdown_is_accepted_and_the_service_keeps_serving(chronos_server) -> None:
    response = post(chronos_server, "/forecast/v1/chronos/shutdown", None)
    assert response.status_code == 200
    assert set(response.json()) == {"message"}
    assert get(chronos_server, "/forecast/v1/chronos/status").json()["model_status"] == "ready"
    assert post(chronos_server, INFERENCE, inference_body("chronos-2")).status_code == 200


# --- /, /health, /info, /models -----------------------------------------------------------


def test_health_reports_every_chronos_model(chronos_server) -> None:
    body = get(chronos_server, "/health").json()
    assert {"status", "timestamp", "api_version", "models"} <= set(body)
    assert body["status"] == "healthy"
    assert sorted(body["models"]) == MODELS
    for model in body["models"].values():
        assert model["status"] == "ready" and model["error"] is None
        assert model["version"] == "1"
    assert body["loaded_models"] == MODELS  # AleutianLocal's standalone keys
    assert body["slots_used"] == "3/3"


def test_info_and_models_answer_the_seed_shapes(chronos_server) -> None:
    info = get(chronos_server, "/info").json()
    assert {"name", "version", "available_models", "documentation", "features"} <= set(info)
    assert info["available_models"] == MODELS
    assert info["features"]["api_authentication"] is False

    listing = get(chronos_server, "/models").json()
    assert listing["count"] == 3
    assert sorted(listing["models"]) == MODELS
    t5 = listing["models"]["chronos-t5-tiny"]
    assert t5["huggingface_id"] == "amazon/chronos-t5-tiny"
    assert t5["status"] == "active"
    assert (t5["kind"], t5["version"], t5["registered_name"]) == ("t5", "1", "chronos-t5-tiny")
    # the native listing keeps its own method and shape
    native_listing = httpx.post(f"{chronos_server.url}/models", json={}, timeout=30).json()
    assert set(native_listing) == {"default_model", "models"}
    assert isinstance(native_listing["models"], list)


def test_root_is_json_for_api_clients_and_the_docs_for_browsers(chronos_server) -> None:
    for headers in [JSON, {"Accept": "*/*"}, {}]:
        response = get(chronos_server, "/", headers=headers)
        assert response.status_code == 200
        assert set(response.json()) == {"status", "version", "docs"}
    browser = get(chronos_server, "/", headers={"Accept": "text/html,*/*;q=0.8"})
    assert browser.status_code == 200
    assert browser.headers["content-type"].startswith("text/html")


# --- AleutianLocal: /v1/timeseries/forecast, /v1/models ------------------------------------

LEGACY_KEYS = {
    "name",
    "forecast",
    "forecast_low",
    "forecast_high",
    "horizon",
    "model",
    "model_version",
    "message",
}


@pytest.mark.parametrize("model", ["chronos-bolt-tiny", "chronos-2"])
def test_legacy_route_answers_the_sapheneia_shape(chronos_server, model) -> None:
    body = {
        "name": "SPY",
        "context_period_size": 252,  # more than sent: the seed used what it got
        "forecast_period_size": 5,
        "model": f"amazon/{model}",
        "recent_data": CLOSES,
        "as_of_date": "2024-01-05",
    }
    response = post(chronos_server, LEGACY, body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == LEGACY_KEYS
    assert (answer["name"], answer["message"], answer["model"]) == ("SPY", "Success", model)
    assert answer["horizon"] == 5
    reference = native(chronos_server, model, 5)
    np.testing.assert_allclose(answer["forecast"], reference["0.5"], rtol=1e-6)
    np.testing.assert_allclose(answer["forecast_low"], reference["0.1"], rtol=1e-6)
    np.testing.assert_allclose(answer["forecast_high"], reference["0.9"], rtol=1e-6)


def test_legacy_route_answers_the_standalone_and_proxy_shapes(chronos_server) -> None:
    standalone = post(chronos_server, LEGACY, {"model": "chronos-t5-tiny", "data": CLOSES})
    assert standalone.status_code == 200, standalone.text
    assert standalone.json()["horizon"] == 5 and len(standalone.json()["forecast"]) == 5
    assert standalone.json()["name"] is None
    # what AleutianLocal's Go proxy re-marshals: data and recent_data, horizon, num_samples
    proxied = post(
        chronos_server,
        LEGACY,
        {
            "model": "amazon/chronos-bolt-tiny",
            "name": "SPY",
            "data": CLOSES,
            "recent_data": CLOSES,
            "horizon": 7,
            "num_samples": 20,
        },
    ).json()
    assert len(proxied["forecast"]) == proxied["horizon"] == 7
    assert proxied["forecast"] == pytest.approx(
        native(chronos_server, "chronos-bolt-tiny", 7)["0.5"]
    )


def test_legacy_route_refuses_bad_input_with_400(chronos_server) -> None:
    missing = post(chronos_server, LEGACY, {"model": "chronos-bolt-tiny", "name": "SPY"})
    assert missing.status_code == 400
    assert "recent_data" in missing.json()["error"]
    unknown = post(chronos_server, LEGACY, {"model": "amazon/chronos-t5-large", "data": CLOSES})
    assert unknown.status_code == 400
    assert "Unknown model" in unknown.json()["detail"]
    short = post(chronos_server, LEGACY, {"model": "chronos-bolt-tiny", "data": [1.0, 2.0]})
    assert short.status_code == 400
    assert "at least" in short.json()["error"]


def test_standalone_model_management_answers_truthfully(chronos_server) -> None:
    listing = get(chronos_server, "/v1/models").json()
    assert [model["slug"] for model in listing] == MODELS
    for model in listing:
        assert set(model) == {
            "slug",
            "status",
            "vram_gb",
            "huggingface_id",
            "loaded",
            "in_use",
            "version",
            "alias",
        }
        assert model["loaded"] is True and model["vram_gb"] > 0

    loaded = post(chronos_server, "/v1/models/load", {"model": "amazon/chronos-t5-tiny"})
    assert loaded.status_code == 200
    assert loaded.json() == {
        "status": "loaded",
        "model": "chronos-t5-tiny",
        "loaded_models": MODELS,
        "slots_used": "3/3",
    }
    unknown = post(chronos_server, "/v1/models/load", {"model": "chronos-t5-large"})
    assert unknown.status_code == 400 and "Unknown model" in unknown.json()["detail"]
    refused = post(chronos_server, "/v1/models/unload", {"model": "chronos-t5-tiny"})
    assert refused.status_code == 409
    not_loaded = post(chronos_server, "/v1/models/unload", {"model": "chronos-t5-large"})
    assert not_loaded.status_code == 404 and "not loaded" in not_loaded.json()["detail"]
    assert (
        post(chronos_server, LEGACY, {"model": "chronos-t5-tiny", "data": CLOSES}).status_code
        == 200
    )


# --- AleutianLocal's unified route ---------------------------------------------------------


def predict_body(model: str, **params) -> dict:
    """An InferenceRequest as AleutianLocal's Go client marshals it."""
    body = {
        "request_id": "run-1-SPY-20240105-123",
        "timestamp": "2024-01-05T21:00:00.123456789Z",
        "ticker": "SPY",
        "model": model,
        "context": {
            "values": CLOSES,
            "period": "1d",
            "source": "influxdb",
            "start_date": "2023-10-12",
            "end_date": "2024-01-05",  # a Friday
            "field": "close",
        },
        "horizon": {"length": 4, "period": "1d"},
    }
    return body | ({"params": params} if params else {})


def test_unified_predict_answers_the_inference_response(chronos_server) -> None:
    response = post(chronos_server, PREDICT, predict_body("amazon/chronos-bolt-tiny"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "request_id",
        "response_id",
        "timestamp",
        "ticker",
        "model",
        "forecast",
        "context_summary",
        "quantiles",
        "metadata",
    }
    assert body["request_id"] == "run-1-SPY-20240105-123"
    assert body["response_id"] != body["request_id"]
    assert (body["ticker"], body["model"]) == ("SPY", "amazon/chronos-bolt-tiny")
    reference = native(chronos_server, "chronos-bolt-tiny", 4)
    assert body["forecast"]["values"] == pytest.approx(reference["0.5"], rel=1e-6)
    assert body["forecast"]["values"][0] == pytest.approx(reference["0.5"][0], rel=1e-6)
    assert body["forecast"] | {"values": None} == {
        "values": None,
        "period": "1d",
        "start_date": "2024-01-08",  # the next trading day
        "end_date": "2024-01-11",
    }
    assert body["context_summary"] == {
        "length": len(CLOSES),
        "period": "1d",
        "source": "influxdb",
        "start_date": "2023-10-12",
        "end_date": "2024-01-05",
        "field": "close",
    }
    assert body["quantiles"] == []  # none asked for
    metadata = body["metadata"]
    assert isinstance(metadata["inference_time_ms"], int)  # Go reads an int
    assert (metadata["model_version"], metadata["device"], metadata["model_family"]) == (
        "1",
        "cpu",
        "chronos",
    )


def test_unified_predict_returns_the_quantiles_asked_for(chronos_server) -> None:
    body = post(chronos_server, PREDICT, predict_body("chronos-2", quantiles=[0.1, 0.9])).json()
    reference = native(chronos_server, "chronos-2", 4)
    assert [entry["quantile"] for entry in body["quantiles"]] == [0.1, 0.9]
    assert body["quantiles"][0]["values"] == pytest.approx(reference["0.1"], rel=1e-6)
    assert body["quantiles"][1]["values"] == pytest.approx(reference["0.9"], rel=1e-6)
    bad_level = post(chronos_server, PREDICT, predict_body("chronos-bolt-tiny", quantiles=[1.0]))
    assert bad_level.status_code == 400
    unknown = post(chronos_server, PREDICT, predict_body("amazon/chronos-t5-large"))
    assert unknown.status_code == 404 and unknown.json()["available_models"] == MODELS
    malformed = predict_body("chronos-2")
    malformed["context"]["period"] = "2d"
    assert post(chronos_server, PREDICT, malformed).status_code == 422


def model_calls(server: BentoServer, model: str) -> float:
    text = get(server, "/metrics").text
    return sample_totals(text, "tradeserve_model_batch_size_count", "model").get(model, 0.0)


def test_seed_routes_share_the_native_batching_queue(chronos_server) -> None:
    model = "chronos-bolt-tiny"
    before = model_calls(chronos_server, model)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=chronos_server.url, timeout=120) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        LEGACY, json={"model": model, "data": CLOSES[: 20 + i % 40], "horizon": 3}
                    )
                    for i in range(60)
                )
            )

    responses = asyncio.run(burst())
    assert [response.status_code for response in responses] == [200] * 60
    calls = model_calls(chronos_server, model) - before
    # one model call per request would be 60; the shared queue takes the burst in a few
    assert 1 <= calls <= 60 / 4, f"{calls} model calls for 60 legacy requests"


# --- auth, MODEL_VARIANT -------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed_server(
    demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    """ChronosForecaster with an API key and Sapheneia's MODEL_VARIANT (two models served)."""
    yield from serve_demo(
        "bentos.chronos.service:ChronosForecaster",
        demo_home,
        tmp_path_factory.mktemp("chronos-keyed"),
        TRADESERVE_API_KEY=KEY,
        MODEL_VARIANT="amazon/chronos-t5-tiny",
        TRADESERVE_CHRONOS_MODELS='["chronos-bolt-tiny", "chronos-t5-tiny"]',
    )


ROUTES = [
    ("GET", "/"),
    ("GET", "/health"),
    ("GET", "/info"),
    ("GET", "/models"),
    ("POST", "/forecast/v1/chronos/initialization"),
    ("GET", "/forecast/v1/chronos/status"),
    ("POST", INFERENCE),
    ("POST", "/forecast/v1/chronos/shutdown"),
    ("POST", LEGACY),
    ("GET", "/v1/models"),
    ("POST", "/v1/models/load"),
    ("POST", "/v1/models/unload"),
    ("POST", PREDICT),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_seed_route_needs_the_key(keyed_server, method, path) -> None:
    for headers in [JSON, {**JSON, "Authorization": "Bearer wrong"}, {**JSON, "X-API-Key": "x"}]:
        response = httpx.request(method, f"{keyed_server.url}{path}", headers=headers, timeout=30)
        assert response.status_code == 401, (path, headers)


def test_aleutianlocal_client_with_both_headers_and_amazon_names(keyed_server) -> None:
    headers = {"X-API-Key": KEY, "Authorization": f"Bearer {KEY}"}  # as its Go proxy sends
    legacy = {
        "name": "SPY",
        "context_period_size": 60,
        "forecast_period_size": 4,
        "model": "amazon/chronos-t5-tiny",
        "recent_data": CLOSES,
    }
    response = post(keyed_server, LEGACY, legacy, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["model"] == "chronos-t5-tiny" and len(response.json()["forecast"]) == 4
    unified = post(keyed_server, PREDICT, predict_body("amazon/chronos-bolt-tiny"), headers=headers)
    assert unified.status_code == 200, unified.text
    bearer_only = {"Authorization": f"Bearer {KEY}"}  # Sapheneia's own clients
    assert get(keyed_server, "/health", headers=bearer_only).json()["loaded_models"] == [
        "chronos-bolt-tiny",
        "chronos-t5-tiny",
    ]


def test_model_variant_sets_the_default_model(keyed_server) -> None:
    headers = {"X-API-Key": KEY}
    status = get(keyed_server, "/forecast/v1/chronos/status", headers=headers).json()
    assert status == {"model_status": "ready", "details": "Model: chronos-t5-tiny"}
    body = {"context": CLOSES, "prediction_length": 3, "num_samples": 7}
    answer = post(keyed_server, INFERENCE, body, headers=headers).json()["prediction"]
    assert answer["metadata"]["model_variant"] == "chronos-t5-tiny"
    assert np.asarray(answer["samples"]).shape == (7, 3)
