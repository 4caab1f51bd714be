"""ChronosForecaster with another batch-dispatch policy — to measure a proposed change.

Not a service of its own: this module imports ``bentos.chronos.service``, swaps the
``AdaptiveBatcher`` that ChronosForecaster builds for :class:`LingerBatcher`, and re-exports
the class, so ``bentoml serve bench.chronos_linger:ChronosForecaster`` is the same service
(same endpoints, validation, metrics, configuration) with only the dispatcher changed.

Why: BentoML's ``CorkDispatcher`` (behind ``AdaptiveBatcher``) dispatches as soon as the
queue's first request has waited longer than the running average wait. With closed-loop
clients answered together, the first request of the next cohort has usually waited a whole
batch already, so it leaves alone or with a handful of others, and the rest of the cohort
follows in a second call: two model calls per cycle instead of one (the batch-size histogram
shows it), each paying the fixed per-call cost.

Policy here (one batch in flight, as before): when the model is free, dispatch once the
queue holds ``max_batch_size`` items, or no new request arrived for ``GAP_MS`` (the cohort
is complete), or the oldest has waited ``LINGER_MS``; items that waited longer than
``max_latency_ms`` are answered 503 like the original.
Knobs: ``TRADESERVE_BATCH_GAP_MS`` (default 5), ``TRADESERVE_BATCH_LINGER_MS`` (default 50).
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread

import bentos.chronos.service as chronos_service
from bentos.shared.batching import OverloadedError
from bentos.shared.runtime_config import Batching

GAP_MS = float(os.environ.get("TRADESERVE_BATCH_GAP_MS", "5"))
LINGER_MS = float(os.environ.get("TRADESERVE_BATCH_LINGER_MS", "50"))
POLL_S = 0.001


@dataclass
class _Job:
    items: list[Any]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.monotonic)


class LingerBatcher:
    """Drop-in for ``bentos.shared.batching.AdaptiveBatcher`` (same constructor, ``submit``)."""

    def __init__(self, func: Callable[[list[Any]], list[Any]], batching: Batching) -> None:
        self._func = func
        self.max_batch_size = batching.max_batch_size
        self.max_latency_ms = batching.max_latency_ms
        self._queue: collections.deque[_Job] = collections.deque()
        self._last_arrival = 0.0
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, items: list[Any]) -> list[Any]:
        chunks = [
            items[start : start + self.max_batch_size]
            for start in range(0, len(items), self.max_batch_size)
        ]
        answers = await asyncio.gather(*(self._enqueue(chunk) for chunk in chunks))
        return [result for answer in answers for result in answer]

    async def _enqueue(self, items: list[Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._wake = asyncio.Event()
            self._worker = loop.create_task(self._dispatch_forever())
        job = _Job(items, loop.create_future())
        self._queue.append(job)
        self._last_arrival = job.enqueued
        assert self._wake is not None
        self._wake.set()
        return await job.future

    def _queued_items(self) -> int:
        return sum(len(job.items) for job in self._queue)

    async def _dispatch_forever(self) -> None:
        assert self._wake is not None
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            while True:  # collect
                now = time.monotonic()
                if (
                    self._queued_items() >= self.max_batch_size
                    or now - self._last_arrival >= GAP_MS / 1000
                    or now - self._queue[0].enqueued >= LINGER_MS / 1000
                ):
                    break
                await asyncio.sleep(POLL_S)
            batch, size = [], 0
            now = time.monotonic()
            while self._queue and size + len(self._queue[0].items) <= self.max_batch_size:
                job = self._queue.popleft()
                if (now - job.enqueued) * 1000 >= self.max_latency_ms:
                    job.future.set_exception(
                        OverloadedError(
                            f"the model queue cannot answer within {self.max_latency_ms} ms"
                        )
                    )
                    continue
                batch.append(job)
                size += len(job.items)
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[_Job]) -> None:
        flat = [item for job in batch for item in job.items]
        try:
            results = await anyio.to_thread.run_sync(self._func, flat)
        except Exception as error:  # every caller of this batch gets the error
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        start = 0
        for job in batch:
            if not job.future.done():
                job.future.set_result(results[start : start + len(job.items)])
            start += len(job.items)


chronos_service.AdaptiveBatcher = LingerBatcher  # ChronosForecaster.__init__ looks it up here
ChronosForecaster = chronos_service.ChronosForecaster
