"""Share counts for BUY/SELL decisions (HOLD is always 0)."""

from __future__ import annotations

import math

from bentos.regime_blend.bounds import MAX_SHARES
from registry.errors import TradeserveError


class SizingError(TradeserveError):
    """A BUY/SELL cannot be sized from non-finite inputs (refused, never guessed)."""

    http_status = 422


def seed_quantity(action: str, confidence: float, entropy_nats: float, base: int = 100) -> int:
    """The seed's formula, bug included: ``0 if HOLD else max(1, int(base·conf·(1 − H)))``
    with ``H`` in nats, so any ``H > 1`` clamps the quantity to 1."""
    if action == "HOLD":
        return 0
    _finite(confidence=confidence, entropy=entropy_nats)
    return max(1, int(base * confidence * (1.0 - entropy_nats)))


def budget_quantity(
    action: str,
    confidence: float,
    entropy_normalized: float,
    price: float,
    equity: float,
    budget_fraction: float,
    min_quantity: int = 1,
) -> int:
    """``floor(budget · equity · conf · (1 − H_norm) / price)``, at least ``min_quantity``.

    ``H_norm = H / ln K`` lies in [0, 1], so certainty scales the size smoothly from the full
    risk budget (one regime certain) down to nothing (all regimes equally likely). The count
    is capped at ``MAX_SHARES`` (a tiny price must not overflow it).
    """
    if action == "HOLD":
        return 0
    _finite(confidence=confidence, entropy=entropy_normalized, price=price, equity=equity)
    if price <= 0:
        raise SizingError(f"cannot size a trade at price {price}: it must be positive")
    certainty = min(1.0, max(0.0, 1.0 - entropy_normalized))
    notional = budget_fraction * max(equity, 0.0) * confidence * certainty
    shares = notional / price
    return max(min_quantity, MAX_SHARES if shares >= MAX_SHARES else math.floor(shares))


def _finite(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise SizingError(f"cannot size a trade: its {name} is {value!r}, not finite")
