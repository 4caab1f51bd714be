"""Fixtures of the unit tests (pure logic, no server, no shared registry)."""

from __future__ import annotations

import pandas as pd
import pytest

from training_hooks.market_data import load_demo_market_data


@pytest.fixture(scope="module")
def market() -> dict[str, pd.DataFrame]:
    """The demo daily bars (S&P 500 and NASDAQ) by symbol, loaded once per module."""
    return load_demo_market_data()
