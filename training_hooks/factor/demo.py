"""Factor demo: train and register ``factor-<SYMBOL>_ret_1d`` for the demo symbols."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from training_hooks.factor.log import log_factor, write_artifact_group
from training_hooks.factor.runtime import FactorInputError, factor_model_name
from training_hooks.factor.train import DEMO_SYMBOLS, fit_demo_factor_model
from training_hooks.features import FEATURE_VERSION
from training_hooks.market_data import DEMO_SOURCES, DEMO_SPLITS, data_window
from training_hooks.registration import Lineage, RegisteredVersion


def train_demo_factor_models(
    market: Mapping[str, pd.DataFrame], workdir: Path
) -> list[RegisteredVersion]:
    """Train and register ``factor-<SYMBOL>_ret_1d`` for SPX and NASDAQ (real OHLCV bars).

    Each group is also written to ``workdir`` in model_manager's layout, so the export can
    be re-imported (the importer recognises it as unchanged).
    """
    missing = [symbol for symbol in DEMO_SYMBOLS if symbol not in market]
    if missing:
        raise FactorInputError(f"demo market data lacks {', '.join(missing)}")
    return [_register_demo_model(symbol, market[symbol], Path(workdir)) for symbol in DEMO_SYMBOLS]


def _register_demo_model(symbol: str, bars: pd.DataFrame, workdir: Path) -> RegisteredVersion:
    fit = fit_demo_factor_model(symbol, bars)
    write_artifact_group(workdir, fit.group_key, fit.booster, fit.factors, fit.ic_table, fit.info)
    first_bar, last_bar = data_window({symbol: bars}, DEMO_SPLITS.validation_end)
    lineage = Lineage(
        data_source=DEMO_SOURCES.get(symbol, symbol),
        data_window_start=first_bar,
        data_window_end=last_bar,
        extra={"feature_version": FEATURE_VERSION},
    )
    return log_factor(
        factor_model_name(fit.group_key),
        fit.booster,
        factors=fit.factors,
        ic_table=fit.ic_table,
        training_info=fit.info,
        lineage=lineage,
        metrics=fit.metrics,
        input_example=fit.example,
        description=f"Next-day log return of {symbol} from causal OHLCV factors.",
        feature_version=FEATURE_VERSION,
    )
