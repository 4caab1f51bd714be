"""Two RegimeBlend replicas on one PostgreSQL database (a throw-away ``initdb`` cluster), each
its own ``bentoml serve`` with its own port, BentoML home and TRADESERVE_HOME state folder:
the portfolio, the risk checks' reservations and the decision log are shared, and a replica
killed mid-burst loses no decision it answered."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from sqlalchemy.exc import OperationalError

from bentos.regime_blend.decision_log import DecisionLog
from bentos.regime_blend.portfolio import Portfolio, Trade
from bentos.regime_blend.state.db import StateDatabase, normalize_url, ping_when_idle
from bentos.regime_blend.state.portfolio_store import PortfolioStore, Reservation, now_us
from harness.bento import BentoServer
from harness.postgres import libpq_url, postgres_cluster
from harness.wait import wait_until
from tests.composite.conftest import serve_root
from tests.composite.test_regime_blend_logic import (
    assert_book_fills_reservations,
    checked_buy,
    record,
)
from tests.composite.test_regime_blend_service import DATES, breaching_portfolio, fresh_portfolio

LIMIT = 0.25  # RiskLimits.max_position_fraction
CLIENTS_PER_REPLICA = 16
REQUESTS_PER_CLIENT = 12
NATIVE = {"blend_mode": "mixture", "risk_mode": "body"}  # the route's seed defaults aside


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with postgres_cluster(tmp_path_factory.mktemp("pg"), database="regime_blend") as url:
        yield url


@pytest.fixture(scope="module")
def replicas(
    demo_home: Path, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BentoServer, BentoServer]]:
    """A and B started together (both migrate the empty database at once, under the lock)."""
    servers = []
    for name in ("a", "b"):
        folder = tmp_path_factory.mktemp(f"replica-{name}")
        servers.append(
            serve_root(
                demo_home,
                folder / "state",
                folder / "serve.log",
                TRADESERVE_DATABASE_URL=database,
                TRADESERVE_BLEND_MAINTENANCE_INTERVAL_S="1",
            )
        )
    try:
        for server in servers:
            server.launch()
        for server in servers:
            server.wait_ready()
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


def predict(server: BentoServer, client: httpx.Client | None = None, **body: Any) -> httpx.Response:
    post = client.post if client is not None else httpx.post
    return post(f"{server.url}/api/v1/predict", json={**NATIVE, **body}, timeout=60)


def decided(server: BentoServer, **body: Any) -> dict[str, Any]:
    response = predict(server, **body)
    assert response.status_code == 200, response.text
    return response.json()


def buy_day(server: BentoServer) -> tuple[str, float]:
    """A date on which SPX is a BUY in mixture mode, and that bar's price."""
    for day in DATES:
        body = decided(server, symbol="SPX", timestamp=day, risk_check=False)
        if body["action"] == "BUY":
            return day, body["metadata"]["price"]
    raise AssertionError("no BUY day for SPX")


def put_portfolio(server: BentoServer, portfolio: dict[str, Any]) -> None:
    response = httpx.put(f"{server.url}/api/v1/portfolio", json=portfolio, timeout=30)
    assert response.status_code == 200, response.text


def test_both_replicas_migrated_one_schema(database: str, replicas: Any) -> None:
    with psycopg2.connect(libpq_url(database)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT version_num FROM regime_blend_alembic_version")
        assert cursor.fetchall() == [("0001",)]


def test_a_portfolio_set_on_a_is_what_b_checks_against(replicas: Any) -> None:
    a, b = replicas
    day, price = buy_day(a)
    try:
        put_portfolio(a, breaching_portfolio("BUY", price))
        state = httpx.get(f"{b.url}/api/v1/portfolio").json()
        assert state["portfolio"]["positions"]["SPX"]["quantity"] > 0
        body = decided(b, symbol="SPX", timestamp=day)
        assert body["metadata"]["portfolio_source"] == "state"
        risk = body["risk_validation"]
        assert not risk["approved"] and risk["checks"]["position_limit"] == "fail"
        put_portfolio(b, fresh_portfolio())
        assert decided(a, symbol="SPX", timestamp=day)["risk_validation"]["approved"]
    finally:
        put_portfolio(a, fresh_portfolio())


def test_a_decision_made_on_a_is_returned_by_b(replicas: Any) -> None:
    a, b = replicas
    body = decided(a, symbol="NASDAQ", timestamp="2017-05-05", explain=True)
    logged = httpx.get(f"{b.url}/api/v1/decisions/{body['decision_id']}")
    assert logged.status_code == 200, logged.text
    record = logged.json()
    assert record["outputs"] == body
    assert record["inputs_digest"] == body["metadata"]["inputs_digest"]
    assert record["inputs"]["bars_digest"]  # the stored file the bar came from, by digest
    assert record["inputs"]["features"] == body["explanation"]["features"]


def test_two_replicas_never_buy_past_the_position_limit(replicas: Any) -> None:
    """2 x 16 clients buy SPX through both replicas; each approved BUY is filled through the
    other replica. Approvals reserve their exposure until filled, under the portfolio's row
    lock, so together they never take the position past 25 % of equity."""
    a, b = replicas
    day, price = buy_day(a)
    put_portfolio(a, fresh_portfolio())
    approved: list[int] = []
    rejected = []
    lock = threading.Lock()

    def client(index: int) -> None:
        mine, other = (a, b) if index % 2 == 0 else (b, a)
        with httpx.Client(timeout=60) as http:
            for _ in range(REQUESTS_PER_CLIENT):
                response = predict(mine, http, symbol="SPX", timestamp=day)
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["action"] == "BUY" and body["metadata"]["portfolio_source"] == "state"
                if not body["risk_validation"]["approved"]:
                    with lock:
                        rejected.append(body["decision_id"])
                    continue
                quantity = body["recommended_quantity"]
                with lock:
                    approved.append(quantity)
                fill = {"symbol": "SPX", "side": "BUY", "quantity": quantity, "price": price}
                filled = http.post(f"{other.url}/api/v1/portfolio/fills", json=fill)
                assert filled.status_code == 200, filled.text

    try:
        with ThreadPoolExecutor(2 * CLIENTS_PER_REPLICA) as pool:
            list(pool.map(client, range(2 * CLIENTS_PER_REPLICA)))
        equity = 1_000_000.0  # trades at the mark price leave equity unchanged
        assert approved and rejected, "the burst must reach the limit"
        assert sum(approved) * price <= LIMIT * equity * (1 + 1e-9)
        held = httpx.get(f"{b.url}/api/v1/portfolio").json()["portfolio"]["positions"]["SPX"]
        assert held["quantity"] == sum(approved)
        # the limit is reached: one more lot of the smallest approved size would break it
        assert (sum(approved) + min(approved)) * price > LIMIT * equity
    finally:
        put_portfolio(a, fresh_portfolio())


def test_the_log_is_compact_and_its_size_is_in_the_metrics(database: str, replicas: Any) -> None:
    a, _ = replicas
    for i, day in enumerate(DATES[:40]):
        decided(a, symbol=("SPX", "NASDAQ")[i % 2], timestamp=day, portfolio=fresh_portfolio())
    with psycopg2.connect(libpq_url(database)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*), sum(octet_length(body)) FROM decisions")
        rows, body_bytes = cursor.fetchone()
        cursor.execute("SELECT coalesce(sum(octet_length(body)), 0) FROM decision_refs")
        (ref_bytes,) = cursor.fetchone()
    # a decision with its share of the refs: run alone (each decision about another bar)
    # 762 bytes, 769 when every part was a ref, 4.2 KB before the log was compact
    assert rows >= 40 and (body_bytes + ref_bytes) / rows < 800, (rows, body_bytes, ref_bytes)

    def gauges() -> dict[str, float] | None:  # measured every second here
        samples = {
            sample.name: sample.value
            for family in text_string_to_metric_families(httpx.get(f"{a.url}/metrics").text)
            for sample in family.samples
            if sample.name.startswith("tradeserve_regime_blend_decision_log_")
        }
        return samples if samples.get("tradeserve_regime_blend_decision_log_rows") == rows else None

    size = wait_until(gauges, timeout=30, what="the decision-log gauges")
    assert size["tradeserve_regime_blend_decision_log_bytes"] > body_bytes


def test_kill_9_of_a_replica_mid_burst_loses_no_answered_decision(
    demo_home: Path, database: str, replicas: Any, tmp_path: Path
) -> None:
    """A third replica C on the same database takes a burst and is SIGKILLed mid-way: B
    returns every decision C answered."""
    _, b = replicas
    c = serve_root(
        demo_home, tmp_path / "state", tmp_path / "serve.log", TRADESERVE_DATABASE_URL=database
    )
    c.start()
    answered: list[str] = []
    lock = threading.Lock()
    killed = threading.Event()

    def client(index: int) -> None:
        with httpx.Client(timeout=30) as http:
            for n in range(200):
                if killed.is_set():
                    return
                day = DATES[(index * 7 + n) % len(DATES)]
                try:
                    response = predict(c, http, symbol="SPX", timestamp=day)
                except httpx.HTTPError:
                    return  # the replica is gone
                if response.status_code == 200:
                    with lock:
                        answered.append(response.json()["decision_id"])
                        if len(answered) == 60:
                            c.kill()  # SIGKILL the arbiter and its workers mid-burst
                            killed.set()

    try:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(client, range(16)))
    finally:
        c.stop()
    assert killed.is_set() and len(answered) >= 60
    with httpx.Client(timeout=30) as http:
        missing = [
            decision_id
            for decision_id in answered
            if http.get(f"{b.url}/api/v1/decisions/{decision_id}").status_code != 200
        ]
    assert not missing, f"{len(missing)} answered decisions lost"


@pytest.mark.parametrize("pinged", [True, False])
def test_an_idle_pooled_connection_that_died_is_replaced_before_use(
    database: str, pinged: bool
) -> None:
    """The state database pings a pooled connection only after it sat idle (not on every
    transaction); one the server dropped meanwhile is replaced before anyone uses it.
    Without the ping the next transaction fails: what the check is for."""
    engine = create_engine(normalize_url(database), pool_size=1, max_overflow=0)
    if pinged:
        ping_when_idle(engine, idle_s=0.0)
    try:
        with engine.connect() as connection:
            backend = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        with psycopg2.connect(libpq_url(database)) as admin, admin.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", (backend,))
        wait_until(lambda: not backend_alive(database, backend), timeout=10, what="termination")
        if pinged:
            with engine.connect() as connection:
                assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() != backend
        else:
            with pytest.raises(OperationalError), engine.connect() as connection:
                connection.exec_driver_sql("SELECT 1")
    finally:
        engine.dispose()


def backend_alive(database: str, pid: int) -> bool:
    with psycopg2.connect(libpq_url(database)) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
        return cursor.fetchone()[0] > 0


def test_only_checks_that_reserve_wait_for_the_portfolio_lock(database: str) -> None:
    """On PostgreSQL a check that adds no exposure (a rejection at the limit) is decided on
    the committed book and logged while another transaction holds the portfolio's lock; one
    that reserves waits for that lock and then decides on the book it finds."""
    db = StateDatabase(database)
    full, fresh = (PortfolioStore(db, 1e6, portfolio_id=name) for name in ("full", "fresh"))
    log = DecisionLog(db)

    def check(store: PortfolioStore, i: int) -> bool:
        async def one() -> bool:
            return await log.append_checked(store, lambda book: checked_buy(book, i))

        return asyncio.run(one())

    try:
        assert all(check(full, i) for i in range(5))  # 5 lots of 100 x 500: the 25 % limit
        check(fresh, 5)
        fresh.save(Portfolio(cash=1e6))  # an empty book again, no reservations
        with psycopg2.connect(libpq_url(database)) as holder, holder.cursor() as cursor:
            cursor.execute("SELECT 1 FROM portfolios FOR UPDATE")  # held until the block ends
            rejected, approved = [], []
            at_limit = threading.Thread(target=lambda: rejected.append(check(full, 6)))
            at_limit.start()
            at_limit.join(timeout=30)
            assert rejected == [False]  # rejected and logged while the lock is held
            waiting = threading.Thread(target=lambda: approved.append(check(fresh, 7)))
            waiting.start()
            wait_until(lambda: lock_waiters(database, "fresh") == 1, timeout=30, what="a wait")
            assert not approved  # an approval waits for the lock
        waiting.join(timeout=30)
        assert approved == [True]
        assert log.get(record(6).decision_id) == record(6)
    finally:
        log.close()
        db.close()


def test_a_check_that_waited_for_the_lock_sees_the_reservation_made_meanwhile(
    database: str,
) -> None:
    """Replica A reserves under the portfolio's lock while B waits for that lock: once A
    commits, B's book has A's reservation. (On PostgreSQL a statement that waited for a row
    lock reads the other tables as they were when it began, so B must read the reservations
    after the lock is granted, not in the statement that waits for it.)"""
    a, b = StateDatabase(database), StateDatabase(database)
    mine, theirs = (PortfolioStore(db, 1e6, portfolio_id="waited") for db in (a, b))
    trade = Reservation("SPX", 100, 500.0, "index")
    try:
        mine.save(Portfolio(cash=1e6))
        books = []
        waiter = threading.Thread(target=lambda: books.append(theirs.book()))
        with a.write() as connection:
            now = now_us()
            mine.lock(connection, now)
            mine.reserve(connection, [("decision-a", trade)], now)
            waiter.start()
            wait_until(lambda: lock_waiters(database, "waited") == 1, timeout=30, what="B waiting")
        waiter.join(timeout=30)
        assert books and books[0][1] == [Trade("SPX", 100, 50_000.0, 500.0, "index")]
    finally:
        a.close()
        b.close()


def lock_waiters(database: str, portfolio_id: str) -> int:
    """How many backends of this database wait for a lock in a statement about
    ``portfolio_id`` (psycopg2 sends its parameters inline, so the text names it)."""
    with psycopg2.connect(libpq_url(database)) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database() AND query LIKE %s",
            (f"%'{portfolio_id}'%",),
        )
        return cursor.fetchone()[0]


def test_the_book_is_the_portfolio_as_if_its_reservations_were_filled(database: str) -> None:
    db = StateDatabase(database)
    try:
        assert_book_fills_reservations(PortfolioStore(db, 1e6, portfolio_id="many"))
    finally:
        db.close()
