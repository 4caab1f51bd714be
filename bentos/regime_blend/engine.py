"""One request end to end: market snapshot → regime → specialists → decision → durable log.

The engine holds the service's parts (regime detector, specialist pool, market source,
portfolio state, decision log) and turns a :class:`PredictRequest` into a logged
:class:`DecisionResponse`. HTTP concerns (status codes, the seed's 403) stay in ``api``.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from bentos.regime_blend.blending import UnknownOverrideError, plan_roles
from bentos.regime_blend.compat import parse_override
from bentos.regime_blend.decision import DecisionPolicy, decide
from bentos.regime_blend.decision_log import DecisionLog, Entry
from bentos.regime_blend.market import MarketSource, Snapshot
from bentos.regime_blend.metrics import record_decision, record_stages
from bentos.regime_blend.pool import SpecialistPool
from bentos.regime_blend.portfolio import PortfolioStore
from bentos.regime_blend.render import canonical_json, decision_inputs, render_response
from bentos.regime_blend.schemas import DecisionResponse, PredictRequest, UsedModel
from bentos.regime_blend.settings import BlendSettings
from bentos.shared.model_source import ModelSet, ServedModel
from registry.errors import TradeserveError
from registry.families import REGIME_DETECTOR_NAME
from training_hooks.regime.runtime import RegimeRuntime


@dataclass(frozen=True)
class Outcome:
    response: DecisionResponse
    body: str  # the response as JSON, exactly as logged
    risk_mode: str

    @property
    def rejected(self) -> bool:
        risk = self.response.risk_validation
        return risk is not None and not risk.approved


class BlendEngine:
    """The decision pipeline of one worker process."""

    def __init__(
        self,
        settings: BlendSettings,
        regime: ModelSet[RegimeRuntime],
        pool: SpecialistPool,
        market: MarketSource,
        portfolio: PortfolioStore,
        log: DecisionLog,
    ) -> None:
        self.settings = settings
        self.policy = DecisionPolicy.from_settings(settings)
        self.regime_models = regime
        self.pool = pool
        self.market = market
        self.portfolio = portfolio
        self.log = log

    def regime(self) -> ServedModel[RegimeRuntime]:
        return self.regime_models.get(REGIME_DETECTOR_NAME)

    def snapshot(self, request: PredictRequest) -> Snapshot:
        if request.bars is None:
            return self.market.snapshot(request.symbol, request.timestamp)
        if len(request.bars) > self.settings.max_request_bars:
            raise TradeserveError(
                f"{len(request.bars)} bars in one request; the limit is "
                f"{self.settings.max_request_bars} (older bars add nothing)"
            )
        frame = pd.DataFrame([bar.model_dump() for bar in request.bars])
        return self.market.from_bars(request.symbol, frame, request.timestamp)

    async def predict(self, request: PredictRequest, started: float) -> Outcome:
        """Decide, log durably, and return the response (``started``: perf_counter at entry)."""
        mode = request.blend_mode or self.settings.default_mode
        override = None
        if request.strategy_override is not None:
            override = parse_override(request.strategy_override)
            if override is None:
                raise UnknownOverrideError(request.strategy_override)
        stages: dict[str, float] = {}
        mark = time.perf_counter()
        snapshot = self.snapshot(request)
        stages["market"], mark = _lap(mark)
        catalog = await self.pool.catalog()
        try:
            plan = plan_roles(self.policy.mapping, catalog.keys(), override)
        except UnknownOverrideError:
            raise UnknownOverrideError(request.strategy_override or "") from None
        answers = await self.pool.act(plan.needed, snapshot.features)
        stages["specialists"], mark = _lap(mark)
        if request.portfolio is not None:
            portfolio, portfolio_source = request.portfolio, "request"
        else:
            portfolio, portfolio_source = self.portfolio.load(), "state"
        decision = decide(
            snapshot.regime,
            {role: probabilities for role, (probabilities, _) in answers.items()},
            plan,
            mode=mode,
            policy=self.policy,
            symbol=snapshot.symbol,
            price=snapshot.price,
            portfolio=portfolio,
            sector=request.sector,
            risk_check=request.risk_check,
        )
        models = [
            UsedModel(role="regime", **snapshot.detector.model_dump()),
            *(UsedModel(role=role, **ref.model_dump()) for role, (_, ref) in answers.items()),
        ]
        inputs = decision_inputs(
            request, snapshot, decision, portfolio, portfolio_source, models, self.settings
        )
        inputs_json = canonical_json(inputs)
        digest = hashlib.sha256(inputs_json.encode()).hexdigest()
        response = render_response(
            str(uuid.uuid4()),
            decision,
            snapshot,
            answers,
            roles=self.policy.mapping.roles,
            models=models,
            portfolio_source=portfolio_source,
            digest=digest,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            now=datetime.now(UTC),
            explain=request.explain,
        )
        stages["decide"], mark = _lap(mark)
        outputs_json = response.model_dump_json()
        risk = response.risk_validation
        await self.log.append(
            Entry(
                decision_id=response.decision_id,
                created_at=response.metadata.timestamp.isoformat(),
                symbol=response.symbol,
                as_of=snapshot.as_of.isoformat(),
                action=response.action,
                approved=None if risk is None else risk.approved,
                inputs_digest=digest,
                inputs_json=inputs_json,
                outputs_json=outputs_json,
                models_json=canonical_json(inputs["models"]),
            )
        )
        stages["log"], _ = _lap(mark)
        record_stages(stages)
        record_decision(response, time.perf_counter() - started)
        return Outcome(response, outputs_json, request.risk_mode or self.settings.risk_mode)

    def close(self) -> None:
        self.log.close()


def _lap(mark: float) -> tuple[float, float]:
    now = time.perf_counter()
    return now - mark, now
