"""Read the per-service ``batching`` block of BentoML's runtime configuration.

BentoML's v2 schema accepts ``services.<Name>.batching.{max_batch_size, max_latency_ms}``
(a runner-era key) but applies only decorator values to ``@bentoml.api`` methods. tradeserve
services pass the configured values to their decorators, so ``configuration.yaml`` is the
one place to tune batching, as it is for workers and traffic.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import BaseModel, Field


class Batching(BaseModel):
    max_batch_size: int = Field(ge=2)
    max_latency_ms: int = Field(ge=1)


def _services_config() -> dict:
    """The ``services`` block of ``BENTOML_CONFIG`` (empty when none is set)."""
    path = os.environ.get("BENTOML_CONFIG")
    if not path or not Path(path).is_file():
        return {}
    return (yaml.safe_load(Path(path).read_text()) or {}).get("services") or {}


def configured_workers(service: str) -> int:
    """``services.<service>.workers`` (or the default for every service), else 1."""
    services = _services_config()
    workers = (services.get(service) or {}).get("workers", services.get("workers", 1))
    if workers == "cpu_count":
        return os.cpu_count() or 1
    return int(workers)


def configured_batching(service: str, default: Batching) -> Batching:
    """``services.<service>.batching`` from ``BENTOML_CONFIG`` over ``default``."""
    services = _services_config()
    block = {
        **(services.get("batching") or {}),
        **((services.get(service) or {}).get("batching") or {}),
    }
    block.pop("enabled", None)
    return Batching(**{**default.model_dump(), **block})
