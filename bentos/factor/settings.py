"""Typed settings of FactorModels (environment prefix ``TRADESERVE_FACTOR_``).

The row limit also answers to its former name, ``TRADESERVE_MAX_ROWS_PER_REQUEST``.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class FactorSettings(BaseSettings):
    """What FactorModels serves and the requests it accepts."""

    model_config = SettingsConfigDict(
        env_prefix="TRADESERVE_FACTOR_", extra="ignore", populate_by_name=True
    )

    models: list[str] | None = Field(
        default=None,
        description="Factor models to serve, a JSON list (default: every promoted one).",
    )
    max_rows_per_request: int = Field(
        default=10_000,
        ge=1,
        validation_alias=AliasChoices(
            "TRADESERVE_FACTOR_MAX_ROWS_PER_REQUEST", "TRADESERVE_MAX_ROWS_PER_REQUEST"
        ),
        description="Most rows in one /predict request; more get 400.",
    )


@lru_cache(maxsize=1)
def get_factor_settings() -> FactorSettings:
    return FactorSettings()
