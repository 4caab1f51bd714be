"""Durable SQLite connections shared by several worker processes (decision log, portfolio)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def connect_durable(path: Path, timeout: float, **options: object) -> sqlite3.Connection:
    """A connection in WAL mode with ``synchronous=FULL`` (a commit returns once fsync'd).

    Switching a database to WAL needs an exclusive lock, and SQLite answers "database is
    locked" at once, without its busy handler, when another process holds one meanwhile (two
    workers opening the same new file at start-up): retry until ``timeout``.
    """
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, **options)  # type: ignore[arg-type]
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                db.close()
                raise
            time.sleep(0.01)
    db.execute("PRAGMA synchronous=FULL")
    return db
