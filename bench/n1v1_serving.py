"""N1V1's model serving: its own server vs FactorModels' N1V1 route on the same model.

    .venv/bin/python -m bench.n1v1_serving [--duration 20] [--workdir DIR]

One XGBoost model, 100 trees x 50 synthetic features (``bench.factor_latency``'s data),
trained with XGBoost's scikit-learn API, served three ways in one run:

* **N1V1**: its own server (``bench/peers/n1v1``, vendored unchanged), run as its
  ``deploy/Dockerfile.ml-serving`` does: ``uvicorn ml.serving:app --workers 4``,
  ``PRELOAD_MODELS=<name>``, the model as ``models/<name>.pkl`` (joblib, its documented
  local deployment; its MLflow path loads only the sklearn flavor and falls back to it);
* **FactorModels, N1V1 route**: the same model logged with ``log_tabular`` (xgboost flavor,
  JSON) and promoted; N1V1's request body on ``POST /predict``;
* **FactorModels, native**: ``{"model", "rows"}`` on the same server, and again on a server
  with the N1V1 routes off (``TRADESERVE_FACTOR_N1V1_ROUTES=false``): what the dispatch
  layer costs native clients.

Every server's answer to a row is checked against the model in-process first. Scenarios
per target: closed loop, 32 clients (``hey``, after a ``hey`` warm-up), and open loop,
400 requests/s (``bench.loadgen open``, latency from the scheduled send time), one row per
request. Writes ``bench/results/n1v1_serving.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import cpu, environment, report
from bench.factor_latency import (
    CLOSED_CONCURRENCY,
    N_FEATURES,
    N_TRAIN_ROWS,
    N_TREES,
    OPEN_RATE,
    check_answers,
    factor_names,
    measure,
    synthetic_data,
)
from bench.report import fmt, log
from harness.bento import BentoServer
from harness.ports import free_port
from harness.process import ManagedProcess

NAME = "n1v1_serving"
MODEL = "n1v1-bench-xgb"
PEER_DIR = environment.REPO_ROOT / "bench" / "peers" / "n1v1"
N1V1_WORKERS = 4  # its Dockerfile's CMD
TARGETS = {"speedup_vs_n1v1": 1.5, "route_vs_native_within": 0.10, "dispatch_cost_within": 0.05}


# ------------------------------------------------------------------------------ model


def prepare(home: Path, peer_models: Path) -> str:
    """Train the model once: promoted in the registry in ``home`` (for FactorModels) and
    pickled for N1V1 in ``peer_models``; both are reused by later runs."""
    import joblib
    import pandas as pd
    import xgboost as xgb

    from registry.errors import ModelNotFoundError
    from registry.promotion import current_holder, promote
    from registry.store import client
    from training_hooks.registration import Lineage
    from training_hooks.tabular.log import log_tabular

    environment.use_registry(home)
    pickle_path = peer_models / f"{MODEL}.pkl"
    try:
        held = current_holder(MODEL, "champion", client())
    except ModelNotFoundError:
        held = None
    if held is not None and pickle_path.is_file():
        log(f"registry in {home} already has {MODEL} version {held.version}; N1V1 its pickle")
        return held.version
    x, y = synthetic_data(N_TRAIN_ROWS)
    frame = pd.DataFrame(x, columns=factor_names())
    model = xgb.XGBRegressor(n_estimators=N_TREES, max_depth=6, learning_rate=0.1, n_jobs=2)
    model.fit(frame, y)
    peer_models.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, pickle_path)
    version = log_tabular(
        MODEL,
        model,
        input_example=frame.iloc[:2],
        lineage=Lineage(data_source="synthetic", extra={"benchmark": NAME}),
        description=f"Benchmark model: {N_TREES} trees x {N_FEATURES} synthetic features.",
    )
    log(promote(MODEL, version.version, reason="benchmark").summary())
    return version.version


def write_bodies(folder: Path, rows: np.ndarray) -> dict[str, dict[str, Path]]:
    """One row per request: N1V1's column-oriented body and FactorModels' native one."""
    names = factor_names()
    bodies = {
        "n1v1": [
            {
                "model_name": MODEL,
                "features": {n: [float(v)] for n, v in zip(names, row, strict=True)},
            }
            for row in rows
        ],
        "native": [{"model": MODEL, "rows": [row.tolist()]} for row in rows],
    }
    paths: dict[str, dict[str, Path]] = {}
    for kind, documents in bodies.items():
        lines = folder / f"{kind}-bodies.jsonl"
        lines.write_text("".join(json.dumps(doc) + "\n" for doc in documents))
        single = folder / f"{kind}-body.json"
        single.write_text(json.dumps(documents[0]))
        paths[kind] = {"lines": lines, "single": single}
    return paths


# ------------------------------------------------------------------------------ servers


def factormodels(home: Path, logs: Path, *, n1v1_routes: bool) -> BentoServer:
    env = environment.bench_env(
        home,
        TRADESERVE_FACTOR_MODELS=json.dumps([MODEL]),
        TRADESERVE_FACTOR_N1V1_ROUTES=str(n1v1_routes).lower(),
    )
    label = "main" if n1v1_routes else "no-n1v1-routes"
    return BentoServer("bentos.factor.service:FactorModels", env, logs / f"factor-{label}.log")


def n1v1(home: Path, peer_home: Path, logs: Path) -> ManagedProcess:
    """N1V1's server as its Dockerfile runs it, its models folder in the working directory."""
    port = free_port()
    env = environment.bench_env(
        home,
        PYTHONPATH=str(PEER_DIR),
        PRELOAD_MODELS=MODEL,
        REMOTE_INFERENCE_ENABLED="false",
        MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}",
    )
    command = [environment.PYTHON, "-m", "uvicorn", "ml.serving:app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", str(N1V1_WORKERS)]
    return ManagedProcess(
        f"N1V1 (uvicorn ml.serving, {N1V1_WORKERS} workers)",
        command,
        env=env,
        log_path=logs / "n1v1.log",
        cwd=peer_home,
        port=port,
        ready="/health",
    )


def dispatch_overhead_us(body: bytes, calls: int = 100_000) -> float:
    """Microseconds :class:`~bentos.factor.n1v1.N1V1Dispatch` adds to one native ``/predict``
    request, in-process around an app that only reads the body: the layer's own cost, free
    of the noise of a shared machine."""
    from bentos.factor.n1v1 import N1V1Dispatch

    async def native(scope: Any, receive: Any, send: Any) -> None:
        await receive()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def timed(app: Any) -> float:
        scope = {"type": "http", "path": "/predict", "method": "POST", "headers": []}
        started = time.perf_counter()
        for _ in range(calls):
            await app(scope, receive, send)
        return (time.perf_counter() - started) / calls * 1e6

    async def both() -> float:
        return await timed(N1V1Dispatch(native)) - await timed(native)

    return asyncio.run(both())


# ------------------------------------------------------------------------------ runs


def run_target(
    label: str,
    server: Any,
    kind: str,
    bodies: dict[str, dict[str, Path]],
    expected: float,
    args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    key = "predictions" if kind == "native" else "prediction"
    check_answers(
        server.url + "/predict", json.loads(bodies[kind]["single"].read_text()), expected, key
    )
    result = measure(label, server, "/predict", bodies[kind], args, work)
    result["kind"] = kind
    return result


def verdicts(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    peer, route, native = runs["n1v1"], runs["route"], runs["native"]

    def rps(run: dict[str, Any]) -> float:
        return run["closed"]["throughput_rps"]

    def p99(run: dict[str, Any]) -> float:
        return run["closed"]["latency_ms"]["p99"]

    speedup = rps(route) / rps(peer)
    ratio = rps(route) / rps(native)
    errors = sum(run[mode]["errors"] for run in (route, native) for mode in ("closed", "open"))
    found = {
        "speedup_vs_n1v1": {
            "value": speedup,
            "target": f">= {TARGETS['speedup_vs_n1v1']:g}x N1V1's closed-loop req/s",
            "met": speedup >= TARGETS["speedup_vs_n1v1"],
        },
        "lower_p99_than_n1v1": {
            "value": {"n1v1_route": p99(route), "n1v1": p99(peer)},
            "target": "closed-loop P99 below N1V1's",
            "met": p99(route) < p99(peer),
        },
        "route_vs_native": {
            "value": ratio,
            "target": f"N1V1 route within {TARGETS['route_vs_native_within']:.0%} of native "
            "/predict (closed-loop req/s)",
            "met": ratio >= 1 - TARGETS["route_vs_native_within"],
        },
        "zero_errors": {"value": errors, "target": "0 (FactorModels)", "met": errors == 0},
    }
    if "native_no_routes" in runs:
        cost = rps(native) / rps(runs["native_no_routes"])
        found["dispatch_cost"] = {
            "value": cost,
            "target": "native /predict req/s with the N1V1 layer within "
            f"{TARGETS['dispatch_cost_within']:.0%} of without it",
            "met": cost >= 1 - TARGETS["dispatch_cost_within"],
        }
    return found


def markdown(result: dict[str, Any]) -> str:
    runs, machine = result["runs"], result["machine"]
    lines = [
        f"### N1V1 serving — {result['finished']}",
        "",
        f"XGBoost {N_TREES} trees x {N_FEATURES} features (`{MODEL}` v{result['version']}), one "
        f"row per request, {machine['cpus']} CPUs ({machine['cpu_model']}), load generator on "
        f"the same machine; {result['duration_s']:g} s measured per scenario after "
        f"{result['warmup_s']:g} s warm-up. N1V1: `uvicorn ml.serving:app --workers "
        f"{N1V1_WORKERS}` (its Dockerfile); FactorModels: `bentoml serve`, its own configuration.",
        "",
        "| server | closed req/s | p50 ms | p99 ms | errors | open req/s | p50 ms | p95 ms | "
        "p99 ms | errors | server cores (closed) | server CPU ms/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs.values():
        closed, opened = run["closed"], run["open"]
        per_request = closed["cpu"]["server_cores"] / closed["throughput_rps"] * 1000
        lines.append(
            f"| {run['server']} | {closed['throughput_rps']:,.0f} | "
            f"{fmt(closed['latency_ms']['p50'], 2)} | {fmt(closed['latency_ms']['p99'], 2)} | "
            f"{closed['errors']} | {opened['throughput_rps']:,.0f} | "
            f"{fmt(opened['latency_ms']['p50'], 2)} | {fmt(opened['latency_ms']['p95'], 2)} | "
            f"{fmt(opened['latency_ms']['p99'], 2)} | {opened['errors']} | "
            f"{closed['cpu']['server_cores']} | {per_request:.2f} |"
        )
    lines += [
        "",
        f"The dispatch layer itself adds {result['dispatch_overhead_us']:.1f} µs to a native "
        "/predict request (in-process, `dispatch_overhead_us`).",
        "",
        *report.verdict_table(result["verdicts"]),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.n1v1_serving", description=__doc__)
    parser.add_argument("--duration", type=float, default=20.0, help="measured s per scenario")
    parser.add_argument("--warmup", type=float, default=5.0, help="warm-up s per scenario")
    parser.add_argument("--workdir", type=Path, help="keep the registry here and reuse it")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results")
    parser.add_argument(
        "--skip-dispatch-cost",
        action="store_true",
        help="do not measure native /predict on a server without the N1V1 routes",
    )
    cpu.add_quiet_arguments(parser)
    args = parser.parse_args(argv)
    args.sharing = cpu.apply_quiet_arguments(args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.duration + args.warmup > 60:
        raise SystemExit("keep each scenario within 60 s (duration + warm-up)")
    work = environment.work_dir(args.workdir, "tradeserve-bench-n1v1-")
    home, logs, peer_home = work / "home", work / "logs", work / "n1v1"
    logs.mkdir(parents=True, exist_ok=True)
    log(f"work folder {work}")
    version = prepare(home, peer_home / "models")
    rows, _ = synthetic_data(64, seed=11)
    expected = float(np.asarray(_in_process(peer_home / "models", rows[:1]))[0])
    bodies = write_bodies(work, rows)

    runs: dict[str, dict[str, Any]] = {}
    log(f"starting N1V1 ({N1V1_WORKERS} uvicorn workers)")
    with cpu.running(n1v1(home, peer_home, logs), args.sharing) as server:
        runs["n1v1"] = run_target(server.name, server, "n1v1", bodies, expected, args, work)
    log("starting FactorModels (bentoml serve)")
    with cpu.running(factormodels(home, logs, n1v1_routes=True), args.sharing) as server:
        route = run_target("FactorModels, N1V1 route", server, "n1v1", bodies, expected, args, work)
        native = run_target(
            "FactorModels, native /predict", server, "native", bodies, expected, args, work
        )
        runs["route"], runs["native"] = route, native
    if not args.skip_dispatch_cost:
        log("starting FactorModels without the N1V1 routes")
        with cpu.running(factormodels(home, logs, n1v1_routes=False), args.sharing) as server:
            label = "FactorModels, native /predict, N1V1 routes off"
            runs["native_no_routes"] = run_target(
                label, server, "native", bodies, expected, args, work
            )

    result = {
        "benchmark": NAME,
        "finished": report.now_iso(),
        "machine": report.machine(),
        "model": {"name": MODEL, "trees": N_TREES, "features": N_FEATURES},
        "version": version,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "closed_loop_concurrency": CLOSED_CONCURRENCY,
        "open_loop_rate": OPEN_RATE,
        "n1v1": {"workers": N1V1_WORKERS, "source": "bench/peers/n1v1 (Darellea/N1V1@43e4117)"},
        "measurement": args.sharing.model_dump(),
        "runs": runs,
    }
    result["dispatch_overhead_us"] = dispatch_overhead_us(bodies["native"]["single"].read_bytes())
    result["verdicts"] = verdicts(runs)
    report.publish(NAME, result, markdown(result), write=not args.no_write)
    return 0


def _in_process(models: Path, rows: np.ndarray) -> np.ndarray:
    """What the model itself answers (N1V1's pickle is the object that was logged)."""
    import joblib

    return joblib.load(models / f"{MODEL}.pkl").predict(rows)


if __name__ == "__main__":
    raise SystemExit(main())
