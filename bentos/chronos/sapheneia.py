"""Sapheneia's Chronos API on ChronosForecaster: ``/forecast/v1/chronos/*``, ``/health``,
``/info``, ``GET /models`` and ``/``, translated to and from the service's own forecast.

The seed (``Sapheneia/sapheneia`` branch ``aleutian_merge``: ``forecast/main.py``,
``forecast/models/chronos``) served one lazily initialised T5 model per container. Here every
promoted Chronos model is loaded at start-up, so ``initialization`` reports the requested
model ready, ``status`` is ``ready`` for every served model and ``shutdown`` is accepted
while the service keeps serving. Which model a request means: ``model_variant`` in the body,
else the ``forecast-<slug>`` host it was sent to, else ``MODEL_VARIANT``, else the default.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import bentoml
from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from bentos.chronos import compat
from bentos.chronos.seed_schemas import (
    ExecutionMetadata,
    InferenceMetadata,
    InferencePrediction,
    InferenceRequest,
    InferenceResponse,
    InitializationRequest,
    InitializationResponse,
    MessageResponse,
    StatusResponse,
)
from bentos.shared.settings import get_serving_settings

PREFIX = "/forecast/v1/chronos"
API_VERSION = "1.0.0"  # execution_metadata.api_version, as the seed answered
APP_VERSION = "2.0.0"  # the seed's FastAPI app version (/, /health, /info)
APP_NAME = "tradeserve ChronosForecaster (Sapheneia Inference API)"

router = APIRouter()


def current() -> Any:
    """The running ChronosForecaster instance (this worker's)."""
    return bentoml.get_current_service()


def host_of(request: Request) -> str | None:
    return request.headers.get("host")


@router.post(f"{PREFIX}/initialization", response_model=InitializationResponse)
async def initialization(
    request: Request, body: InitializationRequest | None = None
) -> InitializationResponse:
    """Models load at start-up: report the requested one ready (404 if not served)."""
    service = current()
    body = body or InitializationRequest()
    name = compat.select_model(service, body.model_variant, host_of(request))
    served = service.models.get(name)
    return InitializationResponse(
        message="Model already initialized",
        model_status="ready",
        model_info={
            "model_variant": name,
            "device": service.models.device,
            "status": "ready",
            "version": served.ref.version,
            "alias": served.ref.alias,
        },
    )


@router.get(f"{PREFIX}/status", response_model=StatusResponse)
async def status(request: Request, model_variant: str | None = None) -> StatusResponse:
    """``ready`` when the model is loaded here; ``error`` naming the served ones otherwise."""
    service = current()
    try:
        name = compat.select_model(service, model_variant, host_of(request))
    except compat.UnknownModelError as error:
        return StatusResponse(model_status="error", details=f"Error: {error}")
    return StatusResponse(model_status="ready", details=f"Model: {name}")


@router.post(f"{PREFIX}/inference", response_model=InferenceResponse)
async def inference(request: Request, body: InferenceRequest) -> InferenceResponse:
    """One series through ``/forecast``'s path: T5 samples (the paths come back), Bolt and
    Chronos-2 answer their native quantiles with ``samples: []``."""
    started = time.perf_counter()
    service = current()
    name = compat.select_model(service, body.model_variant, host_of(request))
    result = await compat.forecast(
        service,
        name,
        body.context,
        body.prediction_length,
        num_samples=body.num_samples,
        seed=body.seed,
        sampling={"temperature": body.temperature, "top_k": body.top_k, "top_p": body.top_p},
        return_samples=True,
    )
    prediction = InferencePrediction(
        median=result.median,
        mean=result.mean,
        quantiles={
            f"{round(level * 100)}": result.quantiles[level] for level in compat.SEED_LEVELS
        },
        samples=result.samples,
        metadata=InferenceMetadata(
            context_length=len(body.context),
            prediction_length=body.prediction_length,
            num_samples=result.num_samples,
            model_variant=name,
            inference_time_seconds=round(result.seconds, 3),
        ),
    )
    return InferenceResponse(
        prediction=prediction,
        execution_metadata=ExecutionMetadata(
            total_time_seconds=round(time.perf_counter() - started, 3),
            model_version=result.ref.version,
            api_version=API_VERSION,
            model=result.ref,
        ),
    )


@router.post(f"{PREFIX}/shutdown", response_model=MessageResponse)
async def shutdown() -> MessageResponse:
    """Accepted, but nothing unloads: the service serves the registry's promoted models."""
    return MessageResponse(
        message="Shutdown accepted; every model stays loaded and serving (tradeserve serves "
        "the registry's promoted versions: see /admin/models)"
    )


@router.get("/health")
async def health() -> dict[str, Any]:
    """Sapheneia's health (``status``, ``timestamp``, ``api_version``, ``models``) with every
    served Chronos model, plus the keys AleutianLocal's standalone server answered."""
    import torch

    service = current()
    served = service.models.models
    return {
        "status": "healthy" if service.__is_ready__() else "degraded",
        "timestamp": datetime.now().isoformat(),
        "api_version": APP_VERSION,
        "models": {
            name: {
                "status": "ready",
                "error": None,
                "version": model.ref.version,
                "alias": model.ref.alias,
                "kind": model.runtime.kind,
                "loaded_at": model.loaded_at.isoformat(),
            }
            for name, model in sorted(served.items())
        },
        "cuda_available": torch.cuda.is_available(),
        "loaded_models": sorted(served),
        "slots_used": f"{len(served)}/{len(served)}",
        "models_in_use": [],
    }


@router.get("/info")
async def info(request: Request) -> dict[str, Any]:
    """Sapheneia's API information."""
    return {
        "name": APP_NAME,
        "description": "Chronos T5, Bolt and Chronos-2 forecasts from the MLflow registry's "
        "promoted versions, with adaptive batching",
        "version": APP_VERSION,
        "api_host": request.url.hostname,
        "api_port": request.url.port,
        "available_models": sorted(current().models.models),
        "documentation": {"swagger": "/", "redoc": "/", "openapi_json": "/docs.json"},
        "features": {
            "mlflow_tracking": True,
            "api_authentication": get_serving_settings().api_key is not None,
        },
    }


# include_in_schema=False: BentoML merges mounted paths over its own in the OpenAPI document,
# and this GET would hide the native POST /models there.
@router.get("/models", include_in_schema=False)
async def models() -> dict[str, Any]:
    """Sapheneia's registry listing (``models`` by id, ``count``), one entry per served model
    with the fields of the native ``POST /models``."""
    service = current()
    entries = {
        model.name: {
            **model.model_dump(),
            "name": model.name.replace("-", " ").title(),
            "registered_name": model.name,
            "description": f"Amazon {model.name} ({model.kind}), registered version "
            f"{model.version}",
            "huggingface_id": f"amazon/{model.name}",
            "status": "active",
        }
        for model in service.model_infos()
    }
    return {"models": entries, "count": len(entries), "default_model": service.default_model}


async def root(request: Request) -> JSONResponse:
    """Sapheneia's connectivity check (JSON clients; browsers get BentoML's docs UI)."""
    return JSONResponse(
        {"status": "tradeserve ChronosForecaster is running", "version": APP_VERSION, "docs": "/"}
    )
