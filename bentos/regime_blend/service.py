"""RegimeBlend: the composite service (regime detector in-process, Specialists as a
dependency with its own process and adaptive batching).

Endpoints for BentoML's clients (``bentoml.SyncHTTPClient(url).predict(symbol="SPX")``):
``POST /predict`` (mixture, rejection in the body unless asked otherwise), ``/decision``,
``/portfolio``, ``/set_portfolio`` and ``/fill``. Routes at the seed's paths (see ``api``, a
FastAPI app mounted at "/"): ``POST /api/v1/predict`` (the seed's defaults), ``GET
/api/v1/models``, ``GET /health``, ``GET /api/v1/decisions/{id}``, ``GET|PUT
/api/v1/portfolio``, ``POST /api/v1/portfolio/fills``. Both call the same engine methods.
BentoML matches its API routes before a mounted app's (its ``PassiveMount`` only claims
paths the app has), and the two sets of paths are disjoint anyway. ``/admin/models`` and
``/admin/reload`` (live promotion of the regime detector, shared with the other services);
BentoML adds ``/readyz``, ``/livez`` and ``/metrics``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import bentoml
from starlette.responses import Response

from bentos.regime_blend.api import app
from bentos.regime_blend.compat import rejection_headers
from bentos.regime_blend.decision_log import DecisionLog, DecisionRecord
from bentos.regime_blend.engine import BlendEngine
from bentos.regime_blend.market import MarketMirror, MarketSource
from bentos.regime_blend.pool import SpecialistPool
from bentos.regime_blend.portfolio import Fill, Portfolio
from bentos.regime_blend.schemas import DecisionResponse, PortfolioResponse, PredictRequest
from bentos.regime_blend.settings import get_blend_settings
from bentos.regime_blend.state.db import StateDatabase
from bentos.regime_blend.state.portfolio_store import PortfolioStore
from bentos.regime_blend.state.retention import Maintenance
from bentos.shared.declare import tradeserve_service
from bentos.shared.errors import client_errors
from bentos.shared.lifecycle import ModelService
from bentos.shared.model_source import ModelSet
from bentos.specialists.service import Specialists
from registry.families import REGIME_DETECTOR_NAME, Family
from training_hooks.regime.runtime import RegimeRuntime

SERVICE_NAME = "RegimeBlend"
GIL_SWITCH_INTERVAL_S = 0.0005
logger = logging.getLogger("tradeserve.regime_blend")


@tradeserve_service(
    name=SERVICE_NAME,
    workers=2,
    traffic={"timeout": 30, "max_concurrency": 1024},
)
@bentoml.asgi_app(app, path="/")
class RegimeBlend(ModelService):
    """Blends the promoted specialists by the promoted regime detector's probabilities."""

    # In-process Specialists by default; TRADESERVE_BLEND_SPECIALISTS_URL points at a
    # separately deployed one (Kubernetes, compose), called over JSON HTTP with the API key.
    specialists = bentoml.depends(Specialists, url=get_blend_settings().specialists_url)

    def __init__(self) -> None:
        # The decision log's writer thread holds the write lock that every worker and replica
        # waits for, and needs this process's GIL back after each statement: at Python's
        # default 5 ms switch interval a busy event loop keeps it, and so every writer, waiting.
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        settings = get_blend_settings()
        self.regime: ModelSet[RegimeRuntime] = ModelSet(
            Family.REGIME, [REGIME_DETECTOR_NAME], device="cpu"
        )
        self.regime.load()
        if settings.market_data_uri and settings.market_data_uri.startswith("s3://"):
            self.mirror = MarketMirror(
                settings.market_data_uri, settings.market_path, settings.market_data_refresh_s
            ).start()
        # portfolio, reservations, fills and decisions: one database for every replica
        # (TRADESERVE_DATABASE_URL) or the embedded SQLite file; migrated here, under a lock
        self.database = StateDatabase(settings.database)
        market = MarketSource(settings.market_path, lambda: self.regime.get(REGIME_DETECTOR_NAME))
        self.engine = BlendEngine(
            settings=settings,
            regime=self.regime,
            pool=SpecialistPool(
                self.specialists,
                settings.catalog_refresh_s,
                settings.specialist_cache_size,
                settings.specialists_timeout_s,
            ),
            market=market,
            portfolio=PortfolioStore(
                self.database,
                settings.initial_capital,
                reservation_ttl_s=settings.reservation_ttl_s,
            ),
            log=DecisionLog(self.database),
        )
        self.maintenance = Maintenance(
            self.database,
            settings.maintenance_interval_s,
            settings.decision_retention_days,
            settings.export_uri,
        ).start()
        warmed = market.warm()
        logger.info("regime features and filter cached for %s", ", ".join(warmed) or "no symbol")
        # follows promotions of the regime detector (cached series are keyed by its
        # version); the specialists are served, and followed, by Specialists
        self.serve(self.regime)

    # The inputs arrive validated against the spec's model; the endpoints rebuild it without
    # validating twice (model_construct).

    @bentoml.api(route="/predict", input_spec=PredictRequest, output_spec=DecisionResponse)
    @client_errors
    async def predict(self, **request: Any) -> Response:
        """A trading decision, logged before it is answered (``mixture`` and the risk
        verdict in the body unless the request or the deployment names other modes; with
        ``risk_mode: reject`` a rejected trade is a 403 with ``X-Risk-Warnings``)."""
        started = time.perf_counter()
        outcome = await self.engine.predict(PredictRequest.model_construct(**request), started)
        risk = outcome.response.risk_validation
        if outcome.rejected and outcome.risk_mode == "reject" and risk is not None:
            headers = rejection_headers(
                outcome.response.decision_id, risk.warnings, risk.allowed_quantity
            )
            return Response(outcome.body, 403, headers, media_type="application/json")
        return Response(outcome.body, media_type="application/json")

    @bentoml.api(route="/decision")
    @client_errors
    async def decision(self, decision_id: str) -> DecisionRecord:
        """A logged decision: inputs (and their digest), outputs and model versions."""
        return await self.engine.decision(decision_id)

    @bentoml.api(route="/portfolio")
    @client_errors
    async def portfolio(self) -> PortfolioResponse:
        """The service's own portfolio (used when a request sends none)."""
        return await self.engine.portfolio_state()

    @bentoml.api(route="/set_portfolio", input_spec=Portfolio)
    @client_errors
    async def set_portfolio(self, **portfolio: Any) -> PortfolioResponse:
        """Replace the service's portfolio (e.g. from the broker at the start of a day)."""
        return await self.engine.replace_portfolio(Portfolio.model_construct(**portfolio))

    @bentoml.api(route="/fill", input_spec=Fill)
    @client_errors
    async def fill(self, **fill: Any) -> PortfolioResponse:
        """Record an executed trade in the service's portfolio."""
        return await self.engine.record_fill(Fill.model_construct(**fill))

    @bentoml.on_shutdown
    def close(self) -> None:
        self.maintenance.stop()
        self.engine.close()
        self.database.close()
