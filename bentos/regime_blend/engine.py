"""One request end to end: market snapshot → regime → specialists → decision → durable log.

The engine holds the service's parts (regime detector, specialist pool, market source,
portfolio state, decision log) and turns a :class:`PredictRequest` into a logged
:class:`DecisionResponse`. HTTP concerns (status codes, the seed's 403) stay in ``api``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd

from bentos.regime_blend.blending import UnknownOverrideError, plan_roles
from bentos.regime_blend.compat import parse_override
from bentos.regime_blend.decision import Decision, DecisionPolicy, decide
from bentos.regime_blend.decision_log import Checked, DecisionLog, DecisionRecord, Entry
from bentos.regime_blend.market import MarketSource, Snapshot
from bentos.regime_blend.metrics import record_decision, record_stages
from bentos.regime_blend.pool import SpecialistPool
from bentos.regime_blend.portfolio import Fill, Portfolio
from bentos.regime_blend.render import (
    SharedInputs,
    decision_inputs,
    inputs_digest,
    render_response,
)
from bentos.regime_blend.schemas import (
    DecisionResponse,
    PortfolioResponse,
    PredictRequest,
)
from bentos.regime_blend.settings import NATIVE_MODES, BlendSettings, RouteModes
from bentos.regime_blend.state.portfolio_store import PortfolioStore, Reservation
from bentos.shared.model_source import ModelSet, ServedModel
from registry.errors import ModelNotFoundError, TradeserveError
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
        self.shared = SharedInputs(settings)
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

    async def predict(
        self, request: PredictRequest, started: float, modes: RouteModes = NATIVE_MODES
    ) -> Outcome:
        """Decide, log durably, and return the response (``started``: perf_counter at entry).

        Modes: the request's, else the deployment's settings, else the route's ``modes``.
        """
        mode = request.blend_mode or self.settings.default_mode or modes.blend_mode
        risk_mode = request.risk_mode or self.settings.risk_mode or modes.risk_mode
        override = None
        if request.strategy_override is not None:
            override = parse_override(request.strategy_override)
            if override is None:
                raise UnknownOverrideError(request.strategy_override)
        stages: dict[str, float] = {}
        mark = time.perf_counter()
        snapshot = self.snapshot(request)
        _check_finite(snapshot)
        stages["market"], mark = _lap(mark)
        catalog = await self.pool.catalog()
        try:
            plan = plan_roles(self.policy.mapping, catalog.keys(), override)
        except UnknownOverrideError:
            raise UnknownOverrideError(request.strategy_override or "") from None
        answers = await self.pool.act(plan.needed, snapshot.features)
        stages["specialists"], mark = _lap(mark)
        used = self.shared.models(
            snapshot.detector, {role: ref for role, (_, ref) in answers.items()}
        )

        def made(portfolio: Portfolio, portfolio_source: str) -> Checked[tuple[Any, str]]:
            """The decision on ``portfolio``, its log entry and the trade it reserves."""
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
            inputs, parts = decision_inputs(
                request, snapshot, decision, portfolio, portfolio_source, used, self.shared
            )
            digest = inputs_digest(inputs, parts)
            response = render_response(
                str(uuid.uuid4()),
                decision,
                snapshot,
                answers,
                roles=self.policy.mapping.roles,
                models=used.models,
                portfolio_source=portfolio_source,
                digest=digest,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                now=datetime.now(UTC),
                explain=request.explain,
            )
            outputs_json = response.model_dump_json()
            risk = response.risk_validation
            entry = Entry(
                decision_id=response.decision_id,
                created_at=response.metadata.timestamp.isoformat(),
                symbol=response.symbol,
                as_of=snapshot.as_of.isoformat(),
                action=response.action,
                approved=None if risk is None else risk.approved,
                inputs_digest=digest,
                inputs=inputs,
                outputs=orjson.loads(outputs_json),
                models=inputs["models"],
            )
            trade = reservation_of(decision, snapshot.symbol, snapshot.price, request.sector)
            return Checked(entry, trade, (response, outputs_json))

        if request.portfolio is not None:
            checked = made(request.portfolio, "request")
            stages["decide"], mark = _lap(mark)
            await self.log.append(checked.entry)
            response, outputs_json = checked.result
        else:
            # the service's portfolio: decided on the log's writer thread under the
            # portfolio's lock, so the risk check, the exposure an approval reserves and the
            # logged decision are one transaction for every replica ("log" includes "decide")
            response, outputs_json = await self.log.append_checked(
                self.portfolio, lambda book: made(book, "state")
            )
        stages["log"], _ = _lap(mark)
        record_stages(stages)
        record_decision(response, time.perf_counter() - started)
        return Outcome(response, outputs_json, risk_mode)

    async def decision(self, decision_id: str) -> DecisionRecord:
        """A logged decision by id (404 when the log has none)."""
        record = await self.log.fetch(decision_id)
        if record is None:
            raise ModelNotFoundError(f"no decision '{decision_id}' in the decision log")
        return record

    async def portfolio_state(self) -> PortfolioResponse:
        """The service's own portfolio (used when a request sends none)."""
        return _with_equity(await self.portfolio.aload())

    async def replace_portfolio(self, portfolio: Portfolio) -> PortfolioResponse:
        return _with_equity(await self.portfolio.asave(portfolio))

    async def record_fill(self, fill: Fill) -> PortfolioResponse:
        """Apply an executed trade to the service's portfolio (atomically)."""
        return _with_equity(await self.portfolio.aapply(fill))

    def close(self) -> None:
        self.log.close()


def reservation_of(
    decision: Decision, symbol: str, price: float, sector: str | None
) -> Reservation | None:
    """The exposure an approved BUY/SELL takes on the service's portfolio until filled."""
    if decision.risk is None or not decision.risk.approved or decision.quantity <= 0:
        return None
    if decision.action not in ("BUY", "SELL"):
        return None
    side = 1 if decision.action == "BUY" else -1
    return Reservation(symbol, side * decision.quantity, price, sector)


def _with_equity(portfolio: Portfolio) -> PortfolioResponse:
    return PortfolioResponse(portfolio=portfolio, equity=portfolio.equity())


class NonFiniteBarsError(TradeserveError):
    """The request's bars give NaN/inf features or regime probabilities (e.g. flat prices)."""

    http_status = 422


class NonFiniteStoreError(TradeserveError):
    """The stored bars give NaN/inf features: a data problem of the service, not the client."""

    http_status = 503


def _check_finite(snapshot: Snapshot) -> None:
    """Refuse a decision on non-finite features or regime probabilities (no model is asked
    about them: their answer would be as undefined as the input)."""
    bad = [
        name
        for name, values in (("features", snapshot.features), ("regime", snapshot.regime))
        if not np.isfinite(np.asarray(values, dtype=np.float64)).all()
    ]
    if not bad:
        return
    where = f"{snapshot.symbol} at {snapshot.as_of.date()}"
    if snapshot.source == "request":
        raise NonFiniteBarsError(
            f"the request's bars give non-finite {' and '.join(bad)} for {where} "
            "(flat or degenerate prices?); send more varied history"
        )
    raise NonFiniteStoreError(f"the stored bars give non-finite {' and '.join(bad)} for {where}")


def _lap(mark: float) -> tuple[float, float]:
    now = time.perf_counter()
    return now - mark, now
