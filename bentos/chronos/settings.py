"""Typed settings of ChronosForecaster (environment prefix ``TRADESERVE_CHRONOS_``).

The request limits also answer to their former names (``TRADESERVE_MAX_SERIES_PER_REQUEST``,
``TRADESERVE_MAX_SERIES_LENGTH``). ``TRADESERVE_CHRONOS_DTYPE`` is read by the Chronos
runtime itself (``training_hooks.chronos.dtype.DTYPE_ENV``), which also runs outside this
service.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry.env_lists import OptionalNameList


class ChronosSettings(BaseSettings):
    """What ChronosForecaster serves and the requests it accepts."""

    model_config = SettingsConfigDict(
        env_prefix="TRADESERVE_CHRONOS_", extra="ignore", populate_by_name=True
    )

    models: OptionalNameList = Field(
        default=None,
        description="Chronos models to serve, a JSON list or comma-separated names (default: "
        "every promoted one).",
    )
    max_series_per_request: int = Field(
        default=1000,
        ge=1,
        validation_alias=AliasChoices(
            "TRADESERVE_CHRONOS_MAX_SERIES_PER_REQUEST", "TRADESERVE_MAX_SERIES_PER_REQUEST"
        ),
        description="Most series in one /forecast request; more get 400.",
    )
    max_series_length: int = Field(
        default=100_000,
        ge=1,
        validation_alias=AliasChoices(
            "TRADESERVE_CHRONOS_MAX_SERIES_LENGTH", "TRADESERVE_MAX_SERIES_LENGTH"
        ),
        description="Longest accepted series (older points add nothing: Chronos keeps only "
        "its context length); longer get 400.",
    )
    model_variant: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TRADESERVE_CHRONOS_MODEL_VARIANT", "MODEL_VARIANT"),
        description="Model of the Sapheneia/AleutianLocal routes when a request names none "
        "('amazon/chronos-t5-tiny' or 'chronos-t5-tiny'; Sapheneia's MODEL_VARIANT).",
    )


@lru_cache(maxsize=1)
def get_chronos_settings() -> ChronosSettings:
    return ChronosSettings()
