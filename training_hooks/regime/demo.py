"""Demo regime detector: fit on the demo training window and register it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from registry.families import REGIME_DETECTOR_NAME
from training_hooks.market_data import DEMO_SPLITS
from training_hooks.regime.log import log_regime
from training_hooks.regime.train import fit_regime_detector
from training_hooks.registration import RegisteredVersion


def train_demo_regime(market: Mapping[str, pd.DataFrame], workdir: Path) -> RegisteredVersion:
    """Fit on the demo training window (1999–2012) and register ``regime-detector``."""
    fit = fit_regime_detector(market, DEMO_SPLITS.train_end, Path(workdir) / REGIME_DETECTOR_NAME)
    return log_regime(fit, market)
