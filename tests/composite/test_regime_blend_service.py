"""RegimeBlend served by `bentoml serve` at the repository root (with Specialists) on the demo
registry, driven over HTTP and compared with reference computations made in this process."""

from __future__ import annotations

import hashlib
import json
import math
import random
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from harness.bento import REPO_ROOT, BentoServer
from harness.metrics import sample_totals
from registry.families import SPECIALIST_ROLES, specialist_name
from registry.loading import load_version
from registry.resolve import resolve
from tests.composite.conftest import serve_root
from tests.composite.test_regime_blend_logic import seed_decision
from training_hooks.features import latest_features
from training_hooks.market_data import MarketDataStore

ACTIONS = ("HOLD", "BUY", "SELL")
LABELS = ("bull", "bear", "sideways")
DATES = [d.strftime("%Y-%m-%d") for d in pd.bdate_range("2016-01-04", "2017-12-29", freq="7B")]


_REFERENCE: dict[str, Any] = {}


@pytest.fixture
def reference(demo_registry: Any) -> dict[str, Any]:
    """The promoted models loaded in this process (once), for independent reference results."""
    if not _REFERENCE:
        _REFERENCE["regime"] = load_version(resolve("regime-detector")).runtime
        for role in SPECIALIST_ROLES:
            _REFERENCE[role] = load_version(resolve(specialist_name(role))).runtime
        _REFERENCE["store"] = MarketDataStore()
    return _REFERENCE


def predict(server: BentoServer, **body: Any) -> httpx.Response:
    return httpx.post(f"{server.url}/api/v1/predict", json=body, timeout=30)


def decided(server: BentoServer, **body: Any) -> dict[str, Any]:
    """A decision body: a rejected trade in the body (the service's portfolio may be at a
    limit by now: approvals reserve their exposure until filled)."""
    response = predict(server, **{"risk_mode": "body", **body})
    assert response.status_code == 200, response.text
    return response.json()


def reference_inputs(ref: dict[str, Any], symbol: str, day: str) -> tuple[dict, dict]:
    """Regime probabilities (filter over bars up to ``day`` only) and specialist outputs."""
    bars = ref["store"].load(symbol, as_of=day)
    regime = ref["regime"].filter_probabilities(bars).iloc[-1]
    features = latest_features(bars)[None, :]
    probs = {role: ref[role].probabilities(features)[0].tolist() for role in SPECIALIST_ROLES}
    return {label: float(regime[label]) for label in LABELS}, probs


def fresh_portfolio(cash: float = 1_000_000.0) -> dict[str, Any]:
    return {"cash": cash, "positions": {}, "day_start_equity": cash}


def test_decisions_are_complete_and_consistent(blend_server: BentoServer) -> None:
    for i, day in enumerate(DATES[:12]):
        symbol = ("SPX", "NASDAQ")[i % 2]
        mode = ("argmax", "mixture")[(i // 2) % 2]
        body = decided(
            blend_server, symbol=symbol.lower(), timestamp=day, blend_mode=mode,
            portfolio=fresh_portfolio(),
        )  # fmt: skip
        assert body["symbol"] == symbol
        assert body["action"] in ACTIONS
        assert 0 <= body["confidence"] <= 1
        regime = body["regime_probabilities"]
        p = np.array([regime[label] for label in LABELS])
        assert p.sum() == pytest.approx(1.0, abs=1e-9)
        entropy = float(-(p[p > 0] * np.log(p[p > 0])).sum())
        assert regime["entropy"] == pytest.approx(entropy, abs=1e-9)
        assert regime["entropy_normalized"] == pytest.approx(entropy / math.log(3), abs=1e-9)
        weights = body["strategy_weights"]
        assert set(weights) == {"bull_specialist", "bear_specialist", "sideways_specialist"}
        assert sum(weights.values()) == pytest.approx(1.0, abs=1e-9)
        assert (body["recommended_quantity"] == 0) == (body["action"] == "HOLD")
        risk = body["risk_validation"]
        assert risk["approved"] and set(risk["checks"]) == {
            "position_limit", "concentration", "daily_loss_limit", "leverage",
        }  # fmt: skip
        meta = body["metadata"]
        assert meta["blend_mode"] == mode
        assert meta["as_of"][:10] <= day and meta["data_source"] == "store"
        assert meta["latency_ms"] > 0 and meta["fallbacks"] == {}
        models = {m["name"]: m for m in meta["models"]}
        assert {
            "regime-detector",
            "specialist-bull",
            "specialist-bear",
            "specialist-sideways",
        } <= set(models)
        assert all(m["version"] and m["alias"] == "champion" for m in models.values())
        if mode == "mixture":
            assert meta["model_version"] == "mixture"
        else:
            assert meta["model_version"].endswith("_specialist")


def test_regime_probabilities_use_only_bars_up_to_the_timestamp(
    blend_server: BentoServer, reference: dict[str, Any]
) -> None:
    for day in DATES[::9]:
        expected, _ = reference_inputs(reference, "SPX", day)
        body = decided(blend_server, symbol="SPX", timestamp=day, risk_check=False)
        got = body["regime_probabilities"]
        for label in LABELS:
            assert got[label] == pytest.approx(expected[label], rel=0, abs=1e-12)


def test_argmax_mode_equals_the_seed_algorithm(
    blend_server: BentoServer, reference: dict[str, Any]
) -> None:
    for day in DATES[:20]:
        regime, probs = reference_inputs(reference, "NASDAQ", day)
        expected = seed_decision(regime, probs)
        body = decided(
            blend_server, symbol="NASDAQ", timestamp=day, blend_mode="argmax", risk_check=False
        )
        assert body["action"] == expected["action"], day
        assert body["confidence"] == pytest.approx(expected["confidence"], abs=1e-6)
        assert body["recommended_quantity"] == expected["quantity"]
        assert body["metadata"]["model_version"] == expected["model"]
        assert body["strategy_weights"] == pytest.approx(expected["weights"], abs=1e-9)
        assert body["risk_validation"] is None


def test_mixture_differs_from_argmax_where_the_blend_disagrees(
    blend_server: BentoServer, reference: dict[str, Any]
) -> None:
    disagreements = 0
    for day in DATES:
        regime, probs = reference_inputs(reference, "SPX", day)
        w = {k: (regime[k] + 0.1) / 1.3 for k in LABELS}
        mix = [sum(w[k] * probs[k][a] for k in LABELS) for a in range(3)]
        mix_action = ACTIONS[int(np.argmax(mix))]
        seed = seed_decision(regime, probs)
        if mix_action == seed["action"]:
            continue
        disagreements += 1
        argmax = decided(blend_server, symbol="SPX", timestamp=day, blend_mode="argmax")
        mixture = decided(
            blend_server, symbol="SPX", timestamp=day, blend_mode="mixture", explain=True
        )
        assert argmax["action"] == seed["action"]
        assert mixture["action"] == mix_action != argmax["action"]
        assert mixture["confidence"] == pytest.approx(max(mix), abs=1e-6)
        blended = mixture["explanation"]["blended"]
        assert [blended[a] for a in ACTIONS] == pytest.approx(mix, abs=1e-6)
    assert disagreements >= 1, "no date where mixture and argmax disagree; widen DATES"


def test_explain_returns_every_specialist_weight_and_blend(blend_server: BentoServer) -> None:
    body = decided(blend_server, symbol="SPX", timestamp="2016-06-30", explain=True)
    explanation = body["explanation"]
    assert set(explanation["specialists"]) == set(LABELS)
    for role, item in explanation["specialists"].items():
        assert sum(item["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert item["served_by"] == role and item["model"]["name"] == specialist_name(role)
    assert explanation["weights"] == body["strategy_weights"]
    assert len(explanation["features"]) == 19
    assert decided(blend_server, symbol="SPX", timestamp="2016-06-30")["explanation"] is None


def non_hold_day(server: BentoServer, symbol: str, mode: str) -> tuple[str, dict[str, Any]]:
    for day in DATES:
        body = decided(server, symbol=symbol, timestamp=day, blend_mode=mode, risk_check=False)
        if body["action"] != "HOLD":
            return day, body
    raise AssertionError("every date is HOLD")


def breaching_portfolio(action: str, price: float) -> dict[str, Any]:
    """1e6 equity with 30 % of it already in SPX on the side the decision trades."""
    shares = math.ceil(0.30 * 1_000_000 / price) * (1 if action == "BUY" else -1)
    return {
        "cash": 1_000_000 - shares * price,
        "positions": {"SPX": {"quantity": shares, "price": price}},
        "day_start_equity": 1_000_000,
    }


def test_a_position_that_breaks_a_limit_is_rejected(blend_server: BentoServer) -> None:
    day, free = non_hold_day(blend_server, "SPX", "mixture")
    portfolio = breaching_portfolio(free["action"], free["metadata"]["price"])
    body = decided(blend_server, symbol="SPX", timestamp=day, portfolio=portfolio, risk_mode="body")
    risk = body["risk_validation"]
    assert body["action"] == free["action"] and not risk["approved"]
    assert risk["checks"]["position_limit"] == "fail"
    assert risk["allowed_quantity"] == 0
    assert any(r["check"] == "position_limit" for r in risk["rejections"])
    assert body["metadata"]["portfolio_source"] == "request"
    # the seed's behaviour by default: 403, X-Risk-Warnings, no decision body
    seed = predict(blend_server, symbol="SPX", timestamp=day, portfolio=portfolio)
    assert seed.status_code == 403
    assert seed.json() == {"detail": "Trade rejected by risk manager"}
    assert "position_limit" in seed.headers["x-risk-warnings"]
    assert seed.headers["x-allowed-quantity"] == "0"
    logged = httpx.get(f"{blend_server.url}/api/v1/decisions/{seed.headers['x-decision-id']}")
    assert logged.status_code == 200 and logged.json()["approved"] is False


def test_service_portfolio_state_is_used_and_updated(blend_server: BentoServer) -> None:
    url = f"{blend_server.url}/api/v1/portfolio"
    day, free = non_hold_day(blend_server, "SPX", "argmax")
    try:
        saved = httpx.put(url, json=breaching_portfolio(free["action"], free["metadata"]["price"]))
        assert saved.status_code == 200, saved.text
        body = decided(
            blend_server, symbol="SPX", timestamp=day, blend_mode="argmax", risk_mode="body"
        )
        assert body["metadata"]["portfolio_source"] == "state"
        assert not body["risk_validation"]["approved"]
        held = saved.json()["portfolio"]["positions"]["SPX"]["quantity"]
        side = "SELL" if held > 0 else "BUY"
        fill = {
            "symbol": "SPX",
            "side": side,
            "quantity": abs(held),
            "price": free["metadata"]["price"],
        }
        filled = httpx.post(f"{url}/fills", json=fill)
        assert filled.status_code == 200 and filled.json()["portfolio"]["positions"] == {}
        assert httpx.get(url).json()["portfolio"]["positions"] == {}
        after = decided(blend_server, symbol="SPX", timestamp=day, blend_mode="argmax")
        assert after["risk_validation"]["approved"]
    finally:
        httpx.put(url, json=fresh_portfolio())


def test_strategy_override_uses_one_specialist(
    blend_server: BentoServer, reference: dict[str, Any]
) -> None:
    day = "2016-06-30"
    _, probs = reference_inputs(reference, "SPX", day)
    for name in ("bear", "bear_specialist"):
        body = decided(blend_server, symbol="SPX", timestamp=day, strategy_override=name)
        assert body["metadata"]["model_version"] == "bear_specialist"
        assert body["metadata"]["strategy_override"] == "bear"
        assert body["action"] == ACTIONS[int(np.argmax(probs["bear"]))]
        assert body["confidence"] == pytest.approx(max(probs["bear"]), abs=1e-6)
    universal = decided(blend_server, symbol="SPX", timestamp=day, strategy_override="universal")
    assert universal["metadata"]["model_version"] == "universal"
    unknown = predict(blend_server, symbol="SPX", strategy_override="crab_specialist")
    assert unknown.status_code == 400
    assert unknown.json() == {"detail": "Strategy override 'crab_specialist' not available"}


def test_bad_requests_get_clear_client_errors(blend_server: BentoServer) -> None:
    bars = MarketDataStore(blend_server.env["TRADESERVE_HOME"] + "/market_data").load(
        "SPX", as_of="2016-06-30", lookback=20
    )
    few = [{"date": str(d.date()), **row} for d, row in bars.to_dict("index").items()]
    broken = [dict(bar, high=bar["low"] / 2) for bar in few]
    cases = [
        ({}, 422, "symbol"),
        ({"symbol": "X" * 21}, 422, "20 characters"),
        ({"symbol": "SPX", "blend_mode": "median"}, 422, "argmax"),
        ({"symbol": "SPX", "timestamp": "yesterday"}, 422, "timestamp"),
        ({"symbol": "ZZZ"}, 404, "known symbols: NASDAQ, SPX"),
        ({"symbol": "SPX", "timestamp": "1980-01-01"}, 422, "data starts"),
        ({"symbol": "SPX", "timestamp": "1999-04-01"}, 422, "needs at least 200 bars"),
        ({"symbol": "SPX", "bars": few}, 422, "needs at least 200 bars"),
        ({"symbol": "SPX", "bars": broken}, 400, "high < low"),
        ({"symbol": "SPX", "strategy_override": "crab"}, 400, "Strategy override 'crab'"),
        ({"symbol": "SPX", "portfolio": {"cash": "lots"}}, 422, "cash"),
    ]
    for body, status, message in cases:
        response = predict(blend_server, **body)
        assert response.status_code == status, (body, response.text)
        assert message in response.text, (body, response.text)
        assert "detail" in response.json()
    garbled = httpx.post(
        f"{blend_server.url}/api/v1/predict",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert garbled.status_code == 422
    assert decided(blend_server, symbol="SPX")["symbol"] == "SPX"  # still serving


def test_inline_bars_give_the_stored_bars_decision(blend_server: BentoServer) -> None:
    store = MarketDataStore(blend_server.env["TRADESERVE_HOME"] + "/market_data")
    bars = store.load("NASDAQ", as_of="2017-03-01", lookback=700)
    inline = [{"date": d.isoformat(), **row} for d, row in bars.to_dict("index").items()]
    stored = decided(blend_server, symbol="NASDAQ", timestamp="2017-02-15", explain=True)
    sent = decided(blend_server, symbol="NASDAQ", timestamp="2017-02-15", bars=inline, explain=True)
    assert sent["metadata"]["data_source"] == "request"
    assert sent["metadata"]["as_of"] == stored["metadata"]["as_of"]  # later bars ignored
    assert sent["explanation"]["features"] == pytest.approx(stored["explanation"]["features"])
    for label in LABELS:  # the inline filter starts 500 bars back; it has forgotten its start
        assert sent["regime_probabilities"][label] == pytest.approx(
            stored["regime_probabilities"][label], abs=1e-9
        )
    assert sent["action"] == stored["action"]


def test_models_health_readyz_and_metrics(blend_server: BentoServer) -> None:
    models = httpx.get(f"{blend_server.url}/api/v1/models").json()
    assert models["total_models"] == 5
    assert set(models["models"]) == {
        "regime_detector", "bull_specialist", "bear_specialist", "sideways_specialist",
        "universal",
    }  # fmt: skip
    for entry in models["models"].values():
        assert entry["version"] and entry["loaded_at"] and entry["parameters"] > 0
    assert models["models"]["universal"]["registered_name"] == "specialist-universal"
    health = httpx.get(f"{blend_server.url}/health").json()
    assert health["status"] == "healthy" and health["model_loaded"] is True
    assert set(health) == {"status", "model_loaded", "gpu_available", "timestamp"}
    assert httpx.get(f"{blend_server.url}/readyz").status_code == 200
    admin = httpx.get(f"{blend_server.url}/admin/models").json()
    assert admin["service"] == "RegimeBlend" and admin["live"] is True
    assert [m["name"] for m in admin["models"]] == ["regime-detector"]
    with httpx.Client(base_url=blend_server.url, timeout=30) as one_worker:  # keep-alive
        body = {
            "symbol": "SPX",
            "timestamp": "2016-07-01",
            "blend_mode": "mixture",
            "explain": True,
            "portfolio": fresh_portfolio(),  # the service's own may be at a limit by now
        }
        first = one_worker.post("/api/v1/predict", json=body).json()
        before = answers_by_source(one_worker.get("/metrics").text)
        again = one_worker.post("/api/v1/predict", json=body).json()
        after = answers_by_source(one_worker.get("/metrics").text)
    assert after["cache"] - before["cache"] == 3  # same bar: memoised specialist answers
    assert after.get("service", 0) == before.get("service", 0)
    assert again["explanation"] == first["explanation"] and again["action"] == first["action"]
    metrics = httpx.get(f"{blend_server.url}/metrics")
    assert metrics.status_code == 200 and "text/plain" in metrics.headers["content-type"]
    for name in (
        "predictions_total",
        "prediction_latency_seconds_bucket",
        "tradeserve_regime_blend_decisions_total",
        "bentoml_service_request_total",
    ):
        assert name in metrics.text, name


def answers_by_source(metrics: str) -> dict[str, float]:
    answers = "tradeserve_regime_blend_specialist_answers_total"
    return {"cache": 0.0, **sample_totals(metrics, answers, "source")}


def test_every_decision_is_logged_with_inputs_outputs_and_models(
    blend_server: BentoServer,
) -> None:
    body = decided(blend_server, symbol="SPX", timestamp="2017-05-05", blend_mode="argmax")
    logged = httpx.get(f"{blend_server.url}/api/v1/decisions/{body['decision_id']}").json()
    assert logged["outputs"] == body
    assert logged["inputs_digest"] == body["metadata"]["inputs_digest"]
    # the inputs come back exactly as they went in: hashed as the README tells a client to
    canonical = json.dumps(logged["inputs"], sort_keys=True, separators=(",", ":"))
    assert hashlib.sha256(canonical.encode()).hexdigest() == logged["inputs_digest"]
    assert logged["inputs"]["features"] and logged["inputs"]["regime"]
    assert [m["name"] for m in logged["models"]] == [m["name"] for m in body["metadata"]["models"]]
    assert httpx.get(f"{blend_server.url}/api/v1/decisions/nope").status_code == 404


def test_argmax_and_mixture_match_the_evaluator(
    blend_server: BentoServer, demo_registry: Any
) -> None:
    """The evaluator replays the service's decision code: same answers on the same inputs."""
    from bentos.regime_blend.evaluate import EvaluationConfig, evaluate

    config = EvaluationConfig(start="2016-03-01", end="2016-04-29", symbols=("SPX",))
    report_dir = Path(blend_server.log_path).parent / "evaluation"
    evaluate(config, log_to_mlflow=False, out_dir=report_dir)
    decisions = pd.read_csv(report_dir / "decisions.csv")
    first = decisions[decisions["mode"] == "mixture"].iloc[0]
    body = decided(
        blend_server,
        symbol="SPX",
        timestamp=first["date"],
        portfolio=fresh_portfolio(),
        blend_mode="mixture",
    )  # a fresh book, like the evaluator's on its first day
    assert (body["action"], body["recommended_quantity"]) == (first["action"], first["quantity"])
    assert body["confidence"] == pytest.approx(first["confidence"], abs=1e-6)
    for row in decisions[decisions["mode"] == "argmax"].iloc[::5].itertuples():
        body = decided(blend_server, symbol="SPX", timestamp=row.date, blend_mode="argmax")
        assert (body["action"], body["recommended_quantity"]) == (row.action, row.quantity)


def test_32_clients_for_10_seconds_get_no_errors(blend_server: BentoServer, tmp_path: Path) -> None:
    """Every body asks about another bar, so every decision crosses to Specialists."""
    days = pd.bdate_range("2002-01-02", "2014-12-31").strftime("%Y-%m-%d").tolist()
    bodies = tmp_path / "bodies.jsonl"
    lines = [
        json.dumps(
            {
                "symbol": symbol,
                "timestamp": day,
                "blend_mode": ("argmax", "mixture")[i % 2],
                # a third against the service's portfolio: its approvals reserve exposure
                # until the limit rejects (answered 200 in the body, not the seed's 403)
                "portfolio": fresh_portfolio() if i % 3 else None,
                "risk_mode": "body",
            }
        )
        for i, (day, symbol) in enumerate(
            (day, symbol) for day in days for symbol in ("SPX", "NASDAQ")
        )
    ]
    random.Random(3).shuffle(lines)
    bodies.write_text("\n".join(lines) + "\n")
    out = tmp_path / "load.json"
    subprocess.run(
        [
            sys.executable, "-m", "bench.loadgen", "closed",
            "--url", f"{blend_server.url}/api/v1/predict", "--bodies", str(bodies),
            "--concurrency", "32", "--duration", "10", "--warmup", "1",
            "--check", '"decision_id"', "--out", str(out),
        ],
        cwd=REPO_ROOT, check=True, timeout=120,
    )  # fmt: skip
    result = json.loads(out.read_text())
    assert result["requests"] > 100
    assert result["errors"] == 0 and result["errors_outside_window"] == 0, result["error_samples"]


# --------------------------------------------------------------------------- degraded registry


@pytest.fixture(scope="module")
def bearless_home(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo registry in which specialist-bear is not promoted."""
    import shutil

    from mlflow import MlflowClient

    home = tmp_path_factory.mktemp("bearless") / "home"
    shutil.copytree(demo_home, home, ignore=shutil.ignore_patterns("bentoml", "regime_blend"))
    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    version = client.get_model_version_by_alias("specialist-bear", "champion")
    client.delete_registered_model_alias("specialist-bear", "champion")
    client.transition_model_version_stage("specialist-bear", version.version, "Archived")
    return home


def test_missing_specialist_falls_back_to_universal(bearless_home: Path, tmp_path: Path) -> None:
    with serve_root(bearless_home, tmp_path / "state", tmp_path / "serve.log") as server:
        body = decided(server, symbol="SPX", timestamp="2016-06-30", explain=True)
        assert body["metadata"]["fallbacks"] == {"bear": "universal"}
        bear = body["explanation"]["specialists"]["bear"]
        assert bear["served_by"] == "universal"
        assert bear["model"]["name"] == "specialist-universal"
        assert "specialist-bear" not in {m["name"] for m in body["metadata"]["models"]}
        # a day whose most likely regime is bear (the 2008 crash, else the test dates):
        # argmax mode must then run the universal fallback and say so
        candidates = [d.strftime("%Y-%m-%d") for d in pd.bdate_range("2008-09-15", "2009-03-09")]
        for day in [*candidates[::5], *DATES]:
            chosen = decided(server, symbol="SPX", timestamp=day, blend_mode="argmax", explain=True)
            if chosen["explanation"]["method"].startswith("argmax: bear"):
                break
        else:
            raise AssertionError("no tested day has bear as its most likely regime")
        assert chosen["metadata"]["model_version"] == "universal"
        assert chosen["explanation"]["specialists"]["bear"]["served_by"] == "universal"
        missing = predict(server, symbol="SPX", strategy_override="bear_specialist")
        assert missing.status_code == 400
        assert missing.json()["detail"] == "Strategy override 'bear_specialist' not available"
        assert "bear_specialist" not in httpx.get(f"{server.url}/api/v1/models").json()["models"]


def test_decisions_survive_a_crash_and_a_restart(demo_home: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    server = serve_root(demo_home, state, tmp_path / "serve.log")
    server.start()
    try:
        ids = [
            decided(server, symbol="SPX", timestamp=day, portfolio=fresh_portfolio())["decision_id"]
            for day in DATES[:15]
        ]
    finally:
        server.kill()  # SIGKILL the arbiter and its workers: no shutdown hook runs
    with sqlite3.connect(state / "state.db") as db:  # the embedded default: one file
        rows = db.execute("SELECT decision_id FROM decisions")  # 16-byte UUIDs
        stored = {str(uuid.UUID(bytes=row[0])) for row in rows}
    assert set(ids) <= stored
    restarted = serve_root(demo_home, state, tmp_path / "serve2.log")
    restarted.start()
    try:
        for decision_id in ids:
            logged = httpx.get(f"{restarted.url}/api/v1/decisions/{decision_id}")
            assert logged.status_code == 200 and logged.json()["outputs"]["decision_id"] == (
                decision_id
            )
    finally:
        restarted.stop()
