"""Request and response schemas of the Chronos forecasting service.

The request is the shape users of hosted Chronos endpoints know:
``{"inputs": [{"target": [...], "item_id": "SPY"}], "parameters": {...}}``; for Chronos-2 a
series may also carry ``past_covariates``/``future_covariates`` and a multivariate target
(a list of lists), whose forecasts then come as lists of lists, one per variate.
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
from training_hooks.chronos.validation import T5Sampling

DEFAULT_QUANTILE_LEVELS = [0.1, 0.5, 0.9]

# A target: one list of observations, or (Chronos-2) one list per variate.
Target = list[float | None] | list[list[float | None]]
# A covariate: numbers, or strings (categorical); null marks a missing value.
Covariate = list[float | None] | list[str | None]
Covariates = dict[str, Covariate]
# One forecast path, or one per variate of a multivariate target.
ForecastPath = list[float] | list[list[float]]

TARGET_DOC = "Observations, oldest first; Chronos-2: a list of lists is one multivariate series"
PAST_DOC = (
    "Chronos-2 only: covariates over the target's history, name -> one value per observation "
    "(numbers, or strings for a categorical covariate; null = missing)"
)
FUTURE_DOC = (
    "Chronos-2 only: known future values, name -> prediction_length values, of covariates "
    "that are also in past_covariates"
)


def history_length(target: Target) -> int:
    """Observations per variate of a target."""
    first = target[0] if target else None
    return len(first) if isinstance(first, list) else len(target)


class SeriesInput(BaseModel):
    """One series; ``null`` or ``NaN`` in ``target`` marks a missing observation."""

    model_config = ConfigDict(extra="forbid")

    target: Target = Field(description=TARGET_DOC)
    item_id: str | None = Field(default=None, max_length=256)
    start: str | None = Field(
        default=None, description="Timestamp of the first observation (needs parameters.freq)"
    )
    past_covariates: Covariates | None = Field(default=None, description=PAST_DOC)
    future_covariates: Covariates | None = Field(default=None, description=FUTURE_DOC)


class SamplingKnobs(BaseModel):
    """T5's sampling knobs (null: the model's own; Bolt and Chronos-2 do not sample)."""

    temperature: float | None = Field(default=None, gt=0, description="T5 only")
    top_k: int | None = Field(default=None, ge=1, description="T5 only")
    top_p: float | None = Field(default=None, gt=0, le=1, description="T5 only")

    @property
    def sampling(self) -> T5Sampling:
        return T5Sampling(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)


class ForecastParameters(SamplingKnobs):
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


class SeriesTask(SamplingKnobs):
    """One series with its parameters: what ``/forecast_series`` takes, and the item of the
    batched model call (validated by the model's runtime before it is queued)."""

    model: str
    target: Target = Field(description=TARGET_DOC)
    prediction_length: int
    quantile_levels: list[float]
    num_samples: int | None = None
    seed: int | None = None
    return_samples: bool = False
    allow_long_horizon: bool = False
    past_covariates: Covariates | None = Field(default=None, description=PAST_DOC)
    future_covariates: Covariates | None = Field(default=None, description=FUTURE_DOC)


class SeriesForecast(BaseModel):
    """The batched call's answer for one series, with the version that produced it."""

    version: str
    alias: str | None
    mean: ForecastPath
    quantiles: dict[str, ForecastPath]
    samples: list[list[float]] | None = None


class Prediction(BaseModel):
    """One series' forecast: ``mean`` plus one key per quantile level ("0.1", "0.5", ...)."""

    model_config = ConfigDict(extra="allow")

    item_id: str | None = None
    mean: ForecastPath
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
