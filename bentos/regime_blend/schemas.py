"""Public request and response schemas of RegimeBlend (the seed's contract, extended)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bentos.regime_blend.bounds import Price, Sector, Volume
from bentos.regime_blend.portfolio import Portfolio, Position
from bentos.shared.lineage import ModelRef

Action = Literal["BUY", "SELL", "HOLD"]
CheckStatus = Literal["pass", "fail", "warning"]


class Bar(BaseModel):
    """One OHLCV bar sent with a request."""

    date: datetime = Field(description="Bar timestamp (daily bars: the date)")
    open: Price
    high: Price
    low: Price
    close: Price
    volume: Volume


class PredictRequest(BaseModel):
    """``POST /api/v1/predict``: the seed's request plus market data, portfolio and modes."""

    model_config = ConfigDict(extra="ignore")

    symbol: str = Field(description="Trading symbol, e.g. SPX (upper-cased)")
    timestamp: datetime | None = Field(
        default=None, description="As-of time: the last bar at or before it is used (default now)"
    )
    strategy_override: str | None = Field(
        default=None, description="Use one specialist: bull, bull_specialist, ... or universal"
    )
    risk_check: bool = Field(default=True, description="Validate against the risk limits")
    explain: bool = Field(default=False, description="Return per-specialist probabilities")
    blend_mode: Literal["argmax", "mixture"] | None = Field(
        default=None, description="argmax (the seed's hard switch) or mixture (default: configured)"
    )
    risk_mode: Literal["body", "reject"] | None = Field(
        default=None,
        description="'body': rejection in the body (default); 'reject': the seed's 403 + "
        "X-Risk-Warnings",
    )
    bars: list[Bar] | None = Field(
        default=None, description="Recent bars, oldest first (else the market-data store)"
    )
    portfolio: Portfolio | None = Field(
        default=None, description="Portfolio to check against (else the service's own state)"
    )
    sector: Sector | None = None

    @field_validator("symbol")
    @classmethod
    def _symbol(cls, value: str) -> str:
        value = value.strip()
        if not value or len(value) > 20:
            raise ValueError("Symbol must be non-empty and <= 20 characters")
        return value.upper()


class RegimeProbabilities(BaseModel):
    bull: float = Field(ge=0, le=1)
    bear: float = Field(ge=0, le=1)
    sideways: float = Field(ge=0, le=1)
    entropy: float = Field(ge=0, description="Shannon entropy in nats (max ln 3)")
    entropy_normalized: float = Field(ge=0, le=1, description="entropy / ln 3")


class RiskChecks(BaseModel):
    position_limit: CheckStatus
    concentration: CheckStatus
    daily_loss_limit: CheckStatus
    leverage: CheckStatus


class RiskRejection(BaseModel):
    check: str
    message: str
    limit: float
    proposed: float


class RiskValidation(BaseModel):
    approved: bool
    warnings: list[str] = Field(default_factory=list)
    checks: RiskChecks
    rejections: list[RiskRejection] = Field(default_factory=list)
    allowed_quantity: int = Field(
        ge=0,
        description="Largest quantity that passes every check (= the recommendation if approved)",
    )
    exposure: dict[str, float] = Field(
        default_factory=dict, description="equity and post-trade ratios the checks measured"
    )


class UsedModel(ModelRef):
    """A registered model version that contributed to a decision."""

    role: str = Field(description="regime, or the specialist role it answered for")


class DecisionMetadata(BaseModel):
    model_version: str = Field(
        description="Seed field: the specialist that acted (argmax/override) or 'mixture'"
    )
    latency_ms: float = Field(ge=0)
    timestamp: datetime = Field(description="When the decision was made (UTC)")
    blend_mode: Literal["argmax", "mixture"]
    models: list[UsedModel] = Field(description="Every model version used, for reproduction")
    fallbacks: dict[str, str] = Field(
        default_factory=dict, description="role -> specialist that stood in for it"
    )
    strategy_override: str | None = None
    as_of: datetime = Field(description="Timestamp of the bar the decision used")
    price: float = Field(description="Close of that bar (sizing and risk price)")
    data_source: Literal["store", "request"]
    portfolio_source: Literal["request", "state"]
    inputs_digest: str


class SpecialistExplanation(BaseModel):
    probabilities: dict[str, float] = Field(description="HOLD, BUY, SELL")
    weight: float | None = Field(description="Strategy weight (None for an override only)")
    served_by: str = Field(description="Role of the specialist that answered")
    model: ModelRef


class Explanation(BaseModel):
    method: str = Field(description="How the blended distribution was formed")
    specialists: dict[str, SpecialistExplanation]
    weights: dict[str, float]
    blended: dict[str, float] = Field(description="Distribution the action was taken from")
    features: dict[str, float]


class DecisionResponse(BaseModel):
    """The seed's response, extended (explanation, entropy_normalized, risk detail)."""

    decision_id: str
    symbol: str
    action: Action
    confidence: float = Field(ge=0, le=1)
    recommended_quantity: int = Field(ge=0)
    regime_probabilities: RegimeProbabilities
    strategy_weights: dict[str, float]
    risk_validation: RiskValidation | None = None
    metadata: DecisionMetadata
    explanation: Explanation | None = None


class ServedModelInfo(BaseModel):
    """One entry of ``GET /api/v1/models`` (the seed's fields plus registry lineage)."""

    name: str
    version: str
    loaded_at: datetime
    device: str
    parameters: int
    registered_name: str
    alias: str | None = None
    role: str


class ModelsResponse(BaseModel):
    models: dict[str, ServedModelInfo]
    total_models: int


class HealthResponse(BaseModel):
    status: Literal["healthy", "degraded"]
    model_loaded: bool
    gpu_available: bool
    timestamp: datetime


class PortfolioResponse(BaseModel):
    portfolio: Portfolio
    equity: float


__all__ = [
    "Bar",
    "DecisionResponse",
    "Explanation",
    "HealthResponse",
    "ModelsResponse",
    "Portfolio",
    "PortfolioResponse",
    "Position",
    "PredictRequest",
]
