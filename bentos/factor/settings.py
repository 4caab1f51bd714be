"""Typed settings of FactorModels (environment prefix ``TRADESERVE_FACTOR_``).

The row limit also answers to its former name, ``TRADESERVE_MAX_ROWS_PER_REQUEST``; the
served-model list to N1V1's ``PRELOAD_MODELS`` (comma-separated).
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry.env_lists import OptionalNameList


class FactorSettings(BaseSettings):
    """What FactorModels serves and the requests it accepts."""

    model_config = SettingsConfigDict(
        env_prefix="TRADESERVE_FACTOR_", extra="ignore", populate_by_name=True
    )

    models: OptionalNameList = Field(
        default=None,
        validation_alias=AliasChoices("TRADESERVE_FACTOR_MODELS", "PRELOAD_MODELS"),
        description="Factor and tabular models to serve, a JSON list or comma-separated names "
        "(N1V1's PRELOAD_MODELS is read too); default: every promoted one.",
    )
    max_rows_per_request: int = Field(
        default=10_000,
        ge=1,
        validation_alias=AliasChoices(
            "TRADESERVE_FACTOR_MAX_ROWS_PER_REQUEST", "TRADESERVE_MAX_ROWS_PER_REQUEST"
        ),
        description="Most rows in one /predict request; more get 400.",
    )
    fill_missing_features: bool = Field(
        default=False,
        description="N1V1 routes: fill the features a request lacks with 0.0, as N1V1 did, "
        "instead of answering 400 naming them (the answer is then computed on made-up "
        "values; the filled names come back in the X-Filled-Features header).",
    )
    n1v1_routes: bool = Field(
        default=True,
        description="Serve N1V1's routes (/predict with model_name, /predict/batch, /health, "
        "/reload/{name}) beside the native ones.",
    )


@lru_cache(maxsize=1)
def get_factor_settings() -> FactorSettings:
    return FactorSettings()
