"""A batching service past its queueing budget: 503 with what to do, never a hang or a 500.

ChronosForecaster is served with ``batching.max_latency_ms`` lowered to 200 ms (as a
deployment's ``BENTOML_CONFIG_OPTIONS`` would); a burst of T5 requests queues far longer
than that behind the model calls in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from harness.bento import BentoServer
from tests.services.conftest import serve_demo

BUDGET_MS = 200
BODY = {
    "inputs": [{"target": np.sin(np.arange(200) / 5.0).tolist()}],
    "parameters": {"model": "chronos-t5-tiny", "prediction_length": 16, "num_samples": 20},
}


@pytest.fixture(scope="module")
def tight_server(
    demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    yield from serve_demo(
        "bentos.chronos.service:ChronosForecaster",
        demo_home,
        tmp_path_factory.mktemp("overload"),
        BENTOML_CONFIG_OPTIONS=f"services.ChronosForecaster.batching.max_latency_ms={BUDGET_MS}",
    )


def forecast(server: BentoServer) -> httpx.Response:
    return httpx.post(f"{server.url}/forecast", json=BODY, timeout=120)


def test_requests_queued_past_the_budget_get_503_and_the_rest_are_served(
    tight_server: BentoServer,
) -> None:
    assert forecast(tight_server).status_code == 200  # alone: queued ~5 ms, well in budget

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=300)
        async with httpx.AsyncClient(
            base_url=tight_server.url, timeout=120, limits=limits
        ) as client:
            return await asyncio.gather(*(client.post("/forecast", json=BODY) for _ in range(300)))

    responses = asyncio.run(burst())
    statuses = [response.status_code for response in responses]
    assert set(statuses) == {200, 503}, sorted(set(statuses))
    shed = [response for response in responses if response.status_code == 503]
    assert f"cannot answer within {BUDGET_MS} ms" in shed[0].json()["error"]
    served = [response for response in responses if response.status_code == 200]
    assert all(len(r.json()["predictions"][0]["mean"]) == 16 for r in served)
    assert forecast(tight_server).status_code == 200  # the queue drained; it serves again
