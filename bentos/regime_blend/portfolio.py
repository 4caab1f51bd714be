"""Portfolio state: positions, cash and the day's start equity, and the fills that change it.

The service keeps its own portfolio in the state database (``state.portfolio_store``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bentos.regime_blend.bounds import (
    MAX_MONEY,
    MAX_POSITIONS,
    Money,
    PositiveMoney,
    Price,
    Sector,
    Shares,
    TradeShares,
)
from registry.errors import TradeserveError
from training_hooks.market_data import normalize_symbol


def valid_symbol(symbol: str) -> str:
    """The normalized symbol; a bad one is a validation error (422 naming the field)."""
    try:
        return normalize_symbol(symbol)
    except TradeserveError as error:
        raise ValueError(str(error)) from None


class Position(BaseModel):
    """A holding (negative quantity = short) marked at ``price``."""

    model_config = ConfigDict(frozen=True)

    quantity: Shares = Field(description="Shares held; negative for a short position")
    price: Price = Field(description="Mark price of one share")
    sector: Sector | None = None

    @model_validator(mode="after")
    def _sane_value(self) -> Position:
        if abs(self.value) > MAX_MONEY:
            raise ValueError(f"position value {self.value:.3g} exceeds ±{MAX_MONEY:.0e}")
        return self

    @property
    def value(self) -> float:
        return self.quantity * self.price


class Portfolio(BaseModel):
    """What the risk checks see. Never changed in place (a fill makes a new one), so a
    portfolio's dump can be kept with it (``render.SharedInputs``)."""

    model_config = ConfigDict(frozen=True)

    cash: Money = Field(description="Cash balance (may be negative: borrowed)")
    positions: dict[str, Position] = Field(default_factory=dict, max_length=MAX_POSITIONS)
    day_start_equity: PositiveMoney | None = Field(
        default=None, description="Equity at the start of the trading day (daily loss)"
    )

    @field_validator("positions", mode="before")
    @classmethod
    def _symbols(cls, value: object) -> object:
        if isinstance(value, dict):
            return {valid_symbol(symbol): position for symbol, position in value.items()}
        return value

    def equity(self) -> float:
        """Cash plus the signed value of every position."""
        return self.cash + sum(position.value for position in self.positions.values())

    def marked(self, symbol: str, price: float) -> Portfolio:
        """This portfolio with ``symbol`` re-marked at ``price`` (when held)."""
        held = self.positions.get(symbol)
        if held is None or held.price == price:
            return self
        positions = {**self.positions, symbol: held.model_copy(update={"price": price})}
        return self.model_copy(update={"positions": positions})

    def after_fill(
        self, symbol: str, quantity: int, price: float, sector: str | None = None
    ) -> Portfolio:
        """The portfolio after buying (``quantity > 0``) or selling shares at ``price``;
        a fill that would take cash or the position past the bounds is refused (422)."""
        return self.after_trades([Trade(symbol, quantity, quantity * price, price, sector)])

    def after_trades(self, trades: Iterable[Trade]) -> Portfolio:
        """The portfolio after ``trades`` in order, validated once at the end (a book of many
        reservations costs one validation, not one per trade); refused (422) past the bounds."""
        positions = {name: position.model_dump() for name, position in self.positions.items()}
        cash = self.cash
        for trade in trades:
            held = positions.get(trade.symbol)
            new_quantity = (held["quantity"] if held else 0) + trade.quantity
            cash -= trade.cost
            if new_quantity == 0:
                positions.pop(trade.symbol, None)
            else:
                positions[trade.symbol] = {
                    "quantity": new_quantity,
                    "price": trade.price,
                    "sector": trade.sector or (held["sector"] if held else None),
                }
        updated = self.model_dump() | {"cash": cash, "positions": positions}
        try:
            return Portfolio.model_validate(updated)
        except ValidationError as error:
            broken = "; ".join(
                f"{'.'.join(map(str, problem['loc']))}: {problem['msg']}"
                for problem in error.errors()
            )
            raise PortfolioBoundsError(
                f"the fill would leave the portfolio with {broken}"
            ) from None


class Trade(NamedTuple):
    """Shares of ``symbol`` bought (``quantity > 0``) or sold for ``cost`` in cash (signed,
    like the quantity), the position then marked at ``price``."""

    symbol: str
    quantity: int
    cost: float
    price: float
    sector: str | None = None


class PortfolioBoundsError(TradeserveError):
    """A fill that would leave the portfolio outside the sane bounds."""

    http_status = 422


class Fill(BaseModel):
    """An executed trade reported back to the service."""

    symbol: str
    side: str = Field(pattern="^(BUY|SELL)$")
    quantity: TradeShares
    price: Price
    sector: Sector | None = None

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str) -> str:
        return valid_symbol(value)

    @property
    def signed_quantity(self) -> int:
        return self.quantity if self.side == "BUY" else -self.quantity
