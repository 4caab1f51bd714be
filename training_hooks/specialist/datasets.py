"""Specialist training data: feature rows with action labels and the causal regime.

Labels are the forward ``horizon``-bar log return bucketed at ``±threshold`` (BUY above,
SELL below, HOLD between; forward-looking on purpose, as targets only). Each row also
carries the regime detector's causal filtered argmax, which decides which regime
specialist learns from it, and the next-bar return the strategy metrics trade on.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from registry.families import SPECIALIST_ROLES
from training_hooks.features import FEATURE_NAMES, compute_features
from training_hooks.market_data import DEMO_SPLITS, DataSplits
from training_hooks.regime.runtime import REGIME_LABELS, RegimeRuntime
from training_hooks.specialist.runtime import LabelConfig, SpecialistError

HOLD, BUY, SELL = range(3)  # label codes: indices into runtime.ACTIONS
DEFAULT_LABELS = LabelConfig()


def make_action_labels(bars: pd.DataFrame, horizon: int = 5, threshold: float = 0.01) -> pd.Series:
    """Action codes (0 HOLD, 1 BUY, 2 SELL) from the forward ``horizon``-bar log return.

    Bars without a full forward window (the last ``horizon``) get no label.
    """
    log_close = np.log(bars["close"].to_numpy(dtype=np.float64))
    forward = log_close[horizon:] - log_close[:-horizon]
    codes = np.full(len(forward), HOLD, dtype=np.int64)
    codes[forward > threshold] = BUY
    codes[forward < -threshold] = SELL
    return pd.Series(codes, index=bars.index[: len(forward)], name="action")


@dataclass(frozen=True)
class Dataset:
    """Aligned rows: features, action labels, filtered regime, next-bar return, date."""

    features: np.ndarray
    labels: np.ndarray
    regimes: np.ndarray
    next_returns: np.ndarray
    dates: np.ndarray

    def subset(self, mask: np.ndarray) -> Dataset:
        return Dataset(*(getattr(self, f.name)[mask] for f in fields(self)))

    def __len__(self) -> int:
        return len(self.labels)


def _concat(parts: Sequence[Dataset]) -> Dataset:
    return Dataset(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Dataset)))


def build_datasets(
    market: Mapping[str, pd.DataFrame],
    regime: RegimeRuntime,
    labels: LabelConfig = DEFAULT_LABELS,
    splits: DataSplits = DEMO_SPLITS,
) -> dict[str, Dataset]:
    """Training and validation rows of every symbol.

    Labels of a split are made from bars truncated at the split's end, so no target looks
    past it (training targets never see validation prices, validation never sees test).
    """
    parts: dict[str, list[Dataset]] = {"train": [], "validation": []}
    for bars in market.values():
        features = compute_features(bars)
        regimes = regime.filter_probabilities(bars).idxmax(axis=1).reindex(features.index)
        next_return = np.log(bars["close"]).diff().shift(-1).reindex(features.index)
        ends = {"train": splits.train_end, "validation": splits.validation_end}
        split_rows = splits.split(features)
        for split, end in ends.items():
            target = make_action_labels(bars.loc[: pd.Timestamp(end)], **labels.model_dump())
            index = split_rows[split].index.intersection(target.index)
            parts[split].append(
                Dataset(
                    features=features.loc[index].to_numpy(np.float32),
                    labels=target.loc[index].to_numpy(np.int64),
                    regimes=regimes.loc[index].to_numpy(dtype=str),
                    next_returns=next_return.loc[index].to_numpy(np.float64),
                    dates=index.to_numpy(),
                )
            )
    return {split: _concat(rows) for split, rows in parts.items()}


def role_rows(data: Dataset, role: str) -> Dataset:
    """Rows a specialist learns from: its regime, or all rows for ``universal``."""
    if role == "universal":
        return data
    if role not in REGIME_LABELS:
        raise SpecialistError(f"unknown role '{role}'; expected one of {SPECIALIST_ROLES}")
    return data.subset(data.regimes == role)


def specialist_input_example(datasets: Mapping[str, Dataset], n_rows: int = 5) -> pd.DataFrame:
    """A few validation feature rows, named columns in model input order (logged with every
    specialist trained on ``datasets``)."""
    rows = datasets["validation"].features[:n_rows].astype(np.float64)
    return pd.DataFrame(rows, columns=list(FEATURE_NAMES))
