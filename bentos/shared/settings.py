"""Typed settings shared by the BentoML services (environment prefix ``TRADESERVE_``).

Settings of one service live next to it (``bentos/<service>/settings.py``, prefix
``TRADESERVE_<SERVICE>_``).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServingSettings(BaseSettings):
    """Knobs of every tradeserve service that BentoML's own configuration does not cover."""

    model_config = SettingsConfigDict(env_prefix="TRADESERVE_", extra="ignore")

    api_key: SecretStr | None = Field(
        default=None,
        description="When set, every route but the probes needs X-API-Key or a Bearer token.",
    )
    model_source: Literal["auto", "registry", "bento"] = Field(
        default="auto",
        description="Where models come from: the MLflow registry (live), the bento's own "
        "model store (built bentos), or auto (bento when running from a built bento).",
    )
    live: bool | None = Field(
        default=None,
        description="Follow promotions without a restart (default: on when models come from "
        "the registry, off in built bentos whose models are baked in).",
    )
    poll_interval_s: float = Field(
        default=10.0, gt=0, description="How often live mode checks the registry."
    )
    download_timeout_s: float = Field(
        default=900.0,
        gt=0,
        description="Live mode gives up a version's download after this long (a stalled "
        "registry) and retries it with backoff; a Chronos version is hundreds of MB.",
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Secret of the MLflow registry webhook (HMAC-SHA256): with it, "
        "/admin/webhook is authenticated by MLflow's signature alone (no API key).",
    )
    webhook_tolerance_s: int = Field(
        default=300,
        gt=0,
        description="Signed webhook deliveries whose X-MLflow-Timestamp is further than this "
        "from now are refused (replays); MLflow's own receiver example uses 5 minutes.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Model device: CUDA when present (auto), or forced."
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch intra-op threads per model call on CPU (default: the cores divided "
        "among the calls that run at once, workers x threads; 1 for the tiny Specialists).",
    )
    batch_gap_ms: float = Field(
        default=5.0,
        ge=0,
        description="Adaptive batching: a free model takes the queue once no request arrived "
        "for this long (the burst is complete).",
    )
    batch_linger_ms: float = Field(
        default=50.0,
        ge=0,
        description="Adaptive batching: ... or once the oldest queued request waited this long.",
    )
    max_request_bytes: int = Field(
        default=8 * 1024 * 1024, description="Larger request bodies get 413."
    )
    max_requests_per_connection: int = Field(
        default=100,
        ge=0,
        description="A keep-alive connection is closed after this many responses (0: never), "
        "so that clients reconnect to whichever worker is free (bentos.shared.connections).",
    )


@lru_cache(maxsize=1)
def get_serving_settings() -> ServingSettings:
    return ServingSettings()
