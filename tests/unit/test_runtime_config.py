"""A service's tuned BentoML configuration lives in its code; BENTOML_CONFIG overrides it.

The merge is BentoML's own (``bentos.shared.runtime_config``): tradeserve's readers (workers,
threads, batching) and BentoML's served configuration (``inject_config``) see the same values.
"""

from __future__ import annotations

from pathlib import Path

import bentoml
import pytest
import yaml
from bentoml._internal.configuration.containers import BentoMLContainer
from pydantic import BaseModel

from bentos.shared.declare import tradeserve_service
from bentos.shared.runtime_config import (
    Batching,
    configured_batching,
    configured_threads,
    configured_workers,
    declare_config,
    service_config,
)
from harness.bento import CONFIGURATION

SERVICES = {
    "ChronosForecaster": "bentos.chronos.service",
    "FactorModels": "bentos.factor.service",
    "Specialists": "bentos.specialists.service",
    "RegimeBlend": "bentos.regime_blend.service",
}


class Item(BaseModel):
    value: int


@tradeserve_service(
    name="Declared",
    workers=3,
    threads=2,
    traffic={"timeout": 15},
    logging={"access": {"enabled": False}},
    batching={"max_batch_size": 8, "max_latency_ms": 100},
)
class Declared:
    @bentoml.api(batchable=True)
    def double(self, items: list[Item]) -> list[Item]:
        return [Item(value=2 * item.value) for item in items]

    @bentoml.api
    def ping(self) -> str:
        return "pong"


@pytest.fixture(autouse=True)
def no_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BENTOML_CONFIG", "BENTOML_CONFIG_OPTIONS", "BENTOML_CONFIG_OVERRIDES"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def write(services: dict) -> None:
        path = tmp_path / "configuration.yaml"
        path.write_text(yaml.safe_dump({"services": services}))
        monkeypatch.setenv("BENTOML_CONFIG", str(path))

    return write


def test_without_a_configuration_the_code_values_hold() -> None:
    assert (configured_workers("Declared"), configured_threads("Declared")) == (3, 2)
    assert configured_batching("Declared") == Batching(
        max_batch_size=8, max_latency_ms=100, concurrent_calls=2
    )
    merged = service_config("Declared")
    assert merged["traffic"]["timeout"] == 15
    assert merged["logging"]["access"]["enabled"] is False
    # tradeserve's defaults for every service
    assert merged["tracing"]["excluded_urls"] == ["/"]
    assert merged["metrics"]["duration"]["buckets"][0] == 0.001
    # and BentoML's own for what nobody sets
    assert configured_workers("Undeclared") == configured_threads("Undeclared") == 1


def test_a_service_block_overrides_the_code_and_shared_keys_override_the_defaults(
    config,
) -> None:
    config(
        {
            "workers": 5,
            "batching": {"max_latency_ms": 500},
            "tracing": {"excluded_urls": ["/metrics"]},
            "Declared": {"threads": 4, "batching": {"max_batch_size": 32}},
            "Forecaster": {"workers": 1, "threads": 2, "batching": {"max_batch_size": 32}},
        }
    )
    assert (configured_workers("Declared"), configured_threads("Declared")) == (3, 4)
    assert configured_batching("Declared") == Batching(
        max_batch_size=32, max_latency_ms=100, concurrent_calls=4
    )
    assert service_config("Declared")["tracing"]["excluded_urls"] == ["/metrics"]
    # services that declare nothing in code take the keys for every service
    assert (configured_workers("Forecaster"), configured_threads("Forecaster")) == (1, 2)
    assert (configured_workers("Other"), configured_threads("Other")) == (5, 1)
    assert configured_batching("Forecaster") == Batching(
        max_batch_size=32, max_latency_ms=500, concurrent_calls=2
    )


def test_config_options_override_the_file(config, monkeypatch) -> None:
    config({"Declared": {"workers": 4}})
    monkeypatch.setenv("BENTOML_CONFIG_OPTIONS", "services.Declared.workers=6")
    assert configured_workers("Declared") == 6


def test_a_service_without_batching_says_so() -> None:
    declare_config("Unbatched", {"workers": 2})
    with pytest.raises(ValueError, match="Unbatched declares no batching"):
        configured_batching("Unbatched")


@pytest.fixture
def container():
    """Put BentoML's process-wide configuration back after a test injects one."""
    saved = BentoMLContainer.config.get()
    yield
    BentoMLContainer.config.set(saved)


def test_bentoml_serves_the_merged_configuration(config, container) -> None:
    config(
        {"tracing": {"excluded_urls": "/livez"}, "Declared": {"batching": {"max_batch_size": 16}}}
    )
    Declared.inject_config()
    served = BentoMLContainer.config.get()
    assert served["services"]["Declared"]["workers"] == 3
    assert served["api_server"]["traffic"]["timeout"] == 15
    assert served["api_server"]["logging"]["access"]["enabled"] is False
    assert served["api_server"]["metrics"]["duration"]["buckets"][-1] == 30.0
    assert served["tracing"]["excluded_urls"] == "/livez"
    assert Declared.config["threads"] == 2  # BentoML's limiter reads the decorator's dict
    # the declaration sized the batchable endpoint (the file was not set at import time)
    assert (Declared.apis["double"].max_batch_size, Declared.apis["double"].max_latency_ms) == (
        8,
        100,
    )


def test_the_declaration_pins_root_model_media_types_and_protects() -> None:
    assert Declared.apis["double"].output_spec.media_type == "application/json"
    assert Declared.apis["ping"].output_spec.media_type == "text/plain"
    assert Declared.inner.service_name == "Declared"
    assert [path for _, path, _ in Declared.mount_apps] == ["/admin"]
    assert Declared.middlewares


@pytest.mark.parametrize("name", list(SERVICES))
def test_the_shipped_configuration_changes_nothing(name, monkeypatch) -> None:
    """configuration.yaml holds overrides only: every service serves the same without it."""
    import importlib

    service = getattr(importlib.import_module(SERVICES[name]), name)
    without = service_config(name)
    monkeypatch.setenv("BENTOML_CONFIG", str(CONFIGURATION))
    assert service_config(name) == without
    assert service.config  # tuned in code
