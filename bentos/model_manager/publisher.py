"""Promoted venue tables published to Redis, where trading processes read their thresholds.

Each symbol of a table becomes ``{venue}:{symbol}:amount-threshold`` holding model_manager's
JSON (``{"symbol", "medium_notional_threshold", "large_notional_threshold"}``). A table is
written in one transaction that also deletes the keys of symbols it no longer has
(model_manager left them behind). Publishing runs on a thread of its own: an unreachable
Redis is logged and retried with backoff (at most 30 s apart) and never fails a request or
the start-up; only the newest table of a venue is kept for the retry. Every published table
is written again every ``resync_s`` seconds (``TRADESERVE_MODEL_MANAGER_REDIS_RESYNC_S``,
60), so a Redis that restarted empty (or a deleted key) is repaired without a promotion.
"""

from __future__ import annotations

import json
import logging
import threading

import redis

from bentos.model_manager.schemas import RedisStatus
from training_hooks.venue_quantiles.runtime import VenueTable

logger = logging.getLogger("tradeserve.model_manager.redis")
KEY_SUFFIX = ":amount-threshold"
FIRST_RETRY_S = 0.5
MAX_BACKOFF_S = 30.0
RESYNC_S = 60.0


def threshold_key(venue: str, symbol: str) -> str:
    return f"{venue}:{symbol}{KEY_SUFFIX}"


def threshold_values(table: VenueTable) -> dict[str, str]:
    """Key -> model_manager's JSON value, for every symbol of ``table``."""
    return {
        threshold_key(table.venue, symbol): json.dumps(
            {
                "symbol": symbol,
                "medium_notional_threshold": thresholds.medium_notional_threshold,
                "large_notional_threshold": thresholds.large_notional_threshold,
            }
        )
        for symbol, thresholds in table.symbols.items()
    }


class RedisPublisher:
    """Writes venue tables to Redis from a background thread, retrying until it succeeds."""

    def __init__(self, url: str, resync_s: float = RESYNC_S) -> None:
        self._resync_s = resync_s
        self._published: dict[str, VenueTable] = {}
        self._client = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, decode_responses=True
        )
        self._url = url
        self._pending: dict[str, VenueTable] = {}
        self._wake = threading.Condition()
        self._stopped = False
        self._failures = 0
        self._last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="tradeserve-redis", daemon=True)
        self._thread.start()

    def publish(self, table: VenueTable) -> None:
        """Queue ``table`` (replacing an unpublished older one of its venue)."""
        with self._wake:
            self._pending[table.venue] = table
            self._wake.notify()

    def status(self) -> RedisStatus:
        with self._wake:
            pending = sorted(self._pending)
        return RedisStatus(
            url=redact(self._url),
            reachable=self._failures == 0,
            pending_venues=pending,
            last_error=self._last_error,
        )

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join(timeout=5)
        self._client.close()

    def _run(self) -> None:
        while True:
            with self._wake:
                delay = self._backoff()
                if not self._wake.wait_for(
                    lambda: self._stopped or self._pending, timeout=self._resync_s
                ):
                    self._pending = {**self._published, **self._pending}  # periodic re-sync
                if self._stopped:
                    return
                if not self._pending:
                    continue
                if delay:
                    self._wake.wait_for(lambda: self._stopped, timeout=delay)
                    if self._stopped:
                        return
                venue, table = next(iter(self._pending.items()))
            try:
                self._write(table)
            except (redis.RedisError, OSError) as error:
                self._failed(table, error)
                continue
            with self._wake:
                if self._pending.get(venue) is table:  # a newer one may have arrived
                    del self._pending[venue]
                first = self._published.get(venue) is not table
                self._published[venue] = table
                self._failures, self._last_error = 0, None
            if first:
                logger.info("published %d thresholds of %s", len(table.symbols), venue)

    def _write(self, table: VenueTable) -> None:
        values = threshold_values(table)
        pattern = threshold_key(_glob_escape(table.venue), "*")
        stale = [key for key in self._client.scan_iter(match=pattern) if key not in values]
        with self._client.pipeline(transaction=True) as pipe:
            if values:
                pipe.mset(values)
            if stale:
                pipe.delete(*stale)
            pipe.execute()

    def _failed(self, table: VenueTable, error: Exception) -> None:
        with self._wake:
            self._failures += 1
            self._last_error = f"{type(error).__name__}: {error}"
            delay = self._backoff()
        logger.warning(
            "cannot publish %s to Redis at %s (%s); retrying in %.1f s",
            table.venue, redact(self._url), error, delay,
        )  # fmt: skip

    def _backoff(self) -> float:
        if not self._failures:
            return 0.0
        return min(FIRST_RETRY_S * 2 ** (self._failures - 1), MAX_BACKOFF_S)


def redact(url: str) -> str:
    """``url`` without its password."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def _glob_escape(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)
