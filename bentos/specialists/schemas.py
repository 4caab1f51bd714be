"""Request and response schemas of the Specialists service."""

from __future__ import annotations

from pydantic import BaseModel, Field

from bentos.shared.lineage import ModelRef


class ObservationTask(BaseModel):
    """One observation for one specialist (the unit the batched endpoint coalesces)."""

    specialist: str = Field(description="Role: bull, bear, sideways or universal")
    observation: list[float]


class ObservationResult(BaseModel):
    probabilities: list[float] = Field(description="HOLD, BUY, SELL")
    model: ModelRef


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
