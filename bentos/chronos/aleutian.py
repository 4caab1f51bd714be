"""AleutianLocal's forecasting routes on ChronosForecaster, translated to and from the
service's own forecast.

- ``POST /v1/timeseries/forecast``: the route AleutianLocal's orchestrator proxies to
  (Sapheneia's legacy shape ``{name, context_period_size, forecast_period_size, model,
  recent_data, as_of_date}``) and its standalone server's shape (``{model, data|recent_data,
  horizon, num_samples}``) on one path; the answer carries what both clients read.
- ``GET /v1/models``, ``POST /v1/models/load|unload``: the standalone server's model
  management, answered truthfully (every served model is loaded at start-up and stays).
- ``POST /orchestration/v1/predict``: the unified ``InferenceRequest`` ->
  ``InferenceResponse`` that AleutianLocal's evaluator calls and no Sapheneia branch built.

Model names are normalised as AleutianLocal does (``amazon/chronos-t5-tiny`` ->
``chronos-t5-tiny``). Unknown models are 400 on the ``/v1`` routes, as both seeds answered.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pandas as pd
from fastapi import APIRouter

from bentos.chronos import compat
from bentos.chronos.sapheneia import current
from bentos.chronos.seed_schemas import (
    ContextSummary,
    ForecastData,
    LegacyForecastRequest,
    LegacyForecastResponse,
    ModelLoadRequest,
    ModelLoadResponse,
    ModelParams,
    PredictMetadata,
    PredictRequest,
    PredictResponse,
    QuantileForecast,
    StandaloneModel,
)
from registry.errors import ModelNotFoundError, TradeserveError

LEGACY_PATH = "/v1/timeseries/forecast"
LEGACY_LEVELS = (0.1, 0.5, 0.9)  # forecast_low, forecast, forecast_high
DEFAULT_SAMPLES = 20  # the seeds' num_samples
_STEPS: dict[str, Any] = {
    "1m": pd.Timedelta(minutes=1),
    "5m": pd.Timedelta(minutes=5),
    "15m": pd.Timedelta(minutes=15),
    "30m": pd.Timedelta(minutes=30),
    "1h": pd.Timedelta(hours=1),
    "4h": pd.Timedelta(hours=4),
    "1d": pd.offsets.BDay(1),  # AleutianLocal: "1d" is a trading day
    "1w": pd.DateOffset(weeks=1),
    "1M": pd.DateOffset(months=1),
}
_DAILY = {"1d", "1w", "1M"}

router = APIRouter()


class LegacyUnknownModelError(compat.UnknownModelError):
    http_status = 400  # both seeds answered an unknown model with 400 here


class UnloadRefusedError(TradeserveError):
    http_status = 409


def legacy_model(service: Any, name: str) -> str:
    try:
        return compat.served_model(service, name)
    except compat.UnknownModelError as error:
        raise LegacyUnknownModelError(str(error), error.served) from None


@router.post(LEGACY_PATH, response_model=LegacyForecastResponse)
async def legacy_forecast(body: LegacyForecastRequest) -> LegacyForecastResponse:
    """The median (``forecast``) with p10/p90 for the whole history sent (``recent_data`` or
    ``data``), ``forecast_period_size`` (or ``horizon``, default 5) steps ahead."""
    service = current()
    name = legacy_model(service, body.model)
    result = await compat.forecast(
        service, name, body.history, body.steps, levels=LEGACY_LEVELS, num_samples=body.num_samples
    )
    return LegacyForecastResponse(
        name=body.name,
        forecast=result.median,
        forecast_low=result.quantiles[0.1],
        forecast_high=result.quantiles[0.9],
        horizon=body.steps,
        model=name,
        model_version=result.ref.version,
    )


@router.get("/v1/models", response_model=list[StandaloneModel])
async def standalone_models() -> list[StandaloneModel]:
    """Every served model, loaded (they load at start-up; nothing is evicted)."""
    service = current()
    return [
        StandaloneModel(
            slug=name,
            status="verified",  # it passed the promotion gate
            vram_gb=round(parameter_bytes(served.runtime) / 1e9, 3),
            huggingface_id=f"amazon/{name}",
            loaded=True,
            version=served.ref.version,
            alias=served.ref.alias,
        )
        for name, served in sorted(service.models.models.items())
    ]


@router.post("/v1/models/load", response_model=ModelLoadResponse)
async def load_model(body: ModelLoadRequest) -> ModelLoadResponse:
    """Already loaded (at start-up); unknown models are 400 as in the standalone server."""
    service = current()
    name = legacy_model(service, body.model)
    loaded = sorted(service.models.models)
    return ModelLoadResponse(
        status="loaded", model=name, loaded_models=loaded, slots_used=f"{len(loaded)}/{len(loaded)}"
    )


@router.post("/v1/models/unload")
async def unload_model(body: ModelLoadRequest) -> None:
    """Refused: served models follow the registry, not the client (409; 404 if not served)."""
    service = current()
    try:
        name = compat.served_model(service, body.model)
    except compat.UnknownModelError:
        raise ModelNotFoundError(
            f"Model {compat.normalize_model_name(body.model)} is not loaded"
        ) from None
    raise UnloadRefusedError(
        f"Model {name} stays loaded: ChronosForecaster serves the registry's promoted Chronos "
        "models (TRADESERVE_CHRONOS_MODELS chooses which) and never evicts them"
    )


@router.post("/orchestration/v1/predict", response_model=PredictResponse)
async def predict(body: PredictRequest) -> PredictResponse:
    """AleutianLocal's unified inference: ``forecast.values`` is the median per step."""
    service = current()
    name = compat.served_model(service, body.model)
    params = body.params or ModelParams()
    levels = tuple(params.quantiles or ())
    result = await compat.forecast(
        service,
        name,
        body.context.values,
        body.horizon.length,
        levels=levels,
        num_samples=params.num_samples or DEFAULT_SAMPLES,
        seed=params.seed,
        sampling={"temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p},
    )
    start, end = forecast_dates(body.context.end_date, body.horizon.period, body.horizon.length)
    context = body.context
    return PredictResponse(
        request_id=body.request_id,
        response_id=str(uuid.uuid4()),
        timestamp=datetime.now(UTC),
        ticker=body.ticker,
        model=body.model,
        forecast=ForecastData(
            values=result.median, period=body.horizon.period, start_date=start, end_date=end
        ),
        context_summary=ContextSummary(
            length=min(len(context.values), service.runtime(name).context_length),
            period=context.period,
            source=context.source,
            start_date=context.start_date,
            end_date=context.end_date,
            field=context.field,
        ),
        quantiles=[
            QuantileForecast(quantile=level, values=result.quantiles[level]) for level in levels
        ],
        metadata=PredictMetadata(
            inference_time_ms=round(result.seconds * 1000),
            model_version=result.ref.version,
            device=service.models.device,
            model_family="chronos",
            model=result.ref,
        ),
    )


def forecast_dates(end_date: str, period: str, steps: int) -> tuple[str, str]:
    """First and last forecast timestamps after the context's ``end_date`` (trading days for
    ``1d``); dates for daily and longer periods, ISO timestamps for intraday ones."""
    last = pd.Timestamp(end_date)
    step = _STEPS[period]
    first, final = last + step, last + step * steps
    if period in _DAILY:
        return first.strftime("%Y-%m-%d"), final.strftime("%Y-%m-%d")
    return first.isoformat(), final.isoformat()


def parameter_bytes(runtime: Any) -> int:
    """Memory of a model's weights (the standalone server's ``vram_gb``)."""
    parameters = runtime.pipeline.inner_model.parameters()
    return sum(p.numel() * p.element_size() for p in parameters)
