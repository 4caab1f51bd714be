"""Adaptive batching for endpoints that validate a rich request before batching.

A public endpoint that validates a rich request (a forecast with parameters, several
specialists) cannot itself be ``batchable``, and BentoML's way for such an endpoint to
reach a batchable one of the same service, ``self.to_async.<api>``, is an HTTP round trip
through aiohttp-asgi-connector, which loses request bodies under concurrency (its handler
can start before aiohttp has written the body, then the body write fails with "Cannot
write to closing transport"). :class:`AdaptiveBatcher` queues the validated work items
in-process instead.

Dispatch policy: up to ``concurrent_calls`` batches are in flight per worker (the
service's ``threads``). When a call slot is free, the queue is sent once it holds
``max_batch_size`` items, or no new item arrived for ``batch_gap_ms`` (the burst is
complete), or its oldest item has waited ``batch_linger_ms`` (both settings); a
slot takes the queue's share of the free slots, so a burst that finds two slots free runs
as two half batches side by side. On a CPU, two single-threaded calls of half the batch
out-run one call of the whole batch on two threads (torch's intra-op parallelism leaves
cores idle between the small ops of a transformer; bench/README.md).
BentoML's ``CorkDispatcher`` (behind ``batchable=True``) instead sends as soon as the
oldest item has waited longer than the running average wait; under closed-loop load the
first request of the next burst has usually waited a whole batch already, so it leaves
alone or with a handful of others and the rest follow in a second call: two model calls
per cycle, each paying the fixed cost (measured in bench/README.md). Items that waited
``max_latency_ms`` without being sent are answered 503.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio.to_thread

from bentos.shared.runtime_config import Batching
from bentos.shared.settings import ServingSettings, get_serving_settings
from registry.errors import TradeserveError

T = TypeVar("T")
R = TypeVar("R")


class OverloadedError(TradeserveError):
    """The batch queue cannot meet its latency budget; the client should retry later."""

    http_status = 503


@dataclass
class _Job(Generic[T, R]):
    items: list[T]
    future: asyncio.Future[list[R]]
    enqueued: float = field(default_factory=time.monotonic)


class AdaptiveBatcher(Generic[T, R]):
    """Coalesce concurrent ``submit`` calls into calls of ``func`` on one list of items.

    ``func`` runs in a worker thread (the event loop keeps accepting requests meanwhile);
    an exception it raises is raised to every caller of that batch.
    """

    def __init__(
        self,
        func: Callable[[list[T]], list[R]],
        batching: Batching,
        settings: ServingSettings | None = None,
    ) -> None:
        settings = settings or get_serving_settings()
        self._func = func
        self.max_batch_size = batching.max_batch_size
        self.max_latency_ms = batching.max_latency_ms
        self.concurrent_calls = batching.concurrent_calls
        self._gap_s = settings.batch_gap_ms / 1000
        self._linger_s = settings.batch_linger_ms / 1000
        self._queue: deque[_Job[T, R]] = deque()
        self._queued_items = 0
        self._last_arrival = 0.0
        self._arrived: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._slot_freed: asyncio.Event | None = None
        self._calls: set[asyncio.Task[None]] = set()  # model calls in flight

    async def submit(self, items: list[T]) -> list[R]:
        """Results for ``items``, computed together with whatever else is queued."""
        chunks = [
            items[start : start + self.max_batch_size]
            for start in range(0, len(items), self.max_batch_size)
        ]
        answers = await asyncio.gather(*(self._enqueue(chunk) for chunk in chunks))
        return [result for answer in answers for result in answer]

    async def _enqueue(self, items: list[T]) -> list[R]:
        loop = asyncio.get_running_loop()
        if self._dispatcher is None or self._dispatcher.done():
            self._arrived = asyncio.Event()
            self._slot_freed = asyncio.Event()
            self._dispatcher = loop.create_task(self._dispatch_forever())
        job: _Job[T, R] = _Job(items, loop.create_future())
        self._queue.append(job)
        self._queued_items += len(items)
        self._last_arrival = job.enqueued
        assert self._arrived is not None
        self._arrived.set()
        return await job.future

    async def _dispatch_forever(self) -> None:
        assert self._arrived is not None and self._slot_freed is not None
        while True:
            while not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
            while len(self._calls) >= self.concurrent_calls:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            await self._collect()
            # This call's share of the queue among the slots free now (its own included).
            free_slots = self.concurrent_calls - len(self._calls)
            share = math.ceil(self._queued_items / free_slots)
            batch = self._take_batch(min(self.max_batch_size, share))
            if batch:
                call = asyncio.get_running_loop().create_task(self._run(batch))
                self._calls.add(call)
                call.add_done_callback(self._call_done)

    def _call_done(self, call: asyncio.Task[None]) -> None:
        self._calls.discard(call)
        assert self._slot_freed is not None
        self._slot_freed.set()

    async def _collect(self) -> None:
        """Wait until the queue is full, the burst is over, or the oldest waited enough."""
        assert self._arrived is not None
        while self._queued_items < self.max_batch_size:
            now = time.monotonic()
            oldest = self._queue[0].enqueued
            deadline = min(self._last_arrival + self._gap_s, oldest + self._linger_s)
            if now >= deadline:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), deadline - now)
            except TimeoutError:
                return

    def _take_batch(self, limit: int) -> list[_Job[T, R]]:
        """Jobs in arrival order while their items fit in ``limit`` (always the first job:
        a submission is never larger than ``max_batch_size``); overdue ones get 503."""
        batch: list[_Job[T, R]] = []
        size, now = 0, time.monotonic()
        while self._queue and (size == 0 or size + len(self._queue[0].items) <= limit):
            job = self._queue.popleft()
            self._queued_items -= len(job.items)
            if job.future.done():  # the caller went away
                continue
            if (now - job.enqueued) * 1000 >= self.max_latency_ms:
                job.future.set_exception(self._overloaded())
                continue
            batch.append(job)
            size += len(job.items)
        return batch

    async def _run(self, batch: list[_Job[T, R]]) -> None:
        flat = [item for job in batch for item in job.items]
        try:
            results = await anyio.to_thread.run_sync(self._func, flat)
        except Exception as error:
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(error)
            return
        start = 0
        for job in batch:
            if not job.future.done():
                job.future.set_result(results[start : start + len(job.items)])
            start += len(job.items)

    def _overloaded(self) -> OverloadedError:
        return OverloadedError(
            f"the model queue cannot answer within {self.max_latency_ms} ms; retry later or "
            "raise the service's batching.max_latency_ms (BENTOML_CONFIG: services.<Name>.batching)"
        )
