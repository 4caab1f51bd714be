"""RegimeBlend for BentoML's clients and for the seed's clients, and numbers that cannot
break it: a real composite (`bentoml serve` at the repository root, with Specialists) on
the demo registry, driven with `bentoml.SyncHTTPClient` and plain HTTP."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import bentoml
import httpx
import pytest

from bentos.regime_blend.schemas import DecisionResponse
from harness.bento import BentoServer
from tests.composite.conftest import serve_root
from tests.composite.test_regime_blend_service import (
    breaching_portfolio,
    decided,
    fresh_portfolio,
    non_hold_day,
    predict,
)

REJECTED = {"detail": "Trade rejected by risk manager"}


@pytest.fixture
def state_restored(blend_server: BentoServer) -> Iterator[str]:
    """The service portfolio's URL; the state is fresh again afterwards (a shared server)."""
    url = f"{blend_server.url}/api/v1/portfolio"
    yield url
    assert httpx.put(url, json=fresh_portfolio()).status_code == 200


def raw_json(server: BentoServer, method: str, path: str, text: str) -> httpx.Response:
    """A request whose body is ``text`` as written (``NaN``, ``Infinity``, ``1e400``)."""
    return httpx.request(
        method,
        f"{server.url}{path}",
        content=text.encode(),
        headers={"content-type": "application/json"},
        timeout=30,
    )


def test_bentoml_client_calls_every_operation(
    blend_server: BentoServer, state_restored: str
) -> None:
    day, free = non_hold_day(blend_server, "SPX", "mixture")
    portfolio = fresh_portfolio()
    with bentoml.SyncHTTPClient(blend_server.url, server_ready_timeout=30) as client:
        native = client.predict(symbol="spx", timestamp=day, portfolio=portfolio)
        DecisionResponse.model_validate(native)  # the same decision shape
        seed = decided(
            blend_server, symbol="SPX", timestamp=day, portfolio=portfolio,
            blend_mode="mixture", risk_mode="body",
        )  # fmt: skip
        # mixture and the risk verdict in the body by default, the same decision as the
        # seed's route gives in those modes: one engine behind both
        assert native["metadata"]["blend_mode"] == "mixture"
        for field in ("symbol", "action", "confidence", "recommended_quantity"):
            assert native[field] == seed[field], field
        assert native["regime_probabilities"] == seed["regime_probabilities"]
        assert native["risk_validation"]["approved"] is True
        assert native["decision_id"] != seed["decision_id"]

        logged = client.decision(decision_id=native["decision_id"])
        assert logged["outputs"] == native
        assert (
            logged
            == httpx.get(f"{blend_server.url}/api/v1/decisions/{native['decision_id']}").json()
        )

        price = free["metadata"]["price"]
        saved = client.set_portfolio(
            cash=500_000.0, positions={"spx": {"quantity": 100, "price": price}}
        )
        assert saved["portfolio"]["positions"]["SPX"]["quantity"] == 100
        assert saved["equity"] == pytest.approx(500_000.0 + 100 * price)
        assert httpx.get(state_restored).json() == saved == client.portfolio()
        filled = client.fill(symbol="SPX", side="SELL", quantity=40, price=price)
        assert filled["portfolio"]["positions"]["SPX"]["quantity"] == 60
        assert filled["portfolio"]["cash"] == pytest.approx(500_000.0 + 40 * price)
        assert client.portfolio() == filled == httpx.get(state_restored).json()

    document = httpx.get(f"{blend_server.url}/docs.json").json()
    assert {"/predict", "/decision", "/portfolio", "/set_portfolio", "/fill"} <= set(
        document["paths"]
    )
    assert "/api/v1/predict" in document["paths"]  # the seed's routes stay documented
    request = document["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"symbol", "blend_mode", "risk_mode", "portfolio"} <= set(
        request["application/json"]["schema"]["properties"]
    )


def test_the_native_endpoint_rejects_with_403_only_on_request(blend_server: BentoServer) -> None:
    day, free = non_hold_day(blend_server, "SPX", "mixture")
    portfolio = breaching_portfolio(free["action"], free["metadata"]["price"])
    body = {"symbol": "SPX", "timestamp": day, "portfolio": portfolio}
    in_body = httpx.post(f"{blend_server.url}/predict", json=body, timeout=30)
    assert in_body.status_code == 200
    assert in_body.json()["risk_validation"]["approved"] is False
    rejected = httpx.post(
        f"{blend_server.url}/predict", json={**body, "risk_mode": "reject"}, timeout=30
    )
    assert rejected.status_code == 403
    assert "position_limit" in rejected.headers["x-risk-warnings"]
    assert rejected.json()["decision_id"] == rejected.headers["x-decision-id"]


def test_the_seed_route_keeps_the_seed_contract_by_default(blend_server: BentoServer) -> None:
    day, free = non_hold_day(blend_server, "SPX", "argmax")
    answer = predict(blend_server, symbol="SPX", timestamp=day, portfolio=fresh_portfolio())
    assert answer.status_code == 200, answer.text
    body = answer.json()
    explicit = decided(
        blend_server, symbol="SPX", timestamp=day, portfolio=fresh_portfolio(),
        blend_mode="argmax",
    )  # fmt: skip
    assert body["metadata"]["blend_mode"] == "argmax"
    for field in ("action", "confidence", "recommended_quantity", "strategy_weights"):
        assert body[field] == explicit[field], field
    # the seed's quantity formula (entropy in nats, bug included) and model_version
    entropy = body["regime_probabilities"]["entropy"]
    assert body["recommended_quantity"] == max(1, int(100 * body["confidence"] * (1 - entropy)))
    weights = body["strategy_weights"]
    assert body["metadata"]["model_version"] == max(weights, key=weights.get)

    # a rejection is the seed's 403: X-Risk-Warnings, FastAPI's detail, no decision body
    portfolio = breaching_portfolio(free["action"], free["metadata"]["price"])
    seed = predict(blend_server, symbol="SPX", timestamp=day, portfolio=portfolio)
    assert seed.status_code == 403 and seed.json() == REJECTED
    assert "position_limit" in seed.headers["x-risk-warnings"]
    logged = httpx.get(f"{blend_server.url}/api/v1/decisions/{seed.headers['x-decision-id']}")
    assert (
        logged.json()["approved"] is False
        and logged.json()["outputs"]["metadata"]["blend_mode"] == "argmax"
    )

    # the request still selects the better modes
    better = decided(
        blend_server, symbol="SPX", timestamp=day, portfolio=portfolio,
        blend_mode="mixture", risk_mode="body",
    )  # fmt: skip
    assert better["metadata"]["blend_mode"] == "mixture"
    assert better["risk_validation"]["approved"] is False


def test_settings_select_the_better_modes_for_the_seed_route(
    demo_home: Path, tmp_path: Path
) -> None:
    server = serve_root(
        demo_home, tmp_path / "state", tmp_path / "serve.log",
        TRADESERVE_BLEND_DEFAULT_MODE="mixture", TRADESERVE_BLEND_RISK_MODE="body",
    )  # fmt: skip
    with server:
        day, free = non_hold_day(server, "SPX", "mixture")
        portfolio = breaching_portfolio(free["action"], free["metadata"]["price"])
        answer = predict(server, symbol="SPX", timestamp=day, portfolio=portfolio)
        assert answer.status_code == 200, answer.text  # no modes named: the settings'
        body = answer.json()
        assert body["metadata"]["blend_mode"] == "mixture"
        assert body["risk_validation"]["approved"] is False
        assert body["risk_validation"]["checks"]["position_limit"] == "fail"
        # and the request still wins over the deployment
        seed = predict(server, symbol="SPX", timestamp=day, portfolio=portfolio, risk_mode="reject")
        assert seed.status_code == 403 and seed.json() == REJECTED


def test_a_specialists_timeout_is_a_503_with_its_reason(demo_home: Path, tmp_path: Path) -> None:
    server = serve_root(
        demo_home, tmp_path / "state", tmp_path / "serve.log",
        TRADESERVE_BLEND_SPECIALISTS_TIMEOUT_S="0.000001",
    )  # fmt: skip
    with server:
        for path, body in (
            ("/api/v1/predict", {"symbol": "SPX", "timestamp": "2016-06-30"}),
            ("/predict", {"symbol": "SPX"}),
        ):
            response = httpx.post(f"{server.url}{path}", json=body, timeout=30)
            assert response.status_code == 503, response.text
            assert "Specialists" in response.text and "no answer in time" in response.text
        assert httpx.get(f"{server.url}/api/v1/portfolio").status_code == 200


# The measurements on main, each refused now with a 4xx naming the field.
BAD_PORTFOLIOS = [
    ('{"cash": NaN}', "cash"),
    ('{"cash": Infinity}', "cash"),
    ('{"cash": -Infinity}', "cash"),
    ('{"cash": 1e400}', "cash"),
    ('{"cash": 2e15}', "cash"),
    ('{"cash": NaN, "positions": {"SPX": {"quantity": 1000000000000, "price": 2000}}}', "SPX"),
    ('{"cash": 1, "positions": {"SPX": {"quantity": 10000000000000, "price": 1}}}', "quantity"),
    ('{"cash": 1, "positions": {"SPX": {"quantity": 1, "price": NaN}}}', "price"),
    ('{"cash": 1, "positions": {"SPX": {"quantity": 1, "price": 1e10}}}', "price"),
    (
        '{"cash": 1, "positions": {"SPX": {"quantity": 1, "price": 1, "sector": "a\\r\\nb"}}}',
        "sector",
    ),
    ('{"cash": 1, "day_start_equity": Infinity}', "day_start_equity"),
    ('{"cash": 1, "positions": {"bad symbol!": {"quantity": 1, "price": 1}}}', "invalid symbol"),
]
BAD_FILLS = [
    ('{"symbol": "SPX", "side": "BUY", "quantity": 1, "price": NaN}', "price"),
    ('{"symbol": "SPX", "side": "BUY", "quantity": 1, "price": Infinity}', "price"),
    ('{"symbol": "SPX", "side": "BUY", "quantity": 10000000000000, "price": 1}', "quantity"),
    ('{"symbol": "SPX", "side": "BUY", "quantity": 1e400, "price": 1}', "quantity"),
    ('{"symbol": "SPX", "side": "BUY", "quantity": 1, "price": 1, "sector": "x\\ny"}', "sector"),
]


def test_bad_numbers_get_4xx_naming_the_field_and_state_stays_readable(
    blend_server: BentoServer, state_restored: str
) -> None:
    before = httpx.get(state_restored).json()
    for text, field in BAD_PORTFOLIOS:
        for method, path, body, status in (
            ("PUT", "/api/v1/portfolio", text, 422),
            ("POST", "/api/v1/predict", f'{{"symbol": "SPX", "portfolio": {text}}}', 422),
            ("POST", "/set_portfolio", text, 400),
            ("POST", "/predict", f'{{"symbol": "SPX", "portfolio": {text}}}', 400),
        ):
            response = raw_json(blend_server, method, path, body)
            assert response.status_code == status, (path, text, response.text)
            assert field in response.text, (path, text, response.text)
    for text, field in BAD_FILLS:
        for path, status in (("/api/v1/portfolio/fills", 422), ("/fill", 400)):
            response = raw_json(blend_server, "POST", path, text)
            assert response.status_code == status, (path, text, response.text)
            assert field in response.text, (path, text, response.text)
    bars = [{"date": "2020-01-02", "open": 1, "high": 1, "low": 1, "close": "NaN", "volume": 1}]
    response = predict(blend_server, symbol="SPX", bars=bars)
    assert response.status_code == 422 and "close" in response.text

    # a fill that would take cash or the position past the bounds: 422, state unchanged
    assert httpx.put(state_restored, json={"cash": 9e14}).status_code == 200
    fill = {"symbol": "SPX", "side": "BUY", "quantity": 10**12, "price": 2e3}
    overflow = httpx.post(f"{state_restored}/fills", json=fill)
    assert overflow.status_code == 422 and "cash" in overflow.text
    assert httpx.get(state_restored).json()["portfolio"] == {
        "cash": 9e14, "positions": {}, "day_start_equity": None,
    }  # fmt: skip

    # state readable, and decisions on it served, after every refusal
    assert httpx.put(state_restored, json=before["portfolio"]).status_code == 200
    assert httpx.get(state_restored).json() == before
    assert decided(blend_server, symbol="SPX", risk_mode="body")["symbol"] == "SPX"


def test_risk_warnings_header_never_carries_raw_request_text(blend_server: BentoServer) -> None:
    day, free = non_hold_day(blend_server, "SPX", "argmax")
    sector = "Énergie, ünïcode; x-injected: 1"
    portfolio = breaching_portfolio(free["action"], free["metadata"]["price"])
    portfolio["positions"]["SPX"]["sector"] = sector  # 30 % of equity: position limit
    portfolio["positions"]["NASDAQ"] = {"quantity": 1, "price": 250_000.0, "sector": sector}
    portfolio["cash"] -= 250_000.0  # 55 % of equity in the sector: concentration
    rejected = predict(blend_server, symbol="SPX", timestamp=day, portfolio=portfolio)
    assert rejected.status_code == 403 and rejected.json() == REJECTED
    header = rejected.headers["x-risk-warnings"]
    assert header.isascii() and "\r" not in header and "\n" not in header
    assert "sector '%C3%89nergie%2C %C3%BCn%C3%AFcode; x-injected: 1'" in header
    warnings = header.split(",")  # the seed's comma-joined list, one entry per warning
    assert any(w.startswith("position_limit") for w in warnings)
    assert any("concentration" in w for w in warnings)


def test_risk_fails_closed_on_non_finite_numbers() -> None:
    """Numbers that slip past the schemas (state written before them, code paths that
    build portfolios) still never approve a trade."""
    from bentos.regime_blend.portfolio import Portfolio, Position
    from bentos.regime_blend.risk import check_trade
    from bentos.regime_blend.settings import RiskLimits
    from bentos.regime_blend.sizing import SizingError, budget_quantity

    limits = RiskLimits()

    def sector_of(symbol: str, sector: str | None) -> str:
        return sector or "unknown"

    held = Position.model_construct(quantity=10**12, price=2000.0, sector=None)
    cases = {
        "cash": Portfolio.model_construct(cash=math.nan, positions={}, day_start_equity=None),
        "position NASDAQ": Portfolio.model_construct(
            cash=1e6, positions={"NASDAQ": held.model_copy(update={"price": math.inf})},
            day_start_equity=None,
        ),
        "day_start_equity": Portfolio.model_construct(
            cash=1e6, positions={}, day_start_equity=math.nan
        ),
    }  # fmt: skip
    for what, portfolio in cases.items():
        verdict = check_trade(portfolio, "SPX", 1, 39, 2000.0, "x", limits, sector_of)
        assert not verdict.approved and verdict.allowed_quantity == 0, what
        assert verdict.rejections[0].check == "non_finite" and what in verdict.warnings[0]
        json.dumps(verdict.exposure, allow_nan=False)  # nothing non-finite reported
    fine = Portfolio(cash=1e6)
    for price in (math.nan, math.inf, 0.0):
        verdict = check_trade(fine, "SPX", 1, 1, price, "x", limits, sector_of)
        assert not verdict.approved and verdict.rejections[0].check == "non_finite"
    # a tiny price sizes to the cap instead of overflowing, and the cap is then checked
    quantity = budget_quantity("BUY", 0.9, 0.0, 1e-300, 1e6, 0.1)
    assert quantity == 10**12
    assert not check_trade(fine, "SPX", 1, quantity, 1.0, "x", limits, sector_of).approved
    for bad in ({"equity": math.nan}, {"price": math.inf}, {"confidence": math.nan}):
        arguments = {"confidence": 0.9, "price": 100.0, "equity": 1e6} | bad
        with pytest.raises(SizingError, match="not finite"):
            budget_quantity("BUY", arguments["confidence"], 0.0, arguments["price"],
                            arguments["equity"], 0.1)  # fmt: skip


def test_a_multipart_body_without_boundary_is_a_400(blend_server: BentoServer) -> None:
    """BentoML answers it 500 by itself (found by schemathesis); refused before it."""
    for path in ("/predict", "/portfolio", "/api/v1/predict"):
        response = httpx.post(
            f"{blend_server.url}{path}",
            content=b"symbol=SPX",
            headers={"content-type": "multipart/form-data"},
        )
        assert response.status_code == 400, (path, response.text)
        assert "boundary" in response.json()["error"]
