"""Factor models: FactorModels (BentoML) vs ``mlflow models serve`` on the same version.

    .venv/bin/python -m bench.factor_latency [--duration 20] [--workdir DIR]

An XGBoost model of 100 trees over 50 synthetic factors is trained (real training, synthetic
data), logged with ``log_factor`` and promoted in a fresh embedded registry. Both
servers then serve that registered version, single-row requests only. FactorModels runs
twice, with ``BENTOML_CONFIG`` = configuration.yaml (overrides only) and without it (its
configuration in code alone): the two must agree within 10 %, each >= 10x mlflow.

* closed loop, 32 concurrent clients, fixed duration — ``hey`` (Go), after a ``hey`` warm-up;
* open loop, 400 requests/s constant arrival rate — ``bench.loadgen open``; latency from
  the scheduled send time (no coordinated omission).

Writes ``bench/results/factor_latency.{json,md}`` and the table in bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import cpu, environment, load, report
from bench.report import fmt, log
from harness.bento import BentoServer
from harness.ports import free_port
from harness.process import ManagedProcess

NAME = "factor_latency"
MODEL = "factor-BENCH_ret_1d"
N_FEATURES = 50
N_TREES = 100
N_TRAIN_ROWS = 20_000
CLOSED_CONCURRENCY = 32
OPEN_RATE = 400.0
TARGETS = {
    "speedup_vs_mlflow": 10.0,
    "without_config_within": 0.10,  # |req/s without BENTOML_CONFIG / with - 1|
    "closed_loop_rps": 1000.0,
    "open_loop_p95_ms": 15.0,
}


# ------------------------------------------------------------------------------ model


def factor_names() -> list[str]:
    return [f"f{i:02d}" for i in range(N_FEATURES)]


def synthetic_data(rows: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Factors with a non-linear, interacting signal (so the trees are real trees)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, N_FEATURES)).astype(np.float32)
    signal = (
        0.5 * x[:, 0]
        - 0.3 * x[:, 1] * x[:, 2]
        + 0.2 * np.sin(3 * x[:, 3])
        + 0.1 * (x[:, 4] > 0.5)
        + 0.05 * x[:, 5:15].sum(axis=1)
    )
    y = (signal + rng.normal(scale=0.5, size=rows)).astype(np.float32)
    return x, y


def prepare_registry(home: Path) -> str:
    """Train, log and promote the bench factor model unless ``home`` already has it."""
    import pandas as pd
    import xgboost as xgb

    from registry.errors import ModelNotFoundError
    from registry.promotion import current_holder, promote
    from registry.store import client
    from training_hooks.factor.log import ic_table_for, log_factor
    from training_hooks.registration import Lineage

    environment.use_registry(home)
    try:
        held = current_holder(MODEL, "champion", client())
    except ModelNotFoundError:
        held = None
    if held is not None:
        log(f"registry in {home} already has {MODEL} version {held.version} promoted")
        return held.version
    x, y = synthetic_data(N_TRAIN_ROWS)
    factors = factor_names()
    started = time.monotonic()
    booster = xgb.train(
        {"objective": "reg:squarederror", "max_depth": 6, "eta": 0.1, "nthread": 2},
        xgb.DMatrix(x, label=y, feature_names=factors),
        num_boost_round=N_TREES,
    )
    seconds = time.monotonic() - started
    frame = pd.DataFrame(x, columns=factors)
    version = log_factor(
        MODEL,
        booster,
        factors=factors,
        ic_table=ic_table_for(frame.iloc[:5000], y[:5000]),
        training_info={
            "symbol": "BENCH",
            "return_name": "ret_1d",
            "train_samples": N_TRAIN_ROWS,
            "train_time_sec": round(seconds, 2),
            "original_factors_count": N_FEATURES,
            "final_factors_count": N_FEATURES,
            "selected_factors": factors,
        },
        lineage=Lineage(data_source="synthetic", extra={"benchmark": NAME}),
        input_example=frame.iloc[:2],
        description=f"Benchmark model: {N_TREES} trees x {N_FEATURES} synthetic factors.",
    )
    result = promote(MODEL, version.version, reason="benchmark")
    log(result.summary())
    return version.version


def expected_predictions(rows: np.ndarray) -> list[float]:
    """The registered version's predictions, loaded in-process (the servers must agree)."""
    from registry.loading import load_version
    from registry.resolve import resolve

    runtime = load_version(resolve(MODEL)).runtime
    return [float(v) for v in runtime.predict_rows(rows)]


def write_bodies(folder: Path, rows: np.ndarray) -> dict[str, dict[str, Path]]:
    """Request bodies: one row per request, for each server's API."""
    factors = factor_names()
    bodies = {
        "factormodels": [{"model": MODEL, "rows": [row.tolist()]} for row in rows],
        "mlflow": [
            {"dataframe_split": {"columns": factors, "data": [row.tolist()]}} for row in rows
        ],
    }
    paths: dict[str, dict[str, Path]] = {}
    for server, documents in bodies.items():
        lines = folder / f"{server}-bodies.jsonl"
        lines.write_text("".join(json.dumps(doc) + "\n" for doc in documents))
        single = folder / f"{server}-body.json"
        single.write_text(json.dumps(documents[0]))
        paths[server] = {"lines": lines, "single": single}
    return paths


# ------------------------------------------------------------------------------ servers


# FactorModels configurations tried with --variants: BentoML config overrides merged into
# configuration.yaml, plus environment variables of the server process. FactorModels'
# configuration in code already has the access log off and every URL untraced; these put
# back what it turned off, to show what each costs.
TRACED_DEFAULT = ["/livez", "/readyz", "/healthz", "/metrics"]
VARIANTS: dict[str, dict[str, Any]] = {
    "access-log": {
        "about": "BentoML access log on (one log line per request, relayed by the arbiter)",
        "config": {"services": {"FactorModels": {"logging": {"access": {"enabled": True}}}}},
        "env": {},
    },
    "traced": {
        "about": "OpenTelemetry middleware active on /predict (BentoML's default exclusions "
        "only; no exporter, sample rate 0)",
        "config": {"services": {"FactorModels": {"tracing": {"excluded_urls": TRACED_DEFAULT}}}},
        "env": {},
    },
    "1-worker": {
        "about": "workers 1 instead of 2",
        "config": {"services": {"FactorModels": {"workers": 1}}},
        "env": {},
    },
    "3-workers": {
        "about": "workers 3 instead of 2",
        "config": {"services": {"FactorModels": {"workers": 3}}},
        "env": {},
    },
}


def factormodels_server(
    home: Path, logs: Path, work: Path, variant: str | None = None, *, configured: bool = True
) -> BentoServer:
    """FactorModels under ``variant``, or its configuration in code alone when not
    ``configured`` (no ``BENTOML_CONFIG`` at all)."""
    spec = VARIANTS[variant] if variant else {"config": {}, "env": {}}
    config = environment.CONFIGURATION
    if spec["config"]:
        config = environment.write_config(config, spec["config"], work / f"config-{variant}.yaml")
    env = environment.bench_env(
        home, config=config, TRADESERVE_FACTOR_MODELS=json.dumps([MODEL]), **spec["env"]
    )
    name = variant or ("main" if configured else "no-config")
    server = BentoServer("bentos.factor.service:FactorModels", env, logs / f"factor-{name}.log")
    if not configured:  # BentoServer adds configuration.yaml unless the env names another
        server.env.pop("BENTOML_CONFIG")
    return server


def mlflow_server(home: Path, version: str, logs: Path, workers: int) -> ManagedProcess:
    port = free_port()
    bin_dir = Path(environment.PYTHON).parent  # mlflow runs `uvicorn` from PATH
    env = environment.bench_env(home, MLFLOW_TRACKING_URI=f"sqlite:///{home / 'mlflow.db'}")
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    mlflow = str(bin_dir / "mlflow")
    command = [
        mlflow,
        "models",
        "serve",
        "-m",
        f"models:/{MODEL}/{version}",
        "--env-manager",
        "local",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    return ManagedProcess(
        f"mlflow models serve (workers={workers})",
        command,
        env=env,
        log_path=logs / f"mlflow-serve-{workers}.log",
        cwd=environment.REPO_ROOT,
        port=port,
        ready="/ping",
    )


def check_answers(url: str, body: dict, expected: float, key: str) -> float:
    import httpx

    response = httpx.post(url, json=body, timeout=30)
    response.raise_for_status()
    got = response.json()[key][0]
    got = got if isinstance(got, float | int) else next(iter(got.values()))
    if not math.isclose(float(got), expected, rel_tol=1e-5, abs_tol=1e-6):
        raise AssertionError(f"{url} answered {got}, the registered model says {expected}")
    return float(got)


def measure(
    label: str,
    server: Any,
    path: str,
    bodies: dict[str, Path],
    args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    url = server.url + path
    pid = server.pid
    result: dict[str, Any] = {"server": label, "url": url}

    def closed_scenario() -> dict[str, Any]:
        log(f"{label}: hey warm-up {args.warmup:g}s")
        load.run_hey(url, bodies["single"], concurrency=CLOSED_CONCURRENCY, duration=args.warmup)
        log(f"{label}: closed loop, {CLOSED_CONCURRENCY} clients, {args.duration:g}s (hey)")
        return load.run_hey(
            url,
            bodies["single"],
            concurrency=CLOSED_CONCURRENCY,
            duration=args.duration,
            server_pid=pid,
        )

    closed = cpu.quiet_run(f"{label} closed loop", closed_scenario, args.sharing, log)
    result["closed"] = closed
    log(
        f"  {closed['throughput_rps']:.0f} req/s, p50 {fmt(closed['latency_ms']['p50'])} ms, "
        f"p99 {fmt(closed['latency_ms']['p99'])} ms, errors {closed['errors']}, "
        f"cpu {closed['cpu']}"
    )

    log(f"{label}: open loop, {OPEN_RATE:g} req/s, {args.duration:g}s (+{args.warmup:g}s warm-up)")
    opened = cpu.quiet_run(
        f"{label} open loop",
        lambda: load.run_loadgen(
            "open",
            url,
            bodies["lines"],
            rate=OPEN_RATE,
            duration=args.duration,
            warmup=args.warmup,
            timeout=30,
            server_pid=pid,
            nice=args.sharing.nice,
            out_dir=work,
        ),
        args.sharing,
        log,
    )
    result["open"] = opened
    log(
        f"  achieved {opened['throughput_rps']:.0f} req/s, p50 {fmt(opened['latency_ms']['p50'])}"
        f" ms, p95 {fmt(opened['latency_ms']['p95'])} ms, p99 {fmt(opened['latency_ms']['p99'])}"
        f" ms, errors {opened['errors']}, cpu {opened['cpu']}"
    )
    return result


def run_factormodels(
    variant: str | None,
    home: Path,
    logs: Path,
    work: Path,
    bodies: dict[str, dict[str, Path]],
    expected: float,
    args: argparse.Namespace,
    *,
    configured: bool = True,
) -> dict[str, Any]:
    label = f"FactorModels [{variant}]" if variant else "FactorModels"
    label += "" if configured else " (no BENTOML_CONFIG)"
    log(f"starting {label} (bentoml serve)")
    process = factormodels_server(home, logs, work, variant, configured=configured)
    with cpu.running(process, args.sharing) as server:
        first = json.loads(bodies["factormodels"]["single"].read_text())
        check_answers(server.url + "/predict", first, expected, "predictions")
        run = measure(label, server, "/predict", bodies["factormodels"], args, work)
    run["variant"] = variant
    run["configured"] = configured
    return run


# ------------------------------------------------------------------------------ report


def verdicts(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ours, bare = runs[0], runs[1]  # FactorModels with and without BENTOML_CONFIG
    baseline = next(run for run in runs if run["server"].startswith("mlflow models serve (w"))
    speedup = ours["closed"]["throughput_rps"] / baseline["closed"]["throughput_rps"]
    bare_speedup = bare["closed"]["throughput_rps"] / baseline["closed"]["throughput_rps"]
    bare_ratio = bare["closed"]["throughput_rps"] / ours["closed"]["throughput_rps"]
    within = TARGETS["without_config_within"]
    errors = sum(run[mode]["errors"] for run in (ours, bare) for mode in ("closed", "open"))
    p99_ours = ours["closed"]["latency_ms"]["p99"]
    p99_base = baseline["closed"]["latency_ms"]["p99"]
    return {
        "speedup_vs_mlflow": {
            "value": speedup,
            "target": f">= {TARGETS['speedup_vs_mlflow']:g}x",
            "met": speedup >= TARGETS["speedup_vs_mlflow"],
        },
        "without_config_vs_with": {
            "value": bare_ratio,
            "target": f"closed-loop req/s without BENTOML_CONFIG within {within:.0%} of with it",
            "met": abs(bare_ratio - 1) <= within,
        },
        "without_config_speedup_vs_mlflow": {
            "value": bare_speedup,
            "target": f">= {TARGETS['speedup_vs_mlflow']:g}x without BENTOML_CONFIG",
            "met": bare_speedup >= TARGETS["speedup_vs_mlflow"],
        },
        "lower_p99_than_mlflow": {
            "value": {"factormodels": p99_ours, "mlflow": p99_base},
            "target": "closed-loop P99 below mlflow's",
            "met": p99_ours < p99_base,
        },
        "closed_loop_rps": {
            "value": ours["closed"]["throughput_rps"],
            "target": f">= {TARGETS['closed_loop_rps']:g} req/s at {CLOSED_CONCURRENCY} clients",
            "met": ours["closed"]["throughput_rps"] >= TARGETS["closed_loop_rps"],
        },
        "open_loop_p95_ms": {
            "value": ours["open"]["latency_ms"]["p95"],
            "target": f"<= {TARGETS['open_loop_p95_ms']:g} ms at {OPEN_RATE:g} req/s",
            "met": (ours["open"]["latency_ms"]["p95"] or math.inf) <= TARGETS["open_loop_p95_ms"],
        },
        "zero_errors": {"value": errors, "target": "0 (FactorModels)", "met": errors == 0},
    }


def markdown(result: dict[str, Any]) -> str:
    runs, verdict = result["runs"], result["verdicts"]
    lines = [
        f"### Factor models — {result['finished']}",
        "",
        f"{N_TREES} trees x {N_FEATURES} factors (XGBoost, `{MODEL}` v{result['version']}), "
        f"one row per request, {result['machine']['cpus']} CPUs ({result['machine']['cpu_model']})"
        f", load generator on the same machine. {result['duration_s']:g} s measured per "
        f"scenario after {result['warmup_s']:g} s warm-up.",
        "",
        f"**Closed loop, {CLOSED_CONCURRENCY} clients** (`hey -z -c {CLOSED_CONCURRENCY}`; "
        "latency = request sent → response read):",
        "",
        "| server | req/s | p50 ms | p95 ms | p99 ms | max ms | errors | server cores | "
        "server CPU ms/req | hey cores | other cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        closed, cpu = run["closed"], run["closed"]["cpu"]
        lat = closed["latency_ms"]
        per_request = cpu["server_cores"] / closed["throughput_rps"] * 1000
        lines.append(
            f"| {run['server']} | {closed['throughput_rps']:,.0f} | {fmt(lat['p50'], 2)} | "
            f"{fmt(lat['p95'], 2)} | {fmt(lat['p99'], 2)} | {fmt(lat['max'], 1)} | "
            f"{closed['errors']} | {cpu['server_cores']} | {per_request:.2f} | "
            f"{cpu['loadgen_cores']} | {cpu['other_cores']} |"
        )
    lines += [
        "",
        f"**Open loop, {OPEN_RATE:g} requests/s** (`bench.loadgen open`; latency from the "
        "scheduled send time, so queueing is included):",
        "",
        "| server | achieved req/s | p50 ms | p95 ms | p99 ms | p99.9 ms | max ms | errors | "
        "send lag p99 ms | server cores | loadgen cores | other cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        opened, cpu = run["open"], run["open"]["cpu"]
        lat = opened["latency_ms"]
        lines.append(
            f"| {run['server']} | {opened['throughput_rps']:,.0f} | {fmt(lat['p50'], 2)} | "
            f"{fmt(lat['p95'], 2)} | {fmt(lat['p99'], 2)} | {fmt(lat['p999'], 1)} | "
            f"{fmt(lat['max'], 1)} | {opened['errors']} | "
            f"{fmt(opened['send_lag_ms']['p99'], 2)} | {cpu['server_cores']} | "
            f"{cpu['loadgen_cores']} | {cpu['other_cores']} |"
        )
    variants = [run["variant"] for run in runs if run.get("variant")]
    if variants:
        lines += ["", "Variants:", ""]
        lines += [f"- `{v}`: {VARIANTS[v]['about']}" for v in variants]
    lines += ["", *report.verdict_table(verdict)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.factor_latency", description=__doc__)
    parser.add_argument("--duration", type=float, default=20.0, help="measured s per scenario")
    parser.add_argument("--warmup", type=float, default=5.0, help="warm-up s per scenario")
    parser.add_argument(
        "--mlflow-workers",
        default="1",
        help="comma-separated uvicorn worker counts for mlflow models serve (default 1, "
        "its own default); the first one is the baseline of the targets",
    )
    parser.add_argument("--workdir", type=Path, help="keep the registry here and reuse it")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results")
    parser.add_argument(
        "--results-name",
        default=NAME,
        help="file name of the results (bench/README.md shows only the default name's)",
    )
    parser.add_argument(
        "--variants",
        default="",
        help=f"comma-separated extra FactorModels configurations: {', '.join(VARIANTS)}",
    )
    cpu.add_quiet_arguments(parser)
    args = parser.parse_args(argv)
    args.variant_list = [v for v in args.variants.split(",") if v]
    unknown = [v for v in args.variant_list if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    args.sharing = cpu.apply_quiet_arguments(args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.duration + args.warmup > 60:
        raise SystemExit("keep each scenario within 60 s (duration + warm-up)")
    work = environment.work_dir(args.workdir, "tradeserve-bench-factor-")
    home, logs = work / "home", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log(f"work folder {work}")
    version = prepare_registry(home)
    rows, _ = synthetic_data(64, seed=11)
    expected = expected_predictions(rows[:1])[0]
    bodies = write_bodies(work, rows)

    runs = [
        run_factormodels(None, home, logs, work, bodies, expected, args),
        run_factormodels(None, home, logs, work, bodies, expected, args, configured=False),
    ]
    for workers in [int(w) for w in args.mlflow_workers.split(",") if w]:
        log(f"starting mlflow models serve --workers {workers}")
        with cpu.running(mlflow_server(home, version, logs, workers), args.sharing) as server:
            first = json.loads(bodies["mlflow"]["single"].read_text())
            check_answers(server.url + "/invocations", first, expected, "predictions")
            runs.append(measure(server.name, server, "/invocations", bodies["mlflow"], args, work))
    failed = {}
    for variant in args.variant_list:
        try:
            runs.append(run_factormodels(variant, home, logs, work, bodies, expected, args))
        except Exception as error:  # one broken variant must not lose the whole run
            log(f"  variant {variant} failed: {error}")
            failed[variant] = str(error)[-2000:]

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
        "configuration": (environment.CONFIGURATION).read_text(),
        "measurement": args.sharing.model_dump(),
        "runs": runs,
        "failed_variants": failed,
    }
    result["verdicts"] = verdicts(runs)
    report.publish(args.results_name, result, markdown(result), write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
