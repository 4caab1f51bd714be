"""N1V1's ML serving routes on FactorModels, translated to and from its own runtimes.

N1V1 clients switch by changing the base URL only:

- ``POST /predict`` ``{model_name, features: {column: [...]}, correlation_id?}``: N1V1 posts
  to the same path as FactorModels' own ``{model, rows|features}``. :class:`N1V1Dispatch`,
  the one dispatch point, sends a body with a top-level ``model_name`` to N1V1's route and
  passes every other request on untouched (a substring test; JSON is parsed only when it
  matches).
- ``POST /predict/batch``: one model call per model across the list; a bad item gets its
  own error entry and the others their answers.
- ``GET /health``: ``healthy`` only when every model to serve is loaded (else 503).
- ``POST /reload/{model_name}``: re-resolves the promotions in every worker (live mode's
  reload) and answers with what each worker serves.
- ``/metrics`` (BentoML's, Prometheus text) also carries N1V1's ``inference_requests_total``
  and ``inference_latency_seconds`` series.

Where N1V1 was wrong this is not: missing features are a 400 naming them (N1V1 filled 0.0;
``TRADESERVE_FACTOR_FILL_MISSING_FEATURES=true`` restores that), unknown models a 404, not a
500. Extra features are ignored as N1V1 did, and named in ``X-Ignored-Features``. Errors
keep FastAPI's ``{"detail": ...}`` shape and 422 for malformed bodies, as N1V1's clients saw.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio
import bentoml
import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bentos.factor.schemas import (
    N1V1BatchItemError,
    N1V1BatchRequest,
    N1V1Health,
    N1V1PredictionRequest,
    N1V1PredictionResponse,
    N1V1ReloadResponse,
    WorkerReload,
)
from bentos.factor.settings import FactorSettings
from bentos.shared.live import worker_statuses
from bentos.shared.metrics import observe_call
from bentos.shared.model_source import ServedModel, source_kind
from registry.errors import TradeserveError
from training_hooks.factor.runtime import FactorInputError

PREDICT_PATH = "/predict"
IGNORED_HEADER = "X-Ignored-Features"
FILLED_HEADER = "X-Filled-Features"
RELOAD_WAIT_S = 8.0  # below FactorModels' 10 s request timeout
UNKNOWN = "unknown"  # metric label of names that are not served (no unbounded label values)

INFERENCE_REQUESTS = Counter(
    "inference_requests", "N1V1 inference requests by model and status", ["model_name", "status"]
)
INFERENCE_LATENCY = Histogram(
    "inference_latency_seconds", "N1V1 inference latency in seconds", ["model_name"]
)


class MissingFeaturesError(TradeserveError):
    """A request lacks features the model reads (N1V1 silently filled them with 0.0)."""


app = FastAPI(
    title="N1V1 ML Serving API on FactorModels",
    version="1.0.0",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)


# ── dispatch: which /predict a body is for ───────────────────────────────────────────


def is_n1v1_body(body: bytes) -> bool:
    """Whether a ``/predict`` body is N1V1's: a JSON object with ``model_name`` and no
    ``model``. Substring tests decide (a native body costs one scan); the JSON is parsed
    only when a body holds both quoted names (e.g. a native column called ``model_name``)."""
    if b'"model_name"' not in body:
        return False
    if b'"model"' not in body:
        return True  # no native body lacks "model"; N1V1's route validates the rest
    try:
        document = json.loads(body)
    except ValueError:
        return False  # the native endpoint answers malformed JSON
    return isinstance(document, dict) and "model_name" in document and "model" not in document


class N1V1Dispatch:
    """ASGI middleware: ``POST /predict`` with N1V1's body goes to N1V1's route, anything
    else to FactorModels. It sits inside the API-key and size-limit middlewares."""

    def __init__(self, native: ASGIApp) -> None:
        self.native = native

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PREDICT_PATH or scope["method"] != "POST":
            await self.native(scope, receive, send)
            return
        messages = [await receive()]
        while messages[-1]["type"] == "http.request" and messages[-1].get("more_body"):
            messages.append(await receive())
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        target = app if is_n1v1_body(body) else self.native
        await target(dict(scope), _replay(messages, receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that returns the buffered messages first, then the real ones."""
    pending = list(reversed(messages))

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


# ── translation ──────────────────────────────────────────────────────────────────────


def service() -> Any:
    return bentoml.get_current_service()


def feature_matrix(
    served: ServedModel, features: Mapping[str, Sequence[float | None]], settings: FactorSettings
) -> tuple[np.ndarray, list[str], list[str]]:
    """N1V1's columns as the model's (N, F) matrix, plus the ignored extra names and the
    names filled with 0.0 (only with ``fill_missing_features``)."""
    runtime = served.runtime
    factors = runtime.factors
    known = set(factors)
    ignored = [name for name in features if name not in known]
    missing = [factor for factor in factors if factor not in features]
    if missing and not settings.fill_missing_features:
        raise MissingFeaturesError(f"{served.ref.name}: missing features: {', '.join(missing)}")
    lengths = sorted({len(values) for values in features.values()})
    if len(lengths) > 1:
        raise FactorInputError(
            f"{served.ref.name}: every feature needs a list of the same length; got {lengths}"
        )
    zeros = [0.0] * (lengths[0] if lengths else 0)
    ordered = [features.get(factor, zeros) for factor in factors]
    # As rows: one conversion of the whole matrix, where columns cost one per feature.
    rows = [list(row) for row in zip(*ordered, strict=True)]
    matrix = runtime.request_matrix(rows, None, settings.max_rows_per_request)
    return matrix, ignored, missing


def answer(
    served: ServedModel,
    output: Mapping[str, np.ndarray],
    correlation_id: str | None,
    started: float,
) -> N1V1PredictionResponse:
    """N1V1's response for one request's slice of the model's output columns."""
    probabilities = {
        name: values.tolist() for name, values in output.items() if name != "prediction"
    }
    prediction = output["prediction"]
    if probabilities:
        confidence = np.column_stack([output[name] for name in probabilities]).max(axis=1).tolist()
    else:
        confidence = [1.0] * len(prediction)
    return N1V1PredictionResponse(
        prediction=prediction.tolist(),
        confidence=confidence,
        probabilities=probabilities or None,
        correlation_id=correlation_id or str(uuid.uuid4()),
        model_version=served.ref.version,
        latency_ms=(time.perf_counter() - started) * 1000,
    )


def record(served: ServedModel | None, status: str, started: float) -> None:
    """N1V1's series: requests by status, and latency."""
    label = served.ref.name if served is not None else UNKNOWN
    INFERENCE_REQUESTS.labels(model_name=label, status=status).inc()
    INFERENCE_LATENCY.labels(model_name=label).observe(time.perf_counter() - started)


def feature_headers(ignored: Sequence[str], filled: Sequence[str]) -> dict[str, str]:
    headers = {IGNORED_HEADER: ignored, FILLED_HEADER: filled}
    return {key: _latin1(",".join(names)) for key, names in headers.items() if names}


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


# ── routes ───────────────────────────────────────────────────────────────────────────


@app.exception_handler(TradeserveError)
async def tradeserve_error(_: Request, error: TradeserveError) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=error.http_status)


@app.post(PREDICT_PATH, response_model=N1V1PredictionResponse)
async def predict(request: N1V1PredictionRequest) -> Response:
    """One model on column-oriented features (reached through :class:`N1V1Dispatch`)."""
    started = time.perf_counter()
    current = service()
    served = None
    try:
        served = current.predictive.get(request.model_name)
        matrix, ignored, filled = feature_matrix(served, request.features, current.settings)
        with observe_call(current.service_name, served.ref, len(matrix)):
            raw = served.runtime.predict_rows(matrix)
        body = answer(served, served.runtime.output_columns(raw), request.correlation_id, started)
    except TradeserveError:
        record(served, "error", started)
        raise
    record(served, "success", started)
    return Response(
        body.model_dump_json(),
        media_type="application/json",
        headers=feature_headers(ignored, filled),
    )


@app.post("/predict/batch", response_model=list[N1V1PredictionResponse | N1V1BatchItemError])
async def predict_batch(batch: N1V1BatchRequest) -> Response:
    """Every item answered in order; the items of one model share one model call."""
    started = time.perf_counter()
    current = service()
    answers: list[N1V1PredictionResponse | N1V1BatchItemError | None] = [None] * len(batch.requests)
    groups: dict[str, tuple[ServedModel, list[tuple[int, np.ndarray]]]] = {}
    ignored: dict[str, None] = {}
    for index, item in enumerate(batch.requests):
        served = None
        try:
            served = current.predictive.get(item.model_name)
            matrix, extra, _ = feature_matrix(served, item.features, current.settings)
        except TradeserveError as error:
            answers[index] = _item_error(item, error)
            record(served, "error", started)
            continue
        ignored.update(dict.fromkeys(extra))
        groups.setdefault(served.ref.name, (served, []))[1].append((index, matrix))
    for served, items in groups.values():
        try:
            output = _predict_group(served, [matrix for _, matrix in items])
        except TradeserveError as error:
            for index, _ in items:
                answers[index] = _item_error(batch.requests[index], error)
                record(served, "error", started)
            continue
        offset = 0
        for index, matrix in items:
            part = {name: values[offset : offset + len(matrix)] for name, values in output.items()}
            offset += len(matrix)
            answers[index] = answer(served, part, batch.requests[index].correlation_id, started)
            record(served, "success", started)
    content = "[" + ",".join(a.model_dump_json() for a in answers if a is not None) + "]"
    return Response(content, media_type="application/json", headers=feature_headers(ignored, []))


def _predict_group(served: ServedModel, matrices: list[np.ndarray]) -> dict[str, np.ndarray]:
    stacked = np.concatenate(matrices) if len(matrices) > 1 else matrices[0]
    with observe_call(service().service_name, served.ref, len(stacked)):
        raw = served.runtime.predict_rows(stacked)
    return served.runtime.output_columns(raw)


def _item_error(item: N1V1PredictionRequest, error: TradeserveError) -> N1V1BatchItemError:
    return N1V1BatchItemError(
        correlation_id=item.correlation_id or str(uuid.uuid4()),
        model_name=item.model_name,
        error=str(error),
        status_code=error.http_status,
    )


@app.get("/health", response_model=N1V1Health)
async def health() -> JSONResponse:
    """``healthy`` (200) when every model to serve is loaded, else ``degraded`` (503)."""
    predictive = service().predictive
    healthy = bool(predictive.loaded()) and not predictive.missing()
    body = N1V1Health(
        status="healthy" if healthy else "degraded", models_loaded=predictive.loaded()
    )
    return JSONResponse(body.model_dump(), status_code=200 if healthy else 503)


@app.post("/reload/{model_name}", response_model=N1V1ReloadResponse)
async def reload(model_name: str) -> JSONResponse:
    """Re-resolve the promotions now in every worker (this one before answering) and say
    what each serves: 200 once every worker has checked, 202 if some had not within
    ``RELOAD_WAIT_S``. 404 for a model not served here, 409 when live mode is off."""
    current = service()
    current.predictive.get(model_name)
    live = current.live
    if live is None:
        where = "the models baked into its bento" if source_kind() == "bento" else "its models"
        raise HTTPException(
            409,
            f"cannot reload {model_name}: this FactorModels serves {where} with live promotion "
            "off; set TRADESERVE_LIVE=true to follow the registry, or deploy a new build",
        )
    requested_at = datetime.now(UTC)
    live.request_reload()  # the other workers
    await anyio.to_thread.run_sync(live.check_now)  # this one
    deadline = time.monotonic() + RELOAD_WAIT_S
    while True:
        workers = _worker_reloads(current.service_name, model_name, requested_at)
        if all(worker.confirmed for worker in workers) or time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.1)
    body = N1V1ReloadResponse(
        message=f"Reloading model {model_name}",
        model_name=model_name,
        model_version=current.predictive.get(model_name).ref.version,
        workers=workers,
    )
    status = 200 if all(worker.confirmed for worker in workers) else 202
    return JSONResponse(body.model_dump(), status_code=status)


def _worker_reloads(service_name: str, name: str, since: datetime) -> list[WorkerReload]:
    reloads = []
    for status in worker_statuses(service_name):
        model = next((m for m in status.models if m.model.name == name), None)
        reloads.append(
            WorkerReload(
                worker=status.worker,
                model_version=model.model.version if model else None,
                confirmed=status.updated_at >= since,
                rejected=model.rejected if model else None,
            )
        )
    return reloads
