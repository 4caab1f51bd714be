"""ModelManager's fetches: the payload route (booster JSON + metadata) and the ONNX route.

    .venv/bin/python -m bench.model_manager_fetch [--duration 20] [--warmup 5] [--workdir DIR]

One model_manager directory of ``GROUPS`` symbols, each an XGBoost model of ``N_TREES`` trees
over ``N_FEATURES`` factors (``bench.factor_latency``'s synthetic data), registered over HTTP
(``POST /api/models``, timed) and served by ``bentoml serve`` ModelManager (watcher on; no
venue table, so no Redis). The first ONNX fetch (conversion, check, logging) is timed, and
every route's answer is checked against the booster in-process before it is loaded.
Scenarios (``bench.loadgen``, GET, one symbol):

* closed loop, ``CLOSED_CLIENTS`` clients: payload gzip-compressed (what ``curl
  --compressed`` and the seed's clients ask for), payload uncompressed, ONNX file;
* open loop, ``OPEN_RATE`` requests/s: the compressed payload (latency from the scheduled
  send time).

Targets: no errors; P99 under 50 ms at 50 requests/s. Writes
``bench/results/model_manager_fetch.{json,md}`` unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import cpu, environment, load, report
from bench.factor_latency import N_FEATURES, N_TREES, factor_names, synthetic_data
from bench.report import fmt, log
from harness.bento import BentoServer

NAME = "model_manager_fetch"
GROUPS = 4
CLOSED_CLIENTS = 8
OPEN_RATE = 50.0
P99_TARGET_MS = 50.0
GZIP = {"Accept-Encoding": "gzip"}


def write_directory(folder: Path) -> dict[str, Any]:
    """``GROUPS`` artifact groups (model JSON, factors, IC table); their boosters by symbol."""
    import pandas as pd
    import xgboost as xgb

    folder.mkdir(parents=True, exist_ok=True)
    factors, boosters = factor_names(), {}
    for index in range(GROUPS):
        symbol = f"SYM{index}USDT"
        x, y = synthetic_data(5_000, seed=index)
        params = {"max_depth": 6, "eta": 0.1, "nthread": 2, "seed": index}
        booster = xgb.train(params, xgb.DMatrix(x, label=y), N_TREES)
        group = f"{symbol}_ret_1m"
        booster.save_model(folder / f"{group}_model.json")
        (folder / f"{group}_factors.txt").write_text("\n".join(factors) + "\n")
        taus = np.linspace(0.2, -0.2, N_FEATURES)
        ic = {
            "symbol": symbol,
            "factor_name": factors,
            "return_name": "ret_1m",
            "Kendall_tau": taus,
        }
        pd.DataFrame(ic).to_csv(folder / f"{group}_ic.csv", index=False)
        boosters[symbol] = booster
    return boosters


def check_answers(url: str, symbol: str, booster: Any) -> dict[str, Any]:
    """Fetch both routes once; the payload's booster and the ONNX model must predict what
    ``booster`` predicts. Returns the sizes and the first (converting) ONNX fetch's time."""
    import onnxruntime
    import xgboost as xgb

    rows, _ = synthetic_data(16, seed=99)
    expected = booster.inplace_predict(rows)
    payload = httpx.get(f"{url}/api/models/bench/model/{symbol}", timeout=60).raise_for_status()
    served = xgb.Booster()
    served.load_model(bytearray(payload.json()["payload"]["model_json"].encode()))
    np.testing.assert_allclose(served.inplace_predict(rows), expected, rtol=1e-6)
    started = time.perf_counter()
    onnx = httpx.get(f"{url}/api/models/bench/model_onnx/{symbol}", timeout=120)
    first_onnx_s = time.perf_counter() - started
    onnx.raise_for_status()
    assert onnx.headers["x-model-sha256"] == hashlib.sha256(onnx.content).hexdigest()
    session = onnxruntime.InferenceSession(onnx.content, providers=["CPUExecutionProvider"])
    got = [session.run(None, {"input": row[None, :]})[0].ravel()[0] for row in rows]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    compressed = httpx.get(payload.url, headers=GZIP, timeout=60)
    return {
        "payload_bytes": len(payload.content),
        "payload_gzip_bytes": int(compressed.headers["content-length"]),
        "onnx_bytes": len(onnx.content),
        "first_onnx_fetch_s": round(first_onnx_s, 3),
    }


def scenarios(url: str, symbol: str, args: argparse.Namespace, work: Path, pid: int | None):
    """Closed loops on the three fetches, then the open loop on the compressed payload."""
    payload = f"{url}/api/models/bench/model/{symbol}"
    onnx = f"{url}/api/models/bench/model_onnx/{symbol}"
    runs = {}
    closed = {"payload (gzip)": (payload, GZIP), "payload": (payload, {}), "onnx": (onnx, {})}
    for label, (target, headers) in closed.items():
        log(f"closed loop, {CLOSED_CLIENTS} clients: {label}")
        runs[f"closed {label}"] = cpu.quiet_run(
            label,
            lambda t=target, h=headers: load.run_loadgen(
                "closed",
                t,
                None,
                concurrency=CLOSED_CLIENTS,
                duration=args.duration,
                warmup=args.warmup,
                headers=h,
                server_pid=pid,
                out_dir=work,
            ),
            args.sharing,
            log,
        )
    log(f"open loop, {OPEN_RATE:g} requests/s: payload (gzip)")
    runs["open payload (gzip)"] = cpu.quiet_run(
        "open",
        lambda: load.run_loadgen(
            "open",
            payload,
            None,
            rate=OPEN_RATE,
            duration=args.duration,
            warmup=args.warmup,
            headers=GZIP,
            server_pid=pid,
            out_dir=work,
        ),
        args.sharing,
        log,
    )
    return runs


def verdicts(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    errors = {label: run["errors"] for label, run in runs.items()}
    p99 = runs["open payload (gzip)"]["latency_ms"]["p99"]
    return {
        "errors": {"target": "0", "value": errors, "met": not any(errors.values())},
        "open_p99_ms": {"target": f"< {P99_TARGET_MS:g}", "value": p99, "met": p99 < P99_TARGET_MS},
    }


def markdown(result: dict[str, Any]) -> str:
    sizes = result["answers"]
    lines = [
        f"### ModelManager fetches — {result['finished']}",
        "",
        f"{GROUPS} groups of {N_TREES} trees x {N_FEATURES} factors; payload "
        f"{sizes['payload_bytes']:,} bytes ({sizes['payload_gzip_bytes']:,} gzip), ONNX "
        f"{sizes['onnx_bytes']:,} bytes. Registration (import + gated promotion of every "
        f"group) {result['register_s']:.1f} s; first ONNX fetch (convert, check, log) "
        f"{sizes['first_onnx_fetch_s']:.2f} s. {result['machine']['cpus']} CPUs, load "
        f"generator on the same machine, {result['duration_s']:g} s measured per scenario.",
        "",
        "| scenario | fetches/s | p50 ms | p95 ms | p99 ms | max ms | errors | server cores |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, run in result["runs"].items():
        lat = run["latency_ms"]
        lines.append(
            f"| {label} | {run['throughput_rps']:,.1f} | {fmt(lat['p50'], 2)} | "
            f"{fmt(lat['p95'], 2)} | {fmt(lat['p99'], 2)} | {fmt(lat['max'], 1)} | "
            f"{run['errors']} | {run['cpu']['server_cores']} |"
        )
    lines += ["", *report.verdict_table(result["verdicts"])]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--duration", type=float, default=20.0, help="measured s per scenario")
    parser.add_argument("--warmup", type=float, default=5.0, help="warm-up s per scenario")
    parser.add_argument("--workdir", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results")
    cpu.add_quiet_arguments(parser)
    args = parser.parse_args(argv)
    args.sharing = cpu.apply_quiet_arguments(args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = environment.work_dir(args.workdir, "tradeserve-bench-model-manager-")
    home, logs, models = work / "home", work / "logs", work / "models"
    log(f"work folder {work}")
    boosters = write_directory(models / "bench")
    env = environment.bench_env(home, TRADESERVE_MODEL_ROOTS=str(models))
    server = BentoServer("bentos.model_manager.service:ModelManager", env, logs / "serve.log")
    with cpu.running(server, args.sharing):
        started = time.perf_counter()
        body = {"model_name": "bench", "root_path": str(models / "bench")}
        httpx.post(f"{server.url}/api/models", json=body, timeout=600).raise_for_status()
        register_s = time.perf_counter() - started
        symbol = next(iter(boosters))
        answers = check_answers(server.url, symbol, boosters[symbol])
        runs = scenarios(server.url, symbol, args, work, server.pid)
    result = {
        "name": NAME,
        "finished": report.now_iso(),
        "machine": report.machine(),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "register_s": round(register_s, 2),
        "answers": answers,
        "runs": runs,
        "verdicts": verdicts(runs),
    }
    report.publish(NAME, result, markdown(result), write=not args.no_write)
    return 0 if all(item["met"] for item in result["verdicts"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
