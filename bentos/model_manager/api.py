"""model_manager's HTTP routes (``/api/...``), a FastAPI app mounted into ModelManager.

Same paths, bodies and status codes as ``backend/web.py`` (and ``backend/quantiles.py``):
errors are ``{"detail": "<what to fix>"}``, bad bodies 422, unknown models, symbols and
venues 404, unusable directories and pickles 400, paths outside the operator's roots and
untrusted pickles 403, a group another directory feeds 409, a version the gate refuses 422.
Routes that read files or write the registry are plain functions (FastAPI runs them on its
thread pool); the running service's :class:`ModelManagerCore` is reached through
``bentoml.get_current_service()``.
"""

from __future__ import annotations

from typing import Annotated

import bentoml
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from bentos.model_manager.bodies import encoded_response
from bentos.model_manager.compat import payload_response, select_record
from bentos.model_manager.core import ModelManagerCore
from bentos.model_manager.roots import require_under_roots
from bentos.model_manager.schemas import (
    AddModelRequest,
    AddModelResponse,
    DeleteResponse,
    FactorsResponse,
    HealthResponse,
    ModelEntry,
    ModelsResponse,
    RefreshResponse,
    SymbolDetail,
    SymbolItem,
    SymbolsResponse,
    VenuePutResponse,
    VenueQuantilesRequest,
    VenueQuantilesResponse,
    VenuesResponse,
    VenueSymbolResponse,
)
from bentos.model_manager.versions import version_lineage
from registry.errors import TradeserveError
from registry.trust import UntrustedPickleError

app = FastAPI(
    title="ModelManager",
    description="model_manager's API over the MLflow registry.",
    version="1",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,  # BentoML serves the service's docs at /
)


async def current() -> ModelManagerCore:
    return bentoml.get_current_service().core


Service = Annotated[ModelManagerCore, Depends(current)]


@app.exception_handler(TradeserveError)
async def tradeserve_error(_: Request, error: TradeserveError) -> JSONResponse:
    status = 403 if isinstance(error, UntrustedPickleError) else error.http_status
    return JSONResponse({"detail": str(error)}, status_code=status)


@app.get("/api/health")
def health(service: Service) -> HealthResponse:
    return HealthResponse(redis=service.publisher.status())


# ── directories ──────────────────────────────────────────────────────────────────────


@app.get("/api/models")
def list_models(service: Service) -> ModelsResponse:
    items = []
    for row in service.directories.rows():
        snapshot = service.directories.cached(row.model_name)
        items.append(
            ModelEntry(
                **row.model_dump(exclude={"fingerprint"}),
                symbol_count=snapshot.symbol_count if snapshot else 0,
                group_count=snapshot.group_count if snapshot else 0,
                scanned_at=snapshot.scanned_at if snapshot else None,
                warnings=snapshot.warnings if snapshot else [],
            )
        )
    return ModelsResponse(items=items)


@app.post("/api/models")
def add_model(request: AddModelRequest, service: Service) -> AddModelResponse:
    """Register an artifact directory; every group becomes a registered version."""
    root = require_under_roots(request.root_path, service.settings.model_roots, "root_path")
    imported = service.directories.add(request.model_name, root, request.auto_promote)
    return AddModelResponse(
        **imported.response().model_dump(),
        symbols=sorted({record.symbol for record in imported.snapshot.symbols}),
    )


@app.delete("/api/models/{model_name}")
def delete_model(model_name: str, service: Service) -> DeleteResponse:
    """Forget the directory mapping; the registry versions stay."""
    service.directories.delete(model_name)
    return DeleteResponse(model_name=model_name.strip())


@app.post("/api/models/{model_name}/refresh")
def refresh_model(model_name: str, service: Service) -> RefreshResponse:
    return service.directories.refresh(model_name).response()


@app.get("/api/models/{model_name}/symbols")
def list_symbols(model_name: str, service: Service) -> SymbolsResponse:
    snapshot = service.directories.snapshot(model_name)
    return SymbolsResponse(
        items=[
            SymbolItem(
                **record.model_dump(include=set(SymbolItem.model_fields) - {"model"}),
                model=service.served_ref(record.registered_name),
            )
            for record in snapshot.symbols
        ]
    )


@app.get("/api/models/{model_name}/factors")
def list_factors(model_name: str, service: Service) -> FactorsResponse:
    """The union of every group's factors, in first-seen order."""
    snapshot = service.directories.snapshot(model_name)
    factors = list(dict.fromkeys(f for r in snapshot.symbols for f in r.factors if f.strip()))
    return FactorsResponse(
        model_name=snapshot.model_name,
        scanned_at=snapshot.scanned_at,
        symbol_count=snapshot.symbol_count,
        group_count=snapshot.group_count,
        factor_count=len(factors),
        factors=factors,
    )


@app.get("/api/models/{model_name}/symbols/{symbol}")
def symbol_detail(
    model_name: str, symbol: str, service: Service, group_key: str | None = None
) -> SymbolDetail:
    snapshot = service.directories.snapshot(model_name)
    record = select_record(snapshot, symbol, group_key)
    return SymbolDetail(
        **record.model_dump(),
        model_name=snapshot.model_name,
        root_path=snapshot.root_path,
        scanned_at=snapshot.scanned_at,
        model=service.served_ref(record.registered_name),
    )


# ── payloads ─────────────────────────────────────────────────────────────────────────


@app.get("/api/models/{model_name}/model/{symbol}")
def model_payload(model_name: str, symbol: str, request: Request, service: Service) -> Response:
    """The promoted version's booster JSON, metadata and dim -> factor list."""
    snapshot, served = service.served_group(model_name, symbol)
    ref = served.ref

    def encode() -> bytes:
        tags = version_lineage(ref.name, ref.version).tags
        return payload_response(snapshot, served, tags).model_dump_json().encode()

    key = ("payload", snapshot.model_name, snapshot.root_path, ref.name, ref.version)
    return encoded_response(request, service.bodies.get(key, encode), "application/json")


@app.get("/api/models/{model_name}/model_onnx/{symbol}")
def model_onnx(model_name: str, symbol: str, request: Request, service: Service) -> Response:
    """The promoted version as an ONNX file (converted once per version)."""
    snapshot, served = service.served_group(model_name, symbol)
    onnx = service.onnx.get(served.ref, served.runtime)
    body = service.bodies.get(("onnx", served.ref.name, served.ref.version), lambda: onnx.content)
    record_symbol = served.runtime.metadata.training_info.symbol
    headers = {
        "x-model-feature-dim": str(len(served.runtime.factors)),
        "x-model-name": snapshot.model_name,
        "x-model-symbol": record_symbol,
        "x-model-sha256": onnx.sha256,
        "x-model-version": served.ref.version,
        "content-disposition": f'attachment; filename="{snapshot.model_name}.{record_symbol}.onnx"',
    }
    return encoded_response(request, body, "application/octet-stream", headers)


# ── venues ───────────────────────────────────────────────────────────────────────────


@app.get("/api/venues")
def list_venues(service: Service) -> VenuesResponse:
    return VenuesResponse(items=service.venues.items())


@app.put("/api/venues/{venue}/quantiles")
def put_venue_quantiles(
    venue: str, request: VenueQuantilesRequest, service: Service
) -> VenuePutResponse:
    """Import a quantiles pickle as the venue's promoted table (and publish it to Redis)."""
    served = service.venues.put(venue, request.pkl_path)
    return VenuePutResponse(
        venue=venue, symbol_count=len(served.runtime.table.symbols), model=served.ref
    )


@app.get("/api/venues/{venue}/quantiles")
def venue_quantiles(venue: str, service: Service) -> VenueQuantilesResponse:
    return VenueQuantilesResponse(venue=venue, symbols=service.venues.table(venue).symbols)


@app.get("/api/venues/{venue}/quantiles/{symbol}")
def venue_symbol_quantiles(venue: str, symbol: str, service: Service) -> VenueSymbolResponse:
    thresholds = service.venues.thresholds(venue, symbol)
    return VenueSymbolResponse(venue=venue, symbol=symbol, **thresholds.model_dump())
