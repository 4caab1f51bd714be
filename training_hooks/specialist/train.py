"""Specialist training: supervised fitting of the policy networks and their metrics.

The ``bull``/``bear``/``sideways`` specialists learn from training rows where the regime
detector's causal filtered argmax is their regime; ``universal`` learns from all rows (see
:mod:`training_hooks.specialist.datasets`). Loss is class-weighted cross-entropy with AdamW,
early-stopped on validation loss; regime specialists may warm-start from ``universal``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from registry.families import SPECIALIST_ROLES, specialist_name
from training_hooks.market_data import InsufficientHistoryError
from training_hooks.regime.runtime import RegimeRuntime
from training_hooks.specialist.datasets import (
    BUY,
    DEFAULT_LABELS,
    SELL,
    Dataset,
    build_datasets,
    role_rows,
    specialist_input_example,
)
from training_hooks.specialist.runtime import (
    ACTIONS,
    LabelConfig,
    PolicyArchitecture,
    PolicyNetwork,
    SpecialistConfig,
    SpecialistRuntime,
    TrainingConfig,
    save_specialist,
)

DEFAULT_ARCHITECTURE = PolicyArchitecture()
DEFAULT_TRAINING = TrainingConfig()


# --- metrics ------------------------------------------------------------------------------


def classification_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Accuracy, macro-F1 and log-loss of action probabilities against labels."""
    predicted = probs.argmax(axis=1)
    f1s = []
    for action in range(len(ACTIONS)):
        tp = float(((predicted == action) & (labels == action)).sum())
        fp = float(((predicted == action) & (labels != action)).sum())
        fn = float(((predicted != action) & (labels == action)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    picked = np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0)
    return {
        "accuracy": float((predicted == labels).mean()),
        "macro_f1": float(np.mean(f1s)),
        "log_loss": float(-np.log(picked).mean()),
    }


def strategy_sharpe(actions: np.ndarray, next_returns: np.ndarray, dates: np.ndarray) -> float:
    """Annualized Sharpe of trading each action for one bar (BUY +1, SELL −1, HOLD 0),
    equal-weighted across symbols per date."""
    position = np.select([actions == BUY, actions == SELL], [1.0, -1.0], 0.0)
    daily = pd.Series(position * next_returns).groupby(dates).mean()
    std = float(daily.std(ddof=1))
    return float(daily.mean() / std * math.sqrt(252)) if std > 0 else 0.0


def evaluation_metrics(
    probs: np.ndarray, data: Dataset, train_labels: np.ndarray, prefix: str
) -> dict[str, float]:
    """Classification, constant-baseline and strategy metrics on ``data``."""
    metrics = classification_metrics(probs, data.labels)
    prior = np.bincount(train_labels, minlength=len(ACTIONS)) / len(train_labels)
    baseline = classification_metrics(np.tile(prior, (len(data), 1)), data.labels)
    metrics |= {f"baseline_{k}": v for k, v in baseline.items()}
    metrics["sharpe"] = strategy_sharpe(probs.argmax(axis=1), data.next_returns, data.dates)
    always_long = np.full(len(data), BUY)
    metrics["buy_hold_sharpe"] = strategy_sharpe(always_long, data.next_returns, data.dates)
    metrics["rows"] = float(len(data))
    return {f"{prefix}_{k}": v for k, v in metrics.items()}


# --- training -----------------------------------------------------------------------------


class SpecialistTraining(BaseModel):
    """Outcome of training one specialist."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    role: str
    artifact_dir: Path
    config: SpecialistConfig
    metrics: dict[str, float]
    validation_scope: str = Field(description="val_* metrics on 'regime' or 'all' val rows")
    early_stopping: str = Field(description="'validation' rows or the training 'train_tail'")
    network: PolicyNetwork = Field(exclude=True)
    train_start: date
    train_end: date


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Tiny networks train faster on one thread; restore the caller's setting after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _class_weights(labels: np.ndarray) -> torch.Tensor:
    counts = np.bincount(labels, minlength=len(ACTIONS)).astype(np.float64)
    weights = len(labels) / (len(ACTIONS) * np.maximum(counts, 1.0))
    return torch.as_tensor(weights, dtype=torch.float32)


def _fit_network(
    train: Dataset,
    validation: Dataset,
    architecture: PolicyArchitecture,
    config: TrainingConfig,
    init: PolicyNetwork | None = None,
) -> tuple[PolicyNetwork, int, float]:
    """Train with early stopping; returns the best network, its epoch and val loss.

    With ``init`` the network starts from its weights and input standardization
    (fine-tuning at ``config.finetune_learning_rate``); epoch 0 is that starting point.
    Initialization, shuffling and dropout are seeded; the caller's RNG state is restored.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        network = PolicyNetwork(architecture)
        if init is None:
            network.set_standardization(train.features.mean(axis=0), train.features.std(axis=0))
        else:
            network.load_state_dict(init.state_dict())
        return _optimize(network, train, validation, config, warm=init is not None)


def _optimize(
    network: PolicyNetwork, train: Dataset, validation: Dataset, config: TrainingConfig, warm: bool
) -> tuple[PolicyNetwork, int, float]:
    loss_fn = nn.CrossEntropyLoss(weight=_class_weights(train.labels))
    learning_rate = config.finetune_learning_rate if warm else config.learning_rate
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=learning_rate, weight_decay=config.weight_decay
    )
    x, y = torch.from_numpy(train.features), torch.from_numpy(train.labels)
    x_val, y_val = torch.from_numpy(validation.features), torch.from_numpy(validation.labels)

    def validation_loss() -> float:
        network.eval()
        with torch.inference_mode():
            return float(loss_fn(network(x_val), y_val))

    generator = torch.Generator().manual_seed(config.seed)
    best = (validation_loss() if warm else math.inf, 0, _state(network))
    for epoch in range(1, config.max_epochs + 1):
        network.train()
        for batch in torch.randperm(len(y), generator=generator).split(config.batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss_fn(network(x[batch]), y[batch]).backward()
            optimizer.step()
        val_loss = validation_loss()
        if val_loss < best[0] - 1e-5:
            best = (val_loss, epoch, _state(network))
        elif epoch - best[1] >= config.patience:
            break
    network.load_state_dict(best[2])
    return network.eval(), best[1], best[0]


def _state(network: nn.Module) -> dict[str, torch.Tensor]:
    return copy.deepcopy(network.state_dict())


def early_stopping_rows(
    train: Dataset, validation: Dataset, config: TrainingConfig, horizon: int
) -> tuple[Dataset, Dataset, str]:
    """Training rows, early-stopping rows and where the latter come from.

    The in-regime validation rows when there are enough of them; otherwise the
    chronologically last ``config.holdout_fraction`` of the training rows, with the
    ``horizon`` bars before them purged so no training target overlaps them.
    """
    if len(validation) >= config.min_validation_rows:
        return train, validation, "validation"
    cutoff = np.quantile(
        train.dates.astype("datetime64[ns]").astype(np.int64), 1.0 - config.holdout_fraction
    )
    stamps = train.dates.astype("datetime64[ns]").astype(np.int64)
    purge = np.timedelta64(2 * horizon, "D").astype("timedelta64[ns]").astype(np.int64)
    return train.subset(stamps < cutoff - purge), train.subset(stamps >= cutoff), "train_tail"


def train_specialist(
    role: str,
    datasets: Mapping[str, Dataset],
    out_dir: Path,
    *,
    training: TrainingConfig = DEFAULT_TRAINING,
    labels: LabelConfig = DEFAULT_LABELS,
    architecture: PolicyArchitecture = DEFAULT_ARCHITECTURE,
    init: PolicyNetwork | None = None,
) -> SpecialistTraining:
    """Train the ``role`` specialist, write its artifact to ``out_dir`` and report metrics.

    ``init`` (normally the universal network) warm-starts a regime specialist.
    """
    rows = role_rows(datasets["train"], role)
    if len(rows) < training.batch_size:
        raise InsufficientHistoryError(training.batch_size, len(rows), f"{role} training rows")
    in_regime = role_rows(datasets["validation"], role)
    train, stopping, stopping_source = early_stopping_rows(
        rows, in_regime, training, labels.horizon
    )
    with _torch_threads(1):
        network, epoch, stop_loss = _fit_network(train, stopping, architecture, training, init)
    config = SpecialistConfig(
        role=role, architecture=architecture, labels=labels, training=training
    )
    runtime = SpecialistRuntime(config, network)
    scope = "regime" if len(in_regime) >= training.min_validation_rows else "all"
    validation = in_regime if scope == "regime" else datasets["validation"]
    metrics = evaluation_metrics(
        runtime.probabilities(validation.features), validation, rows.labels, "val"
    )
    if scope == "regime" and role != "universal":
        everything = datasets["validation"]
        metrics |= evaluation_metrics(
            runtime.probabilities(everything.features), everything, rows.labels, "val_all"
        )
    metrics |= evaluation_metrics(
        runtime.probabilities(train.features), train, rows.labels, "train"
    )
    metrics |= {"best_epoch": float(epoch), "early_stopping_loss": stop_loss}
    save_specialist(config, network, out_dir)
    dates = pd.DatetimeIndex(rows.dates)
    return SpecialistTraining(
        role=role,
        artifact_dir=Path(out_dir),
        config=config,
        metrics=metrics,
        validation_scope=scope,
        early_stopping=stopping_source,
        network=network,
        train_start=dates.min().date(),
        train_end=dates.max().date(),
    )


@dataclass(frozen=True)
class TrainedSpecialists:
    """Training results by role, plus the input example to log them with."""

    results: dict[str, SpecialistTraining]
    input_example: pd.DataFrame

    def __getitem__(self, role: str) -> SpecialistTraining:
        return self.results[role]


def train_specialists(
    market: Mapping[str, pd.DataFrame],
    regime_runtime: RegimeRuntime,
    workdir: Path,
    *,
    roles: Sequence[str] = SPECIALIST_ROLES,
    training: TrainingConfig = DEFAULT_TRAINING,
    labels: LabelConfig = DEFAULT_LABELS,
) -> TrainedSpecialists:
    """Train ``roles`` (universal first) into ``workdir/specialist-<role>`` without logging."""
    datasets = build_datasets(market, regime_runtime, labels)
    results: dict[str, SpecialistTraining] = {}
    needs_universal = "universal" in roles or training.warm_start
    order = (["universal"] if needs_universal else []) + [r for r in roles if r != "universal"]
    for role in order:
        init = results["universal"].network if role != "universal" and training.warm_start else None
        results[role] = train_specialist(
            role,
            datasets,
            Path(workdir) / specialist_name(role),
            training=training,
            labels=labels,
            init=init,
        )
    return TrainedSpecialists(results, specialist_input_example(datasets))
