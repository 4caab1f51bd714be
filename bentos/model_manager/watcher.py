"""The directory watcher: a changed artifact directory becomes new registry versions.

model_manager's rule (``backend/watcher.py``): every ``MODEL_MANAGER_WATCH_INTERVAL`` seconds
each registered directory is fingerprinted (relative path, size and mtime of its artifact
files); a fingerprint that differs and holds for ``MODEL_MANAGER_WATCH_DEBOUNCE`` seconds
(files still being written do not count) triggers a refresh. Unlike model_manager, the
fingerprint compared against is the one last imported (kept with the directory), so a change
made while the service was down is imported at the next poll. A refresh that fails (a
half-written or broken file) is logged once per fingerprint and retried at the next poll.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bentos.model_manager.directories import DirectoryManager
from bentos.model_manager.state import DirectoryRow
from registry.artifact_scan import fingerprint
from registry.errors import TradeserveError

logger = logging.getLogger("tradeserve.model_manager.watcher")


@dataclass
class _Pending:
    fingerprint: str
    first_seen: float
    failed: str | None = None


class DirectoryWatcher:
    """Polls the registered directories from a background thread."""

    def __init__(
        self,
        manager: DirectoryManager,
        interval_s: float,
        debounce_s: float,
        only: set[str] | None = None,
    ) -> None:
        """``only``: watch these directories alone (``tradeserve import --watch``)."""
        self.manager = manager
        self.only = only
        self.interval_s = interval_s
        self.debounce_s = debounce_s
        self._pending: dict[str, _Pending] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tradeserve-watcher", daemon=True)
        self._thread.start()
        logger.info("watching directories every %gs (debounce %gs)",
                    self.interval_s, self.debounce_s)  # fmt: skip

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def run_forever(self) -> None:
        """Poll in this thread until interrupted (``tradeserve import --watch``)."""
        while not self._stop.is_set():
            self._tick_safely()
            self._stop.wait(self.interval_s)

    def tick(self, now: float | None = None) -> list[str]:
        """One poll of every directory; the names refreshed."""
        now = time.monotonic() if now is None else now
        if self.only is None:
            self.manager.sync()
        rows = [r for r in self.manager.rows() if self.only is None or r.model_name in self.only]
        for name in set(self._pending) - {row.model_name for row in rows}:
            self._pending.pop(name)
        return [row.model_name for row in rows if self._tick_one(row, now)]

    def _tick_one(self, row: DirectoryRow, now: float) -> bool:
        current = fingerprint(Path(row.root_path))
        if current == row.fingerprint:
            self._pending.pop(row.model_name, None)
            return False
        pending = self._pending.get(row.model_name)
        if pending is None or pending.fingerprint != current:
            self._pending[row.model_name] = _Pending(current, now)
            return False
        if now - pending.first_seen < self.debounce_s:
            return False
        try:
            self.manager.refresh(row.model_name)
        except TradeserveError as error:
            if pending.failed != str(error):
                logger.warning("watch refresh failed: model=%s err=%s", row.model_name, error)
            pending.failed = str(error)
            return False
        self._pending.pop(row.model_name, None)
        logger.info("watch refresh ok: model=%s", row.model_name)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._tick_safely()

    def _tick_safely(self) -> None:
        try:
            self.tick()
        except Exception:  # never let the watcher die (registry down, database busy, ...)
            logger.exception("watch tick failed")
