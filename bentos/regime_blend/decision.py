"""One trading decision from regime probabilities and specialist action probabilities.

The service and the walk-forward evaluator both call :func:`decide`; nothing here touches
HTTP, BentoML or storage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from bentos.regime_blend.blending import Blend, RolePlan, WeightMapping, blend
from bentos.regime_blend.portfolio import Portfolio
from bentos.regime_blend.risk import RiskAssessment, approve_hold, check_trade
from bentos.regime_blend.settings import BlendSettings, RiskLimits, SizingConfig
from bentos.regime_blend.sizing import budget_quantity, seed_quantity
from training_hooks.regime.runtime import entropy_nats, normalized_entropy


@dataclass(frozen=True)
class DecisionPolicy:
    """The configurable parts of the decision logic."""

    mapping: WeightMapping
    sizing: SizingConfig
    limits: RiskLimits
    sectors: Mapping[str, str]
    default_sector: str

    @classmethod
    def from_settings(cls, settings: BlendSettings) -> DecisionPolicy:
        return cls(
            mapping=settings.weights,
            sizing=settings.sizing,
            limits=settings.risk,
            sectors=dict(settings.sectors),
            default_sector=settings.default_sector,
        )

    def sector_of(self, symbol: str, explicit: str | None = None) -> str:
        return explicit or self.sectors.get(symbol, self.default_sector)


@dataclass(frozen=True)
class Decision:
    mode: str
    action: str
    confidence: float
    quantity: int
    regime: np.ndarray  # REGIME_LABELS order
    entropy: float  # nats
    entropy_normalized: float
    weights: np.ndarray  # mapping.roles order
    blend: Blend
    plan: RolePlan
    risk: RiskAssessment | None


def decide(
    regime: np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    plan: RolePlan,
    *,
    mode: str,
    policy: DecisionPolicy,
    symbol: str,
    price: float,
    portfolio: Portfolio,
    sector: str | None = None,
    risk_check: bool = True,
) -> Decision:
    """Weights → blend → size → risk for one symbol at one bar.

    ``probabilities`` are keyed by served role (see :func:`~.blending.plan_roles`).
    ``argmax`` sizes with the seed's formula, ``mixture`` with the risk budget.
    """
    regime = np.asarray(regime, dtype=np.float64)
    weights = policy.mapping.weights(regime)
    entropy = float(entropy_nats(regime))
    entropy_norm = float(normalized_entropy(regime, nats=entropy))
    chosen = blend(mode, weights, probabilities, plan, policy.mapping.roles)
    book = portfolio.marked(symbol, price)
    if mode == "argmax":
        quantity = seed_quantity(
            chosen.action, chosen.confidence, entropy, policy.sizing.seed_base_quantity
        )
    else:
        quantity = budget_quantity(
            chosen.action,
            chosen.confidence,
            entropy_norm,
            price,
            book.equity(),
            policy.sizing.risk_budget_fraction,
            policy.sizing.min_quantity,
        )
    risk = None
    if risk_check:
        held = book.positions.get(symbol)
        trade_sector = policy.sector_of(symbol, sector or (held.sector if held else None))
        risk = (
            approve_hold()
            if chosen.action == "HOLD" or quantity == 0
            else check_trade(
                book,
                symbol,
                1 if chosen.action == "BUY" else -1,
                quantity,
                price,
                trade_sector,
                policy.limits,
                policy.sector_of,
            )
        )
    return Decision(
        mode=mode,
        action=chosen.action,
        confidence=chosen.confidence,
        quantity=quantity,
        regime=regime,
        entropy=entropy,
        entropy_normalized=entropy_norm,
        weights=weights,
        blend=chosen,
        plan=plan,
        risk=risk,
    )
