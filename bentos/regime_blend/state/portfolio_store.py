"""The service's portfolio in the state database, shared by every worker and replica.

The portfolio row holds what fills made it (cash, positions, the day's start equity). A risk
check sees the *book*: that portfolio plus the open reservations, the exposure of trades it
approved that no fill has settled yet. The check and its reservation are one transaction
under the portfolio's lock (``SELECT ... FOR UPDATE`` on PostgreSQL, the write lock on
SQLite, see ``decision_log``), and fills take the same lock, so two replicas can never both
approve trades that together break a limit (a check that reserves nothing may read the
committed book without the lock: it adds no exposure). A fill settles the oldest open
reservations of its symbol and side; a reservation nobody fills expires after
``reservation_ttl_s``; replacing the portfolio (the broker's book at the start of a day)
voids them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Connection, and_, bindparam, delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from bentos.regime_blend.portfolio import Fill, Portfolio, Trade
from bentos.regime_blend.state.db import StateDatabase, dialect_insert
from bentos.regime_blend.state.statements import run
from bentos.regime_blend.state.tables import fills, portfolios, reservations
from registry.errors import TradeserveError

DEFAULT_PORTFOLIO = "default"
SWEEP_US = 1_000_000
_INSERT_RESERVATION = insert(reservations)


class PortfolioStateError(TradeserveError):
    """The state database could not be read or written."""

    http_status = 503


@dataclass(frozen=True)
class Reservation:
    """The exposure an approved trade takes until it is filled (``quantity`` signed)."""

    symbol: str
    quantity: int
    price: float
    sector: str | None = None


def now_us() -> int:
    return time.time_ns() // 1000


class PortfolioStore:
    """Load, replace and fill the service's portfolio; reserve approved trades."""

    def __init__(
        self,
        db: StateDatabase,
        initial_capital: float,
        *,
        portfolio_id: str = DEFAULT_PORTFOLIO,
        reservation_ttl_s: float = 300.0,
    ) -> None:
        self.db = db
        self.initial_capital = initial_capital
        self.portfolio_id = portfolio_id
        self.reservation_ttl_us = int(reservation_ttl_s * 1e6)
        self._next_sweep_us = 0
        # the book as this process's decision log last committed it: the guess its writer
        # decides the next checks on before it takes the lock (see ``decision_log``)
        self.last_book: Portfolio | None = None
        # built once: a risk check runs them in every transaction
        this = portfolios.c.portfolio_id == portfolio_id
        open_ones = and_(
            reservations.c.portfolio_id == portfolios.c.portfolio_id,
            reservations.c.expires_us > bindparam("now"),
        )
        self._book_memo: tuple[list[tuple[Any, ...]], Portfolio] | None = None
        self._book_query = (
            select(
                portfolios.c.state,
                reservations.c.symbol,
                reservations.c.quantity,
                reservations.c.price,
                reservations.c.sector,
            )
            .select_from(portfolios.outerjoin(reservations, open_ones))
            .where(this)
            .order_by(reservations.c.reservation_id)
        )
        self._lock_query = select(portfolios.c.portfolio_id).where(this).with_for_update()

    def initial(self) -> Portfolio:
        return Portfolio(cash=self.initial_capital, day_start_equity=self.initial_capital)

    # ------------------------------------------------------------------ in a transaction

    def lock(self, connection: Connection, now: int) -> tuple[Portfolio, list[Trade]]:
        """Lock the portfolio for this transaction; its state and open reservations."""
        return _parsed(self._locked_rows(connection, now))

    def checked_book(self, connection: Connection, now: int, *, lock: bool) -> Portfolio:
        """The book a risk check sees in this transaction: the portfolio plus its open
        reservations, locked first if ``lock``, else as last committed (PostgreSQL: a check
        that reserves nothing needs no lock; see ``decision_log``). Raises
        ``PortfolioBoundsError`` when the reservations would leave the sane bounds.

        Building the book validates the portfolio and applies every reservation, under the
        lock that every writer waits for: the book of the same rows as last time is reused.
        """
        read = self._locked_rows(connection, now) if lock else self._rows(connection, now)
        rows = [tuple(row) for row in read]
        memo = self._book_memo
        if memo is not None and memo[0] == rows:
            return memo[1]
        portfolio, reserved = _parsed(rows)
        book = portfolio.after_trades(reserved)  # one validation, however many are open
        self._book_memo = (rows, book)
        return book

    def _locked_rows(self, connection: Connection, now: int) -> Sequence[Sequence[Any]]:
        """:meth:`_rows`, locked, and the expired reservations swept now and then."""
        rows = self._rows(connection, now, lock=True)
        self._sweep_expired(connection, now)
        return rows

    def _rows(
        self, connection: Connection, now: int, *, lock: bool = False
    ) -> Sequence[Sequence[Any]]:
        """The portfolio's row (created at ``initial_capital`` if absent; locked first if
        ``lock``) with its open reservations: (raw state, symbol, quantity, price, sector) per
        reservation, or one row of the state and NULLs. The state is unparsed, so that a PUT
        can replace a state that no longer validates.

        On PostgreSQL the lock is its own statement: a statement that waited for a row lock
        reads the other tables as they were when it began, so reading the reservations in it
        would miss those another replica committed while this one waited. On SQLite the write
        transaction holds the database's one write lock from its start."""
        if lock and self.db.is_postgres and connection.execute(self._lock_query).first() is None:
            self._create(connection, now)
            connection.execute(self._lock_query)
        rows = run(connection, self._book_query, {"now": now})
        if not rows:  # nobody saved the portfolio yet
            self._create(connection, now)
            rows = run(connection, self._book_query, {"now": now})
        return rows

    def _create(self, connection: Connection, now: int) -> None:
        """Save the initial portfolio unless one is saved already."""
        connection.execute(
            dialect_insert(connection.dialect.name)(portfolios)
            .on_conflict_do_nothing()
            .values(
                portfolio_id=self.portfolio_id,
                state=self.initial().model_dump_json(),
                updated_us=now,
            )
        )

    def _sweep_expired(self, connection: Connection, now: int) -> None:
        """Delete expired reservations, at most every :data:`SWEEP_US` per process (reads
        skip them anyway: this only keeps the table small)."""
        if now < self._next_sweep_us:
            return
        self._next_sweep_us = now + SWEEP_US
        connection.execute(
            delete(reservations).where(
                reservations.c.portfolio_id == self.portfolio_id, reservations.c.expires_us <= now
            )
        )

    def reserve(
        self, connection: Connection, trades: list[tuple[str, Reservation]], now: int
    ) -> None:
        """Record the reservations of approved decisions ``(decision_id, trade)``."""
        run(
            connection,
            _INSERT_RESERVATION,
            [
                {
                    "portfolio_id": self.portfolio_id,
                    "decision_id": decision_id,
                    "symbol": trade.symbol,
                    "quantity": trade.quantity,
                    "price": trade.price,
                    "sector": trade.sector,
                    "created_us": now,
                    "expires_us": now + self.reservation_ttl_us,
                }
                for decision_id, trade in trades
            ],
        )

    def _write_state(self, connection: Connection, portfolio: Portfolio, now: int) -> None:
        connection.execute(
            update(portfolios)
            .where(portfolios.c.portfolio_id == self.portfolio_id)
            .values(state=portfolio.model_dump_json(), updated_us=now)
        )

    # ------------------------------------------------------------------ blocking API

    def load(self) -> Portfolio:
        """The current state (a fresh portfolio of ``initial_capital`` cash if none is saved)."""
        try:
            with self.db.read() as connection:
                state = connection.execute(
                    select(portfolios.c.state).where(portfolios.c.portfolio_id == self.portfolio_id)
                ).scalar()
        except SQLAlchemyError as error:
            raise PortfolioStateError(f"cannot read the portfolio state: {error}") from error
        return self.initial() if state is None else stored_portfolio(state)

    def book(self) -> tuple[Portfolio, list[Trade]]:
        """The state and the open reservations (what the next risk check sees)."""
        with self._writing() as connection:
            return self.lock(connection, now_us())

    def save(self, portfolio: Portfolio) -> Portfolio:
        """Replace the portfolio; open reservations are void (a new book from the broker)."""
        with self._writing() as connection:
            now = now_us()
            self._rows(connection, now, lock=True)
            self._write_state(connection, portfolio, now)
            connection.execute(
                delete(reservations).where(reservations.c.portfolio_id == self.portfolio_id)
            )
        self.last_book = None
        return portfolio

    def apply(self, fill: Fill) -> Portfolio:
        """Apply an executed trade and settle the reservations it fills (one transaction)."""
        with self._writing() as connection:
            now = now_us()
            current, _ = self.lock(connection, now)
            updated = current.after_fill(fill.symbol, fill.signed_quantity, fill.price, fill.sector)
            self._write_state(connection, updated, now)
            connection.execute(
                insert(fills).values(
                    portfolio_id=self.portfolio_id,
                    symbol=fill.symbol,
                    quantity=fill.signed_quantity,
                    price=fill.price,
                    sector=fill.sector,
                    filled_us=now,
                )
            )
            self._settle(connection, fill, now)
        self.last_book = None
        return updated

    def _settle(self, connection: Connection, fill: Fill, now: int) -> None:
        """Shrink the oldest open reservations of the fill's symbol and side by its quantity."""
        side = reservations.c.quantity > 0 if fill.side == "BUY" else reservations.c.quantity < 0
        rows = connection.execute(
            select(reservations.c.reservation_id, reservations.c.quantity)
            .where(
                reservations.c.portfolio_id == self.portfolio_id,
                reservations.c.symbol == fill.symbol,
                reservations.c.expires_us > now,
                side,
            )
            .order_by(reservations.c.reservation_id)
        ).all()
        left = fill.quantity
        for reservation_id, quantity in rows:
            if left <= 0:
                break
            taken = min(left, abs(quantity))
            left -= taken
            this = reservations.c.reservation_id == reservation_id
            if taken == abs(quantity):
                connection.execute(delete(reservations).where(this))
            else:
                remaining = abs(quantity) - taken
                connection.execute(
                    update(reservations)
                    .where(this)
                    .values(quantity=remaining if quantity > 0 else -remaining)
                )

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A write transaction whose database errors answer 503 with a reason."""
        try:
            with self.db.write() as connection:
                yield connection
        except SQLAlchemyError as error:
            raise PortfolioStateError(f"the portfolio state is not writable: {error}") from error

    # ------------------------------------------------------------------ async API

    async def aload(self) -> Portfolio:
        return await asyncio.to_thread(self.load)

    async def asave(self, portfolio: Portfolio) -> Portfolio:
        return await asyncio.to_thread(self.save, portfolio)

    async def aapply(self, fill: Fill) -> Portfolio:
        return await asyncio.to_thread(self.apply, fill)


def stored_portfolio(state: str) -> Portfolio:
    """The saved state, checked as a request is: a row written before the bounds existed
    (a NaN saved as null) is a 503 saying how to repair it, never a 500."""
    try:
        return Portfolio.model_validate_json(state)
    except ValidationError as error:
        raise PortfolioStateError(
            f"the stored portfolio is invalid ({error.error_count()} errors, first: "
            f"{error.errors()[0]['loc']}: {error.errors()[0]['msg']}); PUT /api/v1/portfolio "
            "a valid one"
        ) from error


def _parsed(rows: Sequence[Sequence[Any]]) -> tuple[Portfolio, list[Trade]]:
    """(state, symbol, quantity, price, sector) rows as the portfolio and its reservations."""
    reserved = [
        Trade(symbol, quantity, quantity * price, price, sector)
        for _, symbol, quantity, price, sector in rows
        if symbol is not None
    ]
    return stored_portfolio(rows[0][0]), reserved
