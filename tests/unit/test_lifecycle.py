"""Readiness of a tradeserve service: ``/readyz`` answers ``ModelService.__is_ready__``."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from bentos.shared.lifecycle import ModelService
from bentos.shared.lineage import ModelRef
from bentos.shared.model_source import ModelSet, ServedModel
from bentos.shared.settings import get_serving_settings
from registry.families import Family


@pytest.fixture
def not_live(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TRADESERVE_LIVE", "false")
    get_serving_settings.cache_clear()
    yield
    get_serving_settings.cache_clear()
    gc.unfreeze()  # ModelService.serve freezes start-up objects, this process's too


def served(name: str, family: Family) -> ServedModel[object]:
    ref = ModelRef(name=name, version="1", alias="champion")
    return ServedModel(ref=ref, family=family, runtime=object())


def test_ready_only_once_every_required_set_is_loaded(not_live: None) -> None:
    factors, chronos = ModelSet(Family.FACTOR), ModelSet(Family.CHRONOS)
    venues = ModelSet(Family.VENUE_QUANTILES)
    service = ModelService()
    service.service_name = "ReadinessTest"
    service.serve(factors, chronos, optional=(venues,))
    assert service.live is None
    assert service.__is_ready__() is False
    factors.replace(served("factor-SPX_ret_1d", Family.FACTOR))
    assert service.__is_ready__() is False  # chronos still empty
    chronos.replace(served("chronos-bolt-tiny", Family.CHRONOS))
    assert service.__is_ready__() is True  # an empty optional set does not hold it back
