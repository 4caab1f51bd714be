"""Typed settings of RegimeBlend (environment prefix ``TRADESERVE_BLEND_``, nested keys with
``__``, e.g. ``TRADESERVE_BLEND_RISK__MAX_LEVERAGE=2``).

``specialists_url`` also answers to its former name, ``TRADESERVE_SPECIALISTS_URL``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from bentos.regime_blend.blending import WeightMapping
from registry.settings import get_settings

BlendMode = Literal["argmax", "mixture"]
RiskMode = Literal["body", "reject"]


@dataclass(frozen=True)
class RouteModes:
    """A route's modes for requests that name none and a deployment that sets none."""

    blend_mode: BlendMode
    risk_mode: RiskMode


NATIVE_MODES = RouteModes(blend_mode="mixture", risk_mode="body")


class RiskLimits(BaseModel):
    """Portfolio limits every BUY/SELL is checked against (the seed's risk manager rules)."""

    model_config = ConfigDict(frozen=True)

    max_position_fraction: float = Field(
        default=0.25, gt=0, description="|position value| / equity, per symbol"
    )
    max_sector_fraction: float = Field(
        default=0.50, gt=0, description="sum of |position values| in one sector / equity"
    )
    max_leverage: float = Field(default=1.5, gt=0, description="gross exposure / equity")
    max_daily_loss_fraction: float = Field(
        default=0.02,
        gt=0,
        description="loss since the day's start equity above which only trades that reduce "
        "the position are allowed",
    )
    allowed_margin: float = Field(
        default=0.95,
        gt=0,
        le=1,
        description="on rejection, the allowed quantity targets this fraction of the binding "
        "limit (the seed's 95 % safety margin)",
    )
    warn_fraction: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="a check reports 'warning' above this share of its limit",
    )


class SizingConfig(BaseModel):
    """How a BUY/SELL becomes a share count."""

    model_config = ConfigDict(frozen=True)

    seed_base_quantity: int = Field(
        default=100, ge=1, description="argmax mode: the seed's int(base·conf·(1 − H_nats))"
    )
    risk_budget_fraction: float = Field(
        default=0.10,
        gt=0,
        le=1,
        description="mixture mode: notional of a fully confident, fully certain decision as a "
        "fraction of equity; scaled by confidence·(1 − H_norm) and divided by the price",
    )
    min_quantity: int = Field(default=1, ge=0, description="smallest BUY/SELL quantity")


class BlendSettings(BaseSettings):
    """Everything about RegimeBlend that BentoML's configuration does not cover."""

    model_config = SettingsConfigDict(
        env_prefix="TRADESERVE_BLEND_",
        env_nested_delimiter="__",
        extra="ignore",
        populate_by_name=True,
    )

    specialists_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "TRADESERVE_BLEND_SPECIALISTS_URL", "TRADESERVE_SPECIALISTS_URL"
        ),
        description="URL of a separately deployed Specialists service that the composite "
        "calls (e.g. http://tradeserve-specialists:3000); unset: it runs its own in-process.",
    )

    default_mode: BlendMode | None = Field(
        default=None,
        description="blend_mode when a request does not name one; unset: the route's own "
        "(the seed's /api/v1/predict: argmax, /predict: mixture)",
    )
    risk_mode: RiskMode | None = Field(
        default=None,
        description="'body': a rejected trade is answered 200 with risk_validation.approved = "
        "false; 'reject': the seed's 403 + X-Risk-Warnings (request field risk_mode overrides); "
        "unset: the route's own (the seed's /api/v1/predict: reject, /predict: body)",
    )
    weights: WeightMapping = Field(
        default_factory=WeightMapping,
        description="how regime probabilities become specialist weights (WeightMapping)",
    )
    sizing: SizingConfig = Field(
        default_factory=SizingConfig, description="how a BUY/SELL becomes a share count"
    )
    risk: RiskLimits = Field(
        default_factory=RiskLimits, description="portfolio limits every BUY/SELL is checked against"
    )
    initial_capital: float = Field(
        default=1_000_000.0, gt=0, description="cash of a fresh service portfolio"
    )
    sectors: dict[str, str] = Field(
        default_factory=lambda: {"SPX": "us-equity-index", "NASDAQ": "us-equity-index"},
        description="symbol -> sector for the concentration check",
    )
    default_sector: str = Field(default="unknown", description="sector of unmapped symbols")
    state_dir: Path | None = Field(
        default=None,
        description="decision log + portfolio state (default TRADESERVE_HOME/regime_blend)",
    )
    market_data_dir: Path | None = Field(
        default=None,
        description="per-symbol CSV/Parquet bars (default TRADESERVE_HOME/market_data)",
    )
    market_data_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "TRADESERVE_MARKET_DATA_URI", "TRADESERVE_BLEND_MARKET_DATA_URI"
        ),
        description="shared market data: a folder or an s3:// prefix of the per-symbol files "
        "(an s3:// prefix is mirrored into STATE/market_data and re-checked every "
        "market_data_refresh_s); unset: market_data_dir",
    )
    market_data_refresh_s: float = Field(
        default=60.0, gt=0, description="how often an s3:// market-data prefix is re-checked"
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("TRADESERVE_DATABASE_URL", "TRADESERVE_BLEND_DATABASE_URL"),
        description="SQLAlchemy URL of the state database (portfolio, reservations, fills, "
        "decision log), e.g. postgresql://user:pw@host/db, shared by every replica; unset: "
        "the embedded SQLite file STATE/state.db",
    )
    decision_retention_days: float | None = Field(
        default=None,
        gt=0,
        validation_alias=AliasChoices(
            "TRADESERVE_DECISION_RETENTION_DAYS", "TRADESERVE_BLEND_DECISION_RETENTION_DAYS"
        ),
        description="decisions older than this are exported (decision_export_uri) and pruned; "
        "unset: kept forever",
    )
    decision_export_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "TRADESERVE_DECISION_EXPORT_URI", "TRADESERVE_BLEND_DECISION_EXPORT_URI"
        ),
        description="folder or s3:// prefix that receives pruned decisions as Parquet "
        "(default STATE/decision_archive; 'none' prunes without an export)",
    )
    maintenance_interval_s: float = Field(
        default=60.0,
        gt=0,
        description="how often the decision log's size is measured and its retention applied",
    )
    reservation_ttl_s: float = Field(
        default=300.0,
        gt=0,
        description="an approved trade counts against the limits until a fill settles it or "
        "this many seconds pass",
    )
    max_request_bars: int = Field(default=5000, ge=1, description="inline bars per request")
    specialist_cache_size: int = Field(
        default=65_536,
        ge=0,
        description="specialist answers memoised per (role, version, feature row); 0 = off",
    )
    catalog_refresh_s: float = Field(
        default=5.0, gt=0, description="how often the served specialists are re-listed"
    )
    specialists_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a Specialists call that takes longer is answered 503 (under BentoML's "
        "own traffic timeout, so the client gets the reason)",
    )

    @property
    def state_path(self) -> Path:
        return (self.state_dir or get_settings().home_dir / "regime_blend").expanduser()

    @property
    def market_path(self) -> Path:
        """The local folder decisions read bars from (an s3:// prefix's mirror)."""
        uri = self.market_data_uri
        if uri and uri.startswith("s3://"):
            return self.state_path / "market_data"
        if uri:
            return Path(uri.removeprefix("file://")).expanduser()
        return (self.market_data_dir or get_settings().market_data_dir).expanduser()

    @property
    def database(self) -> str:
        """The state database's URL (the embedded SQLite file unless one is configured)."""
        return self.database_url or f"sqlite:///{self.state_path / 'state.db'}"

    @property
    def export_uri(self) -> str | None:
        """Where pruned decisions go (None: pruned without an export)."""
        uri = self.decision_export_uri
        if uri is not None and uri.strip().lower() in ("", "none"):
            return None
        return uri or str(self.state_path / "decision_archive")


@lru_cache(maxsize=1)
def get_blend_settings() -> BlendSettings:
    return BlendSettings()
