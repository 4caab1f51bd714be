"""Typed settings of ModelManager (environment prefix ``TRADESERVE_MODEL_MANAGER_``).

The watcher reads model_manager's own variables with its defaults
(``MODEL_MANAGER_WATCH_ENABLED`` 1, ``MODEL_MANAGER_WATCH_INTERVAL`` 5 s,
``MODEL_MANAGER_WATCH_DEBOUNCE`` 2 s); the operator's roots and Redis have short names of
their own (``TRADESERVE_MODEL_ROOTS``, ``TRADESERVE_REDIS_URL``) because the CLI reads them
too.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry.env_lists import NameList, PathList
from registry.settings import get_settings

# model_manager's venues (backend/quantiles.py): five exchanges, margin and futures each.
SEED_VENUES = tuple(
    f"{exchange}-{market}"
    for exchange in ("binance", "okex", "bybit", "bitget", "gate")
    for market in ("margin", "futures")
)


class ModelManagerSettings(BaseSettings):
    """Where ModelManager may read from, what it watches and where it publishes."""

    model_config = SettingsConfigDict(
        env_prefix="TRADESERVE_MODEL_MANAGER_", extra="ignore", populate_by_name=True
    )

    model_roots: PathList = Field(
        default_factory=list,
        validation_alias=AliasChoices("TRADESERVE_MODEL_ROOTS", "TRADESERVE_MODEL_MANAGER_ROOTS"),
        description="Folders (os.pathsep-separated) under which the HTTP API may read artifact "
        "directories (root_path) and quantile pickles (pkl_path); anything else gets 403. "
        "Empty: the API reads nothing (the CLI is not limited: it runs as the operator).",
    )
    redis_url: str = Field(
        default="redis://localhost:6379/0",
        validation_alias=AliasChoices("TRADESERVE_REDIS_URL", "TRADESERVE_MODEL_MANAGER_REDIS_URL"),
        description="Redis that receives {venue}:{symbol}:amount-threshold for every promoted "
        "venue table (model_manager's Redis was localhost:6379).",
    )
    redis_resync_s: float = Field(
        default=60.0,
        gt=0,
        description="Every promoted table is written to Redis again this often, so a Redis "
        "that restarted empty is repaired without a promotion.",
    )
    venues: NameList = Field(
        default_factory=lambda: list(SEED_VENUES),
        description="Venues PUT /api/venues/{venue}/quantiles accepts, "
        "a JSON list or comma-separated; default: model_manager's ten.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the directory mapping (PostgreSQL when deployed); "
        "default: SQLite model_manager.db in TRADESERVE_HOME.",
    )
    watch_enabled: bool = Field(
        default=True,
        validation_alias=AliasChoices(
            "MODEL_MANAGER_WATCH_ENABLED", "TRADESERVE_MODEL_MANAGER_WATCH_ENABLED"
        ),
        description="Poll every registered directory and import what changed.",
    )
    watch_interval_s: float = Field(
        default=5.0,
        gt=0,
        validation_alias=AliasChoices(
            "MODEL_MANAGER_WATCH_INTERVAL", "TRADESERVE_MODEL_MANAGER_WATCH_INTERVAL_S"
        ),
        description="Seconds between two polls of the registered directories.",
    )
    watch_debounce_s: float = Field(
        default=2.0,
        ge=0,
        validation_alias=AliasChoices(
            "MODEL_MANAGER_WATCH_DEBOUNCE", "TRADESERVE_MODEL_MANAGER_WATCH_DEBOUNCE_S"
        ),
        description="How long a changed fingerprint must hold before it is imported (files "
        "still being written are not).",
    )

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{get_settings().home_dir / 'model_manager.db'}"


@lru_cache(maxsize=1)
def get_model_manager_settings() -> ModelManagerSettings:
    return ModelManagerSettings()
