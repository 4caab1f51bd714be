"""AdaptiveBatcher: concurrent submissions become few model calls, in order, with errors
and overload reported to exactly the callers concerned."""

from __future__ import annotations

import asyncio
import threading

import pytest

from bentos.shared.batching import AdaptiveBatcher, OverloadedError
from bentos.shared.runtime_config import Batching
from bentos.shared.settings import ServingSettings


class Model:
    """Doubles its inputs; records every call's batch; can be held busy or made to fail."""

    def __init__(self) -> None:
        self.calls: list[list[int]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.release.set()
        self.fail_on: int | None = None

    def __call__(self, items: list[int]) -> list[int]:
        self.started.set()
        self.release.wait(timeout=10)
        self.calls.append(list(items))
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"cannot take {self.fail_on}")
        return [2 * item for item in items]


def batcher(
    model: Model, max_batch_size: int = 8, max_latency_ms: int = 10_000, **settings: float
) -> AdaptiveBatcher[int, int]:
    return AdaptiveBatcher(
        model,
        Batching(max_batch_size=max_batch_size, max_latency_ms=max_latency_ms),
        ServingSettings(**settings),
    )


def test_a_burst_of_single_submissions_is_one_model_call() -> None:
    model = Model()

    async def run() -> list[list[int]]:
        queue = batcher(model, max_batch_size=64)
        return await asyncio.gather(*(queue.submit([i]) for i in range(40)))

    answers = asyncio.run(run())
    assert answers == [[2 * i] for i in range(40)]
    assert model.calls == [list(range(40))]


def test_batches_never_exceed_the_limit_and_large_submissions_are_split() -> None:
    model = Model()

    async def run() -> tuple[list[int], list[list[int]]]:
        queue = batcher(model, max_batch_size=8)
        big = queue.submit(list(range(100, 120)))
        small = [queue.submit([i]) for i in range(5)]
        return await big, await asyncio.gather(*small)

    big, small = asyncio.run(run())
    assert big == [2 * i for i in range(100, 120)]
    assert small == [[2 * i] for i in range(5)]
    assert all(len(call) <= 8 for call in model.calls)
    assert sorted(x for call in model.calls for x in call) == [*range(5), *range(100, 120)]


def test_requests_arriving_while_the_model_is_busy_leave_together() -> None:
    """The burst that queued during a model call is sent as one call, not split."""
    model = Model()

    async def run() -> None:
        queue = batcher(model, max_batch_size=64)
        model.release.clear()
        first = asyncio.ensure_future(queue.submit([0]))
        while not model.started.is_set():  # the first call is in the model
            await asyncio.sleep(0.001)
        burst = [asyncio.ensure_future(queue.submit([i])) for i in range(1, 31)]
        while queue._queued_items < 30:  # the whole burst is queued behind the busy model
            await asyncio.sleep(0.001)
        model.release.set()
        await asyncio.gather(first, *burst)

    asyncio.run(run())
    assert model.calls == [[0], list(range(1, 31))]


def test_a_failing_batch_fails_its_callers_only() -> None:
    model = Model()
    model.fail_on = 3

    async def run() -> tuple[list, list[int]]:
        queue = batcher(model, max_batch_size=64)
        failed = await asyncio.gather(
            *(queue.submit([i]) for i in range(5)), return_exceptions=True
        )
        return failed, await queue.submit([7])

    failed, later = asyncio.run(run())
    assert all(isinstance(answer, ValueError) for answer in failed)
    assert later == [14]


def test_requests_that_waited_past_the_latency_budget_get_overloaded() -> None:
    model = Model()

    async def run() -> tuple[list[int], object, list[int]]:
        queue = batcher(model, max_batch_size=2, max_latency_ms=50)
        model.release.clear()
        first = asyncio.ensure_future(queue.submit([1]))
        while not model.started.is_set():
            await asyncio.sleep(0.001)
        late = asyncio.ensure_future(queue.submit([2]))
        await asyncio.sleep(0.2)  # the model is held longer than the budget on purpose
        model.release.set()
        answers = await asyncio.gather(first, late, return_exceptions=True)
        return answers[0], answers[1], await queue.submit([3])

    first, late, after = asyncio.run(run())
    assert first == [2]
    assert isinstance(late, OverloadedError)
    assert late.http_status == 503
    assert after == [6]


@pytest.mark.parametrize("gap_ms", [0.0, 5.0])
def test_a_lone_request_is_answered_without_waiting_for_company(gap_ms: float) -> None:
    model = Model()

    async def run() -> list[int]:
        queue = batcher(model, batch_gap_ms=gap_ms, batch_linger_ms=10_000)
        return await asyncio.wait_for(queue.submit([4]), timeout=2)

    assert asyncio.run(run()) == [8]
    assert model.calls == [[4]]


def test_concurrent_calls_split_a_burst_and_run_side_by_side() -> None:
    """With two call slots a burst becomes two half batches computed at the same time."""
    model = Model()
    both_running = threading.Barrier(2, timeout=5)

    def paired(items: list[int]) -> list[int]:
        both_running.wait()  # breaks (and fails the callers) unless the calls overlap
        return model(items)

    async def run() -> list[list[int]]:
        queue = AdaptiveBatcher(
            paired,
            Batching(max_batch_size=64, max_latency_ms=10_000, concurrent_calls=2),
            ServingSettings(),
        )
        return await asyncio.gather(*(queue.submit([i]) for i in range(40)))

    answers = asyncio.run(run())
    assert answers == [[2 * i] for i in range(40)]
    assert sorted(model.calls) == [list(range(20)), list(range(20, 40))]


def test_a_free_slot_takes_the_whole_queue_while_the_other_computes() -> None:
    """Only the free slots share the queue: a burst that finds one slot busy is not halved."""
    calls: list[list[int]] = []
    first_started, release_first = threading.Event(), threading.Event()

    def model(items: list[int]) -> list[int]:
        if 0 in items:  # the first call holds its slot until the burst has been sent
            first_started.set()
            release_first.wait(timeout=10)
        calls.append(list(items))
        return [2 * item for item in items]

    async def run() -> None:
        queue = AdaptiveBatcher(
            model,
            Batching(max_batch_size=64, max_latency_ms=10_000, concurrent_calls=2),
            ServingSettings(),
        )
        first = asyncio.ensure_future(queue.submit([0]))
        while not first_started.is_set():
            await asyncio.sleep(0.001)
        await asyncio.gather(*(queue.submit([i]) for i in range(1, 11)))
        release_first.set()
        await first

    asyncio.run(run())
    assert calls == [list(range(1, 11)), [0]]
