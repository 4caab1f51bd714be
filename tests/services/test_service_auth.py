"""Optional API-key auth on a served family bento (FactorModels)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import bentoml
import httpx
import pytest

from harness.bento import BentoServer, bento_server
from tests.demo_fixtures import demo_env, own_bentoml_home

KEY = "test-key-0123456789abcdef0123456789"
BODY = {"venue": "us-equities", "symbol": "SPX"}


@pytest.fixture(scope="module")
def secured_server(
    demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    folder = tmp_path_factory.mktemp("secured")
    env = demo_env(
        demo_home, TRADESERVE_API_KEY=KEY, BENTOML_HOME=own_bentoml_home(demo_home, folder)
    )
    with bento_server("bentos.factor.service:FactorModels", env, folder / "serve.log") as server:
        yield server


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
    for path in ["/livez", "/readyz", "/metrics"]:
        assert httpx.get(f"{secured_server.url}{path}", timeout=30).status_code == 200


def test_the_key_never_reaches_the_log(secured_server) -> None:
    httpx.post(
        f"{secured_server.url}/venue_quantiles",
        json=BODY,
        headers={"X-API-Key": KEY},
        timeout=30,
    )
    assert KEY not in secured_server.log_path.read_text()
