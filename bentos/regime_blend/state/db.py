"""One SQL database for RegimeBlend's state: PostgreSQL shared by every replica, or the
embedded SQLite default; the same code runs on both.

Writes are serialized where a risk check needs it: on PostgreSQL by row locks
(``SELECT ... FOR UPDATE`` on the portfolio, see ``portfolio``); on SQLite every write
transaction holds the process's file lock on ``<db>.lock`` and then ``BEGIN IMMEDIATE``. The
file lock is there for speed: a process that waits for SQLite's own write lock sleeps in its
busy handler (1, 2, 5, 10 ms ...), one waiting on ``flock`` is woken by the kernel the moment
the lock is free. A commit writes the WAL without fsync, and the writer fsyncs it once it
has released both locks, before it reports the commit (``sqlite_wal.sync_wal``): what is
reported is on disk, no writer waits for another's fsync, and the fsyncs of writers that
committed meanwhile overlap (group commit, as PostgreSQL's). Commits never checkpoint the
WAL: a background thread does (``sqlite_wal.WalCheckpointer``). The schema is migrated by
Alembic at start-up under a lock (an advisory lock on PostgreSQL, the file lock on SQLite),
so replicas starting together do not race.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import QueuePool

from bentos.regime_blend.sqlite_wal import WalCheckpointer, connect_durable, sync_wal

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_TIMEOUT_S = 30.0
IDLE_PING_S = 1.0


def normalize_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` use psycopg2 (SQLAlchemy 2.1 would pick psycopg 3,
    which tradeserve does not ship); other URLs are kept as they are."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        return f"postgresql+psycopg2://{rest}"
    return url


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_lock`` from a readable name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class _ProcessFileLock:
    """A lock shared by the threads of this process and, through ``flock``, other processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.Lock()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    @contextlib.contextmanager
    def held(self, blocking: bool = True) -> Iterator[bool]:
        if not self._thread_lock.acquire(blocking=blocking):
            yield False
            return
        try:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()

    def close(self) -> None:
        os.close(self._fd)


class StateDatabase:
    """The engine, the write discipline and the migrations of one state database."""

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        self._locks: dict[str, _ProcessFileLock] = {}
        if self.dialect == "sqlite":
            path = Path(parsed.database or "").expanduser()
            if not parsed.database or str(path) == ":memory:":
                raise ValueError("the SQLite state database must be a file (sqlite:///path)")
            path.parent.mkdir(parents=True, exist_ok=True)
            self.path: Path | None = path
            self.engine: Engine = create_engine(
                f"sqlite:///{path}",
                poolclass=QueuePool,
                creator=lambda: connect_durable(
                    path,
                    timeout=SQLITE_TIMEOUT_S,
                    autocheckpoint=False,
                    sync_commits=False,  # write() syncs the WAL after the lock
                    check_same_thread=False,
                ),
                pool_size=8,
                max_overflow=16,
            )
            event.listen(self.engine, "begin", _sqlite_begin)
            write_lock = self._file_lock("write")
            self._write_lock: _ProcessFileLock | None = write_lock
            self._checkpointer: WalCheckpointer | None = WalCheckpointer(path, write_lock.held)
        else:
            self.path = None
            # per process: the writer, the maintenance thread and reads; at most 8 connections
            # per worker (replicas x workers x 8 must fit max_connections, or use PgBouncer)
            self.engine = create_engine(self.url, pool_size=4, max_overflow=4, pool_recycle=1800)
            ping_when_idle(self.engine)
            self._write_lock = None
            self._checkpointer = None
        if migrate:
            self.migrate()

    def _file_lock(self, name: str) -> _ProcessFileLock:
        assert self.path is not None
        if name not in self._locks:
            self._locks[name] = _ProcessFileLock(self.path.with_name(f"{self.path.name}.{name}"))
        return self._locks[name]

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @contextlib.contextmanager
    def write(self, kept: Connection | None = None) -> Iterator[Connection]:
        """A write transaction (committed on exit, rolled back on an error), on ``kept`` (a
        thread's own: :meth:`keep_write_connection`) or else on one from the pool."""
        lock = self._write_lock.held() if self._write_lock else contextlib.nullcontext(True)
        source = contextlib.nullcontext(kept) if kept is not None else self._write_connection()
        with source as connection, lock, connection.begin():
            yield connection
        if self.path is not None:
            sync_wal(self.path)  # committed, the locks released: now durable

    def keep_write_connection(self) -> Connection | None:
        """A connection for the write transactions of one busy thread to keep (its owner
        closes it), or None where each should take one from the pool.

        On SQLite a pool checkout and return cost more CPU than ``BEGIN`` and ``COMMIT``
        (about 30 µs a transaction: the decision log's writer does one per group) and there
        is no server that could drop a kept connection. On PostgreSQL each transaction takes
        one from the pool, which pings one that sat idle (``ping_when_idle``).
        """
        return None if self.is_postgres else self._write_connection()

    def _write_connection(self) -> Connection:
        """A connection whose transactions write (on SQLite they begin ``IMMEDIATE``); closed
        when used as a context manager."""
        connection = self.engine.connect()
        connection.execution_options(tradeserve_write=True)
        return connection

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (a snapshot on SQLite's WAL; READ COMMITTED on PostgreSQL)."""
        with self.engine.connect() as connection:
            yield connection

    @contextlib.contextmanager
    def exclusive(self, name: str, blocking: bool = True) -> Iterator[bool]:
        """Hold a lock named ``name`` across processes and replicas; yields whether it is held
        (always True when ``blocking``)."""
        if not self.is_postgres:
            with self._file_lock(name).held(blocking) as held:
                yield held
            return
        key = lock_key(f"tradeserve.regime_blend.{name}")
        with self.engine.connect() as connection:
            if blocking:
                connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                held = True
            else:
                held = bool(
                    connection.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar()
                )
            connection.commit()
            try:
                yield held
            finally:
                if held:
                    connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    connection.commit()

    def migrate(self) -> None:
        """Bring the schema to the newest revision (one process at a time)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.exclusive("migrate"), self._write_connection() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
        if self.path is not None:
            sync_wal(self.path)

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.engine.dispose()
        for lock in self._locks.values():
            lock.close()
        self._locks.clear()


def ping_when_idle(engine: Engine, idle_s: float = IDLE_PING_S) -> None:
    """Check a pooled connection before use only when it has been idle for ``idle_s``.

    SQLAlchemy's ``pool_pre_ping`` pings at every checkout: one more round trip in every
    transaction, the decision log's included. A connection back in use within ``idle_s``
    was working a moment ago; one that sat idle (the database restarted, a proxy dropped
    it) is pinged, and a dead one is replaced by the pool before anyone uses it.
    """

    @event.listens_for(engine, "checkin")
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned = record.info.get("returned_at")
        if returned is None or time.monotonic() - returned < idle_s:
            return
        try:
            with contextlib.closing(dbapi_connection.cursor()) as cursor:
                cursor.execute("SELECT 1")
            dbapi_connection.rollback()
        except Exception as error:
            raise DisconnectionError(f"an idle pooled connection is gone: {error}") from error


def dialect_insert(dialect: str) -> Any:
    """The ``insert`` of ``dialect`` (a connection's ``dialect.name``): it has
    ``on_conflict_do_*``."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def _sqlite_begin(connection: Connection) -> None:
    """SQLite transactions begin as the caller needs: writers take the write lock at once
    (``BEGIN IMMEDIATE``: a read-then-write transaction never fails half-way on a lock)."""
    write = connection.get_execution_options().get("tradeserve_write", False)
    # on the driver: SQLAlchemy's execution machinery would cost ten times this statement
    connection.connection.driver_connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
