"""RegimeBlend: the composite service (regime detector in-process, Specialists as a
dependency with its own process and adaptive batching).

Routes (seed paths, see ``api``): ``POST /api/v1/predict``, ``GET /api/v1/models``,
``GET /health``, ``GET /api/v1/decisions/{id}``, ``GET|PUT /api/v1/portfolio``,
``POST /api/v1/portfolio/fills``; ``/admin/models`` and ``/admin/reload`` (live promotion
of the regime detector, shared with the other services); BentoML adds ``/readyz``,
``/livez`` and ``/metrics``.
"""

from __future__ import annotations

import logging

import bentoml

from bentos.regime_blend.api import app
from bentos.regime_blend.decision_log import DecisionLog
from bentos.regime_blend.engine import BlendEngine
from bentos.regime_blend.market import MarketSource
from bentos.regime_blend.pool import SpecialistPool
from bentos.regime_blend.portfolio import PortfolioStore
from bentos.regime_blend.settings import get_blend_settings
from bentos.shared.declare import tradeserve_service
from bentos.shared.lifecycle import ModelService
from bentos.shared.model_source import ModelSet
from bentos.specialists.service import Specialists
from registry.families import REGIME_DETECTOR_NAME, Family
from training_hooks.regime.runtime import RegimeRuntime

SERVICE_NAME = "RegimeBlend"
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
        settings = get_blend_settings()
        self.regime: ModelSet[RegimeRuntime] = ModelSet(
            Family.REGIME, [REGIME_DETECTOR_NAME], device="cpu"
        )
        self.regime.load()
        state = settings.state_path
        market = MarketSource(settings.market_path, lambda: self.regime.get(REGIME_DETECTOR_NAME))
        self.engine = BlendEngine(
            settings=settings,
            regime=self.regime,
            pool=SpecialistPool(
                self.specialists, settings.catalog_refresh_s, settings.specialist_cache_size
            ),
            market=market,
            portfolio=PortfolioStore(state / "portfolio.db", settings.initial_capital),
            log=DecisionLog(state, writer=f"w{bentoml.server_context.worker_index or 0}"),
        )
        warmed = market.warm()
        logger.info("regime features and filter cached for %s", ", ".join(warmed) or "no symbol")
        # follows promotions of the regime detector (cached series are keyed by its
        # version); the specialists are served, and followed, by Specialists
        self.serve(self.regime)

    @bentoml.on_shutdown
    def close(self) -> None:
        self.engine.close()
