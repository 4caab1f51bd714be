"""GPU check: CUDA placement, bf16 and served series/s of ChronosForecaster, in one command.

    bench/gpu_check.sh [--duration 15] [--warmup 5] [--dtype bfloat16] [--sizes gpu|cpu]

Registers random-weight models built locally (``build_random_chronos``, never hub weights)
in a fresh embedded registry: on a GPU ``chronos-bolt-base`` (205M) and ``chronos-2`` (base,
120M); without one the tiny sizes (``chronos-bolt-tiny`` and Chronos-2 ``small``) with short
runs, so the check itself is exercised on any machine. Then serves both with one
``bentoml serve bentos.chronos.service:ChronosForecaster`` (the repository's
configuration.yaml) with ``TRADESERVE_CHRONOS_DTYPE`` (bfloat16 on a GPU, float32 without
one), and drives each model with ``bench.loadgen``'s closed loop, one 512-point series per
request, horizon 64, as the Chronos benchmark does:

* **batched** — 64 clients: the adaptive batcher coalesces their series (up to 64 a call);
* **unbatched** — as many clients as the service computes calls at once (its ``threads``),
  so every model call holds one series: the service as a one-request-per-call server.

The batch-size histogram (``tradeserve_model_batch_size``) of each window shows which it
was. Reported: the GPU (or its absence), each served model's device and dtype as ``/models``
reports them, series/s, latency, errors, batch sizes, and whether placement and dtype are
what was asked. Writes ``bench/results/gpu_check.{json,md}`` (``gpu_check-cpu`` without a
GPU, so a CPU run never stands for GPU numbers). Expected 3-5 minutes on a GPU machine,
mostly building and logging the two real-size models; ``bench/gpu_check.sh`` caps it at 8.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import httpx

from bench import cpu, environment, report
from bench.chronos_inprocess import CONTEXT, HORIZON, random_walks
from bench.chronos_load import SERVICE, closed_loop
from bench.chronos_throughput import CLIENTS
from bench.report import fmt, log
from bentos.shared.runtime_config import configured_threads
from harness.bento import BentoServer

# --sizes -> [(registered name, kind, builder size)]
PLANS: dict[str, list[tuple[str, str, str]]] = {
    "gpu": [("chronos-bolt-base", "bolt", "base"), ("chronos-2", "chronos2", "base")],
    "cpu": [("chronos-bolt-tiny", "bolt", "tiny"), ("chronos-2", "chronos2", "small")],
}


def gpu_info() -> dict[str, Any] | None:
    """The CUDA device this process sees, or None."""
    import torch

    if not torch.cuda.is_available():
        return None
    properties = torch.cuda.get_device_properties(0)
    return {
        "name": properties.name,
        "count": torch.cuda.device_count(),
        "memory_gib": round(properties.total_memory / 2**30, 1),
        "capability": f"{properties.major}.{properties.minor}",
        "bf16_supported": torch.cuda.is_bf16_supported(),
        "torch_cuda": torch.version.cuda,
    }


def service_threads() -> int:
    """Model calls ChronosForecaster computes at once (its ``threads``), as served here."""
    os.environ["BENTOML_CONFIG"] = str(environment.CONFIGURATION)  # as the server reads it
    import bentos.chronos.service  # noqa: F401  (declares the service's configuration)

    return configured_threads(SERVICE)


def register_models(home: Path, work: Path, plan: list[tuple[str, str, str]]) -> dict[str, str]:
    """Build, log and promote each planned model; name -> registered version."""
    from registry.promotion import promote
    from training_hooks.chronos.builders import build_random_chronos
    from training_hooks.chronos.log import log_chronos
    from training_hooks.registration import Lineage

    environment.use_registry(home)
    versions = {}
    for name, kind, size in plan:
        log(f"building and logging {name} ({kind}, {size} shape, random weights)")
        folder = build_random_chronos(kind, size, work / name)  # type: ignore[arg-type]
        version = log_chronos(
            name,
            folder,
            lineage=Lineage(
                data_source="random-init",
                extra={"init_seed": "0", "architecture": f"{kind}-{size}"},
            ),
            untrained=True,
            description=f"Random-weight chronos {kind} ({size} shape) for the GPU check.",
        )
        promote(name, version.version, reason="gpu check")
        versions[name] = version.version
    return versions


def write_bodies(folder: Path, model: str) -> Path:
    """One body per client for ``model``: its own series, one series per request."""
    path = folder / f"bodies-{model}.jsonl"
    walks = random_walks(CLIENTS, CONTEXT, seed=1)
    path.write_text(
        "".join(
            json.dumps(
                {
                    "inputs": [{"target": walk.tolist(), "item_id": f"s{index}"}],
                    "parameters": {"prediction_length": HORIZON, "model": model},
                }
            )
            + "\n"
            for index, walk in enumerate(walks)
        )
    )
    return path


def serve_and_measure(models: list[str], args: argparse.Namespace, home: Path) -> dict[str, Any]:
    """One ChronosForecaster: what /models reports, then each model batched and unbatched."""
    env = environment.bench_env(
        home, TRADESERVE_CHRONOS_MODELS=json.dumps(models), TRADESERVE_CHRONOS_DTYPE=args.dtype
    )
    server = BentoServer(f"bentos.chronos.service:{SERVICE}", env, args.work / "serve.log")
    log(f"{SERVICE} with TRADESERVE_CHRONOS_DTYPE={args.dtype}")
    with cpu.running(server, args.sharing, timeout=args.start_timeout):
        served = httpx.post(f"{server.url}/models", json={}, timeout=30).json()["models"]
        placement = {m["name"]: {"device": m["device"], "dtype": m["dtype"]} for m in served}
        log(f"  /models: {placement}")
        runs: dict[str, dict[str, Any]] = {"batched": {}, "unbatched": {}}
        for model in models:
            bodies = write_bodies(args.work, model)
            for batching, clients in (("batched", CLIENTS), ("unbatched", args.calls)):
                label = f"{model} {batching} ({clients} clients)"
                runs[batching][model] = closed_loop(
                    label,
                    server,
                    bodies,
                    clients=clients,
                    duration=args.duration,
                    warmup=args.warmup,
                    sharing=args.sharing,
                    work=args.work,
                )
    return {"placement": placement, "runs": runs}


def verdicts(result: dict[str, Any]) -> dict[str, Any]:
    """Placement on CUDA and the asked dtype (when there is a GPU), zero errors."""
    placements = list(result["placement"].values())
    errors = sum(
        run["errors"] + run["errors_outside_window"]
        for runs in result["runs"].values()
        for run in runs.values()
    )
    found = {
        "cuda_placement": {
            "expected": "cuda" if result["gpu"] else "cpu (no GPU)",
            "met": all(
                item["device"].startswith("cuda") == bool(result["gpu"]) for item in placements
            ),
        },
        "dtype": {
            "expected": result["dtype"],
            "met": all(item["dtype"] == result["dtype"] for item in placements),
        },
        "zero_errors": {"expected": "0", "met": errors == 0, "value": errors},
    }
    if not result["gpu"] and result["dtype"] == "bfloat16":
        found["dtype"]["expected"] = "bfloat16 where the CPU computes it natively, else float32"
        found["dtype"]["met"] = True
    return found


def markdown(result: dict[str, Any]) -> str:
    gpu = result["gpu"]
    device = (
        f"{gpu['name']} ({gpu['memory_gib']} GiB, compute {gpu['capability']}, "
        f"bf16 {'yes' if gpu['bf16_supported'] else 'no'}, CUDA {gpu['torch_cuda']})"
        if gpu
        else f"**no GPU**: CPU only ({result['machine']['cpus']} CPUs, "
        f"{result['machine']['cpu_model']}), tiny sizes, short runs"
    )
    lines = [
        f"### GPU check — {result['finished']}",
        "",
        f"Device: {device}. TRADESERVE_CHRONOS_DTYPE={result['dtype']}. Models (random "
        "weights, built locally): "
        + ", ".join(f"{name} ({m['kind']} {m['size']})" for name, m in result["models"].items())
        + f". Closed loop, one series of {CONTEXT} points per request, horizon {HORIZON}: "
        f"{CLIENTS} clients batched, {result['service_threads']} (the service's threads: one "
        f"series per model call) unbatched; {result['duration_s']:g} s measured per run after "
        f"{result['warmup_s']:g} s warm-up.",
        "",
        "| model | batching | clients | served on | dtype | series/s | p50 ms | p99 ms | "
        "errors | mean batch |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for batching, runs in result["runs"].items():
        for model, run in runs.items():
            where, lat = result["placement"][model], run["latency_ms"]
            lines.append(
                f"| {model} | {batching} | {run['concurrency']} | {where['device']} | "
                f"{where['dtype']} | {run['throughput_rps']:.1f} | {fmt(lat['p50'], 0)} | "
                f"{fmt(lat['p99'], 0)} | {run['errors']} | {fmt(run['batch_sizes']['mean'])} |"
            )
    lines += ["", "| check | expected | met |", "|---|---|---|"]
    for key, item in result["verdicts"].items():
        lines.append(f"| {key} | {item['expected']} | {'yes' if item['met'] else 'NO'} |")
    speedups = [
        f"{model}: {run['throughput_rps'] / unbatched['throughput_rps']:.1f}x"
        for model, run in result["runs"]["batched"].items()
        if (unbatched := result["runs"]["unbatched"][model])["throughput_rps"]
    ]
    if speedups:
        lines += ["", "Batching vs one series per model call: " + "; ".join(speedups) + "."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/gpu_check.sh",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, help="measured s per run (GPU 15, CPU 5)")
    parser.add_argument("--warmup", type=float, help="warm-up s per run (GPU 5, CPU 3)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], help="GPU bf16, CPU fp32")
    parser.add_argument("--sizes", choices=list(PLANS), help="model sizes (default: device)")
    parser.add_argument("--start-timeout", type=float, default=240, help="server start s")
    parser.add_argument("--workdir", type=Path, help="keep registry and logs here")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results")
    cpu.add_quiet_arguments(parser)
    # A check, not a CPU benchmark: never wait for a quiet machine, never repeat a run.
    parser.set_defaults(quiet_wait=0.0, attempts=1, max_other_cores=1e9)
    args = parser.parse_args(argv)
    args.sharing = cpu.apply_quiet_arguments(args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    gpu = gpu_info()
    log(f"GPU: {gpu}" if gpu else "no GPU (torch.cuda.is_available() is False): CPU check")
    on_gpu = gpu is not None
    args.duration = args.duration or (15.0 if on_gpu else 5.0)
    args.warmup = args.warmup or (5.0 if on_gpu else 3.0)
    args.dtype = args.dtype or ("bfloat16" if on_gpu else "float32")
    args.calls = service_threads()
    plan = PLANS[args.sizes or ("gpu" if on_gpu else "cpu")]
    args.work = environment.work_dir(args.workdir, "tradeserve-gpu-check-")
    home = args.work / "home"
    log(f"work folder {args.work}")
    versions = register_models(home, args.work, plan)
    models = [name for name, _, _ in plan]
    result: dict[str, Any] = {
        "benchmark": "gpu_check",
        "machine": report.machine(),
        "gpu": gpu,
        "dtype": args.dtype,
        "models": {
            name: {"kind": kind, "size": size, "version": versions[name]}
            for name, kind, size in plan
        },
        "clients": CLIENTS,
        "context": CONTEXT,
        "horizon": HORIZON,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "service_threads": args.calls,
        **serve_and_measure(models, args, home),
    }
    result["verdicts"] = verdicts(result)
    result["finished"] = report.now_iso()
    name = "gpu_check" if on_gpu else "gpu_check-cpu"
    report.publish(name, result, markdown(result), write=not args.no_write)
    return 0 if all(item["met"] for item in result["verdicts"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
