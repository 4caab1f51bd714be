"""FactorModels: XGBoost factor models and tabular models (any XGBoost or scikit-learn
model tagged ``tabular``), their payloads for tree-running clients, and per-venue
order-size thresholds; N1V1's serving routes beside the native ones (``n1v1``).

Predictions go straight from the JSON rows to ``Booster.inplace_predict`` (no pandas on
the hot path); many rows in one request are one vectorised call.
"""

from __future__ import annotations

import logging

import bentoml
import numpy as np

from bentos.factor import n1v1
from bentos.factor.schemas import (
    FactorModelsResponse,
    PayloadResponse,
    PredictResponse,
    ServedFactorModel,
    VenueThresholdsResponse,
)
from bentos.factor.served import PredictiveModels
from bentos.factor.settings import get_factor_settings
from bentos.shared.declare import tradeserve_service
from bentos.shared.errors import client_errors
from bentos.shared.lifecycle import ModelService
from bentos.shared.metrics import observe_call
from bentos.shared.model_source import ModelSet
from registry.errors import NotPromotedError
from registry.families import Family, venue_quantiles_name
from training_hooks.venue_quantiles.runtime import VenueQuantilesRuntime

SERVICE_NAME = "FactorModels"
logger = logging.getLogger("tradeserve.factor")


@tradeserve_service(
    name=SERVICE_NAME,
    workers=2,  # CPU-bound trees: scale with processes
    traffic={"timeout": 10, "max_concurrency": 1024},
    # One line per ~1 ms request, relayed again by the arbiter, halves throughput; count
    # requests from /metrics instead.
    logging={"access": {"enabled": False}},
)
class FactorModels(ModelService):
    """Serves every promoted factor and tabular model and venue-quantile table."""

    def __init__(self) -> None:
        self.settings = get_factor_settings()
        self.predictive = PredictiveModels(self.settings.models)
        self.predictive.load()
        self.models = self.predictive.factor  # /payload: factor models only
        self.venues: ModelSet[VenueQuantilesRuntime] = ModelSet(Family.VENUE_QUANTILES)
        try:
            self.venues.load()
        except NotPromotedError:
            logger.info("no venue-quantile table is promoted; /venue_quantiles answers 404")
        self.serve(*self.predictive.required(), optional=(*self.predictive.optional(), self.venues))

    @bentoml.api(route="/predict")
    @client_errors
    async def predict(
        self,
        model: str,
        rows: list[list[float | None]] | None = None,
        features: dict[str, list[float | None]] | None = None,
    ) -> PredictResponse:
        """Predict ``rows`` (in the model's factor order; null = missing) or ``features``
        (columns keyed by factor name, any order) with one factor or tabular model."""
        served = self.predictive.get(model)
        runtime = served.runtime
        matrix = runtime.request_matrix(rows, features, self.settings.max_rows_per_request)
        with observe_call(SERVICE_NAME, served.ref, len(matrix)):
            raw = runtime.predict_rows(matrix)
        output = runtime.output_columns(raw)
        probabilities = {
            column: values.tolist() for column, values in output.items() if column != "prediction"
        }
        return PredictResponse(
            predictions=_values(output["prediction"]),
            probabilities=probabilities or None,
            model=served.ref,
        )

    @bentoml.api(route="/payload")
    @client_errors
    def payload(self, model: str) -> PayloadResponse:
        """Booster JSON, training metadata and dim->factor list (with Kendall tau)."""
        served = self.models.get(model)
        return PayloadResponse(**served.runtime.payload().model_dump(), model=served.ref)

    @bentoml.api(route="/venue_quantiles")
    @client_errors
    def venue_quantiles(self, venue: str, symbol: str | None = None) -> VenueThresholdsResponse:
        """Order-size thresholds of one venue (all symbols, or one)."""
        served = self.venues.get(venue_quantiles_name(venue))
        table = served.runtime.table
        symbols = {symbol: served.runtime.thresholds(symbol)} if symbol else table.symbols
        return VenueThresholdsResponse(venue=venue, symbols=symbols, model=served.ref)

    @bentoml.api(route="/models")
    def served_models(self) -> FactorModelsResponse:
        """Served factor and tabular models (with their feature order) and venue tables."""
        return FactorModelsResponse(
            models=[
                ServedFactorModel(
                    name=served.ref.name,
                    version=served.ref.version,
                    alias=served.ref.alias,
                    factors=list(served.runtime.factors),
                    objective=served.runtime.objective,
                )
                for served in self.predictive.served()
            ],
            venues=[served.ref for served in self.venues.models.values()],
        )


def _values(prediction: np.ndarray) -> list[float | str]:
    """Numbers as floats (regression, class indices), class labels of other kinds as text."""
    if prediction.dtype.kind in "biuf":
        return prediction.astype(float).tolist()
    return prediction.astype(str).tolist()


if get_factor_settings().n1v1_routes:
    FactorModels.mount_asgi_app(n1v1.app, path="/")
    FactorModels.add_asgi_middleware(n1v1.N1V1Dispatch)
