"""Specialists served by `bentoml serve` on the demo registry."""

from __future__ import annotations

import json
import math

import bentoml
import httpx
import numpy as np

from registry.families import SPECIALIST_ROLES, specialist_name
from registry.loading import load_version
from registry.resolve import resolve
from training_hooks.features import FEATURE_NAMES, compute_features
from training_hooks.market_data import MarketDataStore


def real_observations(rows: int = 6) -> np.ndarray:
    bars = MarketDataStore().load("SPX", as_of="2016-06-30", lookback=400)
    return compute_features(bars)[list(FEATURE_NAMES)].tail(rows).to_numpy(np.float32)


def test_every_specialist_acts_like_its_in_process_model(specialists_server, demo_registry) -> None:
    observations = real_observations()
    with bentoml.SyncHTTPClient(specialists_server.url) as client:
        body = client.act(observations=observations.tolist(), specialists=list(SPECIALIST_ROLES))
    assert body["action_order"] == ["HOLD", "BUY", "SELL"]
    for role in SPECIALIST_ROLES:
        runtime = load_version(resolve(specialist_name(role))).runtime
        served = body["results"][role]
        np.testing.assert_allclose(
            served["probabilities"], runtime.probabilities(observations), rtol=1e-5, atol=1e-6
        )
        assert served["model"]["name"] == specialist_name(role)
        assert served["actions"] == [
            ["HOLD", "BUY", "SELL"][int(np.argmax(p))] for p in served["probabilities"]
        ]


def test_batched_endpoint_answers_single_observations(specialists_server, demo_registry) -> None:
    observation = real_observations(1)[0]
    response = httpx.post(
        f"{specialists_server.url}/act_batch",
        json={"tasks": [{"specialist": "bull", "observation": observation.tolist()}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    [answer] = response.json()
    runtime = load_version(resolve("specialist-bull")).runtime
    np.testing.assert_allclose(
        answer["probabilities"], runtime.probabilities(observation[None])[0], rtol=1e-5
    )


def test_bad_requests_get_clear_client_errors(specialists_server, demo_registry) -> None:
    good = real_observations(1).tolist()
    url = f"{specialists_server.url}/act"
    cases = [
        ({"observations": good, "specialists": ["crab"]}, 400, "crab"),
        ({"observations": [good[0][:-1]]}, 400, FEATURE_NAMES[0]),
        ({"observations": []}, 400, "at least one"),
        ({"observations": "nope"}, 400, "observations"),
    ]
    for body, status, message in cases:
        response = httpx.post(url, json=body, timeout=30)
        assert response.status_code == status, (body, response.text)
        assert message in response.text
    nan = httpx.post(
        url,
        content=json.dumps({"observations": [[math.nan] * len(FEATURE_NAMES)]}),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert nan.status_code == 400 and "finite number" in nan.text


def test_batched_endpoint_rejects_bad_tasks_without_failing_good_ones(
    specialists_server, demo_registry
) -> None:
    url = f"{specialists_server.url}/act_batch"
    row = real_observations(1)[0].tolist()
    for task, message in (
        ({"specialist": "crab", "observation": row}, "specialist"),
        ({"specialist": "bull", "observation": []}, "observation"),
        ({"specialist": "bull", "observation": "nope"}, "observation"),
    ):
        response = httpx.post(url, json={"tasks": [task]}, timeout=30)
        assert response.status_code == 400, (task, response.text)
        assert message in response.text
    nan = httpx.post(
        url,
        content=json.dumps(
            {"tasks": [{"specialist": "bull", "observation": [math.nan] * len(FEATURE_NAMES)}]}
        ),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert nan.status_code == 400 and "finite number" in nan.text
    mixed = httpx.post(
        url,
        json={
            "tasks": [
                {"specialist": "bull", "observation": row[:-1]},
                {"specialist": "bear", "observation": row},
            ]
        },
        timeout=30,
    )
    assert mixed.status_code == 200, mixed.text
    short, good = mixed.json()
    assert f"expects {len(FEATURE_NAMES)} features" in short["error"]
    assert short["probabilities"] == []
    assert good["error"] is None and good["model"]["name"] == "specialist-bear"
    assert math.isclose(sum(good["probabilities"]), 1.0, rel_tol=1e-6)
