"""Request and response schemas of the factor-model service."""

from __future__ import annotations

from pydantic import BaseModel, Field

from bentos.shared.lineage import ModelRef
from training_hooks.factor.schemas import FactorPayload
from training_hooks.venue_quantiles.runtime import SymbolThresholds


class PredictResponse(BaseModel):
    predictions: list[float]
    probabilities: dict[str, list[float]] | None = Field(
        default=None, description="proba_<class> columns, for classifiers"
    )
    model: ModelRef


class PayloadResponse(FactorPayload):
    """model_manager's payload (booster JSON, metadata, dim->factor list) plus lineage."""

    model: ModelRef


class VenueThresholdsResponse(BaseModel):
    venue: str
    symbols: dict[str, SymbolThresholds]
    model: ModelRef


class ServedFactorModel(BaseModel):
    name: str
    version: str
    alias: str | None
    factors: list[str]
    objective: str


class FactorModelsResponse(BaseModel):
    models: list[ServedFactorModel]
    venues: list[ModelRef]
