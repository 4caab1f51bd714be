"""model_manager's request and response shapes (``backend/web.py``, ``backend/quantiles.py``).

Field names and nesting are the seed's; tradeserve adds fields, never removes them: the
registered versions an import created and whether the gate promoted them, and the model
version (``model``: name, version, alias) behind every payload, ONNX file and symbol.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bentos.shared.lineage import ModelRef
from training_hooks.factor.schemas import DimFactor, FactorPayload, TrainingWindow
from training_hooks.venue_quantiles.runtime import SymbolThresholds

# ── requests ─────────────────────────────────────────────────────────────────────────


class AddModelRequest(BaseModel):
    """``POST /api/models``: register (or re-register) an artifact directory."""

    model_config = ConfigDict(protected_namespaces=())

    model_name: str = Field(min_length=1, max_length=128)
    root_path: str = Field(min_length=1, max_length=2048)
    auto_promote: bool = Field(
        default=True,
        description="Promote what this directory's imports register (through the gate), as "
        "model_manager served whatever it scanned.",
    )


class VenueQuantilesRequest(BaseModel):
    pkl_path: str = Field(min_length=1, max_length=2048)


# ── directories and symbols ──────────────────────────────────────────────────────────


class ArtifactFile(BaseModel):
    path: str
    size_bytes: int
    modified_at: str


class SymbolRecord(TrainingWindow):
    """One artifact group as scanned (model_manager's ``SymbolRecord``)."""

    symbol: str
    group_key: str
    return_name: str
    feature_dim: int
    factor_count: int
    grpc_ready: bool
    factors: list[str]
    dim_factors: list[DimFactor]
    ic_rows: list[dict[str, Any]]
    info_summary: dict[str, Any]
    model_meta: dict[str, Any]
    artifacts: dict[str, ArtifactFile]
    warnings: list[str] = Field(default_factory=list)
    registered_name: str = Field(description="Registered model of this group: factor-<group>")


class Snapshot(BaseModel):
    """One registered directory as last scanned (model_manager's ``ModelSnapshot``)."""

    model_name: str
    root_path: str
    scanned_at: str
    symbol_count: int
    group_count: int
    warnings: list[str]
    symbols: list[SymbolRecord]


class ImportedVersion(BaseModel):
    """A registry version an import created or promoted."""

    name: str
    version: str
    promoted: bool
    problems: list[str] = Field(default_factory=list, description="Why the gate refused it")


class RefreshResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    root_path: str
    scanned_at: str
    symbol_count: int
    group_count: int
    warnings: list[str]
    auto_promote: bool
    versions: list[ImportedVersion]


class AddModelResponse(RefreshResponse):
    symbols: list[str]


class ModelEntry(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    root_path: str
    created_at: str
    updated_at: str
    symbol_count: int
    group_count: int
    scanned_at: str | None
    warnings: list[str]
    auto_promote: bool


class ModelsResponse(BaseModel):
    items: list[ModelEntry]


class DeleteResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    ok: bool = True
    model_name: str
    deleted: bool = True


class SymbolItem(BaseModel):
    symbol: str
    group_key: str
    return_name: str
    feature_dim: int
    factor_count: int
    grpc_ready: bool
    train_start_date: str | None
    train_end_date: str | None
    warnings: list[str]
    model: ModelRef | None = Field(description="The promoted version served for this group")


class SymbolsResponse(BaseModel):
    items: list[SymbolItem]


class FactorsResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    scanned_at: str
    symbol_count: int
    group_count: int
    factor_count: int
    factors: list[str]


class SymbolDetail(SymbolRecord):
    model_config = ConfigDict(protected_namespaces=())

    model_name: str
    root_path: str
    scanned_at: str
    model: ModelRef | None


class PayloadResponse(BaseModel):
    """``GET /api/models/{name}/model/{symbol}``: the promoted version's payload."""

    ok: bool = True
    message: str = "ok"
    payload: FactorPayload
    model: ModelRef


# ── venues ───────────────────────────────────────────────────────────────────────────


class VenueItem(BaseModel):
    venue: str
    pkl_path: str | None = Field(description="Pickle it was imported from (None: logged by code)")
    updated_at: str
    model: ModelRef


class VenuesResponse(BaseModel):
    items: list[VenueItem]


class VenuePutResponse(BaseModel):
    venue: str
    symbol_count: int
    model: ModelRef


class VenueQuantilesResponse(BaseModel):
    venue: str
    symbols: dict[str, SymbolThresholds]


class VenueSymbolResponse(BaseModel):
    venue: str
    symbol: str
    medium_notional_threshold: float
    large_notional_threshold: float


class RedisStatus(BaseModel):
    url: str = Field(description="Where tables are published (password hidden)")
    reachable: bool
    pending_venues: list[str]
    last_error: str | None = None


class HealthResponse(BaseModel):
    status: str = "ok"
    redis: RedisStatus
