"""Durable, append-only log of every decision, written before the response is sent.

SQLite in WAL mode with ``synchronous=FULL``: a commit returns only after the WAL is on disk,
so an acknowledged decision survives a process crash or power loss, a torn write is rolled
back instead of leaving half a record, and a decision can be read back by its id. One
writer thread per process commits whatever is queued in one transaction (group commit), so
concurrent requests share an fsync instead of queueing behind one each.

Each worker process writes its own file (``decisions-<writer>.db``) in the log folder:
SQLite lets one writer at a time into a database, and a process that finds the lock taken
sleeps in SQLite's busy handler (1, 2, 5, 10 ms ...), which cost tens of milliseconds per
decision with two workers on one file. Reads look in every file of the folder.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import queue
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from bentos.regime_blend.sqlite_wal import connect_durable
from registry.errors import TradeserveError

logger = logging.getLogger("tradeserve.regime_blend")
MAX_GROUP = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    decision_id   TEXT PRIMARY KEY,
    created_at    TEXT NOT NULL,
    symbol        TEXT NOT NULL,
    as_of         TEXT,
    action        TEXT NOT NULL,
    approved      INTEGER,
    inputs_digest TEXT NOT NULL,
    inputs        TEXT NOT NULL,
    outputs       TEXT NOT NULL,
    models        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_symbol_time ON decisions (symbol, created_at);
"""


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
    """A decision as written: its JSON documents serialised once, by the caller."""

    decision_id: str
    created_at: str
    symbol: str
    as_of: str | None
    action: str
    approved: bool | None
    inputs_digest: str
    inputs_json: str
    outputs_json: str
    models_json: str

    def row(self) -> tuple:
        approved = None if self.approved is None else int(self.approved)
        return (
            self.decision_id,
            self.created_at,
            self.symbol,
            self.as_of,
            self.action,
            approved,
            self.inputs_digest,
            self.inputs_json,
            self.outputs_json,
            self.models_json,
        )

    @classmethod
    def of(cls, record: DecisionRecord) -> Entry:
        return cls(
            record.decision_id,
            record.created_at,
            record.symbol,
            record.as_of,
            record.action,
            record.approved,
            record.inputs_digest,
            _json(record.inputs),
            _json(record.outputs),
            _json(record.models),
        )


def _connect(path: Path) -> sqlite3.Connection:
    return connect_durable(path, timeout=30, check_same_thread=False)


class DecisionLog:
    """Append decisions durably (``await append``) and read them back (``get``)."""

    def __init__(self, directory: Path, writer: str = "main") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / f"decisions-{writer}.db"
        with contextlib.closing(_connect(self.path)) as db:
            db.executescript(_SCHEMA)
        self._queue: queue.SimpleQueue[tuple[tuple, concurrent.futures.Future[None]] | None] = (
            queue.SimpleQueue()
        )
        self._writer = threading.Thread(target=self._write_loop, name="decision-log", daemon=True)
        self._writer.start()

    def files(self) -> list[Path]:
        """Every log file of the folder (one per writer that ever ran)."""
        return sorted(self.directory.glob("decisions-*.db"))

    async def append(self, entry: Entry | DecisionRecord) -> None:
        """Return once ``entry`` is committed to disk; raise :class:`DecisionLogError` if not."""
        await asyncio.wrap_future(self.submit(entry))

    def submit(self, entry: Entry | DecisionRecord) -> concurrent.futures.Future[None]:
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        if not self._writer.is_alive():
            future.set_exception(DecisionLogError("the decision log is closed"))
            return future
        if isinstance(entry, DecisionRecord):
            entry = Entry.of(entry)
        self._queue.put((entry.row(), future))
        return future

    def _write_loop(self) -> None:
        db = _connect(self.path)
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                group = [item]
                stop = False
                while len(group) < MAX_GROUP:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    group.append(more)
                self._commit(db, group)
                if stop:
                    return
        finally:
            db.close()

    def _commit(self, db: sqlite3.Connection, group: list) -> None:
        """Write ``group`` in one transaction; never raises (the writer must survive)."""
        error: Exception | None = None
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO decisions (decision_id, created_at, symbol, as_of, action, approved,"
                " inputs_digest, inputs, outputs, models) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [row for row, _ in group],
            )
            db.execute("COMMIT")
        except Exception as failure:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            logger.error("decision log write failed: %s", failure)
            error = DecisionLogError(f"decision log {self.path} is not writable: {failure}")
        for _, future in group:
            # a request cancelled meanwhile (timeout, disconnect) has cancelled its future
            if future.set_running_or_notify_cancel():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

    def get(self, decision_id: str) -> DecisionRecord | None:
        """The logged decision ``decision_id`` (from any writer's file), or None."""
        for path in self.files():
            with contextlib.closing(sqlite3.connect(path, timeout=30)) as db:
                db.row_factory = sqlite3.Row
                row = db.execute(
                    "SELECT * FROM decisions WHERE decision_id = ?", (decision_id,)
                ).fetchone()
            if row is not None:
                data = dict(row)
                for key in ("inputs", "outputs", "models"):
                    data[key] = json.loads(data[key])
                data["approved"] = None if data["approved"] is None else bool(data["approved"])
                return DecisionRecord.model_validate(data)
        return None

    def close(self, timeout: float = 10.0) -> None:
        """Commit what is queued, then stop the writer."""
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join(timeout)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
