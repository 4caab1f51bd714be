"""Demo specialists: train every role on the demo splits and register them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from registry.families import SPECIALIST_ROLES
from training_hooks.market_data import DEMO_SOURCES
from training_hooks.regime.runtime import RegimeRuntime
from training_hooks.registration import RegisteredVersion
from training_hooks.specialist.log import log_specialist
from training_hooks.specialist.runtime import TrainingConfig
from training_hooks.specialist.train import DEFAULT_TRAINING, train_specialists


def train_demo_specialists(
    market: Mapping[str, pd.DataFrame],
    regime_runtime: RegimeRuntime,
    workdir: Path,
    *,
    roles: Sequence[str] = SPECIALIST_ROLES,
    training: TrainingConfig = DEFAULT_TRAINING,
    regime_version: RegisteredVersion | None = None,
) -> list[RegisteredVersion]:
    """Train and register specialists on the demo splits (train 1999–2012, val 2013–14).

    ``universal`` is trained first (and registered if in ``roles``); with
    ``training.warm_start`` the regime specialists fine-tune from it. Versions come back
    in ``roles`` order.
    """
    results = train_specialists(market, regime_runtime, workdir, roles=roles, training=training)
    source = "+".join(DEMO_SOURCES.get(symbol, symbol) for symbol in market)
    return [
        log_specialist(
            role,
            results[role],
            results.input_example,
            data_source=source,
            regime_version=regime_version,
        )
        for role in roles
    ]
