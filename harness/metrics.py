"""Reading a Prometheus ``/metrics`` scrape: one sample's values summed by a label."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample_totals(text: str, sample: str, label: str) -> dict[str, float]:
    """Values of the samples named ``sample`` (e.g. ``x_total``), summed per value of
    ``label`` across every other label (workers, models...)."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for row in family.samples:
            if row.name == sample and label in row.labels:
                key = row.labels[label]
                totals[key] = totals.get(key, 0.0) + row.value
    return totals
