"""Closed-loop load on a served ChronosForecaster, with the batch sizes of the measured window:
what the Chronos benchmarks (throughput, seed routes, GPU check) measure alike."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench import cpu, load, prometheus
from bench.cpu import SharedMachine
from bench.report import fmt, log

SERVICE = "ChronosForecaster"


def closed_loop(
    label: str,
    server: Any,
    bodies: Path,
    *,
    clients: int,
    duration: float,
    warmup: float,
    sharing: SharedMachine,
    work: Path,
    path: str = "/forecast",
    check: str = '"predictions"',
) -> dict[str, Any]:
    """``clients`` closed-loop clients posting ``bodies`` to ``path`` (an answer must contain
    ``check``); the result has ``batch_sizes`` (None for a server that reports none)."""
    log(f"{label}: {clients} closed-loop clients, {warmup:g}s warm-up + {duration:g}s")
    result = cpu.quiet_run(
        label,
        lambda: load.run_loadgen(
            "closed",
            server.url + path,
            bodies,
            concurrency=clients,
            duration=duration,
            warmup=warmup,
            timeout=120,
            check=check,
            snapshot_url=server.url + "/metrics",
            server_pid=server.pid,
            nice=sharing.nice,
            out_dir=work,
        ),
        sharing,
        log,
    )
    batches = prometheus.histogram_delta(
        result.pop("snapshot_start"),
        result.pop("snapshot_end"),
        "tradeserve_model_batch_size",
        service=SERVICE,
    )
    result["batch_sizes"] = batches if batches["observations"] else None
    latency = result["latency_ms"]
    log(
        f"  {result['throughput_rps']:.1f} series/s, p50 {fmt(latency['p50'], 0)} ms, "
        f"p99 {fmt(latency['p99'], 0)} ms, errors {result['errors']}, "
        f"mean batch {fmt(batches['mean'])}, cpu {result['cpu']}"
    )
    return result
