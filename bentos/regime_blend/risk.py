"""Pre-trade risk checks that really reject (the seed's risk manager, made to work).

Checks on the portfolio after the proposed trade, all marked at the decision price (a trade
at the mark price leaves equity unchanged):

* ``position_limit`` — ``|position value| / equity ≤ max_position_fraction`` (25 %)
* ``concentration`` — sector gross exposure ``/ equity ≤ max_sector_fraction`` (50 %)
* ``leverage`` — gross exposure ``/ equity ≤ max_leverage`` (1.5×)
* ``daily_loss_limit`` — once the day's loss exceeds ``max_daily_loss_fraction`` (2 %), only
  trades that shrink the position pass.

Fixes against the seed: short positions count against equity (the seed added ``|value|``),
the allowed quantity honours every limit (the seed only the position limit), and a trade
that reduces risk is never rejected for a limit it already breaches less afterwards.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from bentos.regime_blend.bounds import MAX_SHARES
from bentos.regime_blend.portfolio import Portfolio
from bentos.regime_blend.settings import RiskLimits

CheckStatus = Literal["pass", "fail", "warning"]
CHECKS = ("position_limit", "concentration", "daily_loss_limit", "leverage")
_EPS = 1e-9


@dataclass(frozen=True)
class Rejection:
    check: str
    message: str
    limit: float
    proposed: float


@dataclass(frozen=True)
class RiskAssessment:
    approved: bool
    checks: dict[str, CheckStatus]
    rejections: list[Rejection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    allowed_quantity: int = 0
    exposure: dict[str, float] = field(default_factory=dict)


def approve_hold() -> RiskAssessment:
    """HOLD trades nothing: every check passes (the seed's risk API needs quantity > 0)."""
    return RiskAssessment(approved=True, checks=dict.fromkeys(CHECKS, "pass"))


def check_trade(
    portfolio: Portfolio,
    symbol: str,
    side: int,
    quantity: int,
    price: float,
    sector: str,
    limits: RiskLimits,
    sector_of: Callable[[str, str | None], str],
) -> RiskAssessment:
    """Assess trading ``quantity`` shares of ``symbol`` (``side`` +1 buy, −1 sell).

    Fails closed: a non-finite price, cash, position or ratio rejects the trade with the
    reason (NaN compares False against every limit, so it would otherwise pass them all).
    """
    if not (math.isfinite(price) and price > 0):
        return _refused(f"the price {price!r} is not a positive finite number")
    book = portfolio.marked(symbol, price)
    unsound = _non_finite(book)
    if unsound:
        return _refused(f"the portfolio's {unsound} is not finite")
    equity = book.equity()
    held = book.positions.get(symbol)
    current = held.quantity if held else 0
    after = current + side * quantity
    other_gross = sum(abs(p.value) for s, p in book.positions.items() if s != symbol)
    other_sector = sum(
        abs(p.value)
        for s, p in book.positions.items()
        if s != symbol and sector_of(s, p.sector) == sector
    )
    if equity <= 0:
        return _insolvent(equity)

    position_fraction = abs(after) * price / equity
    sector_fraction = (other_sector + abs(after) * price) / equity
    leverage = (other_gross + abs(after) * price) / equity
    daily_loss = 0.0
    if book.day_start_equity:
        daily_loss = max(0.0, 1.0 - equity / book.day_start_equity)
    reduces = abs(after) < abs(current)
    ratios = {
        "position fraction": position_fraction,
        "sector fraction": sector_fraction,
        "leverage": leverage,
        "daily loss": daily_loss,
    }
    for name, ratio in ratios.items():
        if not math.isfinite(ratio):
            return _refused(f"the {name} after the trade is not finite ({ratio!r})")

    checks: dict[str, CheckStatus] = {}
    rejections: list[Rejection] = []
    measured = {
        "position_limit": (position_fraction, limits.max_position_fraction, "position"),
        "concentration": (sector_fraction, limits.max_sector_fraction, f"sector '{sector}'"),
        "leverage": (leverage, limits.max_leverage, "gross exposure"),
    }
    for check, (value, limit, what) in measured.items():
        # a trade that shrinks the position never makes these ratios worse
        if value > limit + _EPS and not reduces:
            checks[check] = "fail"
            rejections.append(
                Rejection(
                    check,
                    f"{what} would be {value:.1%} of equity; the limit is {limit:.1%}"
                    if check != "leverage"
                    else f"leverage would be {value:.2f}x; the limit is {limit:.2f}x",
                    limit,
                    value,
                )
            )
        else:
            checks[check] = "warning" if value > limits.warn_fraction * limit else "pass"
    if daily_loss > limits.max_daily_loss_fraction + _EPS:
        if reduces:
            checks["daily_loss_limit"] = "warning"
        else:
            checks["daily_loss_limit"] = "fail"
            rejections.append(
                Rejection(
                    "daily_loss_limit",
                    f"daily loss {daily_loss:.2%} exceeds the {limits.max_daily_loss_fraction:.2%} "
                    "limit: only trades that reduce the position are allowed",
                    limits.max_daily_loss_fraction,
                    daily_loss,
                )
            )
    else:
        near = daily_loss > limits.warn_fraction * limits.max_daily_loss_fraction
        checks["daily_loss_limit"] = "warning" if near else "pass"

    warnings = [f"{r.check}: {r.message}" for r in rejections]
    cash_after = book.cash - side * quantity * price
    if cash_after < 0:
        warnings.append(f"insufficient cash: {cash_after:.2f} after the trade (borrowing)")
    approved = not rejections
    allowed = (
        quantity
        if approved
        else _allowed_quantity(
            current, side, quantity, price, equity, other_gross, other_sector, daily_loss, limits
        )
    )
    exposure = {
        "equity": equity,
        "position_fraction": position_fraction,
        "sector_fraction": sector_fraction,
        "leverage": leverage,
        "daily_loss": daily_loss,
    }
    return RiskAssessment(
        approved=approved,
        checks={name: checks[name] for name in CHECKS},
        rejections=rejections,
        warnings=warnings,
        allowed_quantity=allowed,
        exposure=exposure,
    )


def _allowed_quantity(
    current: int,
    side: int,
    requested: int,
    price: float,
    equity: float,
    other_gross: float,
    other_sector: float,
    daily_loss: float,
    limits: RiskLimits,
) -> int:
    """Largest quantity in ``[0, requested]`` that passes every check at ``allowed_margin``."""
    margin = limits.allowed_margin
    # every limit bounds |position after| by some share count A
    bound = min(
        margin * limits.max_position_fraction * equity / price,
        (margin * limits.max_sector_fraction * equity - other_sector) / price,
        (margin * limits.max_leverage * equity - other_gross) / price,
    )
    if daily_loss > limits.max_daily_loss_fraction + _EPS:
        bound = min(bound, abs(current))  # only shrinking trades
    if not bound >= 0:  # negative, or NaN: fail closed
        return 0
    bound = min(bound, 2.0 * MAX_SHARES)  # a tiny price must not overflow the share count
    # |current + side·q| ≤ bound  ⇔  −bound − side·current ≤ q ≤ bound − side·current
    upper = math.floor(bound - side * current + _EPS)
    lower = math.ceil(-bound - side * current - _EPS)
    allowed = min(requested, upper)
    return allowed if allowed >= max(lower, 0) else 0


def _non_finite(book: Portfolio) -> str | None:
    """The first non-finite number of ``book`` (its name), or None."""
    if not math.isfinite(book.cash):
        return "cash"
    if book.day_start_equity is not None and not math.isfinite(book.day_start_equity):
        return "day_start_equity"
    for symbol, position in book.positions.items():
        if not math.isfinite(position.value):
            return f"position {symbol}"
    if not math.isfinite(book.equity()):
        return "equity"
    return None


def _refused(reason: str) -> RiskAssessment:
    """Every check fails: the inputs cannot be assessed, so the trade is not approved."""
    rejection = Rejection("non_finite", f"risk cannot be assessed: {reason}", 0.0, 0.0)
    return RiskAssessment(
        approved=False,
        checks=dict.fromkeys(CHECKS, "fail"),
        rejections=[rejection],
        warnings=[f"non_finite: {rejection.message}"],
        allowed_quantity=0,
    )


def _insolvent(equity: float) -> RiskAssessment:
    rejection = Rejection(
        "leverage", f"portfolio equity is {equity:.2f}: no trade can be sized", 0.0, equity
    )
    return RiskAssessment(
        approved=False,
        checks={**dict.fromkeys(CHECKS, "fail"), "daily_loss_limit": "fail"},
        rejections=[rejection],
        warnings=[f"leverage: {rejection.message}"],
        allowed_quantity=0,
        exposure={"equity": equity},
    )
