"""Specialist runtime: a small PyTorch policy network over the shared features.

A specialist maps one feature row (:data:`~training_hooks.features.FEATURE_NAMES`) to
probabilities over :data:`ACTIONS`. Its artifact folder holds ``config.json`` (architecture,
feature spec, action order, role, label definition) and ``model.safetensors`` (weights and
the input standardization), never a pickle. The config schema lives here because loading
validates it; training settings travel in it for lineage only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from torch import nn

from registry.errors import TradeserveError
from registry.families import Family
from training_hooks.features import FEATURE_NAMES, FEATURE_SPEC, FeatureSpec

ACTIONS: tuple[str, ...] = ("HOLD", "BUY", "SELL")
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

    def width_problem(self, observation: Sequence[float]) -> str | None:
        """Why this specialist cannot score ``observation`` (None when it can)."""
        width = len(self.feature_names)
        if len(observation) != width:
            return f"the {self.role} specialist expects {width} features, got {len(observation)}"
        return None

    def check_observations(self, observations: Sequence[Sequence[float]]) -> None:
        """Raise :class:`SpecialistError` naming the first row this specialist cannot score."""
        width = len(self.feature_names)
        for index, row in enumerate(observations):
            if len(row) != width:
                raise SpecialistError(
                    f"observations[{index}] has {len(row)} values; the {self.role} specialist "
                    f"expects {width}: {', '.join(self.feature_names)}"
                )
        if not np.isfinite(np.asarray(observations, dtype=np.float64)).all():
            raise SpecialistError("observations contain NaN or inf")

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


# --- artifact files -----------------------------------------------------------------------


def read_config(artifact_dir: Path) -> SpecialistConfig:
    path = Path(artifact_dir) / CONFIG_FILE
    if not path.is_file():
        raise SpecialistError(f"specialist config not found: {path}")
    try:
        return SpecialistConfig.model_validate_json(path.read_text())
    except ValueError as error:
        raise SpecialistError(f"{path} is not a valid specialist config: {error}") from error


def save_specialist(config: SpecialistConfig, network: PolicyNetwork, artifact_dir: Path) -> Path:
    """Write a specialist artifact folder (the files :meth:`SpecialistRuntime.load` reads);
    returns it. Next to :func:`read_config` so the format is defined in one place."""
    artifact_dir = Path(artifact_dir)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    (artifact_dir / CONFIG_FILE).write_text(config.model_dump_json(indent=2))
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    save_file(state, str(artifact_dir / WEIGHTS_FILE), metadata={"role": config.role})
    return artifact_dir
