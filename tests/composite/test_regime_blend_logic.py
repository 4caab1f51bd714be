"""RegimeBlend's decision logic: weights, blending, sizing, risk, portfolio and decision log."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import insert
from sqlalchemy.exc import OperationalError

from bentos.regime_blend.blending import (
    NoSpecialistError,
    UnknownOverrideError,
    WeightMapping,
    blend,
    plan_roles,
)
from bentos.regime_blend.compat import parse_override, seed_name
from bentos.regime_blend.decision import DecisionPolicy, decide
from bentos.regime_blend.decision_log import (
    Checked,
    DecisionLog,
    DecisionLogError,
    DecisionRecord,
    Entry,
)
from bentos.regime_blend.portfolio import Fill, Portfolio, Position
from bentos.regime_blend.render import SharedInputs, inputs_digest
from bentos.regime_blend.risk import check_trade
from bentos.regime_blend.settings import BlendSettings, RiskLimits
from bentos.regime_blend.sizing import budget_quantity, seed_quantity
from bentos.regime_blend.state import codec
from bentos.regime_blend.state.db import StateDatabase
from bentos.regime_blend.state.portfolio_store import (
    PortfolioStateError,
    PortfolioStore,
    Reservation,
    now_us,
)
from bentos.regime_blend.state.retention import export_and_prune, log_size
from bentos.regime_blend.state.tables import decision_refs
from bentos.shared.lineage import ModelRef
from harness.bento import REPO_ROOT
from harness.wait import wait_until

ALL_ROLES = {"bull", "bear", "sideways", "universal"}
ACTIONS = ("HOLD", "BUY", "SELL")
LIMITS = RiskLimits()


def policy(**settings: object) -> DecisionPolicy:
    return DecisionPolicy.from_settings(BlendSettings(**settings))


def sector_of(symbol: str, explicit: str | None = None) -> str:
    return explicit or {"SPX": "index", "NASDAQ": "index"}.get(symbol, "other")


# --------------------------------------------------------------------------- seed reference


def seed_decision(regime: dict[str, float], probs: dict[str, list[float]]) -> dict:
    """The seed's algorithm, written from its formulas (ultrathink inference_api.py)."""
    entropy = -sum(p * math.log(p) for p in regime.values() if p > 0)
    weights = {f"{k}_specialist": (regime[k] + 0.1) / 1.3 for k in ("bull", "bear", "sideways")}
    chosen = max(weights.items(), key=lambda item: item[1])[0]
    pi = probs[chosen.removesuffix("_specialist")]
    action_index = max(range(3), key=lambda a: pi[a])
    action, confidence = ACTIONS[action_index], pi[action_index]
    quantity = 0 if action == "HOLD" else max(1, int(100 * confidence * (1 - entropy)))
    return {
        "weights": weights,
        "model": chosen,
        "action": action,
        "confidence": confidence,
        "quantity": quantity,
    }


def random_case(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    regime = rng.dirichlet(np.ones(3) * rng.choice([0.3, 1.0, 5.0]))
    probs = {role: rng.dirichlet(np.ones(3)) for role in ALL_ROLES}
    return regime, probs


def test_default_weights_are_the_seed_formula() -> None:
    rng = np.random.default_rng(0)
    mapping = WeightMapping()
    for _ in range(200):
        p = rng.dirichlet(np.ones(3))
        np.testing.assert_allclose(mapping.weights(p), (p + 0.1) / 1.3, rtol=0, atol=1e-15)
        assert math.isclose(mapping.weights(p).sum(), 1.0)


def test_argmax_mode_reproduces_the_seed_algorithm() -> None:
    rng = np.random.default_rng(1)
    rules = policy()
    plan = plan_roles(rules.mapping, ALL_ROLES)
    book = Portfolio(cash=1e6)
    for _ in range(500):
        regime, probs = random_case(rng)
        expected = seed_decision(
            dict(zip(("bull", "bear", "sideways"), regime.tolist(), strict=True)),
            {role: p.tolist() for role, p in probs.items()},
        )
        got = decide(
            regime, probs, plan, mode="argmax", policy=rules, symbol="SPX", price=2000.0,
            portfolio=book, risk_check=False,
        )  # fmt: skip
        assert got.action == expected["action"]
        assert got.confidence == pytest.approx(expected["confidence"], abs=1e-12)
        assert got.quantity == expected["quantity"]
        assert seed_name(got.blend.chosen_role or "") == expected["model"]
        weights = dict(zip(map(seed_name, rules.mapping.roles), got.weights, strict=True))
        assert weights == pytest.approx(expected["weights"], abs=1e-12)


def test_mixture_blends_every_specialist_by_weight() -> None:
    rules = policy()
    plan = plan_roles(rules.mapping, ALL_ROLES)
    # bull is most likely, but bull is torn between BUY and HOLD while the others sell
    regime = np.array([0.5, 0.25, 0.25])
    probs = {
        "bull": np.array([0.30, 0.40, 0.30]),
        "bear": np.array([0.05, 0.05, 0.90]),
        "sideways": np.array([0.10, 0.10, 0.80]),
        "universal": np.array([1 / 3, 1 / 3, 1 / 3]),
    }
    book = Portfolio(cash=1e6)
    argmax = decide(
        regime, probs, plan, mode="argmax", policy=rules, symbol="SPX", price=2000.0,
        portfolio=book, risk_check=False,
    )  # fmt: skip
    mixture = decide(
        regime, probs, plan, mode="mixture", policy=rules, symbol="SPX", price=2000.0,
        portfolio=book, risk_check=False,
    )  # fmt: skip
    weights = (regime + 0.1) / 1.3
    expected = sum(w * probs[r] for w, r in zip(weights, ("bull", "bear", "sideways"), strict=True))
    assert argmax.action == "BUY" and argmax.blend.chosen_role == "bull"
    assert mixture.action == "SELL"
    np.testing.assert_allclose(mixture.blend.distribution, expected, atol=1e-12)
    assert mixture.confidence == pytest.approx(expected[2])


def test_seed_quantity_keeps_the_entropy_in_nats_bug() -> None:
    assert seed_quantity("HOLD", 0.9, 0.1) == 0
    assert seed_quantity("BUY", 0.8, 0.5) == 40
    assert seed_quantity("SELL", 0.8, 1.05) == 1  # 1 - H < 0 clamps to one share
    assert seed_quantity("BUY", 0.99, math.log(3)) == 1


def test_mixture_sizing_uses_normalized_entropy_price_and_budget() -> None:
    # 10 % of 1e6 at full confidence and certainty buys 500 shares at 200
    assert budget_quantity("BUY", 1.0, 0.0, 200.0, 1e6, 0.10) == 500
    assert budget_quantity("SELL", 0.5, 0.5, 200.0, 1e6, 0.10) == 125
    assert budget_quantity("BUY", 0.6, 0.3, 2000.0, 1e6, 0.10) == 21  # floor(42000 / 2000)
    assert budget_quantity("BUY", 0.9, 1.0, 200.0, 1e6, 0.10) == 1  # no certainty: minimum
    assert budget_quantity("HOLD", 0.9, 0.0, 200.0, 1e6, 0.10) == 0
    # the same regime uncertainty that clamps the seed to 1 share still sizes in mixture
    probs = np.array([0.5, 0.3, 0.2])
    entropy = float(-(probs * np.log(probs)).sum())
    assert entropy > 1.0
    assert budget_quantity("BUY", 0.7, entropy / math.log(3), 100.0, 1e6, 0.10) > 1


def test_missing_specialists_fall_back_to_universal() -> None:
    mapping = WeightMapping()
    plan = plan_roles(mapping, {"bull", "sideways", "universal"})
    assert plan.used == {"bull": "bull", "bear": "universal", "sideways": "sideways"}
    assert plan.fallbacks == {"bear": "universal"}
    assert plan.needed == ("bull", "universal", "sideways")
    only_bull = plan_roles(mapping, {"bull"})
    assert only_bull.fallbacks == {"bear": "bull", "sideways": "bull"}
    with pytest.raises(NoSpecialistError):
        plan_roles(mapping, set())
    with pytest.raises(UnknownOverrideError, match="Strategy override 'bear' not available"):
        plan_roles(mapping, {"bull", "universal"}, override="bear")
    # argmax picks bear by weight; universal answers for it
    probs = {
        "bull": np.array([1.0, 0, 0]),
        "sideways": np.array([1.0, 0, 0]),
        "universal": np.array([0, 0, 1.0]),
    }
    chosen = blend("argmax", mapping.weights(np.array([0.1, 0.8, 0.1])), probs, plan, mapping.roles)
    assert (chosen.action, chosen.chosen_role) == ("SELL", "bear")


def test_override_names_of_the_seed_and_plain_roles() -> None:
    for text in ("bull", "bull_specialist", "BULL_SPECIALIST", "specialist-bull"):
        assert parse_override(text) == "bull"
    assert parse_override("universal") == "universal"
    assert parse_override("crab_specialist") is None
    rules = policy()
    plan = plan_roles(rules.mapping, ALL_ROLES, override="bear")
    probs = {role: np.array([0.2, 0.7, 0.1]) for role in ALL_ROLES}
    probs["bear"] = np.array([0.1, 0.2, 0.7])
    got = decide(
        np.array([0.9, 0.05, 0.05]), probs, plan, mode="mixture", policy=rules, symbol="SPX",
        price=100.0, portfolio=Portfolio(cash=1e6), risk_check=False,
    )  # fmt: skip
    assert (got.action, got.confidence, got.blend.chosen_role) == ("SELL", 0.7, "bear")


def test_weight_mapping_is_configurable_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TRADESERVE_BLEND_WEIGHTS",
        '{"coefficients": {"bull": {"bull": 1}, "universal": {"bear": 1, "sideways": 1}},'
        ' "floor": 0}',
    )
    monkeypatch.setenv("TRADESERVE_BLEND_RISK__MAX_POSITION_FRACTION", "0.1")
    settings = BlendSettings()
    assert settings.weights.roles == ("bull", "universal")
    np.testing.assert_allclose(settings.weights.weights(np.array([0.6, 0.3, 0.1])), [0.6, 0.4])
    assert settings.risk.max_position_fraction == 0.1
    with pytest.raises(ValueError, match="unknown specialist"):
        WeightMapping(coefficients={"crab": {"bull": 1.0}})
    with pytest.raises(ValueError, match="unknown regime"):
        WeightMapping(coefficients={"bull": {"boom": 1.0}})


# --------------------------------------------------------------------------- risk


def test_position_limit_rejects_and_allows_what_fits() -> None:
    book = Portfolio(cash=800_000, positions={"SPX": Position(quantity=100, price=2000)})
    # equity 1e6; 100 more shares -> 400k = 40 % > 25 %
    result = check_trade(book, "SPX", +1, 100, 2000.0, "index", LIMITS, sector_of)
    assert not result.approved
    assert result.checks["position_limit"] == "fail"
    assert result.rejections[0].proposed == pytest.approx(0.40)
    # 95 % of the 25 % limit = 237.5k = 118.75 shares -> 18 more
    assert result.allowed_quantity == 18
    assert check_trade(book, "SPX", +1, 18, 2000.0, "index", LIMITS, sector_of).approved
    # selling reduces the position and is always allowed
    assert check_trade(book, "SPX", -1, 100, 2000.0, "index", LIMITS, sector_of).approved


def test_short_positions_count_against_equity() -> None:
    book = Portfolio(cash=1_200_000, positions={"SPX": Position(quantity=-100, price=2000)})
    assert book.equity() == pytest.approx(1_000_000)  # the seed counted +200k here
    result = check_trade(book, "SPX", -1, 50, 2000.0, "index", LIMITS, sector_of)
    assert not result.approved and result.checks["position_limit"] == "fail"
    assert result.allowed_quantity == 18  # short to -118 shares
    assert check_trade(book, "SPX", +1, 150, 2000.0, "index", LIMITS, sector_of).approved


def test_sector_concentration_and_leverage_limits() -> None:
    book = Portfolio(
        cash=470_000,
        positions={
            "NASDAQ": Position(quantity=45, price=6000),  # 270k, sector index
            "GOLD": Position(quantity=1000, price=260),  # 260k, sector other
        },
    )
    # equity 1e6; 100 SPX at 2000 = 200k: sector index 47 % passes with a warning
    ok = check_trade(book, "SPX", +1, 100, 2000.0, "index", LIMITS, sector_of)
    assert ok.approved and ok.checks["concentration"] == "warning"
    # 120 SPX: 240k (24 %, within the position limit) + 270k = 51 % of equity in one sector
    bad = check_trade(book, "SPX", +1, 120, 2000.0, "index", LIMITS, sector_of)
    assert not bad.approved and bad.checks["concentration"] == "fail"
    assert bad.checks["position_limit"] != "fail"
    assert bad.allowed_quantity == 102  # (0.95 · 0.5 · 1e6 − 270k) / 2000
    levered = Portfolio(
        cash=-400_000,
        positions={
            "A": Position(quantity=1000, price=240, sector="a"),
            "B": Position(quantity=1000, price=240, sector="b"),
            "C": Position(quantity=1000, price=240, sector="c"),
            "D": Position(quantity=1000, price=240, sector="d"),
            "E": Position(quantity=1000, price=240, sector="e"),
        },
    )
    # equity 800k, gross 1.2M = 1.5x; any new position breaks the leverage limit
    result = check_trade(levered, "F", +1, 10, 100.0, "f", LIMITS, sector_of)
    assert not result.approved and result.checks["leverage"] == "fail"
    assert result.allowed_quantity == 0
    assert any("insufficient cash" in warning for warning in result.warnings)


def test_daily_loss_limit_blocks_new_risk_only() -> None:
    book = Portfolio(
        cash=780_000, positions={"SPX": Position(quantity=100, price=2000)}, day_start_equity=1e6
    )  # equity 980k: a 2 % loss is not more than 2 %
    assert check_trade(book, "SPX", +1, 1, 2000.0, "index", LIMITS, sector_of).approved
    losing = book.model_copy(update={"cash": 770_000})  # 3 % down
    buy = check_trade(losing, "SPX", +1, 1, 2000.0, "index", LIMITS, sector_of)
    assert not buy.approved and buy.checks["daily_loss_limit"] == "fail"
    assert buy.allowed_quantity == 0
    sell = check_trade(losing, "SPX", -1, 50, 2000.0, "index", LIMITS, sector_of)
    assert sell.approved and sell.checks["daily_loss_limit"] == "warning"


def test_hold_is_never_checked_or_sized() -> None:
    rules = policy()
    plan = plan_roles(rules.mapping, ALL_ROLES)
    probs = {role: np.array([0.8, 0.1, 0.1]) for role in ALL_ROLES}
    broke = Portfolio(cash=-1e6, positions={"SPX": Position(quantity=10_000, price=2000)})
    got = decide(
        np.array([0.2, 0.3, 0.5]), probs, plan, mode="mixture", policy=rules, symbol="SPX",
        price=2000.0, portfolio=broke,
    )  # fmt: skip
    assert got.action == "HOLD" and got.quantity == 0
    assert got.risk is not None and got.risk.approved


# --------------------------------------------------------------------------- state


def state_db(folder: Path) -> StateDatabase:
    return StateDatabase(f"sqlite:///{folder / 'state.db'}")


def test_portfolio_state_survives_reopening(tmp_path: Path) -> None:
    db = state_db(tmp_path)
    store = PortfolioStore(db, initial_capital=1e6)
    assert store.load() == Portfolio(cash=1e6, day_start_equity=1e6)
    store.apply(Fill(symbol="spx", side="BUY", quantity=10, price=2000.0))
    store.apply(Fill(symbol="SPX", side="SELL", quantity=4, price=2100.0, sector="index"))
    db.close()
    reopened = PortfolioStore(state_db(tmp_path), initial_capital=5.0).load()
    assert reopened.positions["SPX"].quantity == 6
    assert reopened.positions["SPX"].price == 2100.0
    assert reopened.cash == pytest.approx(1e6 - 20_000 + 8_400)
    with sqlite3.connect(tmp_path / "state.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT count(*) FROM fills").fetchone()[0] == 2
        revision = raw.execute("SELECT version_num FROM regime_blend_alembic_version").fetchone()
        assert revision == ("0001",)


def reserve_many(store: PortfolioStore) -> Portfolio:
    """Reserve 600 trades on ``store`` (buys and sells of three symbols at moving prices,
    most naming no sector, one symbol back to flat); the book that filling them one by one
    would give."""
    start = Portfolio(
        cash=1e6, positions={"SPX": Position(quantity=40, price=2500.0, sector="index")}
    )
    store.save(start)
    trades = []
    for i in range(200):
        trades.append(Reservation("SPX", (7, -3)[i % 2], 2500.0 + i, None))
        trades.append(
            Reservation(
                "NASDAQ", 5 if i == 0 else (-2, 3)[i % 2], 6500.0 - i, "tech" if i == 0 else None
            )
        )
        trades.append(Reservation("DJI", (10, -10)[i % 2], 30_000.0 + 5 * i, "index"))
    with store.db.write() as connection:
        store.reserve(connection, [(str(uuid.uuid4()), t) for t in trades], now_us())
    expected = start
    for t in trades:
        expected = expected.after_fill(t.symbol, t.quantity, t.price, t.sector)
    return expected


def assert_book_fills_reservations(store: PortfolioStore) -> None:
    """The book is the portfolio as if the open reservations were filled one by one (built
    in one validation, however many are open)."""
    expected = reserve_many(store)
    portfolio, reserved = store.book()
    assert portfolio.positions["SPX"].quantity == 40  # the state: what fills made it
    assert len(reserved) == 600
    with store.db.write() as connection:
        book = store.checked_book(connection, now_us(), lock=True)
    assert book.cash == pytest.approx(expected.cash, rel=1e-12)
    spent = sum(t.quantity * t.price for t in reserved)  # independent of after_trades
    assert book.cash == pytest.approx(1e6 - spent, rel=1e-12)
    assert book.positions == expected.positions
    assert book.positions["SPX"] == Position(quantity=440, price=2699.0, sector="index")
    assert "DJI" not in book.positions  # back to flat


def test_the_book_is_the_portfolio_as_if_its_reservations_were_filled(tmp_path: Path) -> None:
    db = state_db(tmp_path)
    try:
        assert_book_fills_reservations(PortfolioStore(db, 1e6))
    finally:
        db.close()


def test_a_stored_portfolio_that_breaks_the_bounds_is_a_503_until_replaced(
    tmp_path: Path,
) -> None:
    """A row written before the bounds existed (NaN cash saved as null) must not turn every
    read into a 500: it is a 503 naming the repair, and a PUT repairs it."""
    store = PortfolioStore(state_db(tmp_path), initial_capital=1e6)
    store.save(Portfolio(cash=1e6))
    with sqlite3.connect(tmp_path / "state.db") as raw:
        raw.execute("UPDATE portfolios SET state = ?", (json.dumps({"cash": None}),))
    for read in (store.load, store.book):
        with pytest.raises(PortfolioStateError, match="PUT /api/v1/portfolio") as refused:
            read()
        assert refused.value.http_status == 503
    store.save(Portfolio(cash=5e5))
    assert store.load().cash == 5e5


def test_commits_leave_the_wal_checkpoint_to_a_background_thread(tmp_path: Path) -> None:
    """A commit that takes the WAL past SQLite's 1,000 pages does not copy them into the
    database file itself (tens of ms under the write lock); the checkpointer thread does."""
    db = state_db(tmp_path)
    try:
        with db.write() as connection:
            assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
            blobs = [
                {"digest": os.urandom(16), "body": os.urandom(100_000), "last_used_us": 0}
                for _ in range(60)
            ]
            connection.execute(insert(decision_refs), blobs)  # 6 MB, about 1,500 pages
        database = tmp_path / "state.db"
        wait_until(
            lambda: database.stat().st_size > 6_000_000, timeout=30, what="a background checkpoint"
        )
    finally:
        db.close()


def test_the_wal_starts_over_while_writers_keep_committing(tmp_path: Path) -> None:
    """A writer starts the WAL over only after a checkpoint copied all of it; writers that
    never pause commit during every checkpoint, so the checkpointer copies the last frames
    with them held off. Else the WAL grows for as long as the load lasts."""
    db = state_db(tmp_path)
    wal = Path(f"{tmp_path / 'state.db'}-wal")
    stop = threading.Event()

    def write_continuously() -> None:
        while not stop.is_set():
            with db.write() as connection:
                connection.execute(
                    insert(decision_refs),
                    [{"digest": os.urandom(16), "body": os.urandom(3000), "last_used_us": 0}],
                )

    def restarts() -> int:  # the WAL header's checkpoint sequence number
        with wal.open("rb") as header:
            return int.from_bytes(header.read(16)[12:16], "big")

    writers = [threading.Thread(target=write_continuously) for _ in range(2)]
    try:
        with db.write() as connection:  # the WAL exists from the first commit on
            connection.execute(
                insert(decision_refs), [{"digest": b"0" * 16, "body": b"", "last_used_us": 0}]
            )
        first = restarts()
        for writer in writers:
            writer.start()
        wait_until(lambda: restarts() > first, timeout=30, what="the WAL to start over")
    finally:
        stop.set()
        for writer in writers:
            writer.join()
        db.close()


def test_a_write_is_fsynced_once_its_locks_are_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SQLite commit does not fsync under the write lock (every other writer would wait
    for it); the writer fsyncs the WAL after releasing the lock, before write() returns."""
    db = state_db(tmp_path)
    synced: list[tuple[str, bool]] = []
    fsync = os.fsync

    def spy(descriptor: int) -> None:
        assert db._write_lock is not None
        with db._write_lock.held(blocking=False) as free:  # held meanwhile: not free
            synced.append((os.readlink(f"/proc/self/fd/{descriptor}"), free))
        fsync(descriptor)

    monkeypatch.setattr(os, "fsync", spy)
    try:
        with db.write() as connection:
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            connection.execute(
                insert(decision_refs), [{"digest": b"d" * 16, "body": b"x", "last_used_us": 0}]
            )
            assert not synced
        assert synced == [(f"{tmp_path / 'state.db'}-wal", True)]
    finally:
        db.close()


def record(i: int) -> DecisionRecord:
    return DecisionRecord(
        decision_id=str(uuid.UUID(int=i)),
        created_at="2026-01-01T00:00:00+00:00",
        symbol="SPX",
        as_of="2025-12-31T00:00:00",
        action="BUY",
        approved=i % 2 == 0,
        inputs_digest=f"{i:064x}",
        inputs={"i": i, "features": {"x": 0.1 * i}, "models": [{"name": "r", "version": "1"}]},
        outputs={"decision_id": str(uuid.UUID(int=i)), "metadata": {"inputs_digest": f"{i:064x}"}},
        models=[{"name": "regime-detector", "version": "1"}],
    )


def test_a_packed_decision_unpacks_to_the_values_that_went_in() -> None:
    """Stored as orjson writes it, restored exactly: the inputs' canonical JSON (what the
    digest is taken over, the standard library's) is the same bytes again."""
    models = [{"name": "regime-detector", "version": "3", "run_id": None}]
    inputs = {
        "symbol": "SPX",
        "price": 2699.0,
        "features": {
            "tiny": 3.2e-05,
            "smaller": 1e-07,
            "huge": 1e16,
            "gap": -0.0009890215875234727,
        },
        "regime": {"bull": 0.1, "bear": 0.2, "sideways": 0.7},
        "portfolio": {"cash": 1e6, "positions": {"SPX": {"quantity": 10**12, "sector": "énergie"}}},
        "policy": {"weights": [1, 2.5], "sectors": {"SPX": "index"}, "default_sector": None},
        "models": models,
        "risk_check": True,
    }
    digest = inputs_digest(inputs)
    decision_id = str(uuid.uuid4())
    outputs = {"decision_id": decision_id, "metadata": {"inputs_digest": digest, "models": models}}
    document = {"i": inputs, "o": outputs, "m": models, "a": "2018-01-02T00:00:00"}

    body, refs = codec.pack(document, decision_id, digest)
    stored = {ref: codec.compress(data) for ref, data in refs.items()}
    restored = codec.unpack(body, decision_id, digest, stored.__getitem__)

    assert restored == document
    assert inputs_digest(restored["i"]) == digest
    assert len(refs) == 4  # features, policy, portfolio, and the models once for three places
    assert decision_id.encode() not in codec.decompress(body)  # a column, not in the body


SHARED_KEYS = ("models", "policy", "portfolio")


@pytest.mark.parametrize(
    "spliced",
    [(), SHARED_KEYS, ("as_of",), ("timestamp",), ("as_of", "policy", "timestamp"), ("features",)],
)
def test_shared_parts_spliced_into_the_inputs_give_the_digest_of_their_json(
    spliced: tuple[str, ...],
) -> None:
    """A client hashes the logged inputs with ``json.dumps``; the service writes the parts
    many decisions share once and splices them in: the same bytes, so the same digest, for
    every book (a memo kept for the last book must not answer for another one)."""
    shared = SharedInputs(BlendSettings(sectors={"SPX": "énergie"}))  # escaped as json does
    detector = ModelRef(name="regime-detector", version="3")
    specialists = {"bull": ModelRef(name="specialist-bull", version="1", alias="champion")}
    held = Position(quantity=3, price=2699.5, sector="a,1e-07]")  # a number inside text
    book = Portfolio(cash=1e6, positions={"SPX": held}, day_start_equity=1e6)
    for portfolio in (book, book, book.after_fill("SPX", 1, 2700.25), book):
        used = shared.models(detector, specialists)
        dumped_book, book_json = shared.portfolio(portfolio)
        inputs = {
            "as_of": "2018-01-02T00:00:00",
            "features": {"tiny": 3.2e-05, "smaller": 1e-07, "huge": 1e16},
            "models": used.dumped,
            "policy": shared.policy,
            "portfolio": dumped_book,
            "sector": "énergie",
            "timestamp": None,
        }
        assert dumped_book == portfolio.model_dump(mode="json")
        assert used.dumped == [
            {"role": "regime", "name": "regime-detector", "version": "3", "alias": None},
            {"role": "bull", "name": "specialist-bull", "version": "1", "alias": "champion"},
        ]
        assert used.dumped == [model.model_dump() for model in used.models]
        shared_json = {"models": used.json, "policy": shared.policy_json, "portfolio": book_json}
        parts = {
            key: shared_json[key] if key in shared_json else canonical(inputs[key])
            for key in spliced
        }
        expected = hashlib.sha256(canonical(inputs).encode()).hexdigest()
        assert inputs_digest(inputs, parts) == expected


def canonical(value: object) -> str:
    """What the README tells a client to hash."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def test_decision_log_commits_concurrent_appends(tmp_path: Path) -> None:
    log = DecisionLog(state_db(tmp_path))

    async def append_all() -> None:
        await asyncio.gather(*(log.append(record(i)) for i in range(300)))

    asyncio.run(append_all())
    log.close()
    log.db.close()
    again = DecisionLog(state_db(tmp_path))  # another process, same database
    try:
        assert again.get(record(7).decision_id) == record(7)
        assert again.get("missing") is None
        assert log_size(again.db)[0] == 300
        with sqlite3.connect(tmp_path / "state.db") as raw:
            # the two model lists every record shares are refs; each one's features stay in it
            assert raw.execute("SELECT count(*) FROM decision_refs").fetchone()[0] == 2
    finally:
        again.close()


def test_a_part_is_stored_once_as_a_ref_from_its_second_use_on(tmp_path: Path) -> None:
    """A part met once stays in its decision's body; from its second use on it is a ref,
    stored once; every decision reads back as it went in."""
    log = DecisionLog(state_db(tmp_path))
    records = [
        one.model_copy(update={"inputs": {**one.inputs, "features": {"x": 0.5}}})
        for one in map(record, range(3))
    ]
    try:
        for one in records:  # one at a time: one transaction each
            asyncio.run(log.append(one))
        assert [log.get(one.decision_id) for one in records] == records
        with sqlite3.connect(tmp_path / "state.db") as raw:
            bodies = [
                codec.decompress(body)
                for (body,) in raw.execute("SELECT body FROM decisions ORDER BY created_us, rowid")
            ]
            refs = raw.execute("SELECT count(*) FROM decision_refs").fetchone()[0]
    finally:
        log.close()
        log.db.close()
    assert b'"features":{"x":0.5}' in bodies[0]
    assert all(b'"features":"$ref:' in body and b"0.5" not in body for body in bodies[1:])
    assert refs == 3  # the features and the two model lists


def test_a_group_that_fails_to_commit_leaves_the_writer_working(tmp_path: Path) -> None:
    """A failed transaction (here a duplicate decision id) fails its own requests with the
    log's 503 error; the writer's connection is rolled back and the next group commits."""
    log = DecisionLog(state_db(tmp_path))
    try:
        asyncio.run(log.append(record(1)))
        with pytest.raises(DecisionLogError, match="not writable"):
            asyncio.run(log.append(record(1)))
        asyncio.run(log.append(record(2)))
        assert log.get(record(2).decision_id) == record(2)
        assert log_size(log.db)[0] == 2
    finally:
        log.close()
        log.db.close()


def test_a_writer_without_its_own_connection_commits_through_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """If the writer cannot keep a connection when it starts, it says so and every group
    takes one from the pool: decisions are still committed."""

    def unavailable(db: StateDatabase) -> None:
        raise OperationalError("connect", {}, sqlite3.OperationalError("unable to open"))

    monkeypatch.setattr(StateDatabase, "keep_write_connection", unavailable)
    with caplog.at_level(logging.ERROR, logger="tradeserve.regime_blend"):
        log = DecisionLog(state_db(tmp_path))
        try:
            asyncio.run(log.append(record(1)))
            asyncio.run(log.append(record(2)))
            assert [log.get(record(i).decision_id) for i in (1, 2)] == [record(1), record(2)]
        finally:
            log.close()
            log.db.close()
    assert "takes connections from the pool: (sqlite3.OperationalError) unable to open" in (
        caplog.text
    )


def test_acknowledged_decisions_survive_a_killed_process(tmp_path: Path) -> None:
    """Append, then die without any cleanup (os._exit): every acknowledged record is there."""
    script = textwrap.dedent(
        f"""
        import asyncio, os, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from tests.composite.test_regime_blend_logic import record, state_db
        from bentos.regime_blend.decision_log import DecisionLog
        from pathlib import Path
        log = DecisionLog(state_db(Path({str(tmp_path)!r})))
        async def main():
            await asyncio.gather(*(log.append(record(i)) for i in range(50)))
        asyncio.run(main())
        print("acknowledged", flush=True)
        os._exit(9)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 9 and "acknowledged" in done.stdout, done.stderr
    log = DecisionLog(state_db(tmp_path))
    try:
        assert all(log.get(record(i).decision_id) == record(i) for i in range(50))
    finally:
        log.close()


def test_a_cancelled_request_does_not_stop_the_log(tmp_path: Path) -> None:
    log = DecisionLog(state_db(tmp_path))

    async def cancel_one_then_append(k: int) -> None:
        waiting = asyncio.ensure_future(log.append(record(100 + k)))
        await asyncio.sleep(0)
        waiting.cancel()  # e.g. the request timed out while its record was queued
        await asyncio.gather(waiting, return_exceptions=True)
        await log.append(record(200 + k))

    try:
        for k in range(20):
            asyncio.run(cancel_one_then_append(k))
        assert all(log.get(record(200 + k).decision_id) == record(200 + k) for k in range(20))
    finally:
        log.close()


def checked_buy(book: Portfolio, i: int) -> Checked[bool]:
    """Buy 100 SPX at 500 if the risk check passes on ``book`` (what the engine does)."""
    risk = check_trade(book, "SPX", 1, 100, 500.0, "index", LIMITS, lambda s, sector: "index")
    entry = Entry.of(record(i))
    return Checked(entry, Reservation("SPX", 100, 500.0) if risk.approved else None, risk.approved)


def test_checks_and_reservations_are_serialized_until_fills_settle_them(tmp_path: Path) -> None:
    """Concurrent checks on one portfolio never approve past the limit together: each sees
    the exposure the approvals before it reserved; a fill turns reservations into a position."""
    db = state_db(tmp_path)
    store, log = PortfolioStore(db, 1e6), DecisionLog(db)

    async def buy_many(first: int) -> list[bool]:
        return await asyncio.gather(
            *(
                log.append_checked(store, lambda book, i=i: checked_buy(book, i))
                for i in range(first, first + 40)
            )
        )

    try:
        approved = asyncio.run(buy_many(0))
        # 25 % of 1e6 = 250,000 = 5 lots of 100 x 500
        assert sum(approved) == 5
        portfolio, reserved = store.book()
        assert portfolio.positions == {} and sum(r.quantity for r in reserved) == 500
        assert log_size(db)[0] == 40  # every decision logged, approved or not
        store.apply(Fill(symbol="SPX", side="BUY", quantity=250, price=500.0))
        portfolio, reserved = store.book()
        assert portfolio.positions["SPX"].quantity == 250
        assert sum(r.quantity for r in reserved) == 250  # the fill settled the oldest 2.5 lots
        assert not any(asyncio.run(buy_many(40)))  # still at the limit
        store.save(Portfolio(cash=1e6))  # the broker's new book voids what was reserved
        assert store.book()[1] == []
    finally:
        log.close()
        db.close()


def test_two_processes_on_one_sqlite_file_never_approve_past_the_limit(tmp_path: Path) -> None:
    """The embedded default with two workers: each process checks 40 buys at once on the
    same file; the file lock and BEGIN IMMEDIATE serialize them across the processes."""
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from pathlib import Path
        from tests.composite.test_regime_blend_logic import checked_buy, state_db
        from bentos.regime_blend.decision_log import DecisionLog
        from bentos.regime_blend.state.portfolio_store import PortfolioStore
        first = int(sys.argv[1])
        db = state_db(Path({str(tmp_path)!r}))
        store, log = PortfolioStore(db, 1e6), DecisionLog(db)
        async def main():
            return await asyncio.gather(*(
                log.append_checked(store, lambda book, i=i: checked_buy(book, i))
                for i in range(first, first + 40)
            ))
        print(sum(asyncio.run(main())))
        log.close()
        """
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(first)], stdout=subprocess.PIPE, text=True
        )
        for first in (0, 1000)
    ]
    approved = [int(worker.communicate(timeout=120)[0]) for worker in workers]
    assert sum(approved) == 5  # 25 % of 1e6 in lots of 100 x 500, whoever approved them
    db = state_db(tmp_path)
    try:
        assert sum(r.quantity for r in PortfolioStore(db, 1e6).book()[1]) == 500
        assert log_size(db)[0] == 80
    finally:
        db.close()


def test_a_check_made_ahead_on_a_stale_book_is_made_again_under_the_lock(
    tmp_path: Path,
) -> None:
    """The writer checks ahead of the lock on the book it last committed; when another
    replica has reserved since, the locked book differs and the check is made again on it."""
    db = state_db(tmp_path)
    mine, other = PortfolioStore(db, 1e6), PortfolioStore(db, 1e6)
    log, other_log = DecisionLog(db), DecisionLog(db)
    seen: list[int] = []  # SPX shares on each book a check was made on

    def watched(book: Portfolio, i: int) -> Checked[bool]:
        held = book.positions.get("SPX")
        seen.append(held.quantity if held else 0)
        return checked_buy(book, i)

    def buy(on: DecisionLog, store: PortfolioStore, i: int) -> bool:
        async def one() -> bool:
            return await on.append_checked(store, lambda book: watched(book, i))

        return asyncio.run(one())

    try:
        assert buy(log, mine, 0)  # no book seen yet: checked under the lock only
        assert seen == [0]
        assert all(buy(other_log, other, i) for i in range(1, 5))  # the other replica: 5 lots
        seen.clear()
        assert not buy(log, mine, 5)  # ahead on 1 lot (approve), under the lock on 5 (reject)
        assert seen == [100, 500]
        seen.clear()
        assert not buy(log, mine, 6)  # the book it last committed is the book: checked once
        assert seen == [500]
        assert sum(r.quantity for r in mine.book()[1]) == 500
    finally:
        log.close()
        other_log.close()
        db.close()


def test_a_build_error_fails_only_its_own_request(tmp_path: Path) -> None:
    db = state_db(tmp_path)
    store, log = PortfolioStore(db, 1e6), DecisionLog(db)

    def broken(book: Portfolio) -> Checked[bool]:
        raise ValueError("non-finite risk input")

    async def both() -> list[object]:
        return await asyncio.gather(
            log.append_checked(store, broken),
            log.append_checked(store, lambda book: checked_buy(book, 1)),
            return_exceptions=True,
        )

    try:
        failed, ok = asyncio.run(both())
        assert isinstance(failed, ValueError) and ok is True
        assert log.get(record(1).decision_id) == record(1)
    finally:
        log.close()
        db.close()


def test_old_decisions_are_exported_to_parquet_then_pruned(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    db = state_db(tmp_path)
    log = DecisionLog(db)
    old = [record(i) for i in range(30)]
    new = record(99).model_copy(update={"created_at": datetime.now(UTC).isoformat()})

    async def append_all() -> None:
        await asyncio.gather(*(log.append(r) for r in [*old, new]))

    try:
        asyncio.run(append_all())
        report = export_and_prune(db, retention_days=30, export_uri=str(tmp_path / "archive"))
        assert (report.exported, report.deleted) == (30, 30)
        table = pq.read_table(report.files[0]).to_pylist()
        assert sorted(row["decision_id"] for row in table) == sorted(r.decision_id for r in old)
        assert json.loads(table[0]["inputs"]) == next(
            r.inputs for r in old if r.decision_id == table[0]["decision_id"]
        )
        assert log.get(old[0].decision_id) is None and log.get(new.decision_id) == new
        assert log_size(db)[0] == 1
    finally:
        log.close()
        db.close()


def test_root_bentofile_serves_the_composite() -> None:
    composite = (REPO_ROOT / "bentofile.yaml").read_text()
    package = (REPO_ROOT / "bentos/regime_blend/bentofile.yaml").read_text()
    assert composite[composite.index("service:") :] == package[package.index("service:") :]
    assert 'service: "bentos.regime_blend.service:RegimeBlend"' in composite
    for source in ("bentos/regime_blend/*.py", "bentos/specialists/*.py", "configuration.yaml"):
        assert f'"{source}"' in composite
