"""HTTP routes of RegimeBlend at the seed's paths (a FastAPI app mounted into the service).

FastAPI gives the seed's behaviour for free: request validation errors are 422 with
``{"detail": [...]}``, other errors ``{"detail": "<what to fix>"}``. The routes get the
running service's engine through ``bentoml.get_current_service()`` and call the same engine
methods as the service's ``@bentoml.api`` endpoints; ``POST /api/v1/predict`` does so with
the seed's modes (``compat.SEED_MODES``).
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import bentoml
from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from bentos.regime_blend.compat import SEED_MODES, rejection_response, seed_name
from bentos.regime_blend.decision_log import DecisionRecord
from bentos.regime_blend.engine import BlendEngine
from bentos.regime_blend.metrics import record_error
from bentos.regime_blend.portfolio import Fill, Portfolio
from bentos.regime_blend.schemas import (
    DecisionResponse,
    HealthResponse,
    ModelsResponse,
    PortfolioResponse,
    PredictRequest,
    ServedModelInfo,
)
from registry.errors import TradeserveError


class ClientError(BaseModel):
    """FastAPI's error body: one message, or the list of validation errors (422)."""

    detail: str | list[dict[str, Any]]


app = FastAPI(
    title="RegimeBlend",
    description="Regime-aware blending of specialist policies into risk-checked decisions.",
    version="1",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,  # BentoML serves the service's docs at /
    responses={
        status: {"model": ClientError, "description": description}
        for status, description in {
            400: "Bad request (e.g. malformed bars, unknown override)",
            404: "Unknown symbol or decision",
            422: "Invalid request: pydantic's list of errors, or one message",
            503: "Specialists, market data or the decision log cannot answer",
        }.items()
    },
)


async def current_engine() -> BlendEngine:
    return bentoml.get_current_service().engine


Engine = Annotated[BlendEngine, Depends(current_engine)]


@app.exception_handler(TradeserveError)
async def tradeserve_error(_: Request, error: TradeserveError) -> JSONResponse:
    if error.http_status >= 500:
        record_error()
    return JSONResponse({"detail": str(error)}, status_code=error.http_status)


@app.exception_handler(RequestValidationError)
async def invalid_request(_: Request, error: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, with non-finite inputs echoed as text: its own handler puts the NaN
    it refused back into strict JSON and fails with a 500."""
    return JSONResponse({"detail": _strict_json(jsonable_encoder(error.errors()))}, 422)


@app.post(
    "/api/v1/predict",
    response_model=DecisionResponse,
    responses={
        403: {
            "model": ClientError,
            "description": "Trade rejected by risk manager (risk_mode 'reject', the seed's "
            "default): headers X-Risk-Warnings, X-Decision-Id, X-Allowed-Quantity",
        }
    },
)
async def predict(request: PredictRequest, engine: Engine) -> Response:
    """A trading decision for ``symbol`` at ``timestamp`` (logged before it is answered)."""
    started = time.perf_counter()
    outcome = await engine.predict(request, started, SEED_MODES)
    risk = outcome.response.risk_validation
    if outcome.rejected and outcome.risk_mode == "reject" and risk is not None:
        return rejection_response(
            outcome.response.decision_id, risk.warnings, risk.allowed_quantity
        )
    return Response(outcome.body, media_type="application/json")


@app.get("/api/v1/models", response_model=ModelsResponse)
async def models(engine: Engine) -> ModelsResponse:
    """Served models: the regime detector (in-process) and the specialists (Specialists)."""
    regime = engine.regime()
    entries = {
        "regime_detector": ServedModelInfo(
            name="regime_detector",
            version=regime.ref.version,
            loaded_at=regime.loaded_at,
            device="cpu",
            parameters=_regime_parameters(regime.runtime),
            registered_name=regime.ref.name,
            alias=regime.ref.alias,
            role="regime",
        )
    }
    for role, entry in (await engine.pool.catalog()).items():
        entries[seed_name(role)] = ServedModelInfo(
            name=seed_name(role),
            version=entry.model.version,
            loaded_at=entry.seen_at,
            device=entry.device,
            parameters=entry.parameters,
            registered_name=entry.model.name,
            alias=entry.model.alias,
            role=role,
        )
    return ModelsResponse(models=entries, total_models=len(entries))


@app.get("/health", response_model=HealthResponse)
async def health(engine: Engine) -> HealthResponse:
    """The seed's health answer: degraded while the regime detector or specialists are missing."""
    try:
        specialists = bool(await engine.pool.catalog())
    except TradeserveError:
        specialists = False
    loaded = engine.regime_models.ready and specialists
    return HealthResponse(
        status="healthy" if loaded else "degraded",
        model_loaded=loaded,
        gpu_available=_gpu_available(),
        timestamp=datetime.now(UTC),
    )


@app.get("/api/v1/decisions/{decision_id}", response_model=DecisionRecord)
async def decision(decision_id: str, engine: Engine) -> Response:
    """A logged decision: inputs (and their digest), outputs and model versions."""
    record = await engine.decision(decision_id)
    return Response(record.model_dump_json(), media_type="application/json")


@app.get("/api/v1/portfolio", response_model=PortfolioResponse)
async def get_portfolio(engine: Engine) -> PortfolioResponse:
    """The service's own portfolio (used when a request sends none)."""
    return await engine.portfolio_state()


@app.put("/api/v1/portfolio", response_model=PortfolioResponse)
async def put_portfolio(portfolio: Portfolio, engine: Engine) -> PortfolioResponse:
    """Replace the service's portfolio (e.g. from the broker at the start of a day)."""
    return await engine.replace_portfolio(portfolio)


@app.post("/api/v1/portfolio/fills", response_model=PortfolioResponse)
async def post_fill(fill: Fill, engine: Engine) -> PortfolioResponse:
    """Record an executed trade in the service's portfolio."""
    return await engine.record_fill(fill)


def _strict_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_strict_json(item) for item in value]
    return value


def _regime_parameters(runtime: object) -> int:
    params = getattr(runtime, "params", None)
    if params is None:
        return 0
    k, d = len(params.labels), len(params.scaler_mean)
    return k + k * k + k * d + k * d * d  # start, transitions, means, covariances


def _gpu_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())
