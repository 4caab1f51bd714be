"""Read the per-service ``batching`` block of BentoML's runtime configuration.

BentoML's v2 schema accepts ``services.<Name>.batching.{max_batch_size, max_latency_ms}``
(a runner-era key) but applies only decorator values to ``@bentoml.api`` methods. tradeserve
services pass the configured values to their decorators, so ``configuration.yaml`` is the
one place to tune batching, as it is for workers and traffic.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field


class Batching(BaseModel):
    max_batch_size: int = Field(ge=2)
    max_latency_ms: int = Field(ge=1)
    # Batches computed at once per worker: the service's ``threads`` (BentoML's threads for
    # synchronous work, where tradeserve runs its model calls); set by configured_batching.
    concurrent_calls: int = Field(default=1, ge=1)


def _services_config() -> dict:
    """The ``services`` block of ``BENTOML_CONFIG`` (empty when none is set)."""
    path = os.environ.get("BENTOML_CONFIG")
    return _read_services(path) if path and Path(path).is_file() else {}


@functools.lru_cache(maxsize=8)
def _read_services(path: str) -> dict:
    """Parsed once per file: a service reads workers, threads and batching at start-up."""
    return (yaml.safe_load(Path(path).read_text()) or {}).get("services") or {}


def _setting(service: str, key: str, default: Any) -> Any:
    """``services.<service>.<key>``, else ``services.<key>``, else ``default``."""
    services = _services_config()
    return (services.get(service) or {}).get(key, services.get(key, default))


def configured_workers(service: str) -> int:
    """``services.<service>.workers`` (or the default for every service), else 1."""
    workers = _setting(service, "workers", 1)
    if workers == "cpu_count":
        return os.cpu_count() or 1
    return int(workers)


def configured_threads(service: str) -> int:
    """``services.<service>.threads`` (or the default for every service), else 1."""
    return int(_setting(service, "threads", 1))


def configured_batching(service: str, default: Batching) -> Batching:
    """``services.<service>.batching`` from ``BENTOML_CONFIG`` over ``default``, with
    ``concurrent_calls`` = the service's threads."""
    services = _services_config()
    block = {
        **(services.get("batching") or {}),
        **((services.get(service) or {}).get("batching") or {}),
    }
    block.pop("enabled", None)
    block["concurrent_calls"] = configured_threads(service)
    return Batching(**{**default.model_dump(), **block})
