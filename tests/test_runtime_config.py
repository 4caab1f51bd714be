"""configuration.yaml is the one place for workers, threads and batching of every service."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bentos.shared.runtime_config import (
    Batching,
    configured_batching,
    configured_threads,
    configured_workers,
)

DEFAULT = Batching(max_batch_size=8, max_latency_ms=100)


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def write(services: dict) -> None:
        path = tmp_path / "configuration.yaml"
        path.write_text(yaml.safe_dump({"services": services}))
        monkeypatch.setenv("BENTOML_CONFIG", str(path))

    return write


def test_service_blocks_override_the_defaults_for_every_service(config) -> None:
    config(
        {
            "workers": 3,
            "batching": {"max_latency_ms": 500},
            "Forecaster": {"workers": 1, "threads": 2, "batching": {"max_batch_size": 32}},
        }
    )
    assert (configured_workers("Forecaster"), configured_threads("Forecaster")) == (1, 2)
    assert (configured_workers("Other"), configured_threads("Other")) == (3, 1)
    assert configured_batching("Forecaster", DEFAULT) == Batching(
        max_batch_size=32, max_latency_ms=500, concurrent_calls=2
    )
    assert configured_batching("Other", DEFAULT) == Batching(
        max_batch_size=8, max_latency_ms=500, concurrent_calls=1
    )


def test_without_a_configuration_the_service_defaults_hold(monkeypatch) -> None:
    monkeypatch.delenv("BENTOML_CONFIG", raising=False)
    assert configured_batching("Forecaster", DEFAULT) == DEFAULT
    assert configured_workers("Forecaster") == 1
