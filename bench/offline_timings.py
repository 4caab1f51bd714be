"""Offline speed targets: a factor model's one-row prediction in-process, the demo's factor
training, and ``tradeserve evaluate`` on the demo registry.

    .venv/bin/python -m bench.offline_timings [--workdir DIR] [--repeats 2000]

These were once assertions inside tests (``median < 5 ms``, ``< 30 s``, ``< 60 s``); a
timing on a shared CI host says nothing about the code, so they are measured here, on a
quiet machine, with their targets beside them. Writes ``bench/results/offline_timings.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import environment, report
from bench.report import log

NAME = "offline_timings"
TARGETS_S = {"predict_one_row_median": 0.005, "train_demo_factor_models": 30.0, "evaluate": 60.0}
TRADESERVE = Path(sys.executable).with_name("tradeserve")


def time_predict_rows(repeats: int) -> dict[str, float]:
    """One-row ``FactorRuntime.predict_rows`` on a promoted demo factor model (seconds)."""
    from registry.loading import load_version
    from registry.resolve import resolve

    runtime = load_version(resolve("factor-SPX_ret_1d")).runtime
    row = np.zeros((1, len(runtime.factors)), dtype=np.float32)
    for _ in range(50):  # warm-up
        runtime.predict_rows(row)
    timings = np.empty(repeats)
    for index in range(repeats):
        started = time.perf_counter()
        runtime.predict_rows(row)
        timings[index] = time.perf_counter() - started
    return {
        "median_s": float(np.median(timings)),
        "p99_s": float(np.percentile(timings, 99)),
        "repeats": repeats,
    }


def time_factor_training(work: Path) -> float:
    from training_hooks.factor.demo import train_demo_factor_models
    from training_hooks.market_data import load_demo_market_data

    market = load_demo_market_data()
    started = time.perf_counter()
    train_demo_factor_models(market, work / "factor-export")
    return time.perf_counter() - started


def time_evaluate(home: Path) -> float:
    env = environment.bench_env(home)
    demo = subprocess.run([str(TRADESERVE), "demo"], env=env, capture_output=True, text=True)
    if demo.returncode != 0:
        raise SystemExit(f"tradeserve demo failed:\n{demo.stderr[-3000:]}")
    started = time.perf_counter()
    done = subprocess.run([str(TRADESERVE), "evaluate"], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"tradeserve evaluate failed:\n{done.stderr[-3000:]}")
    return seconds


def markdown(result: dict[str, Any]) -> str:
    rows = [
        ("factor `predict_rows`, one row: median", result["predict_one_row"]["median_s"] * 1e3,
         "predict_one_row_median", "ms"),
        ("factor `predict_rows`, one row: p99", result["predict_one_row"]["p99_s"] * 1e3, None,
         "ms"),
        ("demo factor training (2 models)", result["train_demo_factor_models_s"],
         "train_demo_factor_models", "s"),
        ("`tradeserve evaluate` (demo registry)", result["evaluate_s"], "evaluate", "s"),
    ]  # fmt: skip
    lines = [
        f"### Offline timings — {result['finished']}",
        "",
        "| what | measured | target | met |",
        "|---|---:|---:|:---:|",
    ]
    for label, value, target_key, unit in rows:
        if target_key is None:
            lines.append(f"| {label} | {report.fmt(value, 3)} {unit} | | |")
            continue
        target = TARGETS_S[target_key] * (1e3 if unit == "ms" else 1)
        met = "yes" if value < target else "**no**"
        lines.append(f"| {label} | {report.fmt(value, 3)} {unit} | < {target:g} {unit} | {met} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=2000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    work = environment.work_dir(args.workdir, "tradeserve-offline-")
    home = work / "home"
    log("demo registry + tradeserve evaluate")
    evaluate_s = time_evaluate(home)
    environment.use_registry(home)
    os.environ["TRADESERVE_HOME"] = str(home)
    log("one-row predict_rows")
    predict = time_predict_rows(args.repeats)
    log("demo factor training")
    train_s = time_factor_training(work)
    result = {
        "benchmark": NAME,
        "machine": report.machine(),
        "targets_s": TARGETS_S,
        "predict_one_row": predict,
        "train_demo_factor_models_s": train_s,
        "evaluate_s": evaluate_s,
        "finished": report.now_iso(),
    }
    report.publish(NAME, result, markdown(result), write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
