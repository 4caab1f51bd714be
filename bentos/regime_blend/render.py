"""A decision in the seed's response schema, and the inputs that reproduce it.

Pure functions of a :class:`~.decision.Decision` and what produced it: seed names
(``bull_specialist``), the risk block, metadata naming every model version, the optional
explanation, and the canonical inputs whose sha256 is the decision's ``inputs_digest``.
The parts of the inputs that many decisions share (the policy, the model versions, the
service's book) are dumped and rendered once per value (:class:`SharedInputs`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bentos.regime_blend.compat import seed_name
from bentos.regime_blend.decision import Decision
from bentos.regime_blend.market import Snapshot
from bentos.regime_blend.pool import Answer
from bentos.regime_blend.portfolio import Portfolio
from bentos.regime_blend.schemas import (
    DecisionMetadata,
    DecisionResponse,
    Explanation,
    PredictRequest,
    RegimeProbabilities,
    RiskChecks,
    RiskRejection,
    RiskValidation,
    SpecialistExplanation,
    UsedModel,
)
from bentos.regime_blend.settings import BlendSettings
from bentos.shared.lineage import ModelRef
from training_hooks.features import FEATURE_NAMES
from training_hooks.regime.runtime import REGIME_LABELS
from training_hooks.specialist.runtime import ACTIONS


def canonical_json(value: Any) -> str:
    """Deterministic JSON (sorted keys, no spaces): what the inputs digest is taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def canonical_json_with(value: Mapping[str, Any], parts: Mapping[str, str]) -> str:
    """``canonical_json(value)`` for a dict, taking the canonical JSON of some of its values
    from ``parts`` (by key) instead of writing it again: the same text. The items between
    two parts are written as one dict, whose text without its braces is those items."""
    items: list[str] = []
    run: dict[str, Any] = {}
    for key in sorted(value):
        if key not in parts:
            run[key] = value[key]
            continue
        if run:
            items.append(canonical_json(run)[1:-1])
            run = {}
        items.append(f"{canonical_json(key)}:{parts[key]}")
    if run:
        items.append(canonical_json(run)[1:-1])
    return "{" + ",".join(items) + "}"


def inputs_digest(inputs: Mapping[str, Any], parts: Mapping[str, str] | None = None) -> str:
    """A decision's ``inputs_digest``: the hex sha256 of its inputs' canonical JSON
    (``parts``: that of some of its values, computed before; see :class:`SharedInputs`)."""
    text = canonical_json_with(inputs, parts) if parts else canonical_json(inputs)
    return hashlib.sha256(text.encode()).hexdigest()


def policy_inputs(settings: BlendSettings) -> dict[str, Any]:
    """The policy a deployment's decisions follow, as their inputs record it."""
    return {
        "weights": settings.weights.model_dump(),
        "sizing": settings.sizing.model_dump(),
        "risk": settings.risk.model_dump(),
        "sectors": settings.sectors,
        "default_sector": settings.default_sector,
    }


@dataclass(frozen=True)
class UsedModels:
    """The model versions a decision used: as the response lists them, as its inputs record
    them, and that record's canonical JSON."""

    models: list[UsedModel]
    dumped: list[dict[str, Any]]
    json: str


class SharedInputs:
    """The parts of a decision's inputs that many decisions share, each dumped and written
    as canonical JSON once per value: the policy (once per deployment), the model versions
    (until one is promoted) and the portfolio (per object: the service's book is rebuilt
    only when it changes). Used from the event loop and the decision log's writer thread: a
    race only computes a part twice."""

    MAX_MODEL_SETS = 64
    MAX_PORTFOLIOS = 8  # the book and the last few a request sent

    def __init__(self, settings: BlendSettings) -> None:
        self.policy = policy_inputs(settings)
        self.policy_json = canonical_json(self.policy)
        self._models: dict[tuple[tuple[str, ModelRef], ...], UsedModels] = {}
        # by id, the object kept with it (so that its id cannot be another's meanwhile)
        self._portfolios: dict[int, tuple[Portfolio, dict[str, Any], str]] = {}

    def models(self, detector: ModelRef, specialists: Mapping[str, ModelRef]) -> UsedModels:
        """The regime detector's and the specialists' (by role) versions."""
        roles = {"regime": detector, **specialists}
        key = tuple(roles.items())  # a ModelRef is frozen: hashed and compared by its fields
        known = self._models.get(key)
        if known is None:
            models = [UsedModel(role=role, **ref.model_dump()) for role, ref in roles.items()]
            dumped = [model.model_dump() for model in models]
            if len(self._models) >= self.MAX_MODEL_SETS:
                self._models.clear()
            known = self._models[key] = UsedModels(models, dumped, canonical_json(dumped))
        return known

    def portfolio(self, portfolio: Portfolio) -> tuple[dict[str, Any], str]:
        """``portfolio`` dumped, and its canonical JSON (portfolios are never changed in
        place: a fill or a reservation makes a new one)."""
        known = self._portfolios.get(id(portfolio))
        if known is None or known[0] is not portfolio:
            dumped = portfolio.model_dump(mode="json")
            if len(self._portfolios) >= self.MAX_PORTFOLIOS:
                self._portfolios.clear()
            known = self._portfolios[id(portfolio)] = (portfolio, dumped, canonical_json(dumped))
        return known[1], known[2]


def decision_inputs(
    request: PredictRequest,
    snapshot: Snapshot,
    decision: Decision,
    portfolio: Portfolio,
    portfolio_source: str,
    models: UsedModels,
    shared: SharedInputs,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Everything a decision depends on (inline bars by digest), enough to reproduce it, and
    the canonical JSON of its shared parts (for :func:`inputs_digest`)."""
    dumped_portfolio, portfolio_json = shared.portfolio(portfolio)
    inputs = {
        "symbol": snapshot.symbol,
        "timestamp": None if request.timestamp is None else request.timestamp.isoformat(),
        "as_of": snapshot.as_of.isoformat(),
        "data_source": snapshot.source,
        "bars_digest": snapshot.bars_digest,
        "price": snapshot.price,
        "features": dict(zip(FEATURE_NAMES, snapshot.features.tolist(), strict=True)),
        "regime": dict(zip(REGIME_LABELS, snapshot.regime.tolist(), strict=True)),
        "blend_mode": decision.mode,
        "strategy_override": decision.plan.override,
        "risk_check": request.risk_check,
        "sector": request.sector,
        "portfolio": dumped_portfolio,
        "portfolio_source": portfolio_source,
        "policy": shared.policy,
        "models": models.dumped,
    }
    parts = {"models": models.json, "policy": shared.policy_json, "portfolio": portfolio_json}
    return inputs, parts


def render_response(
    decision_id: str,
    decision: Decision,
    snapshot: Snapshot,
    answers: dict[str, Answer],
    *,
    roles: tuple[str, ...],
    models: list[UsedModel],
    portfolio_source: str,
    digest: str,
    latency_ms: float,
    now: datetime,
    explain: bool,
) -> DecisionResponse:
    """The seed's response (plus extensions) for ``decision``."""
    weights = dict(zip(roles, decision.weights.tolist(), strict=True))
    return DecisionResponse(
        decision_id=decision_id,
        symbol=snapshot.symbol,
        action=decision.action,
        confidence=decision.confidence,
        recommended_quantity=decision.quantity,
        regime_probabilities=RegimeProbabilities(
            **dict(zip(REGIME_LABELS, decision.regime.tolist(), strict=True)),
            entropy=decision.entropy,
            entropy_normalized=decision.entropy_normalized,
        ),
        strategy_weights={seed_name(role): w for role, w in weights.items()},
        risk_validation=risk_validation(decision),
        metadata=DecisionMetadata(
            model_version=model_version(decision),
            latency_ms=latency_ms,
            timestamp=now,
            blend_mode=decision.mode,
            models=models,
            fallbacks=decision.plan.fallbacks,
            strategy_override=decision.plan.override,
            as_of=snapshot.as_of,
            price=snapshot.price,
            data_source=snapshot.source,
            portfolio_source=portfolio_source,
            inputs_digest=digest,
        ),
        explanation=explanation(decision, answers, snapshot, weights) if explain else None,
    )


def model_version(decision: Decision) -> str:
    """The seed's ``metadata.model_version``: the specialist that acted, or ``mixture``."""
    if decision.plan.override:
        return seed_name(decision.plan.override)
    if decision.mode == "argmax" and decision.blend.chosen_role:
        return seed_name(decision.plan.used[decision.blend.chosen_role])
    return "mixture"


def risk_validation(decision: Decision) -> RiskValidation | None:
    risk = decision.risk
    if risk is None:
        return None
    return RiskValidation(
        approved=risk.approved,
        warnings=risk.warnings,
        checks=RiskChecks(**risk.checks),
        rejections=[
            RiskRejection(check=r.check, message=r.message, limit=r.limit, proposed=r.proposed)
            for r in risk.rejections
        ],
        allowed_quantity=risk.allowed_quantity if decision.quantity else 0,
        exposure=risk.exposure,
    )


def explanation(
    decision: Decision,
    answers: dict[str, Answer],
    snapshot: Snapshot,
    weights: dict[str, float],
) -> Explanation:
    """Each specialist's probabilities and weight, and the distribution the action came from."""
    plan = decision.plan
    specialists = {}
    for role in dict.fromkeys([*weights, *([plan.override] if plan.override else [])]):
        served = plan.used[role]
        probabilities, ref = answers[served]
        specialists[role] = SpecialistExplanation(
            probabilities=dict(zip(ACTIONS, probabilities.tolist(), strict=True)),
            weight=weights.get(role),
            served_by=served,
            model=ref,
        )
    if plan.override:
        method = f"override: {seed_name(plan.override)} acted alone"
    elif decision.mode == "argmax":
        chosen = seed_name(decision.blend.chosen_role or "")
        method = f"argmax: {chosen} (largest weight) acted alone"
    else:
        method = "mixture: sum_k w_k * pi_k"
    return Explanation(
        method=method,
        specialists=specialists,
        weights={seed_name(role): w for role, w in weights.items()},
        blended=dict(zip(ACTIONS, decision.blend.distribution.tolist(), strict=True)),
        features=dict(zip(FEATURE_NAMES, snapshot.features.tolist(), strict=True)),
    )
