"""FactorModels: XGBoost factor models, their payloads for tree-running clients, and
per-venue order-size thresholds.

Predictions go straight from the JSON rows to ``Booster.inplace_predict`` (no pandas on
the hot path); many rows in one request are one vectorised call.
"""

from __future__ import annotations

import logging

import bentoml
import numpy as np

from bentos.factor.schemas import (
    FactorModelsResponse,
    PayloadResponse,
    PredictResponse,
    ServedFactorModel,
    VenueThresholdsResponse,
)
from bentos.shared.errors import client_errors
from bentos.shared.lifecycle import ModelService, finish_service
from bentos.shared.metrics import observe_call
from bentos.shared.model_source import ModelSet
from bentos.shared.settings import get_serving_settings
from registry.errors import NotPromotedError, TradeserveError
from registry.families import Family, venue_quantiles_name
from training_hooks.factor import FactorRuntime

SERVICE_NAME = "FactorModels"
logger = logging.getLogger("tradeserve.factor")


@bentoml.service(name=SERVICE_NAME, traffic={"timeout": 10})
class FactorModels(ModelService):
    """Serves every promoted factor model and venue-quantile table."""

    def __init__(self) -> None:
        self.settings = get_serving_settings()
        self.models = ModelSet(Family.FACTOR, self.settings.factor_models)
        self.models.load()
        self.venues = ModelSet(Family.VENUE_QUANTILES)
        try:
            self.venues.load()
        except NotPromotedError:
            logger.info("no venue-quantile table is promoted; /venue_quantiles answers 404")
        self.serve(self.models, optional=(self.venues,))

    @bentoml.api(route="/predict")
    @client_errors
    async def predict(
        self,
        model: str,
        rows: list[list[float | None]] | None = None,
        features: dict[str, list[float | None]] | None = None,
    ) -> PredictResponse:
        """Predict ``rows`` (in the model's factor order; null = missing) or ``features``
        (columns keyed by factor name, any order) with one factor model."""
        served = self.models.get(model)
        runtime: FactorRuntime = served.runtime
        matrix = self._rows(runtime, rows, features)
        with observe_call(SERVICE_NAME, served.ref, len(matrix)):
            raw = runtime.predict_rows(matrix)
        output = runtime.output_columns(raw)
        probabilities = {
            column: values.tolist() for column, values in output.items() if column != "prediction"
        }
        return PredictResponse(
            predictions=output["prediction"].astype(float).tolist(),
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
        """Served factor models (with their factor order) and venue tables."""
        return FactorModelsResponse(
            models=[
                ServedFactorModel(
                    name=served.ref.name,
                    version=served.ref.version,
                    alias=served.ref.alias,
                    factors=list(served.runtime.factors),
                    objective=served.runtime.objective,
                )
                for served in self.models.models.values()
            ],
            venues=[served.ref for served in self.venues.models.values()],
        )

    def _rows(
        self,
        runtime: FactorRuntime,
        rows: list[list[float | None]] | None,
        features: dict[str, list[float | None]] | None,
    ) -> np.ndarray:
        if (rows is None) == (features is None):
            raise TradeserveError("send exactly one of 'rows' or 'features'")
        if features is not None:
            matrix = runtime.align_columns(
                {name: _floats(values) for name, values in features.items()}
            )
        else:
            width = len(runtime.factors)
            bad = next((i for i, row in enumerate(rows or []) if len(row) != width), None)
            if bad is not None:
                raise TradeserveError(
                    f"rows[{bad}] has {len(rows[bad])} values; {model_hint(runtime)}"
                )
            matrix = np.asarray([_floats(row) for row in rows or []], dtype=np.float32)
        return self._checked(matrix)

    def _checked(self, rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            raise TradeserveError("no rows to predict; send at least one")
        if len(rows) > self.settings.max_rows_per_request:
            raise TradeserveError(
                f"{len(rows)} rows in one request; the limit is "
                f"{self.settings.max_rows_per_request}"
            )
        if np.isinf(rows).any():
            raise TradeserveError("features contain inf; use null (or NaN) for missing values")
        return rows


def model_hint(runtime: FactorRuntime) -> str:
    """What a row of this model must look like."""
    return (
        f"each row needs {len(runtime.factors)} values in this order: {', '.join(runtime.factors)}"
    )


def _floats(values: list[float | None]) -> list[float]:
    """JSON nulls become NaN, which XGBoost treats as missing."""
    return [np.nan if value is None else value for value in values]


finish_service(FactorModels)
