"""RegimeBlend's Prometheus metrics, on BentoML's ``/metrics`` beside its defaults.

``predictions_total{status}`` and ``prediction_latency_seconds`` keep the seed's names so
its dashboards keep working; ``tradeserve_regime_blend_decisions_total`` adds the labels
that matter now.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from bentos.regime_blend.schemas import DecisionResponse

PREDICTIONS = Counter("predictions", "Predictions by status (success, rejected, error)", ["status"])
PREDICTION_LATENCY = Histogram(
    "prediction_latency_seconds",
    "Decision latency in seconds (before the durable log write)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
STAGE_SECONDS = Histogram(
    "tradeserve_regime_blend_stage_seconds",
    "Time per decision stage: market, specialists, decide, log",
    ["stage"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
SPECIALIST_CACHE = Counter(
    "tradeserve_regime_blend_specialist_answers",
    "Specialist answers by source: cache (memoised) or service (inter-service call)",
    ["source"],
)
DECISIONS = Counter(
    "tradeserve_regime_blend_decisions",
    "Decisions by blend mode, action and risk approval",
    ["blend_mode", "action", "approved", "fallback"],
)

# The same database for every worker: the most recent measurement is the answer.
LOG_ROWS = Gauge(
    "tradeserve_regime_blend_decision_log_rows",
    "Decisions kept in the decision log (PostgreSQL above 1e6 rows: the planner's estimate)",
    multiprocess_mode="mostrecent",
)
LOG_BYTES = Gauge(
    "tradeserve_regime_blend_decision_log_bytes",
    "Bytes the decision log takes in the database (decisions, shared refs, indexes)",
    multiprocess_mode="mostrecent",
)


def record_log_size(rows: int, size: int) -> None:
    LOG_ROWS.set(rows)
    LOG_BYTES.set(size)


def record_decision(response: DecisionResponse, seconds: float) -> None:
    risk = response.risk_validation
    approved = "unchecked" if risk is None else str(risk.approved).lower()
    PREDICTIONS.labels(status="rejected" if approved == "false" else "success").inc()
    PREDICTION_LATENCY.observe(seconds)
    DECISIONS.labels(
        blend_mode=response.metadata.blend_mode,
        action=response.action,
        approved=approved,
        fallback=str(bool(response.metadata.fallbacks)).lower(),
    ).inc()


def record_stages(stages: dict[str, float]) -> None:
    for stage, seconds in stages.items():
        STAGE_SECONDS.labels(stage=stage).observe(seconds)


def record_cache(hits: int, misses: int) -> None:
    if hits:
        SPECIALIST_CACHE.labels(source="cache").inc(hits)
    if misses:
        SPECIALIST_CACHE.labels(source="service").inc(misses)


def record_error() -> None:
    PREDICTIONS.labels(status="error").inc()
