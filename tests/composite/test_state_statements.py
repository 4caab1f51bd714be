"""``state.statements.run``: on SQLite, statements run on the driver give what SQLAlchemy
gives (bind processors applied, a statement's own values included) and fail as it fails."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from bentos.regime_blend.state.db import StateDatabase
from bentos.regime_blend.state.statements import run
from bentos.regime_blend.state.tables import decisions


def decision_row(decision_id: str, approved: bool | None) -> dict[str, object]:
    return {
        "decision_id": decision_id,
        "created_us": 1_700_000_000_000_000,
        "symbol": "SPX",
        "action": "BUY",
        "approved": approved,
        "inputs_digest": bytes(32),
        "body": b"\x01packed",
    }


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateDatabase]:
    state = StateDatabase(f"sqlite:///{tmp_path / 'state.db'}")
    yield state
    state.close()


def test_rows_written_on_the_driver_read_back_through_sqlalchemy(db: StateDatabase) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    with db.write() as connection:
        run(connection, insert(decisions), [decision_row(ids[0], True), decision_row(ids[1], None)])
        run(connection, insert(decisions), decision_row(ids[2], False))
    with db.read() as connection:
        stored = connection.execute(select(decisions.c.decision_id, decisions.c.approved)).all()
    assert sorted(stored) == sorted([(ids[0], True), (ids[1], None), (ids[2], False)])
    with db.read() as connection:  # the decision id went in as its 16 bytes
        raw = connection.exec_driver_sql("SELECT decision_id FROM decisions").scalars().all()
    assert sorted(raw) == sorted(uuid.UUID(i).bytes for i in ids)


def test_a_query_on_the_driver_uses_its_own_values_and_the_given_ones(db: StateDatabase) -> None:
    ids = [str(uuid.uuid4()) for _ in range(2)]
    with db.write() as connection:
        run(connection, insert(decisions), [decision_row(i, True) for i in ids])
    query = select(decisions.c.symbol, decisions.c.created_us).where(
        decisions.c.action == "BUY", decisions.c.created_us >= 0
    )
    with db.write() as connection:
        assert run(connection, query) == [("SPX", 1_700_000_000_000_000)] * 2
        assert run(connection, query.where(decisions.c.symbol == "NASDAQ")) == []


def test_a_driver_error_is_raised_as_sqlalchemy_raises_it(db: StateDatabase) -> None:
    row = decision_row(str(uuid.uuid4()), True)
    with db.write() as connection:
        run(connection, insert(decisions), row)
    with pytest.raises(IntegrityError), db.write() as connection:
        run(connection, insert(decisions), row)  # the same decision id again
    with db.read() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM decisions").scalar() == 1
