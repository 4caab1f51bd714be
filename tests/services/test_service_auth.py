"""Optional API-key auth on a served family bento (FactorModels), and the MLflow webhook
beside it: authenticated by MLflow's signature alone, since MLflow cannot send the key."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import bentoml
import httpx
import pytest

from harness.bento import BentoServer
from harness.wait import wait_until
from tests.services.conftest import serve_demo
from tests.services.webhook_signing import signed

KEY = "test-key-0123456789abcdef0123456789"
WEBHOOK_SECRET = "webhook-secret-0123456789abcdef"
BODY = {"venue": "us-equities", "symbol": "SPX"}
# An alias event about a model the service does not serve: accepted, nothing to reload.
EVENT = json.dumps(
    {
        "entity": "model_version_alias",
        "action": "created",
        "data": {"name": "factor-NOT_SERVED_ret_1d", "alias": "champion", "version": "1"},
    }
).encode()


@pytest.fixture(scope="module")
def secured_server(
    demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    yield from serve_demo(
        "bentos.factor.service:FactorModels",
        demo_home,
        tmp_path_factory.mktemp("secured"),
        TRADESERVE_API_KEY=KEY,
        TRADESERVE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        # Access lines on (FactorModels turns them off in code), so a leak would show.
        BENTOML_CONFIG_OPTIONS="services.FactorModels.logging.access.enabled=true",
    )


@pytest.fixture(scope="module")
def key_only_server(
    demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    """An API key but no webhook secret."""
    yield from serve_demo(
        "bentos.factor.service:FactorModels",
        demo_home,
        tmp_path_factory.mktemp("key-only"),
        TRADESERVE_API_KEY=KEY,
    )


@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}],
)
def test_requests_without_the_key_get_401(secured_server, headers) -> None:
    response = httpx.post(
        f"{secured_server.url}/venue_quantiles", json=BODY, headers=headers, timeout=30
    )
    assert response.status_code == 401
    assert "API key" in response.json()["error"]


@pytest.mark.parametrize("headers", [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}])
def test_either_header_form_is_accepted(secured_server, headers) -> None:
    response = httpx.post(
        f"{secured_server.url}/venue_quantiles", json=BODY, headers=headers, timeout=30
    )
    assert response.status_code == 200, response.text


def test_bentoml_client_authenticates_with_its_token(secured_server) -> None:
    with bentoml.SyncHTTPClient(secured_server.url, token=KEY) as client:
        assert client.venue_quantiles(venue="us-equities")["venue"] == "us-equities"


def test_probes_and_metrics_stay_open(secured_server) -> None:
    for path in ["/livez", "/healthz", "/readyz", "/metrics"]:
        assert httpx.get(f"{secured_server.url}{path}", timeout=30).status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/admin/models"), ("POST", "/admin/reload")],
)
def test_admin_routes_need_the_key(secured_server, method, path) -> None:
    url = f"{secured_server.url}{path}"
    refused = httpx.request(method, url, json={}, timeout=30)
    assert refused.status_code == 401
    assert "API key" in refused.json()["error"]
    allowed = httpx.request(method, url, json={}, headers={"X-API-Key": KEY}, timeout=60)
    assert allowed.status_code == 200, allowed.text
    assert [served["name"] for served in allowed.json()["models"]]


def test_signed_webhook_needs_no_key_and_unsigned_ones_are_refused(secured_server) -> None:
    url = f"{secured_server.url}/admin/webhook"
    accepted = httpx.post(url, content=EVENT, headers=signed(EVENT, WEBHOOK_SECRET), timeout=30)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json() == {"accepted": True, "reload": False}
    refused = {
        "unsigned": {"content-type": "application/json"},
        "unsigned, with the key": {"content-type": "application/json", "X-API-Key": KEY},
        "wrong secret": signed(EVENT, "not-the-secret"),
        "replayed": signed(EVENT, WEBHOOK_SECRET, sent=time.time() - 3600),
    }
    for case, headers in refused.items():
        response = httpx.post(url, content=EVENT, headers=headers, timeout=30)
        assert response.status_code == 401, case


def test_webhook_with_a_key_but_no_secret_is_refused(key_only_server) -> None:
    url = f"{key_only_server.url}/admin/webhook"
    for headers in (
        {"content-type": "application/json"},
        {"content-type": "application/json", "X-API-Key": KEY},
        signed(EVENT, WEBHOOK_SECRET),
    ):
        response = httpx.post(url, content=EVENT, headers=headers, timeout=30)
        assert response.status_code == 403
        assert "TRADESERVE_WEBHOOK_SECRET" in response.text
    # the key still guards every other admin route there
    assert httpx.post(f"{key_only_server.url}/admin/reload", timeout=30).status_code == 401


def test_no_presented_key_reaches_the_log(secured_server) -> None:
    """Neither the right key nor wrong ones (in both header forms) are logged, even in part:
    the seed logged the first 8 characters of the presented and the expected key."""
    wrong = "wrong-key-fedcba9876543210fedcba98"
    sent = [
        ({"X-API-Key": KEY}, 200),
        ({"Authorization": f"Bearer {KEY}"}, 200),
        ({"X-API-Key": wrong}, 401),
        ({"Authorization": f"Bearer {wrong}"}, 401),
    ]

    def access_lines() -> int:
        return secured_server.log_path.read_text().count("path=/venue_quantiles")

    before = access_lines()
    for headers, status in sent:
        response = httpx.post(
            f"{secured_server.url}/venue_quantiles", json=BODY, headers=headers, timeout=30
        )
        assert response.status_code == status
    # the workers' lines reach the log through the arbiter, a moment after the answers
    wait_until(lambda: access_lines() >= before + len(sent), timeout=30, what="access lines")
    log = secured_server.log_path.read_text()
    for secret in (KEY, wrong):
        assert secret[:8] not in log
