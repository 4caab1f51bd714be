"""RegimeBlend's view of the Specialists service: which roles are served, and one batched
call per decision.

The dependency is BentoML's remote proxy when served (its own process, adaptive batching on
``act_batch``) or an in-process instance otherwise; both are used through ``to_async``.

A served model version is a pure function of its input, and a stored bar's features never
change, so answers are memoised per (role, version, feature row): requests about a bar
already seen (every client asking about today's bar) skip the inter-service hop. Lookups
use the version the catalog (re-listed every ``catalog_refresh_s``) says is served; an
answer is stored under the version that actually produced it, which is not always the
catalog's: between a promotion reaching Specialists and the next re-listing, answers come
from the new version while the catalog still names the old one. Keyed by the catalog, such
answers would be served as the old version's after a rollback. An answer from another
version than the catalog's also shows the catalog is stale: the next request re-lists, so
decisions name a promoted version as soon as it answers, not up to ``catalog_refresh_s``
later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import numpy as np

from bentos.regime_blend.metrics import record_cache
from bentos.shared.lineage import ModelRef
from bentos.specialists.schemas import ObservationResult, ObservationTask, SpecialistsResponse
from registry.errors import TradeserveError

logger = logging.getLogger("tradeserve.regime_blend")
STALE_CONNECTION_RETRIES = 1


class SpecialistsUnavailableError(TradeserveError):
    http_status = 503


@dataclass(frozen=True)
class CatalogEntry:
    role: str
    model: ModelRef
    parameters: int
    device: str
    seen_at: datetime


Answer = tuple[np.ndarray, ModelRef]


class AnswerCache:
    """Least-recently-used answers of the specialists (``size`` 0 disables it)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[tuple[str, str | None, bytes], Answer] = OrderedDict()

    def get(self, key: tuple[str, str | None, bytes]) -> Answer | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: tuple[str, str | None, bytes], answer: Answer) -> None:
        if self.size <= 0:
            return
        self._items[key] = answer
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)


class SpecialistPool:
    """Cached catalog of served specialists + the batched ``act_batch`` call."""

    def __init__(
        self,
        dependency: Any,
        refresh_s: float = 30.0,
        cache_size: int = 0,
        timeout_s: float = 10.0,
    ) -> None:
        self._dependency = dependency
        self._timeout_s = timeout_s
        self._refresh_s = refresh_s
        self.cache = AnswerCache(cache_size)
        self._catalog: dict[str, CatalogEntry] = {}
        self._fetched_at = -float("inf")
        self._lock = asyncio.Lock()

    @property
    def known(self) -> dict[str, CatalogEntry]:
        """The last catalog fetched (may be empty before the first request)."""
        return self._catalog

    async def catalog(self, force: bool = False) -> dict[str, CatalogEntry]:
        """Served specialists by role, re-listed every ``refresh_s`` seconds."""
        if not force and time.monotonic() - self._fetched_at < self._refresh_s and self._catalog:
            return self._catalog
        async with self._lock:
            if (
                not force
                and time.monotonic() - self._fetched_at < self._refresh_s
                and self._catalog
            ):
                return self._catalog
            try:
                async with asyncio.timeout(self._timeout_s):
                    answer = await self._dependency.to_async.served_models()
            except Exception as error:
                if self._catalog:
                    logger.warning("cannot re-list specialists (%s); keeping the last list", error)
                    self._fetched_at = time.monotonic()
                    return self._catalog
                raise SpecialistsUnavailableError(
                    f"the Specialists service cannot be reached: {_describe(error)}"
                ) from error
            served = SpecialistsResponse.model_validate(_plain(answer))
            previous = self._catalog
            now = datetime.now(UTC)
            self._catalog = {
                item.role: CatalogEntry(
                    role=item.role,
                    model=item.model,
                    parameters=item.parameters,
                    device=item.device,
                    seen_at=(
                        previous[item.role].seen_at
                        if item.role in previous and previous[item.role].model == item.model
                        else now
                    ),
                )
                for item in served.specialists
            }
            self._fetched_at = time.monotonic()
            return self._catalog

    async def act(self, roles: Sequence[str], observation: np.ndarray) -> dict[str, Answer]:
        """Action probabilities (HOLD, BUY, SELL) of each role for one feature row."""
        row_key = np.asarray(observation, dtype=np.float64).tobytes()
        keys = {role: (role, self._version(role), row_key) for role in roles}
        answers = {role: self.cache.get(key) for role, key in keys.items()}
        missing = [role for role, answer in answers.items() if answer is None]
        record_cache(hits=len(roles) - len(missing), misses=len(missing))
        if missing:
            for role, answer in zip(missing, await self._call(missing, observation), strict=True):
                answers[role] = answer
                produced_by = answer[1].version
                self.cache.put((role, produced_by, row_key), answer)
                if produced_by != keys[role][1]:
                    self._fetched_at = -float("inf")  # Specialists swapped: re-list
        return {role: answers[role] for role in roles}  # type: ignore[misc]

    def _version(self, role: str) -> str | None:
        entry = self._catalog.get(role)
        return None if entry is None else entry.model.version

    async def _call(self, roles: Sequence[str], observation: np.ndarray) -> list[Answer]:
        row = [float(x) for x in observation]
        try:
            tasks = [ObservationTask(specialist=role, observation=row) for role in roles]
        except ValueError as error:  # a non-finite row: no model can answer it
            raise self._unavailable(error) from error
        for attempt in range(1, STALE_CONNECTION_RETRIES + 2):
            try:
                async with asyncio.timeout(self._timeout_s):  # wait_for made a task per call
                    results = await self._dependency.to_async.act_batch(tasks)
                break
            except aiohttp.ClientConnectionError as error:
                # typically a pooled keep-alive connection the server had just closed (its
                # idle timeout); act_batch is a pure function, so calling again is safe
                if attempt > STALE_CONNECTION_RETRIES:
                    raise self._unavailable(error) from error
                logger.info("retrying act_batch after a connection error: %s", error)
            except Exception as error:
                raise self._unavailable(error) from error
        answers = []
        try:
            for result in results:
                if not isinstance(result, ObservationResult):
                    result = ObservationResult.model_validate(_plain(result))
                probabilities = np.asarray(result.probabilities, dtype=np.float64)
                if result.error or result.model is None:
                    raise ValueError(result.error or "an answer without its model")
                if probabilities.shape != (3,) or not np.isfinite(probabilities).all():
                    raise ValueError(f"{result.model.name} answered {result.probabilities!r}")
                answers.append((probabilities, result.model))
        except (ValueError, TypeError) as error:  # pydantic's ValidationError is a ValueError
            raise self._unavailable(error) from error
        if len(answers) != len(roles):
            raise self._unavailable(ValueError(f"{len(answers)} answers for {len(roles)} roles"))
        return answers

    def _unavailable(self, error: Exception) -> SpecialistsUnavailableError:
        self._fetched_at = -float("inf")  # re-list: a model may have gone away
        return SpecialistsUnavailableError(
            f"the Specialists service failed to answer: {_describe(error)}"
        )


def _describe(error: Exception) -> str:
    """One line naming what went wrong (a timeout's own text is empty)."""
    if isinstance(error, TimeoutError):
        return "no answer in time"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _plain(value: Any) -> Any:
    """Models crossing the process boundary may arrive as another class's instances."""
    return value.model_dump() if hasattr(value, "model_dump") else value
