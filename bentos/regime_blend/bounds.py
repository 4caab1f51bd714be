"""Sane numeric bounds of every number a client sends RegimeBlend (portfolio, bars, fills).

Risk arithmetic on NaN, ±inf or absurd magnitudes either fails open (NaN compares False
against every limit) or overflows, so such numbers are refused at the door (422 naming the
field) rather than checked downstream. The bounds are far beyond any real book: a share
price up to 1e9, up to 1e12 shares, money (cash, equity, position value) up to 1e15 in
magnitude: the scale at which Chronos inputs are refused too.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

MAX_PRICE = 1e9
MAX_SHARES = 10**12
MAX_MONEY = 1e15
MAX_VOLUME = 1e15
MAX_POSITIONS = 10_000
MAX_SECTOR_LENGTH = 64

Price = Annotated[float, Field(gt=0, le=MAX_PRICE, allow_inf_nan=False)]
Money = Annotated[float, Field(ge=-MAX_MONEY, le=MAX_MONEY, allow_inf_nan=False)]
PositiveMoney = Annotated[float, Field(gt=0, le=MAX_MONEY, allow_inf_nan=False)]
Shares = Annotated[int, Field(ge=-MAX_SHARES, le=MAX_SHARES)]
TradeShares = Annotated[int, Field(gt=0, le=MAX_SHARES)]
Volume = Annotated[float, Field(ge=0, le=MAX_VOLUME, allow_inf_nan=False)]
Sector = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_SECTOR_LENGTH,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="Sector for the concentration check (printable text, no control characters)",
    ),
]
