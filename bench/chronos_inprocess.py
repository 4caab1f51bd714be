"""Baseline (b): ``ChronosRuntime.forecast`` called in-process on a batch of series.

The limit the HTTP services are measured against: no HTTP, no JSON, no queueing — one
process calling the registered model (loaded through ``registry.loading.load_version``)
on ``--batch`` series at a time for ``--duration`` seconds, back to back; with
``--streams N``, N threads do so at once (with ``--torch-threads 1``: one core each).

    .venv/bin/python -m bench.chronos_inprocess --batch 64 --duration 20 [--out result.json]
        [--streams 1] [--torch-threads N]

Needs ``TRADESERVE_HOME`` (or MLflow URIs) pointing at the registry.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np

from bench.chronos_single_server import DEFAULT_MODEL

CONTEXT = 512
HORIZON = 64
LEVELS = (0.1, 0.5, 0.9)


def random_walks(count: int, length: int = CONTEXT, seed: int = 0) -> list[np.ndarray]:
    """Price-like series: positive random walks, rounded as prices are."""
    rng = np.random.default_rng(seed)
    walks = 100 + np.cumsum(rng.normal(scale=0.5, size=(count, length)), axis=1)
    return [np.round(walk, 4) for walk in walks]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(runtime, series: list[np.ndarray], duration: float, streams: int = 1) -> dict:
    """``streams`` threads calling ``forecast`` on ``series`` back to back for ``duration``."""
    for _ in range(2):  # warm-up
        runtime.forecast(series, HORIZON, LEVELS)
    call_times: list[float] = []
    cpu0, started = cpu_seconds(), time.monotonic()

    def stream() -> None:
        while time.monotonic() - started < duration:
            t0 = time.monotonic()
            runtime.forecast(series, HORIZON, LEVELS)
            call_times.append(time.monotonic() - t0)  # list.append is atomic

    threads = [threading.Thread(target=stream) for _ in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    call_times.sort()
    calls = len(call_times)
    return {
        "batch": len(series),
        "streams": streams,
        "calls": calls,
        "series": calls * len(series),
        "seconds": round(elapsed, 2),
        "series_per_s": calls * len(series) / elapsed,
        "ms_per_call_median": call_times[calls // 2] * 1000,
        "process_cores": (cpu_seconds() - cpu0) / elapsed,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chronos_inprocess")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--batch", type=int, action="append", help="batch size (repeatable)")
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--streams", type=int, default=1, help="threads calling at once")
    parser.add_argument("--torch-threads", type=int, help="torch intra-op threads")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    from registry.loading import load_version
    from registry.resolve import resolve

    resolved = resolve(args.model)
    runtime = load_version(resolved).runtime
    results = {
        "model": args.model,
        "version": resolved.version,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "runs": [
            measure(runtime, random_walks(batch), args.duration, args.streams)
            for batch in args.batch or [64]
        ],
    }
    text = json.dumps(results, indent=1)
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
