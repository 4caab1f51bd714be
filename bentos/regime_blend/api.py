"""HTTP routes of RegimeBlend at the seed's paths (a FastAPI app mounted into the service).

FastAPI gives the seed's behaviour for free: request validation errors are 422 with
``{"detail": [...]}``, other errors ``{"detail": "<what to fix>"}``. The routes get the
running service's engine through ``bentoml.get_current_service()``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

import bentoml
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from bentos.regime_blend.compat import rejection_response, seed_name
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
from registry.errors import ModelNotFoundError, TradeserveError

app = FastAPI(
    title="RegimeBlend",
    description="Regime-aware blending of specialist policies into risk-checked decisions.",
    version="1",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,  # BentoML serves the service's docs at /
)


async def current_engine() -> BlendEngine:
    return bentoml.get_current_service().engine


Engine = Annotated[BlendEngine, Depends(current_engine)]


@app.exception_handler(TradeserveError)
async def tradeserve_error(_: Request, error: TradeserveError) -> JSONResponse:
    if error.http_status >= 500:
        record_error()
    return JSONResponse({"detail": str(error)}, status_code=error.http_status)


@app.post("/api/v1/predict", response_model=DecisionResponse)
async def predict(request: PredictRequest, engine: Engine) -> Response:
    """A trading decision for ``symbol`` at ``timestamp`` (logged before it is answered)."""
    started = time.perf_counter()
    outcome = await engine.predict(request, started)
    risk = outcome.response.risk_validation
    if outcome.rejected and outcome.risk_mode == "reject" and risk is not None:
        return rejection_response(
            outcome.response.decision_id,
            risk.warnings,
            risk.allowed_quantity,
            [rejection.model_dump() for rejection in risk.rejections],
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


@app.get("/api/v1/decisions/{decision_id}")
async def decision(decision_id: str, engine: Engine) -> Response:
    """A logged decision: inputs (and their digest), outputs and model versions."""
    record = engine.log.get(decision_id)
    if record is None:
        raise ModelNotFoundError(f"no decision '{decision_id}' in the decision log")
    return Response(record.model_dump_json(), media_type="application/json")


@app.get("/api/v1/portfolio", response_model=PortfolioResponse)
async def get_portfolio(engine: Engine) -> PortfolioResponse:
    """The service's own portfolio (used when a request sends none)."""
    portfolio = engine.portfolio.load()
    return PortfolioResponse(portfolio=portfolio, equity=portfolio.equity())


@app.put("/api/v1/portfolio", response_model=PortfolioResponse)
async def put_portfolio(portfolio: Portfolio, engine: Engine) -> PortfolioResponse:
    """Replace the service's portfolio (e.g. from the broker at the start of a day)."""
    saved = engine.portfolio.save(portfolio)
    return PortfolioResponse(portfolio=saved, equity=saved.equity())


@app.post("/api/v1/portfolio/fills", response_model=PortfolioResponse)
async def post_fill(fill: Fill, engine: Engine) -> PortfolioResponse:
    """Record an executed trade in the service's portfolio."""
    updated = engine.portfolio.apply(fill)
    return PortfolioResponse(portfolio=updated, equity=updated.equity())


def _regime_parameters(runtime: object) -> int:
    params = getattr(runtime, "params", None)
    if params is None:
        return 0
    k, d = len(params.labels), len(params.scaler_mean)
    return k + k * k + k * d + k * d * d  # start, transitions, means, covariances


def _gpu_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())
