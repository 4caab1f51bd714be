"""Model lineage carried by every response: which registered version produced it."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ModelRef(BaseModel):
    """A registered model version as served."""

    name: str = Field(description="Registered model name")
    version: str = Field(description="Registered version number")
    alias: str | None = Field(default=None, description="Alias it was promoted under")
