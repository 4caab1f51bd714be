"""Request and response schemas of the Chronos forecasting service.

The request is the shape users of hosted Chronos endpoints know:
``{"inputs": [{"target": [...], "item_id": "SPY"}], "parameters": {...}}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from bentos.shared.lineage import ModelRef

DEFAULT_QUANTILE_LEVELS = [0.1, 0.5, 0.9]


class SeriesInput(BaseModel):
    """One series; ``null`` or ``NaN`` in ``target`` marks a missing observation."""

    model_config = ConfigDict(extra="forbid")

    target: list[float | None] = Field(description="Observations, oldest first")
    item_id: str | None = Field(default=None, max_length=256)
    start: str | None = Field(
        default=None, description="Timestamp of the first observation (needs parameters.freq)"
    )


class ForecastParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prediction_length: int = Field(default=1, ge=1, description="Forecast horizon in steps")
    quantile_levels: list[float] = Field(
        default_factory=lambda: list(DEFAULT_QUANTILE_LEVELS), min_length=1, max_length=99
    )
    model: str | None = Field(default=None, description="Served model (default: the default)")
    num_samples: int | None = Field(default=None, ge=1, le=1000, description="T5 only")
    seed: int | None = Field(default=None, description="T5 only: reproducible sampling")
    return_samples: bool = Field(default=False, description="T5 only: include sample paths")
    allow_long_horizon: bool = Field(
        default=False, description="Allow horizons above the model's native limit"
    )
    freq: str | None = Field(default=None, description="Pandas frequency, used with start")


class ForecastRequest(BaseModel):
    inputs: list[SeriesInput]
    parameters: ForecastParameters = Field(default_factory=ForecastParameters)


class SeriesTask(BaseModel):
    """One already-validated series for the batched model call."""

    model: str
    target: list[float | None]
    prediction_length: int
    quantile_levels: list[float]
    num_samples: int | None = None
    seed: int | None = None
    return_samples: bool = False
    allow_long_horizon: bool = False


class SeriesForecast(BaseModel):
    """The batched call's answer for one series, with the version that produced it."""

    version: str
    alias: str | None
    mean: list[float]
    quantiles: dict[str, list[float]]
    samples: list[list[float]] | None = None


class Prediction(BaseModel):
    """One series' forecast: ``mean`` plus one key per quantile level ("0.1", "0.5", ...)."""

    model_config = ConfigDict(extra="allow")

    item_id: str | None = None
    mean: list[float]
    start: str | None = None
    samples: list[list[float]] | None = None

    @model_serializer(mode="wrap")
    def _omit_unset_options(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """``start`` and ``samples`` appear only when asked for."""
        data = handler(self)
        return {key: value for key, value in data.items() if value is not None or key == "item_id"}


class ForecastResponse(BaseModel):
    # Typed as mappings: quantile keys depend on the request, and BentoML's client keeps
    # only declared properties of an object schema.
    predictions: list[dict[str, Any]] = Field(
        description="Per series: item_id, mean, one key per quantile level ('0.1', ...), "
        "start and samples when asked for"
    )
    model: ModelRef


class ServedChronosModel(BaseModel):
    name: str
    version: str
    alias: str | None
    kind: str
    context_length: int
    prediction_length: int
    quantile_levels: list[float]
    device: str
    dtype: str = Field(description="float32, or bfloat16 where TRADESERVE_CHRONOS_DTYPE asks")


class ModelsResponse(BaseModel):
    default_model: str
    models: list[ServedChronosModel]
