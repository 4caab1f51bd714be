"""``/forecast_series`` on a served ChronosForecaster (demo registry): a bad task gets its own
4xx and never fails the good tasks it would have shared a model call with.

A burst of concurrent single-task requests, bad ones mixed in, is coalesced into shared
model calls (the batch-size histogram shows it); every good task's forecast equals the
model's in-process forecast of that series alone, and no bad task ever reaches the model.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import numpy as np
import pytest

from harness.metrics import sample_totals
from registry.loading import load_version
from registry.resolve import resolve

BOLT = "chronos-bolt-tiny"
LEVELS = [0.1, 0.5, 0.9]
GOOD = 120
rng = np.random.default_rng(5)


def good_task(index: int) -> dict[str, Any]:
    """Bolt tasks of different lengths and horizons (they share model calls all the same)."""
    length = 30 + index % 40
    return {
        "model": BOLT,
        "target": (50 + np.cumsum(rng.normal(size=length))).round(4).tolist(),
        "prediction_length": 1 + index % 12,
        "quantile_levels": LEVELS,
    }


def bad(**changes: Any) -> dict[str, Any]:
    return {**good_task(0), **changes}


SHORT_TARGET = [1.0, 2.0, 3.0]
BAD_TASKS = [
    (bad(model="chronos-t5-huge"), 404, "not served"),
    (bad(target=[*good_task(1)["target"][:-1], "Infinity"]), 400, "infinite value"),
    (bad(prediction_length=65), 400, "exceeds the native horizon 64"),
    (bad(prediction_length=64 * 16 + 1, allow_long_horizon=True), 400, "above the limit"),
    (bad(target=[*good_task(2)["target"][:-1], 1e300]), 400, "beyond +-1e+15"),
    (bad(target=SHORT_TARGET), 400, "at least 5"),
    (bad(quantile_levels=[0.01]), 400, "outside [0.1, 0.9]"),
    (bad(past_covariates={"x": [1.0] * 30}), 400, "need a chronos-2 model"),
    (bad(target=[]), 400, "empty"),
]


def batch_totals(url: str) -> tuple[float, float]:
    """(model calls, series computed) of the Bolt model so far."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    calls = sample_totals(text, "tradeserve_model_batch_size_count", "model").get(BOLT, 0.0)
    series = sample_totals(text, "tradeserve_model_batch_size_sum", "model").get(BOLT, 0.0)
    return calls, series


async def burst(url: str, tasks: list[dict[str, Any]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(tasks) + 10)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        return await asyncio.gather(
            *(client.post("/forecast_series", json={"tasks": [task]}) for task in tasks)
        )


def test_bad_tasks_get_their_own_4xx_in_a_coalesced_burst(chronos_server, demo_registry) -> None:
    good = [good_task(index) for index in range(GOOD)]
    bad_tasks = [task for task, _, _ in BAD_TASKS] * 3
    # Bad tasks spread through the burst, so they arrive among good ones.
    order = list(range(len(good) + len(bad_tasks)))
    rng.shuffle(order)
    tasks = [(good + bad_tasks)[i] for i in order]
    calls_before, series_before = batch_totals(chronos_server.url)

    responses = asyncio.run(burst(chronos_server.url, tasks))

    runtime = load_version(resolve(BOLT)).runtime
    for position, response in zip(order, responses, strict=True):
        if position >= GOOD:
            _, status, message = BAD_TASKS[(position - GOOD) % len(BAD_TASKS)]
            assert response.status_code == status, response.text
            error = response.json()["error"]
            assert error.startswith("tasks[0]: ") and message.lower() in error.lower()
            continue
        assert response.status_code == 200, response.text
        task, (answer,) = good[position], response.json()
        expected = runtime.forecast(
            [np.asarray(task["target"])], task["prediction_length"], LEVELS
        ).row(0)
        assert answer["version"] == "1"
        assert set(answer["quantiles"]) == {"0.1", "0.5", "0.9"}
        np.testing.assert_allclose(answer["mean"], expected["mean"], rtol=1e-4, atol=1e-4)
        for key, values in answer["quantiles"].items():
            np.testing.assert_allclose(values, expected[key], rtol=1e-4, atol=1e-4)

    calls, series = batch_totals(chronos_server.url)
    # Exactly the good tasks reached the model (no bad one was ever queued) ...
    assert series - series_before == GOOD
    # ... in fewer calls than tasks: concurrent requests shared model calls.
    assert 0 < calls - calls_before < GOOD


def test_a_request_with_a_bad_task_names_it(chronos_server) -> None:
    body = {"tasks": [good_task(3), bad(prediction_length=65)]}
    response = httpx.post(f"{chronos_server.url}/forecast_series", json=body, timeout=60)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("tasks[1]:")


@pytest.mark.parametrize("model", ["chronos-bolt-tiny", "chronos-2", "chronos-t5-tiny"])
def test_values_that_overflow_float32_are_refused_on_every_route(chronos_server, model) -> None:
    target = [*good_task(4)["target"], -1e300]
    forecast = httpx.post(
        f"{chronos_server.url}/forecast",
        json={"inputs": [{"target": target}], "parameters": {"model": model}},
        timeout=60,
    )
    series = httpx.post(
        f"{chronos_server.url}/forecast_series",
        json={
            "tasks": [
                {"model": model, "target": target, "prediction_length": 3, "quantile_levels": [0.5]}
            ]
        },
        timeout=60,
    )
    for response in (forecast, series):
        assert response.status_code == 400, response.text
        assert "-1e+300" in response.json()["error"]
