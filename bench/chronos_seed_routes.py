"""Chronos seed routes: what the compatibility layer costs against ``/forecast``.

    .venv/bin/python -m bench.chronos_seed_routes [--duration 30] [--workdir DIR]

The Chronos benchmark's model and load (``bench.chronos_throughput``: chronos-bolt-small with
random weights, 64 closed-loop clients, each with its own 512-point series, horizon 64, one
series per request) on one ChronosForecaster, route after route: ``POST /forecast``,
Sapheneia's ``POST /forecast/v1/chronos/inference``, AleutianLocal's legacy
``POST /v1/timeseries/forecast``, then ``/forecast`` again (the machine drifts between
minutes; ``/forecast``'s mean counts). The seed routes answer nine quantiles and the mean
(Sapheneia) or three series (legacy); ``/forecast`` is asked for 0.1/0.5/0.9 as in the
Chronos benchmark. Target: each seed route at least 90 % of ``/forecast``'s series/s, zero
errors. Writes ``bench/results/chronos_seed_routes.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import cpu, environment, report
from bench.chronos_inprocess import CONTEXT, HORIZON, random_walks
from bench.chronos_load import closed_loop
from bench.chronos_throughput import CLIENTS, MODEL, prepare_registry
from bench.report import fmt
from harness.bento import BentoServer

NAME = "chronos_seed_routes"
TARGET = 0.90

Body = Callable[[list[float], int], dict[str, Any]]


def native(walk: list[float], index: int) -> dict[str, Any]:
    return {
        "inputs": [{"target": walk, "item_id": f"s{index}"}],
        "parameters": {"prediction_length": HORIZON, "quantile_levels": [0.1, 0.5, 0.9]},
    }


def sapheneia(walk: list[float], index: int) -> dict[str, Any]:
    return {"context": walk, "prediction_length": HORIZON}


def legacy(walk: list[float], index: int) -> dict[str, Any]:
    return {
        "name": f"s{index}",
        "context_period_size": CONTEXT,
        "forecast_period_size": HORIZON,
        "model": f"amazon/{MODEL}",
        "recent_data": walk,
    }


# route name -> (path, text every answer contains, request body of one client)
ROUTES: dict[str, tuple[str, str, Body]] = {
    "forecast": ("/forecast", '"predictions"', native),
    "sapheneia": ("/forecast/v1/chronos/inference", '"prediction"', sapheneia),
    "legacy": ("/v1/timeseries/forecast", '"forecast"', legacy),
}
ORDER = ["forecast", "sapheneia", "legacy", "forecast"]


def write_bodies(folder: Path, route: str) -> Path:
    path = folder / f"bodies-{route}.jsonl"
    walks = random_walks(CLIENTS, CONTEXT, seed=1)
    body = ROUTES[route][2]
    path.write_text("".join(json.dumps(body(w.tolist(), i)) + "\n" for i, w in enumerate(walks)))
    return path


def measure(args: argparse.Namespace, home: Path, work: Path) -> dict[str, list[dict]]:
    env = environment.bench_env(home, TRADESERVE_CHRONOS_MODELS=json.dumps([MODEL]))
    server = BentoServer("bentos.chronos.service:ChronosForecaster", env, work / "serve.log")
    runs: dict[str, list[dict]] = {route: [] for route in ROUTES}
    with cpu.running(server, args.sharing):
        for position, route in enumerate(ORDER):
            path, check, _ = ROUTES[route]
            run = closed_loop(
                f"{route} ({path})",
                server,
                write_bodies(work, route),
                clients=CLIENTS,
                duration=args.duration,
                warmup=args.warmup if position == 0 else 8,
                sharing=args.sharing,
                work=work,
                path=path,
                check=check,
            )
            runs[route].append(run)
    return runs


def summarize(runs: dict[str, list[dict]]) -> dict[str, Any]:
    rates = {
        route: statistics.mean(run["throughput_rps"] for run in items)
        for route, items in runs.items()
    }
    errors = {
        route: sum(run["errors"] + run["errors_outside_window"] for run in items)
        for route, items in runs.items()
    }
    verdicts = {
        route: {
            "ratio": rates[route] / rates["forecast"],
            "met": rates[route] / rates["forecast"] >= TARGET and errors[route] == 0,
        }
        for route in ROUTES
        if route != "forecast"
    }
    return {"rates": rates, "errors": errors, "verdicts": verdicts}


def markdown(result: dict[str, Any]) -> str:
    summary = result["summary"]
    lines = [
        f"### Chronos seed routes — {result['finished']}",
        "",
        f"{MODEL} (random weights), {CLIENTS} closed-loop clients, one {CONTEXT}-point series "
        f"per request, horizon {HORIZON}; {result['duration_s']:g} s per route on one "
        "ChronosForecaster, in the order run. "
        f"Target: each seed route ≥ {TARGET:.0%} of `/forecast`, zero errors.",
        "",
        "| route | series/s | p50 ms | p99 ms | errors | mean batch | vs `/forecast` |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    seen: dict[str, int] = {}
    for route in ORDER:
        run = result["runs"][route][seen.get(route, 0)]
        seen[route] = seen.get(route, 0) + 1
        latency, batches = run["latency_ms"], run["batch_sizes"] or {}
        ratio = run["throughput_rps"] / summary["rates"]["forecast"]
        lines.append(
            f"| `{ROUTES[route][0]}` | {run['throughput_rps']:.1f} | {fmt(latency['p50'], 0)} | "
            f"{fmt(latency['p99'], 0)} | {run['errors']} | {fmt(batches.get('mean'))} | "
            f"{ratio:.0%} |"
        )
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for route, verdict in summary["verdicts"].items():
        lines.append(
            f"| `{ROUTES[route][0]}` ≥ {TARGET:.0%} of `/forecast` (mean of its two runs), "
            f"0 errors | {verdict['ratio']:.0%}, {summary['errors'][route]} errors | "
            f"{'yes' if verdict['met'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="measured s per route")
    parser.add_argument("--warmup", type=float, default=15.0, help="first route's warm-up s")
    parser.add_argument("--workdir", type=Path, help="keep the registry here and reuse it")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results")
    cpu.add_quiet_arguments(parser)
    args = parser.parse_args(argv)
    args.sharing = cpu.apply_quiet_arguments(args)
    work = environment.work_dir(args.workdir, "tradeserve-seed-routes-")
    home = work / "home"
    version = prepare_registry(home, work)
    runs = measure(args, home, work)
    result = {
        "benchmark": NAME,
        "machine": report.machine(),
        "model": MODEL,
        "version": version,
        "clients": CLIENTS,
        "duration_s": args.duration,
        "runs": runs,
        "summary": summarize(runs),
        "finished": report.now_iso(),
    }
    report.publish(NAME, result, markdown(result), write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
