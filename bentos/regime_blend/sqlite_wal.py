"""Durable SQLite connections shared by several worker processes, synced and checkpointed
off the write lock."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

logger = logging.getLogger("tradeserve.regime_blend")
CHECKPOINT_INTERVAL_S = 1.0
RESTART_FRAMES = 1000  # SQLite's own checkpoint threshold (pages)


def connect_durable(
    path: Path,
    timeout: float,
    *,
    autocheckpoint: bool = True,
    sync_commits: bool = True,
    **options: object,
) -> sqlite3.Connection:
    """A connection in WAL mode. With ``sync_commits`` (``synchronous=FULL``) a commit returns
    once fsync'd; without (``NORMAL``) it returns once written, and the caller makes it
    durable with :func:`sync_wal` before it reports it (after the write lock, see
    ``state.db``). With ``autocheckpoint=False`` commits leave checkpoints to a
    :class:`WalCheckpointer`.

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
    db.execute(f"PRAGMA synchronous={'FULL' if sync_commits else 'NORMAL'}")
    if not autocheckpoint:
        db.execute("PRAGMA wal_autocheckpoint=0")
    return db


def sync_wal(path: Path) -> None:
    """fsync the WAL of the database at ``path``: every transaction committed to it so far,
    by any connection or process, is then on disk (WAL frames are appended in commit order;
    a checkpoint syncs them before it copies them and the database file after). No WAL file:
    the last connection closed, checkpointed it into the database and synced that."""
    try:
        descriptor = os.open(f"{path}-wal", os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class WalCheckpointer:
    """Checkpoints a WAL database from a background thread, so that no commit does.

    By default SQLite checkpoints in the commit that takes the WAL past 1,000 pages: that
    commit copies them into the database file and fsyncs it (tens of milliseconds) while
    every writer queued behind its lock waits, the decision log's tail. Here a PASSIVE
    checkpoint (it never waits for, nor blocks, readers and writers) runs every
    ``interval_s``; each process may run one, a busy one is skipped.

    A writer starts the WAL over only when a checkpoint has copied all of it. Under steady
    writes a commit lands during nearly every checkpoint, so the WAL would only grow, and a
    commit's fsync costs twice as much on a file that grows as on one rewritten in place.
    So once the WAL holds :data:`RESTART_FRAMES` or more, a second checkpoint copies the
    few frames committed during the first with the writers held off (``hold_writers``, the
    database's write lock); the next writer then starts the WAL over.
    """

    def __init__(
        self,
        path: Path,
        hold_writers: Callable[[], AbstractContextManager[object]],
        interval_s: float = CHECKPOINT_INTERVAL_S,
    ) -> None:
        self.path = path
        self.interval_s = interval_s
        self._hold_writers = hold_writers
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = connect_durable(self.path, timeout=30.0, autocheckpoint=False)
        try:
            while not self._stop.wait(self.interval_s):
                try:
                    self._checkpoint(db)
                except sqlite3.Error as error:  # report; the next tick tries again
                    logger.warning("SQLite checkpoint of %s failed: %s", self.path, error)
        finally:
            db.close()

    def _checkpoint(self, db: sqlite3.Connection) -> None:
        """Copy the WAL into the database file; all of it if it is long (see the class)."""
        if _passive_checkpoint(db) >= RESTART_FRAMES:
            with self._hold_writers():
                _passive_checkpoint(db)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)


def _passive_checkpoint(db: sqlite3.Connection) -> int:
    """``PRAGMA wal_checkpoint(PASSIVE)``; the number of frames in the WAL (-1: no WAL)."""
    ((_busy, frames, _copied),) = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    return int(frames)
