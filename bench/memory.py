"""Memory of the served services: PSS of each service's whole process tree, idle and under load.

    .venv/bin/python -m bench.memory [--tree before=/work/before --tree after=.] [--duration 20]

PSS (proportional set size, ``/proc/<pid>/smaps_rollup``) counts a page shared by n
processes as 1/n in each, so the sum over a tree is what the tree costs the machine: the
BentoML arbiter, every worker and every dependency service. Measured for

* ``composite`` — ``bentoml serve`` at the tree's root: RegimeBlend (2 workers) and the
  Specialists service it depends on; the load is ``POST /api/v1/predict`` about another
  (symbol, bar) each time, risk checks on;
* ``factor`` — ``bentos.factor.service:FactorModels``; the load is one-row ``/predict``
  calls spread over every served factor model;

each with ``BENTOML_CONFIG`` = the tree's configuration.yaml, as the tests serve them. Idle
= after readiness and ``--settle`` seconds without requests; peak = the largest tree total
sampled while ``--concurrency`` closed-loop clients (``bench.loadgen closed``) run for
``--warmup`` + ``--duration`` seconds.

``--tree NAME=PATH`` (repeatable) measures the code of other source trees side by side:
each service then runs from that tree (cwd and ``PYTHONPATH`` = the tree, this venv), on a
demo registry that tree's own ``python -m registry.cli demo`` made in a scratch
``TRADESERVE_HOME``. Bytecode goes to a cache under the work folder, so the trees are left
as they are. Writes ``bench/results/memory.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import environment, load, report
from bench.regime_blend_latency import replay_bodies
from bench.report import fmt, log
from harness.bento import BentoServer
from harness.process import ManagedProcess, process_tree

NAME = "memory"
SERVICES: dict[str, dict[str, Any]] = {
    "composite": {
        "target": ".",
        "roles": ("RegimeBlend", "Specialists"),
        "path": "/api/v1/predict",
        "check": '"decision_id"',
    },
    "factor": {
        "target": "bentos.factor.service:FactorModels",
        "roles": ("FactorModels",),
        "path": "/predict",
        "check": '"predictions"',
    },
}
MIB = 1024  # smaps_rollup counts kB


# ------------------------------------------------------------------------------ measuring


def smaps_kib(pid: int) -> dict[str, int]:
    """Pss and Rss (kB) of one process from ``/proc/<pid>/smaps_rollup`` ({} when gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Rss"):
            found[key.lower()] = int(rest.split()[0])
    return found


def role_of(pid: int, root: int, roles: tuple[str, ...]) -> str:
    """``arbiter`` for the root, else the service a process serves (named on its command
    line), else ``other``."""
    if pid == root:
        return "arbiter"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "gone"
    return next((role for role in roles if role in command), "other")


def tree_memory(root: int, roles: tuple[str, ...]) -> dict[str, Any]:
    """PSS and RSS of ``root``'s process tree: total and per role (MiB), process count."""
    by_role: dict[str, dict[str, float]] = {}
    processes = 0
    for pid in process_tree(root):
        sizes = smaps_kib(pid)
        if not sizes:
            continue
        processes += 1
        slot = by_role.setdefault(
            role_of(pid, root, roles), {"pss_mib": 0.0, "rss_mib": 0.0, "n": 0}
        )
        slot["pss_mib"] += sizes.get("pss", 0) / MIB
        slot["rss_mib"] += sizes.get("rss", 0) / MIB
        slot["n"] += 1
    return {
        "pss_mib": round(sum(r["pss_mib"] for r in by_role.values()), 1),
        "processes": processes,
        "by_role": {
            role: {
                "pss_mib": round(v["pss_mib"], 1),
                "rss_mib": round(v["rss_mib"], 1),
                "n": v["n"],
            }
            for role, v in sorted(by_role.items())
        },
    }


class PeakSampler(threading.Thread):
    """Samples a tree's memory until stopped; keeps the sample with the largest PSS."""

    def __init__(self, root: int, roles: tuple[str, ...], interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.root, self.roles, self.interval = root, roles, interval
        self.done = threading.Event()
        self.peak: dict[str, Any] = {"pss_mib": 0.0}
        self.samples = 0

    def run(self) -> None:
        while not self.done.is_set():
            sample = tree_memory(self.root, self.roles)
            self.samples += 1
            if sample["pss_mib"] > self.peak["pss_mib"]:
                self.peak = sample
            self.done.wait(self.interval)

    def stop(self) -> dict[str, Any]:
        self.done.set()
        self.join()
        return {**self.peak, "samples": self.samples}


# ------------------------------------------------------------------------------ trees


def tree_env(tree: Path, home: Path, work: Path, **extra: str) -> dict[str, str]:
    """A process running ``tree``'s code on the registry in ``home`` (bytecode kept out of
    the tree)."""
    return environment.bench_env(
        home,
        config=tree / "configuration.yaml",
        PYTHONPATH=str(tree),
        PYTHONPYCACHEPREFIX=str(work / "pycache"),
        **extra,
    )


def prepare_tree(label: str, tree: Path, work: Path) -> dict[str, Any]:
    """The tree's own demo registry in ``work/<label>/home`` (idempotent), and proof that
    its processes import the tree's code."""
    home = work / label / "home"
    env = tree_env(tree, home, work)
    log(f"[{label}] demo registry in {home} (python -m registry.cli demo, from {tree})")
    run = subprocess.run(
        [environment.PYTHON, "-m", "registry.cli", "demo"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if run.returncode != 0:
        raise RuntimeError(f"[{label}] demo failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    code = subprocess.run(
        [environment.PYTHON, "-c", "import registry; print(registry.__file__)"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(code).resolve().is_relative_to(tree):
        raise RuntimeError(f"[{label}] imports {code}, not the code of {tree}")
    return {
        "path": str(tree),
        "commit": report.git_commit(tree, mark_changes=True),
        "registry_module": code,
    }


def load_bodies(service: str, server: ManagedProcess, work: Path) -> Path:
    """Request bodies for the closed loop against ``server``."""
    if service == "composite":
        return replay_bodies(work / "composite-bodies.jsonl", part=0)
    response = httpx.post(f"{server.url}/models", json={}, timeout=30)
    response.raise_for_status()
    models = response.json()["models"]
    rng = np.random.default_rng(5)
    lines = [
        json.dumps(
            {
                "model": model["name"],
                "rows": rng.normal(scale=0.02, size=(1, len(model["factors"]))).tolist(),
            }
        )
        for _ in range(128)
        for model in models
    ]
    path = work / "factor-bodies.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def measure(
    service: str, label: str, tree: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """One service from one tree: idle PSS after readiness, peak PSS under the closed loop."""
    spec = SERVICES[service]
    folder = work / label
    extra = {}
    if service == "composite":
        extra["TRADESERVE_BLEND_STATE_DIR"] = str(folder / f"state-{time.time_ns()}")
    env = tree_env(tree, folder / "home", work, **extra)
    log_path = folder / f"serve-{service}.log"
    server = BentoServer(spec["target"], env, log_path, cwd=tree, start_timeout=300)
    log(f"[{label}] {service}: bentoml serve {spec['target']}")
    with server:
        root = server.pid
        assert root is not None
        time.sleep(args.settle)
        idle = tree_memory(root, spec["roles"])
        log(f"  idle {idle['pss_mib']:.0f} MiB PSS in {idle['processes']} processes")
        bodies = load_bodies(service, server, folder)
        sampler = PeakSampler(root, spec["roles"])
        sampler.start()
        try:
            run = load.run_loadgen(
                "closed",
                server.url + spec["path"],
                bodies,
                duration=args.duration,
                warmup=args.warmup,
                concurrency=args.concurrency,
                check=spec["check"],
                server_pid=root,
                out_dir=folder,
            )
        finally:
            peak = sampler.stop()
        after = tree_memory(root, spec["roles"])
    log(
        f"  peak {peak['pss_mib']:.0f} MiB PSS under load ({run['throughput_rps']:.0f} req/s, "
        f"{run['errors']} errors); {after['pss_mib']:.0f} MiB after"
    )
    for key in ("snapshot_start", "snapshot_end", "per_second"):
        run.pop(key, None)
    return {"idle": idle, "peak": peak, "after_load": after, "load": run}


# ------------------------------------------------------------------------------ report


def markdown(result: dict[str, Any]) -> str:
    config = result["config"]
    rows = [
        "| service | tree | idle PSS MiB | peak PSS MiB under load | processes | "
        "per role, idle / peak MiB | load req/s | errors |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for service, by_tree in result["services"].items():
        for label, run in by_tree.items():
            idle, peak = run["idle"], run["peak"]
            roles = "; ".join(
                f"{role} ×{v['n']} {fmt(v['pss_mib'], 0)} / "
                f"{fmt(peak['by_role'].get(role, {}).get('pss_mib'), 0)}"
                for role, v in idle["by_role"].items()
            )
            rows.append(
                f"| {service} | {label} | {fmt(idle['pss_mib'], 0)} | {fmt(peak['pss_mib'], 0)} | "
                f"{idle['processes']} | {roles} | {fmt(run['load']['throughput_rps'], 0)} | "
                f"{run['load']['errors']} |"
            )
    trees = ", ".join(
        f"{label} = `{tree['path']}` ({tree['commit'] or 'no commit'})"
        for label, tree in result["trees"].items()
    )
    machine = result["machine"]
    return "\n".join(
        [
            f"### PSS of each service's process tree ({result['finished']})",
            "",
            f"Trees: {trees}. {machine['cpus']} CPUs, {machine['memory_gib']} GiB; bentoml "
            f"{machine['versions'].get('bentoml', '?')}. Idle = {config['settle_s']:g} s after "
            f"readiness; peak = largest sample (every 0.25 s) during {config['concurrency']} "
            f"closed-loop clients for {config['warmup_s']:g} + {config['duration_s']:g} s. "
            "PSS counts shared pages once across the tree (arbiter, workers, dependency "
            "services).",
            "",
            *rows,
            "",
        ]
    )


def parse_tree(text: str) -> tuple[str, Path]:
    label, sep, path = text.partition("=")
    folder = Path(path).resolve()
    if not sep or not label or not (folder / "bentofile.yaml").is_file():
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=PATH of a tradeserve tree")
    return label, folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.memory",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--tree",
        action="append",
        type=parse_tree,
        default=[],
        help="NAME=PATH of a source tree to measure (repeatable; default: this one)",
    )
    parser.add_argument("--service", action="append", choices=list(SERVICES))
    parser.add_argument("--duration", type=float, default=20.0, help="seconds under load")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds after ready")
    parser.add_argument("--workdir", type=Path, help="keep the registries here and reuse them")
    parser.add_argument("--no-write", action="store_true", help="print, do not write results")
    args = parser.parse_args(argv)
    trees = dict(args.tree) or {"current": environment.REPO_ROOT}
    work = environment.work_dir(args.workdir, "tradeserve-bench-memory-")
    log(f"work folder {work}")

    prepared = {label: prepare_tree(label, tree, work) for label, tree in trees.items()}
    services = {
        service: {label: measure(service, label, tree, work, args) for label, tree in trees.items()}
        for service in args.service or list(SERVICES)
    }
    result = {
        "benchmark": NAME,
        "finished": report.now_iso(),
        "machine": report.machine(),
        "config": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "settle_s": args.settle,
        },
        "trees": prepared,
        "services": services,
    }
    report.publish(NAME, result, markdown(result), write=not args.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
