"""BentoML's adaptive batching, driven in-process.

A public endpoint that validates a rich request (a forecast with parameters, several
specialists) cannot itself be ``batchable``, and BentoML's way for such an endpoint to
reach a batchable one of the same service, ``self.to_async.<api>``, is an HTTP round trip
through aiohttp-asgi-connector, which loses request bodies under concurrency (its handler
can start before aiohttp has written the body, then the body write fails with "Cannot
write to closing transport"). :class:`AdaptiveBatcher` feeds BentoML's own dispatcher
(``CorkDispatcher``, the one behind ``batchable=True``) directly: same algorithm and
latency model, no serialisation, no transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, NoReturn, TypeVar

import anyio.to_thread
from bentoml._internal.marshal.dispatcher import CorkDispatcher

from bentos.shared.runtime_config import Batching
from registry.errors import TradeserveError

T = TypeVar("T")
R = TypeVar("R")


class OverloadedError(TradeserveError):
    """The batch queue cannot meet its latency budget; the client should retry later."""

    http_status = 503


class AdaptiveBatcher(Generic[T, R]):
    """Coalesce concurrent ``submit`` calls into calls of ``func`` on one list of items."""

    def __init__(self, func: Callable[[list[T]], list[R]], batching: Batching) -> None:
        self._func = func
        self.max_batch_size = batching.max_batch_size
        self.max_latency_ms = batching.max_latency_ms
        self._dispatcher: CorkDispatcher[list[T], list[R]] = CorkDispatcher(
            max_latency_in_ms=batching.max_latency_ms,
            max_batch_size=batching.max_batch_size,
            fallback=self._overloaded,
            get_batch_size=len,
            batch_dim=(0, 0),
        )
        self._call = self._dispatcher(self._run)

    async def submit(self, items: list[T]) -> list[R]:
        """Results for ``items``, computed together with whatever else is queued."""
        if len(items) <= self.max_batch_size:
            return await self._call(items)
        chunks = [
            items[start : start + self.max_batch_size]
            for start in range(0, len(items), self.max_batch_size)
        ]
        answers = await asyncio.gather(*(self._call(chunk) for chunk in chunks))
        return [result for answer in answers for result in answer]

    async def _run(self, submissions: Sequence[list[T]]) -> list[list[R]]:
        flat = [item for submission in submissions for item in submission]
        results = await anyio.to_thread.run_sync(self._func, flat)
        answers, start = [], 0
        for submission in submissions:
            answers.append(results[start : start + len(submission)])
            start += len(submission)
        return answers

    def _overloaded(self) -> NoReturn:
        raise OverloadedError(
            f"the model queue cannot answer within {self.max_latency_ms} ms; retry later or "
            "raise batching.max_latency_ms in configuration.yaml"
        )
