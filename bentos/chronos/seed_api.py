"""The Sapheneia and AleutianLocal routes as one FastAPI app, mounted at ``/`` of
ChronosForecaster (``bentos.chronos.service``).

BentoML's own routes (``/forecast``, ``POST /models``, probes, ``/metrics``) match first; the
mount answers only the paths it declares (BentoML's ``PassiveMount``), so ``GET /models`` is
Sapheneia's listing while ``POST /models`` stays the native one. ``GET /`` answers JSON to API
clients and leaves browsers (``Accept: text/html``) to BentoML's docs UI. Errors: tradeserve's
4xx as ``{"error", "detail"}`` (the keys the seeds' clients read; an unknown model also lists
``available_models``); malformed bodies 422 with FastAPI's ``detail`` list, 400 on the legacy
route, as Sapheneia answered there.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.responses import JSONResponse
from starlette.routing import Match, Route
from starlette.types import Scope

from bentos.chronos import aleutian, compat, sapheneia
from registry.errors import TradeserveError


class ApiClientRoute(Route):
    """A route that lets requests asking for HTML (browsers) fall through to the next one."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        accept = dict(scope.get("headers") or []).get(b"accept", b"")
        if b"text/html" in accept:
            return Match.NONE, {}
        return super().matches(scope)


app = FastAPI(
    title="Sapheneia and AleutianLocal compatibility",
    description="The seeds' Chronos routes over ChronosForecaster's own forecasts.",
    version=sapheneia.APP_VERSION,
    docs_url=None,
    redoc_url=None,
    openapi_url=None,  # BentoML serves the service's docs (these routes included) at /
)
app.include_router(sapheneia.router)
app.include_router(aleutian.router)
app.router.routes.append(ApiClientRoute("/", sapheneia.root, methods=["GET"]))


@app.exception_handler(TradeserveError)
async def tradeserve_error(_: Request, error: TradeserveError) -> JSONResponse:
    body: dict[str, object] = {"error": str(error), "detail": str(error)}
    if isinstance(error, compat.UnknownModelError):
        body["available_models"] = error.served
    return JSONResponse(body, status_code=error.http_status)


@app.exception_handler(RequestValidationError)
async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    problems = error.errors()
    summary = "; ".join(
        f"{'.'.join(str(part) for part in problem['loc'][1:]) or 'body'}: "
        + problem["msg"].removeprefix("Value error, ")
        for problem in problems
    )
    status = 400 if request.url.path == aleutian.LEGACY_PATH else 422
    return JSONResponse(
        {"error": f"invalid request: {summary}", "detail": jsonable_encoder(problems)},
        status_code=status,
    )
