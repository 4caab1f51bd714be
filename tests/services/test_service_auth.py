"""Optional API-key auth on a served family bento (FactorModels)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import bentoml
import httpx
import pytest

from harness.bento import BentoServer
from tests.services.conftest import serve_demo

KEY = "test-key-0123456789abcdef0123456789"
BODY = {"venue": "us-equities", "symbol": "SPX"}


@pytest.fixture(scope="module")
def secured_server(
    demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    yield from serve_demo(
        "bentos.factor.service:FactorModels",
        demo_home,
        tmp_path_factory.mktemp("secured"),
        TRADESERVE_API_KEY=KEY,
        # Access lines on (FactorModels turns them off in code), so a leak would show.
        BENTOML_CONFIG_OPTIONS="services.FactorModels.logging.access.enabled=true",
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
    [("GET", "/admin/models"), ("POST", "/admin/reload"), ("POST", "/admin/webhook")],
)
def test_admin_routes_need_the_key(secured_server, method, path) -> None:
    url = f"{secured_server.url}{path}"
    refused = httpx.request(method, url, json={}, timeout=30)
    assert refused.status_code == 401
    assert "API key" in refused.json()["error"]
    allowed = httpx.request(method, url, json={}, headers={"X-API-Key": KEY}, timeout=60)
    assert allowed.status_code != 401


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
    for headers, status in sent:
        response = httpx.post(
            f"{secured_server.url}/venue_quantiles", json=BODY, headers=headers, timeout=30
        )
        assert response.status_code == status
    log = secured_server.log_path.read_text()
    assert log.count("path=/venue_quantiles") >= len(sent), "access lines are logged"
    for secret in (KEY, wrong):
        assert secret[:8] not in log
