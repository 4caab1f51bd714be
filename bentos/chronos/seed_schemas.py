"""Request and response schemas of the Sapheneia and AleutianLocal routes, field by field.

Field names, defaults and bounds are those of the seeds (Sapheneia ``aleutian_merge``:
``forecast/models/chronos/schemas/schema.py``, ``forecast/core/legacy_schema.py``;
AleutianLocal: ``services/forecast/server.py`` and the Go structs of
``services/orchestrator/datatypes/inference.go``). Extra request fields are ignored, as the
seeds' pydantic models did. A ``null`` in a series means a missing observation, as in
``/forecast``; everything else about a series is checked by the Chronos runtime itself.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bentos.shared.lineage import ModelRef

Observations = list[float | None]
ModelStatus = Literal["uninitialized", "initializing", "ready", "error"]
# AleutianLocal's Period and DataSource/DataField enums (datatypes/inference.go)
Period = Literal["1m", "5m", "15m", "30m", "1h", "4h", "1d", "1w", "1M"]


class SeedRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")


# --- Sapheneia: /forecast/v1/chronos/* ---------------------------------------------------


class InitializationRequest(SeedRequest):
    model_variant: str | None = Field(
        default=None, description="e.g. 'amazon/chronos-t5-tiny' (default: MODEL_VARIANT)"
    )
    device: str | None = Field(
        default="cpu", description="Accepted for compatibility; models stay where they are"
    )


class InitializationResponse(BaseModel):
    message: str
    model_status: ModelStatus
    model_info: dict[str, Any] | None = None


class StatusResponse(BaseModel):
    model_status: ModelStatus
    details: str | None = None


class InferenceRequest(SeedRequest):
    context: Observations = Field(description="Historical values, oldest first")
    prediction_length: int = Field(gt=0)
    num_samples: int = Field(default=20, gt=0, le=1000, description="T5 only")
    temperature: float = Field(default=1.0, gt=0, description="T5 only")
    top_k: int = Field(default=50, gt=0, description="T5 only")
    top_p: float = Field(default=1.0, gt=0, le=1.0, description="T5 only")
    model_variant: str | None = Field(
        default=None, description="tradeserve extension: the served model to use"
    )
    seed: int | None = Field(
        default=None, description="tradeserve extension: reproducible T5 sampling"
    )


class InferenceMetadata(BaseModel):
    context_length: int
    prediction_length: int
    num_samples: int = Field(description="Sample paths drawn (0 for Bolt and Chronos-2)")
    model_variant: str
    inference_time_seconds: float


class InferencePrediction(BaseModel):
    median: list[float]
    mean: list[float]
    quantiles: dict[str, list[float]] = Field(description='"10", "20", ... "90"')
    samples: list[list[float]] = Field(description="T5 sample paths; empty for Bolt/Chronos-2")
    metadata: InferenceMetadata


class ExecutionMetadata(BaseModel):
    total_time_seconds: float
    model_version: str = Field(description="Registered version of the model that answered")
    api_version: str
    model: ModelRef


class InferenceResponse(BaseModel):
    prediction: InferencePrediction
    execution_metadata: ExecutionMetadata


class MessageResponse(BaseModel):
    message: str


# --- AleutianLocal: /v1/timeseries/forecast and the standalone server ---------------------


class LegacyForecastRequest(SeedRequest):
    """Sapheneia's legacy shape and AleutianLocal's standalone-server shape in one model."""

    model: str = Field(description="'amazon/chronos-t5-tiny', 'chronos-t5-tiny', ...")
    name: str | None = Field(default=None, description="Ticker, echoed back")
    recent_data: Observations | None = Field(default=None, min_length=1)
    data: Observations | None = Field(default=None, min_length=1)
    context_period_size: int | None = Field(default=None, gt=0, description="Logged only")
    forecast_period_size: int | None = Field(default=None, gt=0)
    horizon: int | None = Field(default=None, gt=0)
    num_samples: int = Field(default=20, gt=0, le=1000)
    as_of_date: str | None = Field(default=None, description="Logged only")

    @model_validator(mode="after")
    def _needs_data(self) -> LegacyForecastRequest:
        if self.data is None and self.recent_data is None:
            raise ValueError("send the history as 'recent_data' (or 'data')")
        return self

    @property
    def history(self) -> Observations:
        return self.data if self.data is not None else self.recent_data  # type: ignore[return-value]

    @property
    def steps(self) -> int:
        """``forecast_period_size``, else ``horizon``, else the standalone server's 5."""
        return self.forecast_period_size or self.horizon or 5


class LegacyForecastResponse(BaseModel):
    name: str | None
    forecast: list[float] = Field(description="Median")
    forecast_low: list[float] = Field(description="10th percentile")
    forecast_high: list[float] = Field(description="90th percentile")
    horizon: int
    model: str
    model_version: str
    message: str = "Success"


class StandaloneModel(BaseModel):
    slug: str
    status: str
    vram_gb: float
    huggingface_id: str
    loaded: bool
    in_use: bool = False
    version: str
    alias: str | None


class ModelLoadRequest(SeedRequest):
    model: str


class ModelLoadResponse(BaseModel):
    status: Literal["loaded"]
    model: str
    loaded_models: list[str]
    slots_used: str


# --- AleutianLocal's unified route: /orchestration/v1/predict -----------------------------


class ContextData(SeedRequest):
    values: Observations = Field(min_length=1)
    period: Period
    source: str = "unknown"
    start_date: str
    end_date: str
    field: str = "close"

    @field_validator("end_date")
    @classmethod
    def _a_date(cls, value: str) -> str:
        try:
            pd.Timestamp(value)
        except (ValueError, TypeError):
            raise ValueError(f"'{value}' is not a date (YYYY-MM-DD)") from None
        return value


class HorizonSpec(SeedRequest):
    length: int = Field(gt=0)
    period: Period


class ModelParams(SeedRequest):
    num_samples: int | None = Field(default=None, gt=0, le=1000)
    temperature: float | None = Field(default=None, gt=0)
    top_k: int | None = Field(default=None, gt=0)
    top_p: float | None = Field(default=None, gt=0, le=1.0)
    quantiles: list[float] | None = None
    seed: int | None = Field(default=None, description="tradeserve extension (T5)")


class PredictRequest(SeedRequest):
    request_id: str
    timestamp: datetime | None = None
    ticker: str
    model: str
    context: ContextData
    horizon: HorizonSpec
    params: ModelParams | None = None


class ForecastData(BaseModel):
    values: list[float] = Field(description="Median per step")
    period: Period
    start_date: str
    end_date: str


class ContextSummary(BaseModel):
    length: int = Field(description="Observations the model read (its context length at most)")
    period: Period
    source: str
    start_date: str
    end_date: str
    field: str


class QuantileForecast(BaseModel):
    quantile: float
    values: list[float]


class PredictMetadata(BaseModel):
    inference_time_ms: int
    model_version: str
    device: str
    model_family: str
    model: ModelRef


class PredictResponse(BaseModel):
    request_id: str
    response_id: str
    timestamp: datetime
    ticker: str
    model: str
    forecast: ForecastData
    context_summary: ContextSummary
    quantiles: list[QuantileForecast]
    metadata: PredictMetadata
