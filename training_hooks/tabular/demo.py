"""Tabular demo: a small scikit-learn RandomForest classifier of the S&P 500's next-day
direction from the demo features, logged with ``mlflow.sklearn`` like N1V1's models."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from sklearn.ensemble import RandomForestClassifier

from training_hooks.factor.train import TARGET, demo_dataset
from training_hooks.features import FEATURE_NAMES, FEATURE_VERSION
from training_hooks.market_data import DEMO_SOURCES, DEMO_SPLITS, data_window
from training_hooks.registration import Lineage, RegisteredVersion
from training_hooks.tabular.log import log_tabular

DEMO_NAME = "spx-direction-rf"
DEMO_SYMBOL = "SPX"
DEMO_TREES = 10  # the demo runs in many test fixtures: small and fast


def train_demo_forest(market: Mapping[str, pd.DataFrame]) -> RegisteredVersion:
    """Fit on the train split (1999-2012), score on validation (2013-2014), register."""
    bars = market[DEMO_SYMBOL]
    data = demo_dataset(bars)
    features = list(FEATURE_NAMES)
    train, valid = (data[key].dropna(subset=[*features, TARGET]) for key in ("train", "validation"))
    forest = RandomForestClassifier(
        n_estimators=DEMO_TREES, max_depth=6, min_samples_leaf=20, random_state=0, n_jobs=1
    )
    forest.fit(train[features], (train[TARGET] > 0).astype(int))
    up = (valid[TARGET] > 0).astype(int)
    metrics = {
        "val_accuracy": float((forest.predict(valid[features]) == up).mean()),
        "val_up_rate": float(up.mean()),
    }
    first_bar, last_bar = data_window({DEMO_SYMBOL: bars}, DEMO_SPLITS.validation_end)
    lineage = Lineage(
        data_source=DEMO_SOURCES[DEMO_SYMBOL],
        data_window_start=first_bar,
        data_window_end=last_bar,
        extra={"feature_version": FEATURE_VERSION},
    )
    return log_tabular(
        DEMO_NAME,
        forest,
        input_example=valid[features].head(3),
        lineage=lineage,
        metrics=metrics,
        description=f"Next-day direction of {DEMO_SYMBOL} (1 = up) from causal OHLCV features; "
        f"{DEMO_TREES} trees.",
    )
