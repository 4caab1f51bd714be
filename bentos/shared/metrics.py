"""Per-model Prometheus metrics, exposed on BentoML's own ``/metrics`` beside its defaults."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prometheus_client import Counter, Histogram

from bentos.shared.lineage import ModelRef

_LABELS = ["service", "model", "version"]

MODEL_REQUESTS = Counter(
    name="tradeserve_model_requests",
    documentation="Model calls by outcome (ok, client_error, error)",
    labelnames=[*_LABELS, "outcome"],
)
MODEL_LATENCY = Histogram(
    name="tradeserve_model_latency_seconds",
    documentation="Time spent in one model call (a whole batch)",
    labelnames=_LABELS,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
MODEL_BATCH_SIZE = Histogram(
    name="tradeserve_model_batch_size",
    documentation="Items (series, rows, observations) per model call",
    labelnames=_LABELS,
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)

STARTUP_FALLBACKS = Counter(
    name="tradeserve_model_startup_fallbacks",
    documentation="Start-ups that served an earlier validated version because the promoted "
    "one failed the gate",
    labelnames=["service", "model"],
)


@contextlib.contextmanager
def observe_call(service: str, ref: ModelRef, batch_size: int) -> Iterator[None]:
    """Count, time and size one model call; failures are counted and re-raised."""
    labels = {"service": service, "model": ref.name, "version": ref.version}
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    finally:
        MODEL_LATENCY.labels(**labels).observe(time.perf_counter() - started)
        MODEL_BATCH_SIZE.labels(**labels).observe(batch_size)
        MODEL_REQUESTS.labels(**labels, outcome=outcome).inc()
