"""Prometheus histograms from ``/metrics`` scrapes: totals, and what happened between two."""

from __future__ import annotations

from typing import Any


def histogram(text: str | None, metric: str, **labels: str) -> dict[str, Any]:
    """Cumulative buckets, sum and count of one Prometheus histogram (labels filtered,
    series summed, e.g. over workers)."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    total_sum = total_count = 0.0
    if text:
        for family in text_string_to_metric_families(text):
            if family.name != metric:
                continue
            for sample in family.samples:
                if any(sample.labels.get(k) != v for k, v in labels.items()):
                    continue
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
                elif sample.name.endswith("_sum"):
                    total_sum += sample.value
                elif sample.name.endswith("_count"):
                    total_count += sample.value
    return {"buckets": buckets, "sum": total_sum, "count": total_count}


def histogram_delta(start: str | None, end: str | None, metric: str, **labels: str) -> dict:
    """The histogram's observations between two scrapes: per-bucket counts (non-cumulative,
    keyed by the bucket's upper bound), number of observations and their mean."""
    before, after = histogram(start, metric, **labels), histogram(end, metric, **labels)
    cumulative = {
        le: after["buckets"][le] - before["buckets"].get(le, 0.0) for le in after["buckets"]
    }
    per_bucket, previous = {}, 0.0
    for le in sorted(cumulative):
        count = cumulative[le] - previous
        previous = cumulative[le]
        if count:
            label = "+Inf" if le == float("inf") else f"{le:g}"
            per_bucket[f"<={label}"] = round(count)
    count = after["count"] - before["count"]
    mean = (after["sum"] - before["sum"]) / count if count else None
    return {"observations": round(count), "mean": mean, "buckets": per_bucket}
