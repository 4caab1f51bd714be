"""Request and response schemas of the Specialists service."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from bentos.shared.lineage import ModelRef

Role = Literal["bull", "bear", "sideways", "universal"]
# Features are returns, ratios and z-scores: 1e15 is far past any real one, and rows past
# float32's range (3.4e38) would overflow the network into NaN probabilities.
MAX_ABS_FEATURE = 1e15

# checked by pydantic-core, not a Python validator per number: the composite builds these
# for every decision and the Specialists service validates them again
Feature = Annotated[float, Field(ge=-MAX_ABS_FEATURE, le=MAX_ABS_FEATURE, allow_inf_nan=False)]


class ObservationTask(BaseModel):
    """One observation for one specialist (the unit the batched endpoint coalesces)."""

    specialist: Role = Field(description="Role: bull, bear, sideways or universal")
    observation: list[Feature] = Field(
        min_length=1, description="One feature row (finite, |value| <= 1e15)"
    )


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
