"""Alias moves made outside tradeserve, recorded once when observed (registry.observed), on an
embedded registry; the multi-worker race runs for real in tests/services/test_live_promotion."""

from __future__ import annotations

import threading

from mlflow import MlflowClient

from registry import store
from registry.audit import champion_stack, history
from registry.observed import record_observed
from registry.promotion import promote
from registry.resolve import resolve
from tests.services.test_live_promotion import _log_version

NAME = "factor-OBS_ret_1d"


def stages(client: MlflowClient) -> dict[str, str]:
    return {str(v.version): v.current_stage for v in store.versions_of(client, NAME)}


def move_like_the_ui(client: MlflowClient, version: str) -> None:
    client.set_registered_model_alias(NAME, "champion", version)


def test_a_move_outside_tradeserve_is_recorded_once_and_mirrored(embedded_registry) -> None:
    client = store.client()
    first, second = _log_version(0, NAME), _log_version(1, NAME)
    promote(NAME, first, reason="initial")
    # tradeserve's own promotion is on record already: nothing to add
    assert record_observed(resolve(NAME), True, [], "worker a") is None

    move_like_the_ui(client, second)
    seen = resolve(NAME)
    entry = record_observed(seen, True, [], "worker a")
    assert entry is not None
    assert (entry.event, entry.from_version, entry.to_version, entry.passed) == (
        "observed",
        first,
        second,
        True,
    )
    # every other worker (and service) that sees it later finds it on record
    assert record_observed(seen, True, [], "worker b") is None
    observed = [e for e in history(NAME) if e.event == "observed"]
    assert [(e.from_version, e.to_version, e.actor) for e in observed] == [
        (first, second, "worker a")
    ]
    assert stages(client) == {first: "Archived", second: "Production"}
    assert champion_stack(history(NAME)) == [first, second]


def test_racing_observers_leave_one_entry(embedded_registry) -> None:
    client = store.client()
    first, second = _log_version(0, NAME), _log_version(1, NAME)
    promote(NAME, first, reason="initial")
    move_like_the_ui(client, second)
    seen = resolve(NAME)
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def observe(index: int) -> None:
        start.wait()
        try:
            record_observed(seen, True, [], f"worker {index}")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=observe, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    observed = [e for e in history(NAME) if e.event == "observed"]
    assert [(e.from_version, e.to_version) for e in observed] == [(first, second)]


def test_a_failed_verdict_is_recorded_and_the_stage_stays_on_the_served_version(
    embedded_registry,
) -> None:
    client = store.client()
    first, broken = _log_version(0, NAME), _log_version(1, NAME)
    promote(NAME, first, reason="initial")
    move_like_the_ui(client, broken)
    entry = record_observed(resolve(NAME), False, ["cannot load: broken"], "worker a")
    assert entry is not None
    assert (entry.from_version, entry.to_version, entry.passed, entry.problems) == (
        first,
        broken,
        False,
        ["cannot load: broken"],
    )
    assert stages(client) == {first: "Production", broken: "None"}
    # a rollback goes back to the last version that passed
    assert champion_stack(history(NAME)) == [first]
    # moved back in the UI: a second observed move, from the failed one
    move_like_the_ui(client, first)
    back = record_observed(resolve(NAME), True, [], "worker a")
    assert back is not None and (back.from_version, back.to_version) == (broken, first)


def test_without_any_audit_the_previous_holder_is_the_staged_one(embedded_registry) -> None:
    client = store.client()
    first, second = _log_version(0, NAME), _log_version(1, NAME)
    client.transition_model_version_stage(NAME, first, "Production")
    move_like_the_ui(client, second)
    seen = resolve(NAME)
    move_like_the_ui(client, first)  # moved on before this observer wrote: nothing recorded
    assert record_observed(seen, True, [], "slow worker") is None
    move_like_the_ui(client, second)
    entry = record_observed(resolve(NAME), True, [], "worker a")
    assert entry is not None and (entry.from_version, entry.to_version) == (first, second)
    assert stages(client) == {first: "Archived", second: "Production"}
