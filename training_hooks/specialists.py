"""Regime specialists: small PyTorch policy networks over the shared features.

A specialist maps one feature row (:data:`~training_hooks.features.FEATURE_NAMES`) to
probabilities over :data:`ACTIONS`. Its artifact folder holds ``config.json`` (architecture,
feature spec, action order, role, label definition) and ``model.safetensors`` (weights and
the input standardization), never a pickle.

Training is supervised: labels are the forward ``horizon``-bar log return bucketed at
``±threshold`` (BUY above, SELL below, HOLD between; forward-looking on purpose, as targets
only). The ``bull``/``bear``/``sideways`` specialists learn from training rows where the
regime detector's causal filtered argmax is their regime; ``universal`` learns from all rows.
Loss is class-weighted cross-entropy with Adam, early-stopped on validation loss.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import nn

from registry.errors import TradeserveError
from registry.families import SPECIALIST_ROLES, Family, specialist_name
from training_hooks.features import FEATURE_NAMES, FEATURE_SPEC, FeatureSpec, compute_features
from training_hooks.market_data import (
    DEMO_SOURCES,
    DEMO_SPLITS,
    DataSplits,
    InsufficientHistoryError,
)
from training_hooks.regime import REGIME_LABELS, RegimeRuntime
from training_hooks.registration import Lineage, RegisteredVersion, log_pyfunc_model, requirements

ACTIONS: tuple[str, ...] = ("HOLD", "BUY", "SELL")
HOLD, BUY, SELL = range(3)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class SpecialistError(TradeserveError):
    """A specialist artifact or input that cannot be used (says what to fix)."""


# --- schemas ------------------------------------------------------------------------------


class PolicyArchitecture(BaseModel):
    """Shape of :class:`PolicyNetwork`."""

    model_config = ConfigDict(frozen=True)

    n_features: int = Field(default=len(FEATURE_NAMES), ge=1)
    hidden: tuple[int, ...] = (64, 64)
    n_actions: int = len(ACTIONS)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    input_clip: float = Field(default=8.0, gt=0, description="Clip standardized inputs to ±this")


class LabelConfig(BaseModel):
    """How training targets are made from forward returns."""

    model_config = ConfigDict(frozen=True)

    horizon: int = Field(default=5, ge=1, description="Bars ahead for the forward log return")
    threshold: float = Field(default=0.01, gt=0, description="BUY above +thr, SELL below −thr")


class TrainingConfig(BaseModel):
    """Optimizer and early-stopping settings (deterministic for a given seed)."""

    model_config = ConfigDict(frozen=True)

    max_epochs: int = Field(default=150, ge=1)
    batch_size: int = Field(default=256, ge=8)
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = Field(default=12, ge=1, description="Epochs without val improvement")
    seed: int = 0
    finetune_learning_rate: float = Field(default=3e-4, description="When warm-started")
    warm_start: bool = Field(default=True, description="Regime specialists start from universal")
    min_validation_rows: int = Field(
        default=100, description="Fewer in-regime validation rows → early-stop on train tail"
    )
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)


class SpecialistConfig(BaseModel):
    """``config.json`` of a specialist artifact."""

    model_config = ConfigDict(frozen=True)

    format_version: int = 1
    role: str
    actions: tuple[str, ...] = ACTIONS
    architecture: PolicyArchitecture = PolicyArchitecture()
    feature_spec: FeatureSpec = FEATURE_SPEC
    labels: LabelConfig = LabelConfig()
    training: TrainingConfig | None = None


DEFAULT_ARCHITECTURE = PolicyArchitecture()
DEFAULT_LABELS = LabelConfig()
DEFAULT_TRAINING = TrainingConfig()


# --- network and runtime ------------------------------------------------------------------


class PolicyNetwork(nn.Module):
    """Standardize → clip → [Linear → LayerNorm → ReLU → Dropout]×n → Linear (logits)."""

    def __init__(self, architecture: PolicyArchitecture) -> None:
        super().__init__()
        self.architecture = architecture
        self.input_clip = architecture.input_clip
        self.register_buffer("feature_mean", torch.zeros(architecture.n_features))
        self.register_buffer("feature_scale", torch.ones(architecture.n_features))
        layers: list[nn.Module] = []
        width = architecture.n_features
        for hidden in architecture.hidden:
            layers += [
                nn.Linear(width, hidden),
                nn.LayerNorm(hidden),
                nn.ReLU(),
                nn.Dropout(architecture.dropout),
            ]
            width = hidden
        layers.append(nn.Linear(width, architecture.n_actions))
        self.body = nn.Sequential(*layers)

    def set_standardization(self, mean: np.ndarray, scale: np.ndarray) -> None:
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.feature_scale.copy_(torch.as_tensor(np.maximum(scale, 1e-8), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x - self.feature_mean) / self.feature_scale).clamp(-self.input_clip, self.input_clip)
        return self.body(z)


def _check_device(device: str) -> torch.device:
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        raise SpecialistError(f"device '{device}' requested but CUDA is not available; use 'cpu'")
    return target


class SpecialistRuntime:
    """A loaded specialist: batched action probabilities on CPU or CUDA."""

    family: ClassVar[Family] = Family.SPECIALIST

    def __init__(
        self, config: SpecialistConfig, network: PolicyNetwork, device: str = "cpu"
    ) -> None:
        self.config = config
        self.role = config.role
        self.actions = tuple(config.actions)
        self.feature_names = tuple(config.feature_spec.names)
        self.device = _check_device(device)
        self.network = network.to(self.device).eval()

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    @classmethod
    def load(cls, artifact_dir: Path, config: Mapping[str, Any], device: str = "cpu") -> Self:
        """Build from ``config.json`` + ``model.safetensors`` in ``artifact_dir``."""
        artifact_dir = Path(artifact_dir)
        spec = read_config(artifact_dir)
        if config.get("role") not in (None, spec.role):
            raise SpecialistError(
                f"artifact holds the '{spec.role}' specialist, not '{config['role']}'"
            )
        spec.feature_spec.require_current()
        if spec.actions != ACTIONS:
            raise SpecialistError(f"unsupported action order {spec.actions}; expected {ACTIONS}")
        network = PolicyNetwork(spec.architecture)
        target = _check_device(device)
        weights_path = artifact_dir / WEIGHTS_FILE
        if not weights_path.is_file():
            raise SpecialistError(f"specialist weights not found: {weights_path}")
        state = load_file(str(weights_path), device=str(target))
        network.to(target)
        try:
            network.load_state_dict(state)
        except RuntimeError as error:
            raise SpecialistError(f"{weights_path} does not match config.json: {error}") from error
        return cls(spec, network, device=str(target))

    def save(self, artifact_dir: Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``artifact_dir``."""
        return save_specialist(self.config, self.network, artifact_dir)

    def probabilities(self, observations: np.ndarray) -> np.ndarray:
        """Action probabilities ``[B, 3]`` (HOLD, BUY, SELL) for feature rows ``[B, F]``."""
        batch = np.asarray(observations, dtype=np.float32)
        if batch.ndim == 1:
            batch = batch[None, :]
        if batch.ndim != 2 or batch.shape[1] != len(self.feature_names):
            raise SpecialistError(
                f"observations must have shape [batch, {len(self.feature_names)}] "
                f"(features {', '.join(self.feature_names)}), got {list(np.shape(observations))}"
            )
        if not np.isfinite(batch).all():
            raise SpecialistError("observations contain NaN or inf")
        if not batch.flags.writeable:  # e.g. views of frames MLflow built; torch needs writable
            batch = batch.copy()
        with torch.inference_mode():
            logits = self.network(torch.from_numpy(batch).to(self.device))
            probs = torch.softmax(logits.float(), dim=-1)
        return probs.cpu().numpy().astype(np.float64)

    def predict(self, frame: pd.DataFrame, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Feature columns (by name, any extra ignored) → ``HOLD, BUY, SELL`` probabilities."""
        missing = [name for name in self.feature_names if name not in frame.columns]
        if missing:
            raise SpecialistError(f"input lacks feature column(s) {', '.join(missing)}")
        probs = self.probabilities(frame[list(self.feature_names)].to_numpy(dtype=np.float32))
        return pd.DataFrame(probs, columns=list(self.actions), index=frame.index)

    @classmethod
    def check_output(
        cls, frame: pd.DataFrame, output: pd.DataFrame, params: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Problems with ``output``: wrong columns/rows, values outside [0, 1], bad sums."""
        if list(output.columns) != list(ACTIONS):
            return [f"output columns {list(output.columns)} are not {list(ACTIONS)}"]
        problems = []
        if len(output) != len(frame):
            problems.append(f"expected {len(frame)} rows, got {len(output)}")
        values = output.to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            problems.append("action probabilities contain NaN or inf")
        elif ((values < 0) | (values > 1)).any():
            problems.append("action probabilities outside [0, 1]")
        elif not np.allclose(values.sum(axis=1), 1.0, atol=1e-5, rtol=0):
            problems.append("action probabilities do not sum to 1 (±1e-5)")
        return problems


def read_config(artifact_dir: Path) -> SpecialistConfig:
    path = Path(artifact_dir) / CONFIG_FILE
    if not path.is_file():
        raise SpecialistError(f"specialist config not found: {path}")
    try:
        return SpecialistConfig.model_validate_json(path.read_text())
    except ValueError as error:
        raise SpecialistError(f"{path} is not a valid specialist config: {error}") from error


def save_specialist(config: SpecialistConfig, network: PolicyNetwork, artifact_dir: Path) -> Path:
    """Write a specialist artifact folder; returns it."""
    artifact_dir = Path(artifact_dir)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    (artifact_dir / CONFIG_FILE).write_text(config.model_dump_json(indent=2))
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    save_file(state, str(artifact_dir / WEIGHTS_FILE), metadata={"role": config.role})
    return artifact_dir


# --- data ---------------------------------------------------------------------------------


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


# --- logging ------------------------------------------------------------------------------


def _torch_requirement() -> str:
    import importlib.metadata

    return "torch==" + importlib.metadata.version("torch").split("+")[0]


def specialist_input_example(datasets: Mapping[str, Dataset], n_rows: int = 5) -> pd.DataFrame:
    """A few validation feature rows, named columns in model input order."""
    rows = datasets["validation"].features[:n_rows].astype(np.float64)
    return pd.DataFrame(rows, columns=list(FEATURE_NAMES))


def log_specialist(
    role: str,
    result: SpecialistTraining,
    input_example: pd.DataFrame,
    *,
    data_source: str,
    regime_version: RegisteredVersion | None = None,
    description: str | None = None,
) -> RegisteredVersion:
    """Log a trained specialist as a new version of ``specialist-<role>``."""
    tags = {
        "role": role,
        "feature_spec_version": result.config.feature_spec.version,
        "actions": ",".join(result.config.actions),
        "validation_scope": result.validation_scope,
        "label_horizon": str(result.config.labels.horizon),
        "label_threshold": str(result.config.labels.threshold),
    }
    if regime_version is not None:
        tags["regime_detector"] = f"{regime_version.name}/{regime_version.version}"
    lineage = Lineage(
        data_source=data_source,
        data_window_start=result.train_start,
        data_window_end=result.train_end,
    )
    return log_pyfunc_model(
        name=specialist_name(role),
        family=Family.SPECIALIST,
        artifact_dir=result.artifact_dir,
        model_config={"role": role},
        input_example=input_example,
        lineage=lineage,
        params=None,
        metrics=result.metrics,
        metadata={
            "role": role,
            "actions": list(result.config.actions),
            "feature_spec": result.config.feature_spec.model_dump(mode="json"),
        },
        tags=tags,
        description=description or f"{role} regime specialist: MLP policy over HOLD/BUY/SELL",
        pip_requirements=[
            *requirements("mlflow", "pandas", "numpy", "pydantic", "safetensors"),
            _torch_requirement(),
        ],
    )


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
