"""Regime logging: register a fitted detector as a version of ``regime-detector`` with an
input example of raw bars, the labelling rule and data-window lineage."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from registry.families import REGIME_DETECTOR_NAME, Family
from training_hooks.features import REGIME_FEATURE_NAMES, min_history
from training_hooks.market_data import DEMO_SOURCES
from training_hooks.regime.runtime import LABELLING_RULE, PARAMS_FILE
from training_hooks.regime.train import RegimeFit
from training_hooks.registration import Lineage, RegisteredVersion, log_pyfunc_model


def regime_input_example(bars: pd.DataFrame, n_rows: int = 5) -> pd.DataFrame:
    """The last ``min_history + n_rows - 1`` bars as a frame with a ``date`` column."""
    needed = min_history(REGIME_FEATURE_NAMES) + n_rows - 1
    return bars.iloc[-needed:].reset_index()


def log_regime(
    fit: RegimeFit,
    market: Mapping[str, pd.DataFrame],
    *,
    data_source: str | None = None,
    description: str | None = None,
) -> RegisteredVersion:
    """Log ``fit`` as a new version of ``regime-detector`` with metrics and lineage."""
    first = market[fit.symbols[0]]
    example = regime_input_example(first.loc[: pd.Timestamp(fit.data_end)])
    source = data_source or "+".join(DEMO_SOURCES.get(s, s) for s in fit.symbols)
    lineage = Lineage(
        data_source=source,
        data_window_start=fit.data_start,
        data_window_end=fit.data_end,
        extra={"symbols": ",".join(fit.symbols), "labelling_rule": LABELLING_RULE},
    )
    return log_pyfunc_model(
        name=REGIME_DETECTOR_NAME,
        family=Family.REGIME,
        artifact_dir=fit.artifact_dir,
        model_config={"params_file": PARAMS_FILE},
        input_example=example,
        lineage=lineage,
        metrics=fit.metrics,
        metadata={
            "feature_spec": fit.params.feature_spec.model_dump(mode="json"),
            "labels": list(fit.params.labels),
        },
        tags={
            "feature_spec_version": fit.params.feature_spec.version,
            "regime_features": ",".join(fit.params.feature_spec.names),
        },
        description=description
        or "3-state Gaussian HMM (hmmlearn fit) run as a causal forward filter",
    )
