"""Portfolio state: positions, cash and the day's start equity; persisted in SQLite.

The store keeps one row (the whole portfolio as JSON) in a WAL-mode SQLite database under
``TRADESERVE_HOME``, written with ``synchronous=FULL`` so an acknowledged update survives a
crash; every worker process of the service reads the same file.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from bentos.regime_blend.sqlite_wal import connect_durable
from registry.errors import TradeserveError
from training_hooks.market_data import normalize_symbol


class Position(BaseModel):
    """A holding (negative quantity = short) marked at ``price``."""

    quantity: int = Field(description="Shares held; negative for a short position")
    price: float = Field(gt=0, description="Mark price of one share")
    sector: str | None = Field(default=None, description="Sector for the concentration check")

    @property
    def value(self) -> float:
        return self.quantity * self.price


class Portfolio(BaseModel):
    """What the risk checks see."""

    cash: float = Field(description="Cash balance (may be negative: borrowed)")
    positions: dict[str, Position] = Field(default_factory=dict)
    day_start_equity: float | None = Field(
        default=None, gt=0, description="Equity at the start of the trading day (daily loss)"
    )

    @field_validator("positions", mode="before")
    @classmethod
    def _symbols(cls, value: object) -> object:
        if isinstance(value, dict):
            return {normalize_symbol(symbol): position for symbol, position in value.items()}
        return value

    def equity(self) -> float:
        """Cash plus the signed value of every position."""
        return self.cash + sum(position.value for position in self.positions.values())

    def marked(self, symbol: str, price: float) -> Portfolio:
        """This portfolio with ``symbol`` re-marked at ``price`` (when held)."""
        held = self.positions.get(symbol)
        if held is None or held.price == price:
            return self
        positions = {**self.positions, symbol: held.model_copy(update={"price": price})}
        return self.model_copy(update={"positions": positions})

    def after_fill(
        self, symbol: str, quantity: int, price: float, sector: str | None = None
    ) -> Portfolio:
        """The portfolio after buying (``quantity > 0``) or selling shares at ``price``."""
        held = self.positions.get(symbol)
        new_quantity = (held.quantity if held else 0) + quantity
        positions = dict(self.positions)
        if new_quantity == 0:
            positions.pop(symbol, None)
        else:
            positions[symbol] = Position(
                quantity=new_quantity, price=price, sector=sector or (held.sector if held else None)
            )
        return self.model_copy(
            update={"cash": self.cash - quantity * price, "positions": positions}
        )


class Fill(BaseModel):
    """An executed trade reported back to the service."""

    symbol: str
    side: str = Field(pattern="^(BUY|SELL)$")
    quantity: int = Field(gt=0)
    price: float = Field(gt=0)
    sector: str | None = None

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str) -> str:
        return normalize_symbol(value)

    @property
    def signed_quantity(self) -> int:
        return self.quantity if self.side == "BUY" else -self.quantity


class PortfolioStateError(TradeserveError):
    http_status = 503


class PortfolioStore:
    """The service's own portfolio, shared by its workers and kept across restarts."""

    def __init__(self, path: Path, initial_capital: float) -> None:
        self.path = Path(path)
        self.initial_capital = initial_capital
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._transaction() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS portfolio (id INTEGER PRIMARY KEY CHECK (id = 1),"
                " state TEXT NOT NULL, updated_at TEXT NOT NULL)"
            )

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = connect_durable(self.path, timeout=10)
            self._local.db = db
        return db

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._connection()
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise PortfolioStateError(f"portfolio state at {self.path} failed: {error}") from error
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def initial(self) -> Portfolio:
        return Portfolio(cash=self.initial_capital, day_start_equity=self.initial_capital)

    def load(self) -> Portfolio:
        """The current state (a fresh portfolio of ``initial_capital`` cash if none is saved)."""
        try:
            row = self._connection().execute("SELECT state FROM portfolio WHERE id = 1").fetchone()
        except sqlite3.Error as error:
            raise PortfolioStateError(
                f"cannot read portfolio state at {self.path}: {error}"
            ) from error
        return self.initial() if row is None else Portfolio.model_validate_json(row[0])

    def save(self, portfolio: Portfolio) -> Portfolio:
        with self._transaction() as db:
            self._write(db, portfolio)
        return portfolio

    def apply(self, fill: Fill) -> Portfolio:
        """Apply an executed trade atomically (read-modify-write in one transaction)."""
        with self._transaction() as db:
            row = db.execute("SELECT state FROM portfolio WHERE id = 1").fetchone()
            current = self.initial() if row is None else Portfolio.model_validate_json(row[0])
            updated = current.after_fill(fill.symbol, fill.signed_quantity, fill.price, fill.sector)
            self._write(db, updated)
        return updated

    @staticmethod
    def _write(db: sqlite3.Connection, portfolio: Portfolio) -> None:
        db.execute(
            "INSERT INTO portfolio (id, state, updated_at) VALUES (1, ?, ?) ON CONFLICT(id)"
            " DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            (portfolio.model_dump_json(), datetime.now(UTC).isoformat()),
        )
