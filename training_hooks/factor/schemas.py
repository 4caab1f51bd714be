"""Factor schemas: what a factor model stores in its ``MLmodel`` ``metadata`` and the
model_manager payload the service publishes for tree-running clients.

The metadata carries the factor list (dimension i = factor i), the IC table (Kendall tau of
each factor against the target return) and the training information of the model_manager
system this family replaces.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from registry.families import Family


class IcEntry(BaseModel):
    """Kendall tau of one factor against the target return (model_manager ``ic.csv`` row)."""

    factor_name: str
    kendall_tau: float | None = None


class TrainingWindow(BaseModel):
    """When and on how much data a model was trained (model_manager's field names), as its
    ``info.pkl``, its model payload and its scan record all carry it."""

    train_start_date: str | None = Field(default=None, description="ISO date of the first row")
    train_end_date: str | None = Field(default=None, description="ISO date of the last row")
    train_window_start_ts: int | None = Field(
        default=None, description="Train window start as an integer timestamp (tradeserve: Unix s)"
    )
    train_window_end_ts: int | None = None
    train_samples: int | None = None
    train_time_sec: float | None = None

    def window(self) -> dict[str, Any]:
        """The training-window fields alone, to copy into a payload or a record."""
        return {name: getattr(self, name) for name in TrainingWindow.model_fields}


class FactorTrainingInfo(TrainingWindow):
    """Training metadata, mirroring model_manager's ``info.pkl`` fields."""

    symbol: str
    return_name: str
    original_factors_count: int | None = None
    final_factors_count: int | None = None
    selected_factors: list[str] = Field(default_factory=list)


class FactorMetadata(BaseModel):
    """What a factor model stores in its ``MLmodel`` ``metadata``."""

    model_config = ConfigDict(extra="ignore")

    family: str = Family.FACTOR.value
    model_name: str
    group_key: str
    objective: str
    factors: list[str]
    ic_table: list[IcEntry] = Field(default_factory=list)
    training_info: FactorTrainingInfo
    feature_version: str | None = Field(
        default=None,
        description="training_hooks.features version when the factors are its features",
    )


class DimFactor(BaseModel):
    """One input dimension of the booster and the factor it reads."""

    dim: int
    factor_name: str
    kendall_tau: float | None = None


class PayloadMetadata(TrainingWindow):
    """model_manager's ``payload.metadata`` fields."""

    model_name: str
    symbol: str
    return_name: str
    feature_dim: int
    model_json_path: str
    source_root_path: str
    scanned_at: str


class FactorPayload(BaseModel):
    """model_manager's model payload: booster JSON text, metadata, dimension → factor."""

    model_json: str
    metadata: PayloadMetadata
    dim_factors: list[DimFactor]
