"""Request and response schemas of the factor-model service, native and N1V1's."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bentos.shared.lineage import ModelRef
from training_hooks.factor.schemas import FactorPayload
from training_hooks.venue_quantiles.runtime import SymbolThresholds


class PredictResponse(BaseModel):
    predictions: list[float | str] = Field(
        description="Values; class index (factor) or class label (scikit-learn) for classifiers"
    )
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


# ── N1V1's routes (bentos/factor/n1v1.py): its request and response shapes ─────────────


class N1V1PredictionRequest(BaseModel):
    """N1V1's ``PredictionRequest``: column-oriented features of one model."""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str = Field(min_length=1, description="Registered name of the model")
    features: dict[str, list[float | None]] = Field(
        description="Feature columns by name, any order (null = missing); extra ones are ignored"
    )
    correlation_id: str | None = Field(
        default=None, description="Echoed back; a uuid4 is generated when absent"
    )


class N1V1BatchRequest(BaseModel):
    """N1V1's ``BatchPredictionRequest``."""

    requests: list[N1V1PredictionRequest]
    batch_size: int | None = Field(
        default=10,
        description="Accepted for compatibility and unused (N1V1 ignored it too): the "
        "requests of one model are always computed in one model call",
    )


class N1V1PredictionResponse(BaseModel):
    """N1V1's ``PredictionResponse``; ``model_version`` is the registered version."""

    model_config = ConfigDict(protected_namespaces=())

    prediction: list[float | int | str]
    confidence: list[float] = Field(
        description="Probability of the predicted class; 1.0 for models without classes"
    )
    probabilities: dict[str, list[float]] | None = Field(
        default=None, description="proba_<class> columns, for classifiers"
    )
    correlation_id: str
    model_version: str
    latency_ms: float


class N1V1BatchItemError(BaseModel):
    """One failed item of ``/predict/batch``: the others are still answered."""

    model_config = ConfigDict(protected_namespaces=())

    correlation_id: str
    model_name: str
    error: str = Field(description="What to fix")
    status_code: int = Field(description="What the item would have got from /predict")


class N1V1Health(BaseModel):
    """N1V1's health answer, ``healthy`` only when every model to serve is loaded."""

    status: Literal["healthy", "degraded"]
    models_loaded: list[str]


class WorkerReload(BaseModel):
    """One worker's state after ``/reload/{model_name}``."""

    model_config = ConfigDict(protected_namespaces=())

    worker: int
    model_version: str | None = Field(description="Version the worker serves now")
    confirmed: bool = Field(description="The worker checked the registry after the request")
    rejected: str | None = Field(default=None, description="rejected version N: reason")


class N1V1ReloadResponse(BaseModel):
    """N1V1's reload answer (``message``) plus what every worker serves now."""

    model_config = ConfigDict(protected_namespaces=())

    message: str
    model_name: str
    model_version: str = Field(description="Version the answering worker serves")
    workers: list[WorkerReload]
