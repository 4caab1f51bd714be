"""RegimeBlend latency and throughput: `POST /api/v1/predict` with risk checks on.

    .venv/bin/python -m bench.regime_blend_latency [--duration 30] [--workdir DIR]
        [--database postgres] [--replicas 2]

Serves the composite exactly as `bentoml serve` at the repository root does (root
bentofile.yaml: RegimeBlend + Specialists, each its own process, BENTOML_CONFIG =
configuration.yaml) on a demo registry (``tradeserve demo`` fills ``--workdir`` once), then:

* **open loop** — 100 requests/s constant arrival rate (``bench.loadgen open``, latency from
  the scheduled send time: no coordinated omission); targets P95 ≤ 15 ms, P99 ≤ 30 ms, no
  errors;
* **closed loop** — 32 clients for 30 s (``bench.loadgen closed``); targets ≥ 300 requests/s
  and zero errors of any kind (this is also the 32-clients-30-s zero-error run).

Two workloads, each on a fresh server with the shipped settings:

* ``live`` — the seed's own load-test pattern: decisions on the latest bar (no timestamp)
  of a few symbols, argmax and mixture, half with a portfolio in the body (varied
  positions), half against the service's portfolio state. After the first request per
  worker, specialist answers for that bar come from RegimeBlend's memo;
* ``replay`` — every request about another (symbol, bar) of 2002–2018, and RegimeBlend's
  memo of specialist answers off (``TRADESERVE_BLEND_SPECIALIST_CACHE_SIZE=0``): every
  decision crosses to Specialists (the composite's full cost: two BentoML hops).

Every decision is fsync'd to the decision log before it is answered: in the embedded SQLite
file by default, or with ``--database postgres`` in a fresh local PostgreSQL cluster per
workload (``TRADESERVE_DATABASE_URL``, fsync and synchronous commits on, as deployed).
``--replicas 2`` serves two composites (own BentoML homes) on that one database and splits
the rate or the clients between them (one loadgen each; requests and throughput summed, each
percentile the worse replica's, an upper bound of the combined one).
Per-stage means come from the service's ``tradeserve_regime_blend_stage_seconds``
histogram, specialist answers by source from ``tradeserve_regime_blend_specialist_answers``,
CPU per process from /proc.

Writes ``bench/results/regime_blend_latency.{json,md}`` (one SQLite server), else
``regime_blend_latency_<database>_x<replicas>.{json,md}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import yaml

from bench import environment, report
from bench.cpu import busy_other_cores, machine_cpu_seconds
from harness.bento import BentoServer, own_bentoml_home
from harness.metrics import sample_totals
from harness.postgres import postgres_cluster
from harness.process import process_tree

NAME = "regime_blend_latency"
TARGETS = {"open_p95_ms": 15.0, "open_p99_ms": 30.0, "closed_rps": 300.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- setup


def server_env(home: Path, state: Path, config: Path, **extra: str) -> dict[str, str]:
    return environment.bench_env(home, config, TRADESERVE_BLEND_STATE_DIR=str(state), **extra)


def ensure_demo(home: Path) -> None:
    """Fill ``home`` with the demo registry unless it already is (idempotent, ~1 min)."""
    report.log(f"demo registry in {home}")
    tradeserve = Path(sys.executable).with_name("tradeserve")
    env = server_env(home, home / "unused", environment.CONFIGURATION)
    subprocess.run([str(tradeserve), "demo"], env=env, check=True, capture_output=True)


def live_bodies(path: Path, count: int = 256, seed: int = 7) -> Path:
    """The seed's load-test pattern: decisions on the latest bar (no timestamp) of a few
    symbols, argmax and mixture, half with a portfolio in the body (varied positions, risk
    checks on), half against the service's own portfolio."""
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        body: dict[str, Any] = {
            "symbol": ("SPX", "NASDAQ")[i % 2],
            "blend_mode": ("argmax", "mixture")[(i // 2) % 2],
            "risk_check": True,
            # a rejection is a decision like any other (200, not the seed route's 403): the
            # service's portfolio reaches its limits as approvals reserve exposure
            "risk_mode": "body",
        }
        if i % 4 >= 2:
            spx, nasdaq = rng.randint(-150, 150), rng.randint(-40, 40)
            body["portfolio"] = {
                "cash": 1_000_000.0 - spx * 2500.0 - nasdaq * 6500.0,
                "positions": {
                    "SPX": {"quantity": spx, "price": 2500.0},
                    "NASDAQ": {"quantity": nasdaq, "price": 6500.0},
                },
                "day_start_equity": rng.choice([1_000_000.0, 1_030_000.0]),
            }
        lines.append(json.dumps(body))
    path.write_text("\n".join(lines) + "\n")
    return path


def replay_bodies(path: Path, part: int, seed: int = 11) -> Path:
    """Every request about another (symbol, bar), 2002-2018: every decision crosses to
    Specialists. ``part`` 0/1 picks one half, so two runs never share a bar."""
    days = pd.bdate_range("2002-01-02", "2018-12-28").strftime("%Y-%m-%d").tolist()
    pairs = [(symbol, day) for day in days for symbol in ("SPX", "NASDAQ")]
    random.Random(seed).shuffle(pairs)
    lines = [
        json.dumps(
            {
                "symbol": symbol,
                "timestamp": day,
                "blend_mode": ("argmax", "mixture")[i % 2],
                "risk_check": True,
                "risk_mode": "body",
            }
        )
        for i, (symbol, day) in enumerate(pairs[part::2])
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------------------- measuring


def tree_pids(root: int) -> dict[int, str]:
    """``root`` and its descendants, named by role (arbiter, RegimeBlend, Specialists)."""
    found = {}
    for pid in process_tree(root):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        found[pid] = next((r for r in ("RegimeBlend", "Specialists") if r in cmd), "arbiter")
    return found


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def stage_means(before: str, after: str) -> dict[str, float]:
    """Mean milliseconds per stage between two /metrics scrapes."""

    def totals(text: str) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for line in text.splitlines():
            if not line.startswith("tradeserve_regime_blend_stage_seconds_"):
                continue
            key, value = line.rsplit(" ", 1)
            stage = key.split('stage="', 1)[1].split('"', 1)[0]
            slot = out.setdefault(stage, [0.0, 0.0])
            if "_sum" in key:
                slot[0] += float(value)
            elif "_count" in key:
                slot[1] += float(value)
        return out

    start, end = totals(before), totals(after)
    means = {}
    for stage, (total, count) in end.items():
        total -= start.get(stage, [0.0, 0.0])[0]
        count -= start.get(stage, [0.0, 0.0])[1]
        if count:
            means[stage] = round(total / count * 1000, 3)
    return means


def run_load(servers: list[BentoServer], mode: str, bodies: Path, args: argparse.Namespace) -> dict:
    """One ``bench.loadgen`` run per replica at the same time (the rate or the clients split
    evenly), with CPU accounting of the servers' processes; the runs merged (sums, and per
    percentile the worst replica's: an upper bound of the combined percentile)."""
    share = len(servers)
    pids: dict[int, str] = {}
    for server in servers:
        assert server.process is not None
        pids.update(tree_pids(server.process.pid))
    metrics_before = scrape(servers)
    outs, loadgens = [], []
    for server in servers:
        out = Path(tempfile.mkstemp(prefix=f"rb-{mode}-", suffix=".json")[1])
        command = [
            sys.executable, "-m", "bench.loadgen", mode,
            "--url", f"{server.url}/api/v1/predict", "--bodies", str(bodies),
            "--duration", str(args.duration), "--warmup", str(args.warmup),
            "--check", '"decision_id"', "--out", str(out), "--timeout", "30",
        ]  # fmt: skip
        command += (
            ["--rate", str(args.rate / share)]
            if mode == "open"
            else ["--concurrency", str(args.concurrency // share)]
        )
        outs.append(out)
        loadgens.append(subprocess.Popen(command, cwd=environment.REPO_ROOT))
    time.sleep(args.warmup + 0.1)
    cpu0 = {pid: cpu_seconds(pid) for pid in pids}
    busy0, t0 = machine_cpu_seconds()[0], time.monotonic()
    time.sleep(args.duration)
    elapsed = time.monotonic() - t0
    cpu = {pid: cpu_seconds(pid) - cpu0[pid] for pid in pids}
    busy = machine_cpu_seconds()[0] - busy0
    for loadgen in loadgens:
        if loadgen.wait(timeout=args.duration + 120) != 0:
            raise RuntimeError(f"bench.loadgen {mode} failed")
    metrics_after = scrape(servers)
    runs = []
    for out in outs:
        runs.append(json.loads(out.read_text()))
        out.unlink()
    result = merge_runs(runs)
    by_role: dict[str, float] = {}
    by_worker: dict[str, list[float]] = {}  # shows a worker left idle (its peer took the load)
    for pid, seconds in cpu.items():
        by_role[pids[pid]] = by_role.get(pids[pid], 0.0) + seconds
        by_worker.setdefault(pids[pid], []).append(round(seconds / elapsed, 2))
    served = max(result["ok"], 1)
    server_cpu = sum(by_role.values())
    loadgen_cpu = result.get("loadgen_cpu_s") or 0.0
    result["cpu"] = {
        "server_cores": round(server_cpu / elapsed, 2),
        "by_process_cores": {role: round(s / elapsed, 2) for role, s in by_role.items()},
        "by_worker_cores": {role: sorted(c, reverse=True) for role, c in by_worker.items()},
        "server_cpu_ms_per_request": round(server_cpu / served * 1000, 2),
        "machine_busy_cores": round(busy / elapsed, 2),
        "loadgen_cores": round(loadgen_cpu / elapsed, 2),
        "other_cores": round(max(0.0, busy - server_cpu - loadgen_cpu) / elapsed, 2),
    }
    result["stage_ms"] = stage_means(metrics_before, metrics_after)
    result["specialist_answers"] = answer_sources(metrics_before, metrics_after)
    return result


def scrape(servers: list[BentoServer]) -> str:
    """Every replica's ``/metrics`` (own BentoML homes: no series is another's)."""
    return "".join(httpx.get(f"{s.url}/metrics", timeout=10).text for s in servers)


def merge_runs(runs: list[dict]) -> dict:
    """One result of the replicas' loadgen runs (one run: itself)."""
    for run in runs:
        for key in ("snapshot_start", "snapshot_end", "per_second"):
            run.pop(key, None)
    if len(runs) == 1:
        return runs[0]
    merged = dict(runs[0])
    for key in ("requests", "ok", "errors", "errors_outside_window", "throughput_rps"):
        merged[key] = sum(run[key] for run in runs)
    merged["loadgen_cpu_s"] = sum(run.get("loadgen_cpu_s") or 0.0 for run in runs)
    merged["error_kinds"] = {}
    for run in runs:
        for kind, count in run["error_kinds"].items():
            merged["error_kinds"][kind] = merged["error_kinds"].get(kind, 0) + count
    merged["error_samples"] = [sample for run in runs for sample in run["error_samples"]]
    merged["latency_ms"] = {
        key: max((run["latency_ms"][key] for run in runs if run["latency_ms"][key] is not None),
                 default=None)
        for key in runs[0]["latency_ms"]
    }  # fmt: skip
    merged["replicas"] = [
        {
            "url": run["url"],
            "throughput_rps": run["throughput_rps"],
            "latency_ms": run["latency_ms"],
        }
        for run in runs
    ]
    return merged


def answer_sources(before: str, after: str) -> dict[str, float]:
    """Specialist answers by source (cache / service) between two /metrics scrapes."""
    sample = "tradeserve_regime_blend_specialist_answers_total"
    start, end = sample_totals(before, sample, "source"), sample_totals(after, sample, "source")
    return {source: end[source] - start.get(source, 0.0) for source in end}


# ---------------------------------------------------------------------------- report


WORKLOADS = ("live", "replay")


def verdict(run_open: dict, run_closed: dict) -> dict[str, bool]:
    def clean(run: dict) -> bool:
        return run["errors"] == 0 and run["errors_outside_window"] == 0

    return {
        "open P95 <= 15 ms": (run_open["latency_ms"]["p95"] or 1e9) <= TARGETS["open_p95_ms"],
        "open P99 <= 30 ms": (run_open["latency_ms"]["p99"] or 1e9) <= TARGETS["open_p99_ms"],
        "open zero errors": clean(run_open),
        "closed >= 300 req/s": run_closed["throughput_rps"] >= TARGETS["closed_rps"],
        "closed zero errors": clean(run_closed),
    }


def markdown(result: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "–" if value is None else f"{value:.1f}"

    config = result["config"]
    rows = [
        "| workload | run | requests | errors | req/s | P50 ms | P95 ms | P99 ms | "
        "hops/request | server CPU ms/req | other load (cores) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    details = []
    for name, scenario in result["scenarios"].items():
        for label, run in (
            (f"open {config['rate']:g} req/s", scenario["open_loop"]),
            (f"closed {config['concurrency']} clients", scenario["closed_loop"]),
        ):
            lat = run["latency_ms"]
            answers = run["specialist_answers"]
            calls = answers.get("service", 0.0) / max(sum(answers.values()), 1.0)
            rows.append(
                f"| {name} | {label} | {run['requests']} | {run['errors']} | "
                f"{run['throughput_rps']:.1f} | {ms(lat['p50'])} | {ms(lat['p95'])} | "
                f"{ms(lat['p99'])} | {calls:.2f} | {run['cpu']['server_cpu_ms_per_request']} | "
                f"{run['cpu']['other_cores']} |"
            )
        openl, closed = scenario["open_loop"], scenario["closed_loop"]
        for label, run in (("open", openl), ("closed", closed)):
            if run["errors"] or run["errors_outside_window"]:
                details.append(
                    f"**{name}** {label} loop errors: {run['error_kinds']} "
                    f"(+{run['errors_outside_window']} outside the window), e.g. "
                    f"`{(run['error_samples'] or [''])[0][:200]}`"
                )
                details.append("")
        details += [
            f"**{name}** (measured {scenario.get('when', result['when'])}) — stage means "
            "(ms, open loop): "
            + ", ".join(f"{k} {v}" for k, v in openl["stage_ms"].items())
            + "; server CPU by process (cores, open / closed, closed per worker): "
            + ", ".join(
                f"{role} {openl['cpu']['by_process_cores'].get(role, 0)} / "
                f"{closed['cpu']['by_process_cores'].get(role, 0)}"
                f" ({' + '.join(map(str, closed['cpu'].get('by_worker_cores', {}).get(role, [])))})"
                for role in ("RegimeBlend", "Specialists")
            )
            + ". Targets: "
            + "; ".join(
                f"{k} {'met' if ok else 'MISSED'}" for k, ok in scenario["verdict"].items()
            ),
            "",
        ]
    machine = result["machine"]
    return "\n".join(
        [
            f"### RegimeBlend `POST /api/v1/predict` ({result['when']})",
            "",
            f"{machine['cpus']} CPUs ({machine['cpu_model']}), shared with other work (the "
            f"'other load' column); bentoml {machine['versions']['bentoml']}, "
            f"commit {machine['git_commit']}; "
            f"{config['duration_s']:g} s measured after {config['warmup_s']:g} s warm-up per run; "
            "risk checks on; every decision fsync'd to the decision log "
            f"({config.get('database', 'sqlite')}) before it is answered.",
            "",
            *rows,
            "",
            *details,
        ]
    )


def run_scenario(
    name: str, home: Path, work: Path, config: Path, args: argparse.Namespace
) -> dict[str, Any]:
    if name == "live":
        open_bodies = closed_bodies = live_bodies(work / "live.jsonl")
    else:
        open_bodies = replay_bodies(work / "replay-open.jsonl", 0)
        closed_bodies = replay_bodies(work / "replay-closed.jsonl", 1)
    state = Path(tempfile.mkdtemp(prefix="state-", dir=work))
    extra = dict(item.split("=", 1) for item in args.env)
    if name == "replay":  # every decision crosses to Specialists, however often bars repeat
        extra.setdefault("TRADESERVE_BLEND_SPECIALIST_CACHE_SIZE", "0")
    with contextlib.ExitStack() as stack:
        if args.database == "postgres":  # a fresh cluster per workload, commits fsync'd
            report.log(f"[{name}] state in a fresh PostgreSQL cluster (fsync on)")
            extra["TRADESERVE_DATABASE_URL"] = stack.enter_context(
                postgres_cluster(state / "pg", database="regime_blend", durable=True)
            )
        servers = []
        for replica in range(args.replicas):  # one database (or SQLite file) for all
            log = work / f"serve-{name.replace(' ', '-')}-{replica}.log"
            own_home = own_bentoml_home(home, work / f"replica-{name}-{replica}")
            env = server_env(home, state, config, **extra, BENTOML_HOME=own_home)
            servers.append(BentoServer(".", env, log))
        report.log(
            f"[{name}] starting {args.replicas} x `bentoml serve` at the repository root "
            "(RegimeBlend + Specialists)"
        )
        for server in servers:
            server.launch()
            stack.callback(server.stop)
        for server in servers:
            server.wait_ready(timeout=240)
        return measure_scenario(name, servers, open_bodies, closed_bodies, args)


def measure_scenario(
    name: str,
    servers: list[BentoServer],
    open_bodies: Path,
    closed_bodies: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The open-loop and closed-loop runs of one workload on a started server."""
    other_before = busy_other_cores(3.0)
    report.log(f"[{name}] open loop {args.rate:g} req/s for {args.duration:g} s")
    open_run = run_load(servers, "open", open_bodies, args)
    report.log(f"[{name}] closed loop {args.concurrency} clients for {args.duration:g} s")
    closed_run = run_load(servers, "closed", closed_bodies, args)
    return {
        "when": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "other_cores_before": round(other_before, 2),
        "open_loop": open_run,
        "closed_loop": closed_run,
        "verdict": verdict(open_run, closed_run),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.regime_blend_latency")
    parser.add_argument("--workdir", type=Path, help="demo registry home (kept, reused)")
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workload", action="append", choices=WORKLOADS)
    parser.add_argument("--override", default="{}", help="JSON merged into configuration.yaml")
    parser.add_argument(
        "--env", action="append", default=[], help="KEY=VALUE for the server (repeatable)"
    )
    parser.add_argument(
        "--database",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="state database: the embedded SQLite file, or a fresh local PostgreSQL cluster "
        "(TRADESERVE_DATABASE_URL, fsync on)",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="composite servers on the one database, the load split evenly between them",
    )
    parser.add_argument("--no-write", action="store_true", help="print, do not write results")
    args = parser.parse_args(argv)

    work = (args.workdir or Path(tempfile.mkdtemp(prefix="rb-bench-"))).resolve()
    home = work / "home"
    ensure_demo(home)
    overrides = json.loads(args.override)
    config = (
        environment.write_config(environment.CONFIGURATION, overrides, work / "configuration.yaml")
        if overrides
        else environment.CONFIGURATION
    )
    scenarios = {
        name: run_scenario(name, home, work, config, args)
        for name in (args.workload or list(WORKLOADS))
    }
    name = (
        NAME
        if args.database == "sqlite" and args.replicas == 1
        else (f"{NAME}_{args.database}_x{args.replicas}")
    )
    result = {
        "name": name,
        "when": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "machine": report.machine(),
        "config": {
            "rate": args.rate,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "overrides": overrides,
            "server_env": args.env,
            "database": args.database,
            "replicas": args.replicas,
            "bentoml_config": yaml.safe_load(Path(config).read_text()),
        },
        "targets": TARGETS,
        "scenarios": scenarios,
    }
    if not args.no_write:
        path = report.RESULTS_DIR / f"{name}.json"
        if path.is_file() and args.workload:  # a subset: keep the other workloads' runs
            earlier = json.loads(path.read_text()).get("scenarios", {})
            result["scenarios"] = {**earlier, **scenarios}
    report.publish(name, result, markdown(result), write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
