"""Model lineage carried by every response: which registered version produced it."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelRef(BaseModel):
    """A registered model version as served (immutable, so hashable by its fields)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="Registered model name")
    version: str = Field(description="Registered version number")
    alias: str | None = Field(default=None, description="Alias it was promoted under")
