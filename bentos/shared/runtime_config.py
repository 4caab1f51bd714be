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


def configured_batching(service: str, default: Batching) -> Batching:
    """``services.<service>.batching`` from ``BENTOML_CONFIG`` over ``default``."""
    path = os.environ.get("BENTOML_CONFIG")
    if not path or not Path(path).is_file():
        return default
    config = yaml.safe_load(Path(path).read_text()) or {}
    services = config.get("services") or {}
    block = {
        **(services.get("batching") or {}),
        **((services.get(service) or {}).get("batching") or {}),
    }
    block.pop("enabled", None)
    return Batching(**{**default.model_dump(), **block})
