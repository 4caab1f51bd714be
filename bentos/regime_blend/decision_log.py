"""Durable, compact log of every decision, committed before the response is sent.

Decisions live in the state database (PostgreSQL for replicas, else the embedded SQLite),
packed by ``state.codec``: what a decision shares with others (model versions, policy,
portfolio, a bar's features, the specialists' answers) is stored once by digest, the rest
compressed. One writer thread per process commits whatever is queued in one transaction
(group commit: one fsync, one round trip per group, not per request).

The write transaction serializes every worker and replica (the portfolio's lock, SQLite's
one writer), so the writer keeps it short: a decision made on a request's portfolio is
packed before the transaction begins and so are the refs (``codec``) it writes (only new
ones), the statements are built once and batched per group (on SQLite run on the driver:
``state.statements``, on a connection the writer keeps), and the book of the same rows is
not built twice (``PortfolioStore.checked_book``).

A decision made on the service's portfolio is *checked*: its risk check (``build``) is made
on the book inside the transaction that holds the portfolio's lock, the approved trade's
reservation and the decision are recorded together and committed once; so the check, the
exposure it reserves and the logged answer are one atomic step for every replica. The writer
makes each check ahead of the transaction on the book it last committed and, under the lock,
keeps it only if the locked book is that same book; else it checks again. On PostgreSQL a
group whose checks reserve nothing (HOLDs, rejections: most decisions once a book is at its
limits) is decided on the committed book and logged without taking the lock at all.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import queue
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import SQLAlchemyError

from bentos.regime_blend.portfolio import Portfolio, PortfolioBoundsError
from bentos.regime_blend.state import codec
from bentos.regime_blend.state.db import StateDatabase, dialect_insert
from bentos.regime_blend.state.portfolio_store import PortfolioStore, Reservation, now_us
from bentos.regime_blend.state.statements import run
from bentos.regime_blend.state.tables import decision_refs, decisions
from registry.errors import TradeserveError

logger = logging.getLogger("tradeserve.regime_blend")
MAX_GROUP = 256
REF_TOUCH_US = 3600 * 1_000_000  # a ref's last use is refreshed at most hourly per process
KNOWN_REFS = 65_536  # digests a writer remembers per kind (stored, met once); ~18 MB in all
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T = TypeVar("T")


class DecisionLogError(TradeserveError):
    """The decision could not be made durable; it is not answered."""

    http_status = 503


class DecisionRecord(BaseModel):
    """One logged decision: what went in, what came out, which model versions."""

    decision_id: str
    created_at: str
    symbol: str
    as_of: str | None = None
    action: str
    approved: bool | None = None
    inputs_digest: str = Field(description="sha256 of the canonical JSON of inputs")
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    models: list[dict[str, Any]]


@dataclass(frozen=True)
class Entry:
    """A decision as the engine hands it over (the writer thread packs it)."""

    decision_id: str
    created_at: str  # ISO 8601 with offset
    symbol: str
    as_of: str | None
    action: str
    approved: bool | None
    inputs_digest: str  # hex sha256
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    models: list[dict[str, Any]]

    @classmethod
    def of(cls, record: DecisionRecord) -> Entry:
        return cls(**record.model_dump())


@dataclass(frozen=True)
class Checked(Generic[T]):
    """A decision made on the service's portfolio: its log entry, the trade to reserve (an
    approved BUY/SELL) and what the caller gets back."""

    entry: Entry
    reservation: Reservation | None
    result: T


@dataclass(frozen=True)
class Packed:
    """A decision as stored: its ``decisions`` row and the refs it uses (uncompressed)."""

    row: dict[str, Any]
    refs: dict[bytes, bytes]

    @classmethod
    def of(cls, entry: Entry, refs: KnownRefs) -> Packed:
        document = {"i": entry.inputs, "o": entry.outputs, "m": entry.models, "a": entry.as_of}
        body, used = codec.pack(document, entry.decision_id, entry.inputs_digest, refs.shared)
        row = {
            "decision_id": entry.decision_id,
            "created_us": to_us(entry.created_at),
            "symbol": entry.symbol,
            "action": entry.action,
            "approved": entry.approved,
            "inputs_digest": bytes.fromhex(entry.inputs_digest),
            "body": body,
        }
        return cls(row, used)


class KnownRefs:
    """What a writer knows of the refs (``codec``): those it stored, with when it last
    refreshed their use, and the parts it met once. A part is stored as a ref from its
    second use on: a part used once (a bar replayed once, a book that changed) stays in its
    decision's body, which costs less than a ref row and a compression of its own."""

    def __init__(self, limit: int = KNOWN_REFS) -> None:
        self.limit = limit
        self._touched: OrderedDict[bytes, int] = OrderedDict()
        self._met: OrderedDict[bytes, None] = OrderedDict()

    def shared(self, digest: bytes) -> bool:
        """Whether the part ``digest`` is to be a ref (stored, or met before); meets it."""
        if digest in self._touched or digest in self._met:
            return True
        self._met[digest] = None
        if len(self._met) > self.limit:
            self._met.popitem(last=False)
        return False

    def stale(self, digest: bytes, now: int) -> bool:
        """Whether ref ``digest`` is to be written: new here, or its last use is old."""
        return now - self._touched.get(digest, -REF_TOUCH_US) >= REF_TOUCH_US

    def stored(self, digests: list[bytes], now: int) -> None:
        """Record refs written (or their use refreshed) by a committed transaction."""
        for digest in digests:
            self._touched[digest] = now
            self._touched.move_to_end(digest)
        while len(self._touched) > self.limit:
            self._touched.popitem(last=False)


@dataclass(frozen=True)
class _Decided:
    """A checked item decided on ``book``: its result, its row, the book after it."""

    book: Portfolio
    checked: Checked[Any]
    row: Packed
    after: Portfolio


def _decide(
    build: Callable[[Portfolio], Checked[Any]], book: Portfolio, refs: KnownRefs
) -> _Decided:
    """``build`` on ``book``, packed, and the book with its trade reserved (raises the
    request's own error)."""
    checked = build(book)
    row = Packed.of(checked.entry, refs)
    trade = checked.reservation
    after = (
        book
        if trade is None
        else book.after_fill(trade.symbol, trade.quantity, trade.price, trade.sector)
    )
    return _Decided(book, checked, row, after)


def _guess(live: list[_Item], refs: KnownRefs) -> dict[int, _Decided]:
    """The checked items decided ahead of the transaction on their portfolio's book as this
    process last committed it (``PortfolioStore.last_book``). In the transaction a guess is
    used only if its book is the book read there; else the item is decided again."""
    checks = _decide_in_order(live, {}, lambda store: store.last_book, refs)
    return {i: r for i, r in checks.results.items() if isinstance(r, _Decided)}


@dataclass(frozen=True)
class _Checks:
    """A group's checked items decided on their portfolios' books: each one's decision or
    error, and each portfolio's book after them."""

    results: dict[int, _Decided | BaseException]
    books: list[tuple[PortfolioStore, Portfolio]]

    @property
    def reserves(self) -> bool:
        return any(
            isinstance(result, _Decided) and result.checked.reservation is not None
            for result in self.results.values()
        )


def _check_all(
    connection: Connection,
    live: list[_Item],
    guesses: dict[int, _Decided],
    now: int,
    refs: KnownRefs,
    *,
    lock: bool,
) -> _Checks:
    """Decide the checked items of ``live`` on their portfolio's book in the database
    (locked if ``lock``); a book past the bounds fails its store's requests, not the group."""

    def book_of(store: PortfolioStore) -> Portfolio | BaseException:
        try:
            return store.checked_book(connection, now, lock=lock)
        except PortfolioBoundsError as error:
            return error

    return _decide_in_order(live, guesses, book_of, refs)


def _decide_in_order(
    live: list[_Item],
    guesses: dict[int, _Decided],
    book_of: Callable[[PortfolioStore], Portfolio | BaseException | None],
    refs: KnownRefs,
) -> _Checks:
    """Decide the checked items of ``live`` in order, each on its portfolio's book (from
    ``book_of``, asked once per store; None: not decided) as the ones before it left it; a
    guess made on that very book is taken as it is."""
    books: dict[int, Portfolio | BaseException | None] = {}  # per store: the book, or why not
    stores: dict[int, PortfolioStore] = {}
    results: dict[int, _Decided | BaseException] = {}
    for index, item in enumerate(live):
        store, build = item.store, item.build
        if store is None or build is None:
            continue
        if id(store) not in books:
            stores[id(store)] = store
            books[id(store)] = book_of(store)
        book = books[id(store)]
        if book is None:
            continue
        if isinstance(book, BaseException):
            results[index] = book
            continue
        guess = guesses.get(index)
        try:
            if guess is not None and (guess.book is book or guess.book == book):
                decided = guess
            else:
                decided = _decide(build, book, refs)
        except Exception as error:  # this request's error (4xx/5xx), not the group's
            results[index] = error
            continue
        books[id(store)] = decided.after
        results[index] = decided
    after = [(stores[key], book) for key, book in books.items() if isinstance(book, Portfolio)]
    return _Checks(results, after)


@dataclass
class _Item:
    future: concurrent.futures.Future[Any]
    entry: Entry | None = None
    store: PortfolioStore | None = None
    build: Callable[[Portfolio], Checked[Any]] | None = None


class DecisionLog:
    """Append decisions durably (``await append`` / ``await append_checked``) and read them
    back by id (``await fetch``)."""

    def __init__(self, db: StateDatabase) -> None:
        self.db = db
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._refs = KnownRefs()
        self._writer = threading.Thread(target=self._write_loop, name="decision-log", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------ writing

    async def append(self, entry: Entry | DecisionRecord) -> None:
        """Return once ``entry`` is committed; raise :class:`DecisionLogError` if it is not."""
        await asyncio.wrap_future(self.submit(entry))

    def submit(self, entry: Entry | DecisionRecord) -> concurrent.futures.Future[None]:
        if isinstance(entry, DecisionRecord):
            entry = Entry.of(entry)
        return self._put(_Item(concurrent.futures.Future(), entry=entry))

    async def append_checked(
        self, store: PortfolioStore, build: Callable[[Portfolio], Checked[T]]
    ) -> T:
        """Run ``build`` on the locked book of ``store`` (its portfolio plus open
        reservations), record its reservation and entry in the same transaction, and return
        its result once committed. ``build`` runs on the writer thread, maybe twice (ahead
        of the lock on the book last seen, then on the locked book if that differs): keep it
        CPU-only and a function of the book."""
        item = _Item(concurrent.futures.Future(), store=store, build=build)
        return await asyncio.wrap_future(self._put(item))

    def _put(self, item: _Item) -> concurrent.futures.Future[Any]:
        if not self._writer.is_alive():
            item.future.set_exception(DecisionLogError("the decision log is closed"))
        else:
            self._queue.put(item)
        return item.future

    def _write_loop(self) -> None:
        kept = self._keep_connection()
        try:
            stop = False
            while not stop:
                group, stop = self._next_group()
                if group:
                    self._commit(group, kept)
        finally:
            if kept is not None:
                kept.close()

    def _next_group(self) -> tuple[list[_Item], bool]:
        """What is queued, up to ``MAX_GROUP`` items (waiting for the first), and whether
        :meth:`close` asked the writer to stop after them."""
        item = self._queue.get()
        if item is None:
            return [], True
        group = [item]
        while len(group) < MAX_GROUP:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                return group, True
            group.append(more)
        return group, False

    def _keep_connection(self) -> Connection | None:
        """The writer's own connection where the database keeps one
        (:meth:`StateDatabase.keep_write_connection`); else, or if it cannot be had now,
        None: each group then takes one from the pool."""
        try:
            return self.db.keep_write_connection()
        except SQLAlchemyError as error:
            logger.error("the decision log writer takes connections from the pool: %s", error)
            return None

    def _commit(self, group: list[_Item], kept: Connection | None) -> None:
        """Write ``group`` in one transaction; never raises (the writer must survive)."""
        # a request cancelled meanwhile (timeout, disconnect) has cancelled its future
        live = [item for item in group if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        outcomes: dict[int, Any] = {}
        # as much as can be done before the transaction is: it holds the lock every writer
        # waits for
        packed: dict[int, Packed] = {}
        for index, item in enumerate(live):
            if item.entry is not None:
                try:
                    packed[index] = Packed.of(item.entry, self._refs)
                except Exception as error:  # this request's error, not the group's
                    outcomes[index] = error
        guesses = _guess(live, self._refs)
        ahead = [*packed.values(), *(guess.row for guess in guesses.values())]
        compressed = self._compress_new_refs(ahead, now_us())
        try:
            with self.db.write(kept) as connection:
                now = now_us()
                rows, books = self._run_checks(connection, live, packed, guesses, outcomes, now)
                touched = self._insert(connection, rows, now, compressed)
        except Exception as failure:  # database down, disk full, constraint ...
            logger.error("decision log write failed: %s", failure)
            error = DecisionLogError(f"the decision log is not writable: {failure}")
            for item in live:
                item.future.set_exception(error)
            return
        for store, book in books:
            store.last_book = book
        self._refs.stored(touched, now)  # only once committed: a known ref is a stored ref
        for index, item in enumerate(live):
            outcome = outcomes.get(index)
            if isinstance(outcome, BaseException):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)

    def _run_checks(
        self,
        connection: Connection,
        live: list[_Item],
        packed: dict[int, Packed],
        guesses: dict[int, _Decided],
        outcomes: dict[int, Any],
        now: int,
    ) -> tuple[list[Packed], list[tuple[PortfolioStore, Portfolio]]]:
        """The decisions to insert and each portfolio's book after them, their reservations
        recorded (one statement per portfolio).

        On SQLite the transaction holds the write lock already. On PostgreSQL the checks are
        first made on the book as committed, without the portfolio's lock: a group that
        reserves nothing (HOLDs, rejections) commits without it, so replicas do not queue
        behind each other for decisions that add no exposure. A group that reserves is
        checked again under the lock, where each decision made on that same book is kept.
        """
        locked = not self.db.is_postgres
        checks = _check_all(connection, live, guesses, now, self._refs, lock=locked)
        if not locked and checks.reserves:
            made = {i: r for i, r in checks.results.items() if isinstance(r, _Decided)}
            checks = _check_all(connection, live, made, now, self._refs, lock=True)
        rows = []
        reserved: dict[int, tuple[PortfolioStore, list[tuple[str, Reservation]]]] = {}
        for index, item in enumerate(live):
            if item.entry is not None:
                if index in packed:
                    rows.append(packed[index])
                continue
            result = checks.results[index]
            if isinstance(result, BaseException):
                outcomes[index] = result
                continue
            trade = result.checked.reservation
            if trade is not None:
                assert item.store is not None
                trades = reserved.setdefault(id(item.store), (item.store, []))[1]
                trades.append((result.checked.entry.decision_id, trade))
            rows.append(result.row)
            outcomes[index] = result.checked.result
        for store, trades in reserved.values():
            store.reserve(connection, trades, now)
        return rows, checks.books

    def _compress_new_refs(self, packed: list[Packed], now: int) -> dict[bytes, bytes]:
        """The refs of ``packed`` that are to be written, compressed ahead of the lock."""
        return {
            digest: codec.compress(data)
            for one in packed
            for digest, data in one.refs.items()
            if self._refs.stale(digest, now)
        }

    def _insert(
        self, connection: Connection, packed: list[Packed], now: int, compressed: dict[bytes, bytes]
    ) -> list[bytes]:
        """Insert ``packed`` decisions and the refs they use (``compressed``: those already
        compressed); the refs whose last use was refreshed."""
        if not packed:
            return []
        refs = {digest: data for one in packed for digest, data in one.refs.items()}
        stale = sorted(d for d in refs if self._refs.stale(d, now))
        if stale:  # sorted: concurrent writers lock ref rows in one order (no deadlock)
            run(
                connection,
                _touch_refs(connection.dialect.name),
                [
                    {
                        "digest": d,
                        "body": compressed.get(d) or codec.compress(refs[d]),
                        "last_used_us": now,
                    }
                    for d in stale
                ],
            )
        run(connection, _INSERT_DECISION, [one.row for one in packed])
        return stale

    # ------------------------------------------------------------------ reading

    def get(self, decision_id: str) -> DecisionRecord | None:
        """The logged decision ``decision_id``, or None (also for what is no decision id)."""
        try:
            uuid.UUID(decision_id)
        except ValueError:
            return None
        try:
            with self.db.read() as connection:
                row = connection.execute(
                    select(decisions).where(decisions.c.decision_id == decision_id)
                ).first()
                if row is None:
                    return None
                return unpack_row(connection, row._mapping)
        except SQLAlchemyError as error:
            raise DecisionLogError(f"the decision log is not readable: {error}") from error

    async def fetch(self, decision_id: str) -> DecisionRecord | None:
        """:meth:`get` off the event loop."""
        return await asyncio.to_thread(self.get, decision_id)

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the writer."""
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join(timeout)


_INSERT_DECISION = insert(decisions)


@functools.cache
def _touch_refs(dialect: str) -> Any:
    """Insert refs, or refresh the last use of those stored already (built once per dialect)."""
    upsert = dialect_insert(dialect)(decision_refs)
    return upsert.on_conflict_do_update(
        index_elements=["digest"], set_={"last_used_us": upsert.excluded.last_used_us}
    )


def unpack_row(connection: Connection, row: Any) -> DecisionRecord:
    """A stored decision row as the record that was appended (refs resolved)."""
    digest = row["inputs_digest"].hex()
    wanted = codec.ref_digests(row["body"])
    found = (
        dict(
            connection.execute(
                select(decision_refs.c.digest, decision_refs.c.body).where(
                    decision_refs.c.digest.in_(wanted)
                )
            ).all()
        )
        if wanted
        else {}
    )
    missing = [d.hex() for d in wanted if d not in found]
    if missing:
        raise DecisionLogError(f"decision {row['decision_id']} names missing refs {missing}")
    document = codec.unpack(row["body"], row["decision_id"], digest, found.__getitem__)
    return DecisionRecord(
        decision_id=row["decision_id"],
        created_at=from_us(row["created_us"]).isoformat(),
        symbol=row["symbol"],
        as_of=document.get("a"),
        action=row["action"],
        approved=row["approved"],
        inputs_digest=digest,
        inputs=document["i"],
        outputs=document["o"],
        models=document["m"],
    )


def to_us(when: str | datetime) -> int:
    stamp = datetime.fromisoformat(when) if isinstance(when, str) else when
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return (stamp - _EPOCH) // timedelta(microseconds=1)


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)
