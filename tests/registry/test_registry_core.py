"""Registry core: naming, resolution (alias, then legacy stage) and audit replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from registry import store
from registry.audit import AuditEntry, champion_stack
from registry.errors import InvalidModelNameError, ModelNotFoundError, NotPromotedError
from registry.families import Family, family_of
from registry.resolve import resolve


@pytest.mark.parametrize(
    ("name", "family"),
    [
        ("chronos-t5-tiny", Family.CHRONOS),
        ("chronos-bolt-small", Family.CHRONOS),
        ("chronos-2", Family.CHRONOS),
        ("factor-SOLUSDT_mid_chg_1m", Family.FACTOR),
        ("specialist-universal", Family.SPECIALIST),
        ("regime-detector", Family.REGIME),
        ("venue-quantiles-binance-futures", Family.VENUE_QUANTILES),
    ],
)
def test_family_of_names(name: str, family: Family) -> None:
    assert family_of(name) is family


@pytest.mark.parametrize("name", ["chronos-t5-huge", "specialist-crab", "xgb-model", ""])
def test_unknown_names_are_rejected_with_the_expected_patterns(name: str) -> None:
    with pytest.raises(InvalidModelNameError, match="expected"):
        family_of(name)


def _register_bare_versions(name: str, count: int) -> None:
    """Versions whose content does not matter for resolution."""
    client = store.client()
    client.create_registered_model(name, tags={"family": family_of(name).value})
    for _ in range(count):
        client.create_model_version(name, source="file:///nonexistent", tags={})


def test_resolve_prefers_alias_then_falls_back_to_stage(embedded_registry) -> None:
    client = store.client()
    _register_bare_versions("factor-core_test", 3)

    with pytest.raises(NotPromotedError, match=r"factor-core_test.*tradeserve promote"):
        resolve("factor-core_test")

    client.transition_model_version_stage("factor-core_test", "2", "Production")
    by_stage = resolve("factor-core_test")
    assert (by_stage.version, by_stage.alias, by_stage.stage) == ("2", None, "Production")

    client.set_registered_model_alias("factor-core_test", "champion", "3")
    by_alias = resolve("factor-core_test")
    assert (by_alias.version, by_alias.alias) == ("3", "champion")
    assert by_alias.model_uri == "models:/factor-core_test/3"
    assert by_alias.family is Family.FACTOR


def test_resolve_unknown_model_names_it(embedded_registry) -> None:
    with pytest.raises(ModelNotFoundError, match="'factor-nope'"):
        resolve("factor-nope")


def _entry(event: str, before: str | None, after: str, minutes: int, passed: bool = True):
    return AuditEntry(
        event=event,
        name="m",
        alias="champion",
        from_version=before,
        to_version=after,
        actor="t",
        time=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=minutes),
        passed=passed,
    )


def test_champion_stack_replays_promotions_and_rollbacks() -> None:
    entries = [
        _entry("promote", None, "1", 0),
        _entry("promote", "1", "2", 1),
        _entry("promote", "2", "9", 2, passed=False),  # rejected: changes nothing
        _entry("promote", "2", "3", 3),
        _entry("rollback", "3", "2", 4),
    ]
    assert champion_stack(entries) == ["1", "2"]
    assert champion_stack([*entries, _entry("rollback", "2", "1", 5)]) == ["1"]


def test_champion_stack_keeps_a_version_promoted_outside_tradeserve() -> None:
    assert champion_stack([_entry("promote", "4", "5", 0)]) == ["4", "5"]
