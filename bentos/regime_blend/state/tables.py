"""The tables of RegimeBlend's state (SQLAlchemy Core; Alembic migrations create them).

Times are integer microseconds since the epoch (``*_us``): compact, exact, and the same on
PostgreSQL and SQLite. Decisions keep only what is their own; documents many decisions share
(model versions, policy, portfolio, a bar's features) live once in ``decision_refs`` under
their digest.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine


class DecisionId(TypeDecorator[str]):
    """A decision id (a UUID string) stored in 16 bytes: ``uuid`` on PostgreSQL, a blob on
    SQLite (36 characters of text would cost twice, in the row and in the primary key)."""

    impl = LargeBinary(16)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.UUID(as_uuid=True))
        return dialect.type_descriptor(LargeBinary(16))

    def process_bind_param(self, value: str | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        parsed = uuid.UUID(value)  # ValueError for a string that is no decision id
        return parsed if dialect.name == "postgresql" else parsed.bytes

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(bytes=bytes(value)))


metadata = MetaData()
VERSION_TABLE = "regime_blend_alembic_version"

portfolios = Table(
    "portfolios",
    metadata,
    Column("portfolio_id", String(64), primary_key=True),
    Column("state", Text, nullable=False),  # Portfolio as JSON (what fills made it)
    Column("updated_us", BigInteger, nullable=False),
)

# Exposure of approved, not yet filled trades: counted by every risk check until a fill of
# the same symbol and side settles it or it expires.
reservations = Table(
    "reservations",
    metadata,
    Column("reservation_id", Integer, primary_key=True, autoincrement=True),
    Column("portfolio_id", String(64), nullable=False),
    Column("decision_id", String(36), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("quantity", BigInteger, nullable=False),  # signed: > 0 buy, < 0 sell
    Column("price", Float, nullable=False),
    Column("sector", String(200)),
    Column("created_us", BigInteger, nullable=False),
    Column("expires_us", BigInteger, nullable=False),
    Index("reservations_portfolio", "portfolio_id", "symbol"),
)

fills = Table(
    "fills",
    metadata,
    Column("fill_id", Integer, primary_key=True, autoincrement=True),
    Column("portfolio_id", String(64), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("quantity", BigInteger, nullable=False),  # signed
    Column("price", Float, nullable=False),
    Column("sector", String(200)),
    Column("filled_us", BigInteger, nullable=False),
    Index("fills_portfolio_time", "portfolio_id", "filled_us"),
)

decisions = Table(
    "decisions",
    metadata,
    Column("decision_id", DecisionId, primary_key=True),
    Column("created_us", BigInteger, nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("action", String(8), nullable=False),
    Column("approved", Boolean),
    Column("inputs_digest", LargeBinary(32), nullable=False),  # sha256 of the canonical inputs
    Column("body", LargeBinary, nullable=False),  # codec.pack: inputs, outputs, models
    Index("decisions_created", "created_us"),
)

decision_refs = Table(
    "decision_refs",
    metadata,
    Column("digest", LargeBinary(16), primary_key=True),
    Column("body", LargeBinary, nullable=False),  # zlib of the canonical JSON
    Column("last_used_us", BigInteger, nullable=False),  # retention: refs no decision uses
)
