"""Request and response schemas of the Specialists service."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from bentos.shared.lineage import ModelRef

Role = Literal["bull", "bear", "sideways", "universal"]


class ObservationTask(BaseModel):
    """One observation for one specialist (the unit the batched endpoint coalesces)."""

    specialist: Role = Field(description="Role: bull, bear, sideways or universal")
    observation: list[float] = Field(min_length=1, description="One feature row")

    @field_validator("observation")
    @classmethod
    def _finite(cls, values: list[float]) -> list[float]:
        if not all(math.isfinite(value) for value in values):
            raise ValueError("observation contains NaN or inf")
        return values


class ObservationResult(BaseModel):
    """One task's answer. A task the served model cannot take (a role not served, a row of
    the wrong width) gets ``error`` instead of failing the other callers of its batch."""

    probabilities: list[float] = Field(default_factory=list, description="HOLD, BUY, SELL")
    model: ModelRef | None = None
    error: str | None = None


class SpecialistActions(BaseModel):
    probabilities: list[list[float]] = Field(description="Per observation: HOLD, BUY, SELL")
    actions: list[str] = Field(description="Most probable action per observation")
    model: ModelRef


class ActResponse(BaseModel):
    action_order: list[str]
    results: dict[str, SpecialistActions]


class ServedSpecialist(BaseModel):
    role: str
    model: ModelRef
    features: list[str]
    parameters: int
    device: str


class SpecialistsResponse(BaseModel):
    action_order: list[str]
    specialists: list[ServedSpecialist]
