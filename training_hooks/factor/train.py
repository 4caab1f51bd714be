"""Factor training: the demo models, real factors on real index data.

Features at day t predict the next-day log return; factors are selected by |Kendall tau|
on the train split (1999-2012) and the booster is evaluated on validation (2013-2014).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from scipy.stats import kendalltau

from training_hooks.factor.log import ic_table_for
from training_hooks.factor.runtime import DEFAULT_NTHREAD
from training_hooks.factor.schemas import FactorTrainingInfo, IcEntry
from training_hooks.features import FEATURE_NAMES, compute_features
from training_hooks.market_data import DEMO_SPLITS, DataSplits

DEMO_SYMBOLS = ("SPX", "NASDAQ")
DEMO_RETURN_NAME = "ret_1d"
DEMO_TOP_FACTORS = 10
DEMO_ROUNDS = 100
DEMO_PARAMS: dict[str, Any] = {
    "objective": "reg:squarederror",
    "max_depth": 3,
    "eta": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 20,
    "tree_method": "hist",
    "seed": 0,
    "nthread": 1,
}
TARGET = "target"


def demo_dataset(bars: pd.DataFrame, splits: DataSplits = DEMO_SPLITS) -> dict[str, pd.DataFrame]:
    """Features at day t plus the next-day log return (``target``), split by realization.

    Bars after ``splits.validation_end`` are dropped before anything is computed, and a
    row belongs to the split in which its target is realized, so no train row sees a
    validation-period return. Keys: ``train``, ``validation`` (``test`` stays empty).
    """
    bars = bars.loc[: pd.Timestamp(splits.validation_end)]
    features = compute_features(bars)
    log_close = np.log(bars["close"])
    target = (log_close.shift(-1) - log_close).reindex(features.index)
    realized_on = pd.Series(bars.index, index=bars.index).shift(-1).reindex(features.index)
    keep = target.notna().to_numpy()
    frame = features.assign(**{TARGET: target, "feature_date": features.index})[keep]
    parts = splits.split(frame.set_index(pd.DatetimeIndex(realized_on[keep])))
    return {key: part.set_index("feature_date").rename_axis("date") for key, part in parts.items()}


def select_factors(ic_table: Sequence[IcEntry], top: int = DEMO_TOP_FACTORS) -> list[str]:
    """The ``top`` factors by |Kendall tau| (ties keep table order)."""
    ranked = sorted(
        (entry for entry in ic_table if entry.kendall_tau is not None),
        key=lambda entry: -abs(entry.kendall_tau or 0.0),
    )
    return [entry.factor_name for entry in ranked[:top]]


def evaluate_returns(predicted: np.ndarray, realized: np.ndarray) -> dict[str, float]:
    """RMSE, IC (Kendall tau) and directional hit rate of return predictions."""
    predicted, realized = np.asarray(predicted, float), np.asarray(realized, float)
    moved = realized != 0
    hits = np.sign(predicted[moved]) == np.sign(realized[moved])
    return {
        "rmse": float(np.sqrt(np.mean((predicted - realized) ** 2))),
        "ic": float(kendalltau(predicted, realized).statistic),
        "hit_rate": float(hits.mean()),
    }


@dataclass(frozen=True)
class DemoFit:
    """One trained demo model before it is logged."""

    group_key: str
    booster: xgb.Booster
    factors: list[str]
    ic_table: list[IcEntry]
    info: FactorTrainingInfo
    metrics: dict[str, float]
    example: pd.DataFrame


def fit_demo_factor_model(symbol: str, bars: pd.DataFrame) -> DemoFit:
    """Select factors on train (1999-2012), fit, evaluate on validation (2013-2014)."""
    data = demo_dataset(bars)
    train, valid = data["train"], data["validation"]
    ic_table = ic_table_for(train[list(FEATURE_NAMES)], train[TARGET])
    factors = select_factors(ic_table)
    started = time.perf_counter()
    booster = xgb.train(DEMO_PARAMS, xgb.DMatrix(train[factors], label=train[TARGET]), DEMO_ROUNDS)
    train_time = time.perf_counter() - started
    booster.set_param({"nthread": DEFAULT_NTHREAD})
    predicted = booster.inplace_predict(valid[factors].to_numpy(dtype=np.float32))
    scores = evaluate_returns(predicted, valid[TARGET].to_numpy())
    baseline = evaluate_returns(np.zeros(len(valid)), valid[TARGET].to_numpy())
    metrics = {f"val_{key}": value for key, value in scores.items()}
    metrics["val_rmse_zero_baseline"] = baseline["rmse"]
    return DemoFit(
        group_key=f"{symbol}_{DEMO_RETURN_NAME}",
        booster=booster,
        factors=factors,
        ic_table=ic_table,
        info=_demo_info(symbol, train, factors, train_time),
        metrics=metrics,
        example=valid[factors].head(3).reset_index(drop=True),
    )


def _demo_info(
    symbol: str, train: pd.DataFrame, factors: list[str], train_time: float
) -> FactorTrainingInfo:
    start, end = train.index[0], train.index[-1]
    return FactorTrainingInfo(
        symbol=symbol,
        return_name=DEMO_RETURN_NAME,
        train_start_date=start.date().isoformat(),
        train_end_date=end.date().isoformat(),
        train_window_start_ts=int(start.timestamp()),
        train_window_end_ts=int(end.timestamp()),
        train_samples=len(train),
        train_time_sec=round(train_time, 4),
        original_factors_count=len(FEATURE_NAMES),
        final_factors_count=len(factors),
        selected_factors=factors,
    )
