"""Lineage of registered versions (tags, creation time), read once per version.

The lineage tags a route reports (``scanned_at``, ``source_pkl``, ...) are written when a
version is registered and never change, so one registry query per version is enough.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache

from pydantic import BaseModel

from registry import store


class VersionLineage(BaseModel):
    tags: dict[str, str]
    created_at: str


@lru_cache(maxsize=4096)
def version_lineage(name: str, version: str) -> VersionLineage:
    """Tags and creation time of ``name`` version ``version``."""
    with store.translate_errors(f"version {version} of model '{name}'"):
        found = store.client().get_model_version(name, version)
    created = datetime.fromtimestamp((found.creation_timestamp or 0) / 1000, UTC)
    return VersionLineage(
        tags=dict(found.tags or {}), created_at=created.replace(microsecond=0).isoformat()
    )
