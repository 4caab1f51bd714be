"""Load generators as measured runs: ``bench.loadgen`` (closed or open loop) and ``hey``,
each with the CPU breakdown of the window (:class:`bench.cpu.CpuMeter`)."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.cpu import CpuMeter, children_cpu_seconds, prioritize
from bench.environment import PYTHON, REPO_ROOT
from bench.loadgen import percentiles
from harness.process import ManagedProcess


def run_loadgen(
    mode: str,
    url: str,
    bodies: Path | None,
    *,
    duration: float,
    warmup: float,
    concurrency: int | None = None,
    rate: float | None = None,
    timeout: float = 30,
    check: str | None = None,
    snapshot_url: str | None = None,
    server_pid: int | None = None,
    nice: int = 0,
    out_dir: Path,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``python -m bench.loadgen`` in its own process; add the CPU breakdown. Without
    ``bodies`` it sends GET requests."""
    out = out_dir / f"loadgen-{mode}-{time.time_ns()}.json"
    command = [
        PYTHON, "-m", "bench.loadgen", mode, "--url", url,
        "--duration", str(duration), "--warmup", str(warmup), "--timeout", str(timeout),
        "--out", str(out),
    ]  # fmt: skip
    command += ["--method", "GET"] if bodies is None else ["--bodies", str(bodies)]
    for name, value in (headers or {}).items():
        command += ["--header", f"{name}: {value}"]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    if rate is not None:
        command += ["--rate", str(rate)]
    if check:
        command += ["--check", check]
    if snapshot_url:
        command += ["--snapshot-url", snapshot_url]
    meter = CpuMeter(server_pid)
    loadgen = ManagedProcess("bench.loadgen", command, env=os.environ, cwd=REPO_ROOT)
    loadgen.launch()
    prioritize(loadgen.pid, nice)
    try:
        time.sleep(warmup + 0.1)
        meter.start()
        time.sleep(duration)
        meter.mark_end()
        returncode = loadgen.wait(timeout=duration + timeout + 120)
    finally:
        loadgen.stop()
    if returncode != 0:
        raise RuntimeError(f"bench.loadgen exited with {returncode}")
    result = json.loads(out.read_text())
    result["cpu"] = meter.stop(result.get("loadgen_cpu_s"))
    return result


def hey_path() -> str:
    path = shutil.which("hey")
    if path is None:
        raise RuntimeError("`hey` is not installed (apt-get install hey)")
    return path


def run_hey(
    url: str,
    body: Path,
    *,
    concurrency: int,
    duration: float,
    timeout: float = 20,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """Closed loop with ``hey -z`` (Go, keep-alive); per-request rows from ``-o csv``."""
    command = [
        hey_path(), "-z", f"{duration:g}s", "-c", str(concurrency), "-t", f"{timeout:g}",
        "-m", "POST", "-T", "application/json", "-D", str(body), "-o", "csv", url,
    ]  # fmt: skip
    meter = CpuMeter(server_pid)
    meter.start()
    children_before = children_cpu_seconds()
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stdout, stderr = process.communicate(timeout=duration + timeout + 60)
    wall = time.monotonic() - started
    hey_cpu = children_cpu_seconds() - children_before  # only hey was reaped meanwhile
    if process.returncode != 0:
        raise RuntimeError(f"hey failed ({process.returncode}): {stderr.decode()[-2000:]}")
    rows = list(csv.DictReader(io.StringIO(stdout.decode())))
    latencies, statuses, ok = [], {}, 0
    for row in rows:
        status = row.get("status-code", "")
        statuses[status] = statuses.get(status, 0) + 1
        latencies.append(float(row["response-time"]))
        ok += status.startswith("2")
    result = {
        "tool": "hey 0.1.4 (Go; -z duration closed loop, keep-alive)",
        "mode": "closed",
        "url": url,
        "concurrency": concurrency,
        "duration_s": duration,
        "wall_s": round(wall, 2),
        "requests": len(rows),
        "ok": ok,
        "errors": len(rows) - ok,
        "statuses": statuses,
        "throughput_rps": ok / duration,
        "latency_ms": percentiles(latencies),
        "stderr": stderr.decode()[-500:],
    }
    result["loadgen_cpu_s"] = hey_cpu
    result["cpu"] = meter.stop(hey_cpu)
    return result
