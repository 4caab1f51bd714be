"""Chronos: ChronosForecaster's adaptive batching vs one request per model call.

    .venv/bin/python -m bench.chronos_throughput [--duration 30] [--variants NAME,...]

A Bolt model at the published chronos-bolt-small size (random weights, 47.7M parameters;
``build_random_chronos("bolt", "small")``) is registered with ``log_chronos`` and promoted
as ``chronos-bolt-small`` in a fresh embedded registry. Context 512, horizon 64, quantile
levels 0.1/0.5/0.9. Measured, one after the other in one run on this machine (the machine's
speed drifts between minutes, so the main baselines run before and after the servers and
their means count):

* (b) in-process limit — ``ChronosRuntime.forecast`` back to back with no HTTP
  (``bench.chronos_inprocess``), in the two ways one process can batch 64 series: one call
  of 64 on torch's threads, and two calls of 32 at once on one thread each; (b) is the
  faster. Batch 1 for reference.
* (a) one-request-per-model-call server — ``bench.chronos_single_server`` (FastAPI +
  uvicorn, same registered version, ``forecast`` on one series per request) as FastAPI runs
  a plain ``def`` endpoint: in its thread pool of 40, calls overlapping. This is the server
  the issue measured at 24-25 series/s. Two better-tuned one-request-per-call servers are
  measured once each for reference: one call at a time (the seed server's design), and two
  single-thread calls at once.
* ChronosForecaster — ``bentoml serve bentos.chronos.service:ChronosForecaster`` with the
  repository's configuration.yaml, ``POST /forecast`` with one series per request;
* optional ``--variants``: ChronosForecaster under other configurations (see VARIANTS).

Servers get 64 closed-loop clients (``bench.loadgen closed``), each with its own series,
sending the next request when the previous answer arrived. The batch-size distribution is
the ``tradeserve_model_batch_size`` histogram diffed over the measured window.

Writes ``bench/results/chronos_throughput.{json,md}`` and the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path
from typing import Any

from bench import cpu, environment, report
from bench.chronos_inprocess import CONTEXT, HORIZON, random_walks
from bench.chronos_load import closed_loop
from bench.cpu import SharedMachine
from bench.report import fmt, log
from harness.bento import BentoServer
from harness.ports import free_port
from harness.process import ManagedProcess

NAME = "chronos_throughput"
MODEL = "chronos-bolt-small"
CLIENTS = 64
TARGETS = {"vs_one_request_per_call": 3.5, "vs_in_process": 0.90}

# In-process batching configurations: name -> (label, chronos_inprocess arguments).
IN_PROCESS = {
    "one-call": ("one call of 64 on torch's threads", ["--batch", "64"]),
    "two-calls": (
        "two calls of 32 at once, one thread each",
        ["--batch", "32", "--streams", "2", "--torch-threads", "1"],
    ),
}
# One-request-per-model-call servers: name -> (label, chronos_single_server arguments).
# SINGLE is (a); the others are measured once, for reference.
ONE_PER_CALL = {
    "fastapi-def": ("FastAPI `def` endpoint (thread pool of 40)", ["--calls", "40"]),
    "one-at-a-time": ("one call at a time (the seed server)", ["--calls", "1"]),
    "two-single-thread": (
        "two single-thread calls at once",
        ["--calls", "2", "--torch-threads", "1"],
    ),
}
SINGLE = "fastapi-def"

# ChronosForecaster configurations tried with --variants: BentoML config overrides merged
# into configuration.yaml, plus environment variables of the server process.
VARIANTS: dict[str, dict[str, Any]] = {
    "no-access-log": {
        "about": "BentoML access log off (one log line per request through circus)",
        "config": {"services": {"ChronosForecaster": {"logging": {"access": {"enabled": False}}}}},
        "env": {},
    },
    "latency-1s": {
        "about": "batching.max_latency_ms 1000 instead of 30000",
        "config": {"services": {"ChronosForecaster": {"batching": {"max_latency_ms": 1000}}}},
        "env": {},
    },
    "batch-128": {
        "about": "batching.max_batch_size 128 (above the client count)",
        "config": {"services": {"ChronosForecaster": {"batching": {"max_batch_size": 128}}}},
        "env": {},
    },
    "one-call-at-a-time": {
        "about": "threads 1: one model call at a time per worker, on two torch threads",
        "config": {"services": {"ChronosForecaster": {"threads": 1}}},
        "env": {},
    },
    "two-workers": {
        "about": "workers 2, threads 1: two model copies, one single-thread call each "
        "(session 2's configuration)",
        "config": {"services": {"ChronosForecaster": {"workers": 2, "threads": 1}}},
        "env": {},
    },
    "bf16": {
        "about": "TRADESERVE_CHRONOS_DTYPE=bfloat16 (honoured on CPUs with AVX512-BF16 or AMX)",
        "config": {},
        "env": {"TRADESERVE_CHRONOS_DTYPE": "bfloat16"},
    },
    "gap-20ms": {
        "about": "TRADESERVE_BATCH_GAP_MS=20: a free model waits for a 20 ms lull (5 by default)",
        "config": {},
        "env": {"TRADESERVE_BATCH_GAP_MS": "20"},
    },
    "no-gap": {
        "about": "TRADESERVE_BATCH_GAP_MS=0: a free model takes whatever is queued at once "
        "(close to BentoML's CorkDispatcher under closed-loop load)",
        "config": {},
        "env": {"TRADESERVE_BATCH_GAP_MS": "0"},
    },
}


# ------------------------------------------------------------------------------ setup


def prepare_registry(home: Path, work: Path) -> str:
    """Build, log and promote chronos-bolt-small unless ``home`` already has it."""
    from registry.errors import ModelNotFoundError
    from registry.promotion import current_holder, promote
    from registry.store import client
    from training_hooks.chronos.builders import build_random_chronos
    from training_hooks.chronos.log import log_chronos
    from training_hooks.registration import Lineage

    environment.use_registry(home)
    try:
        held = current_holder(MODEL, "champion", client())
    except ModelNotFoundError:
        held = None
    if held is not None:
        log(f"registry in {home} already has {MODEL} version {held.version} promoted")
        return held.version
    folder = build_random_chronos("bolt", "small", work / "bolt-small")
    version = log_chronos(
        MODEL,
        folder,
        lineage=Lineage(
            data_source="random-init", extra={"init_seed": "0", "architecture": "bolt-small"}
        ),
        untrained=True,
        description="Random-weight chronos bolt (small shape) for benchmarks.",
    )
    log(promote(MODEL, version.version, reason="benchmark").summary())
    return version.version


def write_bodies(folder: Path) -> Path:
    """One request body per client: its own series, one series per request."""
    path = folder / "chronos-bodies.jsonl"
    lines = []
    for index, walk in enumerate(random_walks(CLIENTS, CONTEXT, seed=1)):
        body = {
            "inputs": [{"target": walk.tolist(), "item_id": f"s{index}"}],
            "parameters": {"prediction_length": HORIZON, "quantile_levels": [0.1, 0.5, 0.9]},
        }
        lines.append(json.dumps(body))
    path.write_text("\n".join(lines) + "\n")
    return path


# ------------------------------------------------------------------------------ scenarios


def in_process(
    home: Path,
    work: Path,
    config: str,
    duration: float,
    sharing: SharedMachine,
    batch_one: bool = False,
) -> dict[str, Any]:
    """One in-process configuration of IN_PROCESS (plus batch 1 when ``batch_one``)."""
    label, arguments = IN_PROCESS[config]
    out = work / f"inprocess-{config}.json"
    command = [environment.PYTHON, "-m", "bench.chronos_inprocess", "--duration", str(duration)]
    command += [*arguments, *(["--batch", "1"] if batch_one else [])]

    def scenario() -> dict[str, Any]:
        meter = cpu.CpuMeter(None)
        meter.start()
        before = cpu.children_cpu_seconds()
        subprocess.run(
            [*command, "--out", str(out)],
            cwd=environment.REPO_ROOT,
            env=environment.bench_env(home),
            check=True,
            timeout=duration * 2 + 300,
        )
        result = json.loads(out.read_text())
        result["cpu"] = meter.stop(cpu.children_cpu_seconds() - before)
        return result

    result = cpu.quiet_run(f"in-process {config}", scenario, sharing, log)
    result.update(config=config, label=label)
    for run in result["runs"]:
        log(
            f"  in-process {run['streams']} x batch {run['batch']}: "
            f"{run['series_per_s']:.1f} series/s ({run['ms_per_call_median']:.0f} ms/call)"
        )
    return result


def run_single_server(
    home: Path, logs: Path, bodies: Path, args, work: Path, config: str
) -> dict[str, Any]:
    """One one-request-per-call server of ONE_PER_CALL under the closed loop."""
    label, arguments = ONE_PER_CALL[config]
    port = free_port()
    server = ManagedProcess(
        f"one-request-per-call server ({config})",
        [environment.PYTHON, "-m", "bench.chronos_single_server", "--port", str(port), *arguments],
        env=environment.bench_env(home),
        log_path=logs / f"single-server-{config}.log",
        cwd=environment.REPO_ROOT,
        port=port,
        ready="/readyz",
    )
    with cpu.running(server, args.sharing):
        result = closed_loop(
            f"one request per call: {label}",
            server,
            bodies,
            clients=CLIENTS,
            duration=args.duration,
            warmup=8,
            sharing=args.sharing,
            work=work,
        )
    result.pop("batch_sizes", None)
    result.update(config=config, label=label)
    return result


def run_forecaster(
    home: Path, logs: Path, bodies: Path, args, work: Path, variant: str | None
) -> dict[str, Any]:
    spec = VARIANTS[variant] if variant else {"config": {}, "env": {}}
    config = environment.CONFIGURATION
    if spec["config"]:
        config = environment.write_config(config, spec["config"], work / f"config-{variant}.yaml")
    env = environment.bench_env(
        home, config=config, TRADESERVE_CHRONOS_MODELS=json.dumps([MODEL]), **spec["env"]
    )
    label = f"ChronosForecaster [{variant}]" if variant else "ChronosForecaster"
    log_path = logs / f"chronos-{variant or 'main'}.log"
    server = BentoServer("bentos.chronos.service:ChronosForecaster", env, log_path)
    with cpu.running(server, args.sharing):
        result = closed_loop(
            label,
            server,
            bodies,
            clients=CLIENTS,
            duration=args.duration,
            warmup=args.warmup,
            sharing=args.sharing,
            work=work,
        )
    result["variant"] = variant
    result["config_overrides"] = spec["config"]
    result["env_overrides"] = spec["env"]
    return result


# ------------------------------------------------------------------------------ report


def summarize(result: dict[str, Any]) -> None:
    """Baseline rates (means over before/after) and the verdicts, into ``result``."""
    limits: dict[str, list[float]] = {}
    for run in result["in_process"]:
        for item in run["runs"]:
            if item["batch"] * item["streams"] == CLIENTS:
                limits.setdefault(run["config"], []).append(item["series_per_s"])
    result["in_process_rates"] = {name: statistics.mean(v) for name, v in limits.items()}
    result["in_process_limit"] = max(result["in_process_rates"].values())
    singles: dict[str, list[float]] = {}
    for run in result["one_request_per_call"]:
        singles.setdefault(run["config"], []).append(run["throughput_rps"])
    result["one_request_per_call_rates"] = {k: statistics.mean(v) for k, v in singles.items()}
    result["one_request_per_call_rate"] = result["one_request_per_call_rates"][SINGLE]
    result["verdicts"] = verdicts(result)


def verdicts(result: dict[str, Any]) -> dict[str, Any]:
    served = result["forecaster"]["throughput_rps"]
    single = result["one_request_per_call_rate"]
    limit = result["in_process_limit"]
    errors = result["forecaster"]["errors"] + result["forecaster"]["errors_outside_window"]
    return {
        "vs_one_request_per_call": {
            "value": served / single,
            "target": f">= {TARGETS['vs_one_request_per_call']:g}x (a)",
            "met": served / single >= TARGETS["vs_one_request_per_call"],
        },
        "vs_in_process": {
            "value": served / limit,
            "target": f">= {TARGETS['vs_in_process']:.0%} of (b)",
            "met": served / limit >= TARGETS["vs_in_process"],
        },
        "zero_errors": {"value": errors, "target": "0", "met": errors == 0},
    }


def batch_text(batches: dict[str, Any] | None) -> str:
    if not batches:
        return "–"
    return ", ".join(f"{bucket}: {count}" for bucket, count in batches["buckets"].items())


def markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    limit, single = result["in_process_limit"], result["one_request_per_call_rate"]
    lines = [
        f"### Chronos — {result['finished']}",
        "",
        f"`{MODEL}` v{result['version']} (Bolt, published small size, random weights), "
        f"context {CONTEXT}, horizon {HORIZON}, levels 0.1/0.5/0.9; {CLIENTS} closed-loop "
        f"clients, one series per request (`bench.loadgen closed`); {m['cpus']} CPUs "
        f"({m['cpu_model']}), load generator on the same machine; {result['duration_s']:g} s "
        "measured per server after warm-up. Latency = request sent → full response.",
        "",
        "| scenario | series/s | vs (a) | vs (b) | p50 ms | p95 ms | p99 ms | errors | "
        "mean batch | server cores | loadgen cores | other cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in result["in_process"]:
        cpu = run["cpu"]
        for item in run["runs"]:
            what = run["label"] if item["batch"] * item["streams"] == CLIENTS else "one call of 1"
            lines.append(
                f"| in-process: {what} ({run['when']}) | {item['series_per_s']:.1f} | | | "
                f"{fmt(item['ms_per_call_median'], 0)}/call | | | | {item['batch']} | "
                f"{fmt(item['process_cores'], 2)} | | {cpu['other_cores']} |"
            )
    rows = [
        (f"one request per call: {run['label']} ({run['when']})", run)
        for run in result["one_request_per_call"]
    ]
    rows.append(("**ChronosForecaster** (configuration.yaml)", result["forecaster"]))
    rows += [(f"ChronosForecaster, variant `{r['variant']}`", r) for r in result["variants"]]
    for label, run in rows:
        lat, cpu, rps = run["latency_ms"], run["cpu"], run["throughput_rps"]
        batches = run.get("batch_sizes")
        mean_batch = fmt(batches["mean"]) if batches else "1"
        lines.append(
            f"| {label} | {rps:.1f} | {rps / single:.2f}x | {rps / limit:.0%} | "
            f"{fmt(lat['p50'], 0)} | {fmt(lat['p95'], 0)} | {fmt(lat['p99'], 0)} | "
            f"{run['errors']} | {mean_batch} | {cpu['server_cores']} | {cpu['loadgen_cores']} "
            f"| {cpu['other_cores']} |"
        )
    labels = {name: label for name, (label, _) in [*IN_PROCESS.items(), *ONE_PER_CALL.items()]}
    best_inprocess = max(result["in_process_rates"], key=result["in_process_rates"].get)
    served = result["forecaster"]["throughput_rps"]
    lines += [
        "",
        f"(a) = {labels[SINGLE]}, mean of the runs before and after: "
        f"{single:.1f} series/s. (b) = the faster in-process way to batch {CLIENTS} series, "
        f"{labels[best_inprocess]}, mean of before and after: {limit:.1f} series/s. Other "
        "cores = CPU used on the machine by anything but the server, the load generator "
        "and the benchmark itself (the box is shared).",
        "",
        "ChronosForecaster against every one-request-per-call server: "
        + "; ".join(
            f"{labels[name]}: {served / rate:.2f}x"
            for name, rate in result["one_request_per_call_rates"].items()
        )
        + ".",
        "",
        "Batch sizes per model call (`tradeserve_model_batch_size`, measured window; "
        "bucket upper bound: calls):",
        "",
    ]
    for label, run in rows:
        if "batch_sizes" in run:
            lines.append(f"- {label}: {batch_text(run.get('batch_sizes'))}")
    if result["variants"]:
        lines += ["", "Variants:", ""]
        for run in result["variants"]:
            lines.append(f"- `{run['variant']}`: {VARIANTS[run['variant']]['about']}")
    lines += ["", *report.verdict_table(result["verdicts"])]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.chronos_throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=30.0, help="measured s per server")
    parser.add_argument("--warmup", type=float, default=15.0, help="ChronosForecaster warm-up s")
    parser.add_argument("--inprocess-duration", type=float, default=20.0)
    parser.add_argument(
        "--variants",
        default="",
        help=f"comma-separated extra ChronosForecaster configurations: {', '.join(VARIANTS)}",
    )
    parser.add_argument("--skip-baselines", action="store_true", help="variants only (debug)")
    parser.add_argument("--workdir", type=Path, help="keep the registry here and reuse it")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results")
    parser.add_argument(
        "--results-name",
        default=NAME,
        help="file name of the results (bench/README.md shows only the default name's)",
    )
    cpu.add_quiet_arguments(parser)
    args = parser.parse_args(argv)
    args.sharing = cpu.apply_quiet_arguments(args)
    args.variant_list = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variant_list if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    if args.duration + max(args.warmup, 8) > 60:
        parser.error("keep each scenario within 60 s (duration + warm-up)")
    return args


def measure_baselines(
    result: dict[str, Any], when: str, home: Path, logs: Path, bodies: Path, args, work: Path
) -> None:
    """Before the servers: every in-process configuration (the first with batch 1 too), then
    every one-request-per-call server; after: (a), then the in-process configurations, so
    each baseline that counts straddles ChronosForecaster."""
    before = when == "before"
    in_process_runs = measure_in_process(home, work, args, batch_one=True) if before else []
    singles = [
        run_single_server(home, logs, bodies, args, work, name)
        for name in (ONE_PER_CALL if before else [SINGLE])
    ]
    if not before:
        in_process_runs = measure_in_process(home, work, args, batch_one=False)
    for run in [*in_process_runs, *singles]:
        run["when"] = when
    result["in_process"] += in_process_runs
    result["one_request_per_call"] += singles


def measure_in_process(home: Path, work: Path, args, batch_one: bool) -> list[dict[str, Any]]:
    """Every IN_PROCESS configuration; the first also at batch 1 when ``batch_one``."""
    return [
        in_process(
            home,
            work,
            name,
            args.inprocess_duration,
            args.sharing,
            batch_one=batch_one and index == 0,
        )
        for index, name in enumerate(IN_PROCESS)
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = environment.work_dir(args.workdir, "tradeserve-bench-chronos-")
    home, logs = work / "home", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log(f"work folder {work}")
    version = prepare_registry(home, work)
    bodies = write_bodies(work)

    result: dict[str, Any] = {
        "benchmark": NAME,
        "machine": report.machine(),
        "model": MODEL,
        "version": version,
        "context": CONTEXT,
        "horizon": HORIZON,
        "clients": CLIENTS,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "configuration": environment.CONFIGURATION.read_text(),
        "measurement": args.sharing.model_dump(),
        "in_process": [],
        "one_request_per_call": [],
        "variants": [],
    }
    if not args.skip_baselines:
        measure_baselines(result, "before", home, logs, bodies, args, work)
        log("ChronosForecaster (configuration.yaml)")
        result["forecaster"] = run_forecaster(home, logs, bodies, args, work, None)
    for variant in args.variant_list:
        log(f"ChronosForecaster variant {variant}: {VARIANTS[variant]['about']}")
        try:
            result["variants"].append(run_forecaster(home, logs, bodies, args, work, variant))
        except Exception as error:  # one broken variant must not lose the whole run
            log(f"  variant {variant} failed: {error}")
            result.setdefault("failed_variants", {})[variant] = str(error)[-2000:]
    if not args.skip_baselines:
        measure_baselines(result, "after", home, logs, bodies, args, work)
        summarize(result)
    result["finished"] = report.now_iso()
    if args.skip_baselines:
        print(json.dumps(result["variants"], indent=1, default=str)[:5000])
        return 0
    report.publish(args.results_name, result, markdown(result), write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
