"""ChronosForecaster served by `bentoml serve` on the demo registry."""

from __future__ import annotations

import asyncio
import json
import math

import bentoml
import httpx
import numpy as np
import pytest

from harness.metrics import sample_totals
from registry.loading import load_version
from registry.resolve import resolve
from training_hooks.chronos.validation import T5Sampling

KNOBS = T5Sampling(temperature=0.7, top_k=20)  # T5's sampling knobs, honoured as sent
rng = np.random.default_rng(7)
SERIES = [
    (np.cumsum(rng.normal(size=80)) + 100.0).tolist(),
    (np.sin(np.arange(40) / 3.0) * 5 + 20).tolist(),
]


def served_models(url: str) -> list[dict]:
    body = httpx.post(f"{url}/models", json={}, timeout=30).json()
    return sorted(body["models"], key=lambda model: model["name"])


def test_serves_every_promoted_chronos_family(chronos_server) -> None:
    models = served_models(chronos_server.url)
    assert [m["name"] for m in models] == ["chronos-2", "chronos-bolt-tiny", "chronos-t5-tiny"]
    assert {(m["device"], m["dtype"]) for m in models} == {("cpu", "float32")}


@pytest.mark.parametrize("name", ["chronos-bolt-tiny", "chronos-2", "chronos-t5-tiny"])
def test_served_forecasts_equal_in_process_forecasts(chronos_server, demo_registry, name) -> None:
    levels = [0.1, 0.5, 0.9]
    parameters = {"prediction_length": 7, "quantile_levels": levels, "model": name}
    if name.startswith("chronos-t5"):
        parameters |= {"num_samples": 8, "seed": 11, "temperature": 0.7, "top_k": 20}
    with bentoml.SyncHTTPClient(chronos_server.url) as client:
        body = client.forecast(
            inputs=[{"target": SERIES[0], "item_id": "A"}, {"target": SERIES[1], "item_id": "B"}],
            parameters=parameters,
        )
    body = body if isinstance(body, dict) else body.model_dump()

    runtime = load_version(resolve(name)).runtime
    if name.startswith("chronos-t5"):  # sampling: one seeded call per series, as served
        expected = [
            runtime.forecast([np.asarray(s)], 7, levels, num_samples=8, seed=11, sampling=KNOBS)
            for s in SERIES
        ]
        rows = [batch.row(0) for batch in expected]
    else:
        batch = runtime.forecast([np.asarray(s) for s in SERIES], 7, levels)
        rows = [batch.row(0), batch.row(1)]

    assert body["model"] == {"name": name, "version": "1", "alias": "champion"}
    for served, reference, item in zip(body["predictions"], rows, ["A", "B"], strict=True):
        assert served["item_id"] == item
        for key in ["mean", "0.1", "0.5", "0.9"]:
            np.testing.assert_allclose(served[key], reference[key], rtol=1e-5, atol=1e-5)


def test_t5_returns_sample_paths_on_request(chronos_server) -> None:
    response = httpx.post(
        f"{chronos_server.url}/forecast",
        json={
            "inputs": [{"target": SERIES[1]}],
            "parameters": {
                "model": "chronos-t5-tiny",
                "prediction_length": 4,
                "num_samples": 5,
                "seed": 3,
                "return_samples": True,
            },
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    samples = response.json()["predictions"][0]["samples"]
    assert np.asarray(samples).shape == (5, 4)


def test_nan_and_null_mean_missing(chronos_server) -> None:
    with_null = [*SERIES[1][:10], None, *SERIES[1][11:]]
    with_nan = [1.0, 2.0, float("nan"), 4.0, 5.0, 6.0, 7.0, 8.0]
    body = {"inputs": [{"target": with_nan}, {"target": with_null}]}
    response = httpx.post(
        f"{chronos_server.url}/forecast",
        content=json.dumps({**body, "parameters": {"prediction_length": 3}}),  # emits NaN
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    for prediction in response.json()["predictions"]:
        assert all(math.isfinite(value) for value in prediction["mean"])


BAD_REQUESTS = [
    ({"inputs": [{"target": [1.0, 2.0, "Infinity"]}]}, 400, "infinite"),
    ({"inputs": []}, 400, "at least one"),
    ({"inputs": [{"target": []}]}, 400, "empty"),
    ({"inputs": [{"target": [1.0, 2.0]}]}, 400, "at least"),
    ({"inputs": [{"target": ["abc"]}]}, 400, "target"),
    ({"inputs": [{"target": SERIES[1]}], "parameters": {"prediction_length": 65}}, 400, "64"),
    (
        {"inputs": [{"target": SERIES[1]}], "parameters": {"quantile_levels": [0.01]}},
        400,
        "0.01",
    ),
    (
        {"inputs": [{"target": SERIES[1]}], "parameters": {"prediction_length": 0}},
        400,
        "prediction_length",
    ),
    (
        {"inputs": [{"target": SERIES[1]}], "parameters": {"model": "chronos-t5-huge"}},
        404,
        "served",
    ),
    ({"series": [1, 2, 3]}, 400, "inputs"),
]


@pytest.mark.parametrize(("body", "status", "message"), BAD_REQUESTS)
def test_bad_requests_get_clear_client_errors(chronos_server, body, status, message) -> None:
    response = httpx.post(f"{chronos_server.url}/forecast", json=body, timeout=30)
    assert response.status_code == status, response.text
    assert message.lower() in response.text.lower()


def test_long_horizon_needs_an_explicit_allowance(chronos_server) -> None:
    body = {
        "inputs": [{"target": SERIES[1]}],
        "parameters": {"prediction_length": 70, "allow_long_horizon": True},
    }
    response = httpx.post(f"{chronos_server.url}/forecast", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert len(response.json()["predictions"][0]["mean"]) == 70


def test_malformed_and_oversized_bodies_are_refused_and_service_keeps_serving(
    chronos_server,
) -> None:
    malformed = httpx.post(
        f"{chronos_server.url}/forecast",
        content=b'{"inputs": [',
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert 400 <= malformed.status_code < 500
    oversized = httpx.post(
        f"{chronos_server.url}/forecast",
        content=b" " * (9 * 1024 * 1024),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert oversized.status_code == 413
    assert httpx.get(f"{chronos_server.url}/readyz", timeout=10).status_code == 200
    ok = httpx.post(
        f"{chronos_server.url}/forecast", json={"inputs": [{"target": SERIES[1]}]}, timeout=30
    )
    assert ok.status_code == 200


def batch_sizes(metrics_text: str, model: str) -> tuple[float, float]:
    """(model calls, series in them) from the batch-size histogram of ``model``."""
    calls = sample_totals(metrics_text, "tradeserve_model_batch_size_count", "model")
    series = sample_totals(metrics_text, "tradeserve_model_batch_size_sum", "model")
    return calls.get(model, 0.0), series.get(model, 0.0)


def test_concurrent_single_series_requests_are_coalesced(chronos_server) -> None:
    model = "chronos-bolt-tiny"
    before = batch_sizes(httpx.get(f"{chronos_server.url}/metrics").text, model)

    async def one(client: httpx.AsyncClient, index: int) -> httpx.Response:
        length = 30 + index % 50  # different lengths ...
        horizon = 1 + index % 12  # ... and horizons in the same batches
        target = list(np.sin(np.arange(length) / 4.0) + index % 7)
        return await client.post(
            "/forecast",
            json={
                "inputs": [{"target": target, "item_id": str(index)}],
                "parameters": {"prediction_length": horizon, "model": model},
            },
        )

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=250)
        async with httpx.AsyncClient(
            base_url=chronos_server.url, timeout=120, limits=limits
        ) as client:
            return await asyncio.gather(*(one(client, i) for i in range(240)))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 240
    for index, response in enumerate(responses):
        prediction = response.json()["predictions"][0]
        assert prediction["item_id"] == str(index)
        assert len(prediction["mean"]) == 1 + index % 12

    calls, series = batch_sizes(httpx.get(f"{chronos_server.url}/metrics").text, model)
    new_calls, new_series = calls - before[0], series - before[1]
    assert new_series == 240  # every series went through a counted model call
    # At most 64 series per call (the batching limit), so at least 4 calls; a burst that
    # coalesces needs few more (5-6 on a 2-core machine): at least 8 series per call on
    # average, where one call per request would be 240.
    assert 240 / 64 <= new_calls <= 240 / 8, f"{new_calls} model calls for 240 series"


def test_request_limits_hold_at_their_defaults(chronos_server) -> None:
    """1,000 series per request and 100,000 observations per series (README, settings)."""
    url = f"{chronos_server.url}/forecast"
    series = [{"target": SERIES[1]}]
    at_limit = httpx.post(url, json={"inputs": series * 1000}, timeout=300)
    assert at_limit.status_code == 200, at_limit.text[:300]
    assert len(at_limit.json()["predictions"]) == 1000
    too_many = httpx.post(url, json={"inputs": series * 1001}, timeout=60)
    assert too_many.status_code == 400
    assert "1001 series in one request; the limit is 1000" in too_many.json()["error"]
    too_long = httpx.post(url, json={"inputs": [{"target": [1.0] * 100_001}]}, timeout=60)
    assert too_long.status_code == 400
    assert "100001 observations; the limit is 100000" in too_long.json()["error"]
