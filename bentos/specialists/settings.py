"""Typed settings of Specialists (environment prefix ``TRADESERVE_SPECIALISTS_``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class SpecialistsSettings(BaseSettings):
    """The requests Specialists accepts."""

    model_config = SettingsConfigDict(env_prefix="TRADESERVE_SPECIALISTS_", extra="ignore")

    max_observations: int = Field(
        default=4096,
        ge=1,
        description="Most observations x specialists in one /act request; more get 400.",
    )


@lru_cache(maxsize=1)
def get_specialists_settings() -> SpecialistsSettings:
    return SpecialistsSettings()
