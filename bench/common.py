"""Shared plumbing of the benchmarks: registries, server processes, load tools, CPU
accounting, Prometheus histograms and result files.

Every process a benchmark starts gets its own session (process group) and is stopped by
that group id when the benchmark ends, also on errors.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.loadgen import percentiles
from tests.bento_servers import BentoServer, process_tree
from tests.servers import LOCALHOST, free_port, log_tail, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
README = BENCH_DIR / "README.md"
CONFIGURATION = REPO_ROOT / "configuration.yaml"
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------ environment


def bench_env(home: Path, config: Path = CONFIGURATION, **extra: str) -> dict[str, str]:
    """Environment of a server process working on the bench registry in ``home``: none of
    the caller's MLflow or tradeserve settings leak in, only ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MLFLOW_", "TRADESERVE_"))
    }
    return {
        **env,
        "TRADESERVE_HOME": str(home),
        "BENTOML_HOME": str(home / "bentoml"),
        "BENTOML_CONFIG": str(config),
        "HF_HUB_OFFLINE": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "BENTOML_DO_NOT_TRACK": "True",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def use_registry(home: Path) -> None:
    """Point this process's registry code at the embedded registry in ``home``."""
    from registry import store
    from registry.settings import get_settings

    os.environ["TRADESERVE_HOME"] = str(home)
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    for key in [key for key in os.environ if key.startswith("MLFLOW_") and key.endswith("_URI")]:
        del os.environ[key]
    get_settings.cache_clear()
    store.configure()


def work_dir(path: Path | None, prefix: str) -> Path:
    """``path`` (created, kept: reused by later runs) or a fresh temporary folder."""
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        return path.resolve()
    return Path(tempfile.mkdtemp(prefix=prefix))


def write_config(base: Path, overrides: Mapping[str, Any], out: Path) -> Path:
    """A copy of the BentoML configuration ``base`` with ``overrides`` deep-merged in."""

    def merge(into: dict, new: Mapping[str, Any]) -> dict:
        for key, value in new.items():
            if isinstance(value, Mapping) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value
        return into

    config = yaml.safe_load(base.read_text()) or {}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(merge(config, overrides), sort_keys=False))
    return out


# ------------------------------------------------------------------------------- processes


class ServerProcess:
    """A server command in its own session, ready once ``ready_path`` answers 200."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        env: Mapping[str, str],
        port: int,
        ready_path: str,
        log_path: Path,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.env = dict(env)
        self.port = port
        self.ready_path = ready_path
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self, timeout: float = 240) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(self._ready, timeout=timeout, interval=0.25, what=f"{self.name} ready")
        except BaseException as error:
            self.stop()
            raise RuntimeError(
                f"{self.name} did not start: {error}\n{log_tail(self.log_path)}"
            ) from error

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
        try:
            return httpx.get(self.url + self.ready_path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        stop_group(self.process)


def stop_group(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process group of ``process`` (its own session), SIGKILL if it lingers."""
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def running(server: ServerProcess | BentoServer, timeout: float = 240) -> Iterator[Any]:
    """Start ``server``, yield it, always stop it."""
    server.start(timeout=timeout)
    if server.process is not None:
        prioritize(server.process.pid)
    try:
        yield server
    finally:
        server.stop()


def bento_server(target: str, env: Mapping[str, str], log_path: Path) -> BentoServer:
    """``bentoml serve target`` on a free port (tests/bento_servers.py, the tests' helper)."""
    return BentoServer(target, env, log_path)


def server_pid(server: ServerProcess | BentoServer) -> int:
    process = server.process
    assert process is not None
    return process.pid


# ------------------------------------------------------------------------------ CPU meter


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return (total - idle) / CLK_TCK, total / CLK_TCK


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, user+system CPU ticks) of every live process."""
    table = {}
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = stat_path.read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(stat_path.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def tree_cpu_seconds(root_pid: int) -> float:
    """user+system CPU seconds of the live process ``root_pid`` and all its descendants
    (BentoML's circus workers get sessions of their own, so process groups miss them)."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _) in table.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += table.get(pid, (0, 0))[1]
        stack.extend(children.get(pid, []))
    return total / CLK_TCK


def self_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class CpuMeter:
    """CPU used over a window: the whole machine, the server's process group, this process.

    The box is shared with other work; ``other_cores`` (machine minus server, load generator
    and this orchestrator) says how much CPU something else took during the measurement.
    """

    server_pid: int | None
    started: float = 0.0
    machine_busy: float = 0.0
    server: float = 0.0
    own: float = 0.0
    result: dict[str, float] = field(default_factory=dict)
    ended: tuple[float, float, float, float] | None = None

    def start(self) -> None:
        self.started = time.monotonic()
        self.machine_busy = machine_cpu_seconds()[0]
        self.server = tree_cpu_seconds(self.server_pid) if self.server_pid else 0.0
        self.own = self_cpu_seconds()

    def mark_end(self) -> None:
        """End the window now (``stop`` may come later, once the load generator's CPU is
        known)."""
        self.ended = (
            time.monotonic(),
            machine_cpu_seconds()[0],
            tree_cpu_seconds(self.server_pid) if self.server_pid else 0.0,
            self_cpu_seconds(),
        )

    def stop(self, loadgen_cpu_s: float | None = None) -> dict[str, float]:
        if self.ended is None:
            self.mark_end()
        assert self.ended is not None
        ended, busy, server_cpu, own_cpu = self.ended
        elapsed = ended - self.started
        machine = busy - self.machine_busy
        server = server_cpu - self.server
        own = own_cpu - self.own
        loadgen = loadgen_cpu_s or 0.0
        self.result = {
            "window_s": round(elapsed, 2),
            "machine_busy_cores": round(machine / elapsed, 2),
            "server_cores": round(server / elapsed, 2),
            "loadgen_cores": round(loadgen / elapsed, 2),
            "other_cores": round(max(0.0, machine - server - loadgen - own) / elapsed, 2),
        }
        return self.result


def busy_other_cores(seconds: float = 2.0) -> float:
    """Cores busy with work other than this process, over ``seconds`` (noise check)."""
    busy0, own0 = machine_cpu_seconds()[0], self_cpu_seconds()
    time.sleep(seconds)
    busy1, own1 = machine_cpu_seconds()[0], self_cpu_seconds()
    return max(0.0, (busy1 - busy0) - (own1 - own0)) / seconds


QUIET = {"max_other_cores": 0.3, "wait_s": 180.0, "attempts": 3}


def configure_quiet(max_other_cores: float, wait_s: float, attempts: int) -> None:
    """Set how long to wait for a quiet machine and how often to repeat a noisy scenario."""
    QUIET.update(max_other_cores=max_other_cores, wait_s=wait_s, attempts=max(1, attempts))


def add_quiet_arguments(parser: Any) -> None:
    parser.add_argument(
        "--max-other-cores",
        type=float,
        default=QUIET["max_other_cores"],
        help="CPU other work may use during a measurement before it is repeated",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=QUIET["wait_s"],
        help="seconds to wait for a quiet machine before each scenario",
    )
    parser.add_argument(
        "--attempts", type=int, default=QUIET["attempts"], help="runs per scenario at most"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="autogroup niceness of the benchmark and every process it starts (e.g. -10 on "
        "a shared box gives the measured processes priority over other sessions; root only)",
    )


PRIORITY = {"nice": 0}


def apply_quiet_arguments(args: Any) -> None:
    """Apply the shared-machine options; SIGTERM then stops the benchmark cleanly (servers
    and load generators are stopped by the ``finally`` blocks)."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    configure_quiet(args.max_other_cores, args.quiet_wait, args.attempts)
    PRIORITY["nice"] = args.nice
    if args.nice:
        prioritize(os.getpid())


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def prioritize(root_pid: int) -> None:
    """Apply ``--nice`` to ``root_pid`` and its descendants.

    With ``kernel.sched_autogroup_enabled`` (the default) every session (``setsid``: each
    server we start, each BentoML worker) is its own scheduling group and CPU is shared
    fairly *between groups*; a plain nice value only ranks threads inside one group. So the
    autogroup's nice is set (``/proc/<pid>/autogroup``), plus the process nice.
    """
    nice = PRIORITY["nice"]
    if not nice:
        return
    for pid in [root_pid, *descendants(root_pid)]:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/autogroup").write_text(str(nice))
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, pid, nice)


def descendants(root_pid: int) -> list[int]:
    return process_tree(root_pid)[1:]


def wait_for_quiet(log: Any = print) -> float:
    """Wait (up to ``QUIET['wait_s']``) until other work uses at most ``max_other_cores``."""
    limit = QUIET["max_other_cores"]
    deadline = time.monotonic() + QUIET["wait_s"]
    announced = False
    while True:
        other = busy_other_cores()
        if other <= limit:
            return other
        if time.monotonic() >= deadline:
            log(f"  machine still busy ({other:.2f} cores used by other work); going on")
            return other
        if not announced:
            log(f"  waiting for a quieter machine ({other:.2f} cores used by other work)")
            announced = True


def quiet_run(label: str, scenario: Any, log: Any = print) -> dict[str, Any]:
    """Run ``scenario()`` (returns a result with ``cpu.other_cores``) after waiting for a
    quiet machine; repeat it while other work took more than ``max_other_cores`` during the
    measurement, up to ``attempts`` times, and keep the least disturbed run."""
    runs = []
    for attempt in range(1, int(QUIET["attempts"]) + 1):
        wait_for_quiet(log)
        result = scenario()
        other = result["cpu"]["other_cores"]
        runs.append(result)
        if other <= QUIET["max_other_cores"]:
            break
        if attempt < QUIET["attempts"]:
            log(f"  {label}: other work took {other:.2f} cores during the run; repeating")
    best = min(runs, key=lambda run: run["cpu"]["other_cores"])
    best["attempts"] = len(runs)
    best["other_cores_per_attempt"] = [run["cpu"]["other_cores"] for run in runs]
    return best


# ------------------------------------------------------------------------------ load tools


def run_loadgen(
    mode: str,
    url: str,
    bodies: Path,
    *,
    duration: float,
    warmup: float,
    concurrency: int | None = None,
    rate: float | None = None,
    timeout: float = 30,
    check: str | None = None,
    snapshot_url: str | None = None,
    server_pid: int | None = None,
    out_dir: Path,
) -> dict[str, Any]:
    """Run ``python -m bench.loadgen`` in its own process; add the CPU breakdown."""
    out = out_dir / f"loadgen-{mode}-{time.time_ns()}.json"
    command = [
        PYTHON,
        "-m",
        "bench.loadgen",
        mode,
        "--url",
        url,
        "--bodies",
        str(bodies),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
        "--timeout",
        str(timeout),
        "--out",
        str(out),
    ]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    if rate is not None:
        command += ["--rate", str(rate)]
    if check:
        command += ["--check", check]
    if snapshot_url:
        command += ["--snapshot-url", snapshot_url]
    meter = CpuMeter(server_pid)
    process = subprocess.Popen(command, cwd=REPO_ROOT, start_new_session=True)
    prioritize(process.pid)
    try:
        time.sleep(warmup + 0.1)
        meter.start()
        time.sleep(duration)
        meter.mark_end()
        process.wait(timeout=duration + timeout + 120)
    finally:
        stop_group(process)
    if process.returncode != 0:
        raise RuntimeError(f"bench.loadgen exited with {process.returncode}")
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
        hey_path(),
        "-z",
        f"{duration:g}s",
        "-c",
        str(concurrency),
        "-t",
        f"{timeout:g}",
        "-m",
        "POST",
        "-T",
        "application/json",
        "-D",
        str(body),
        "-o",
        "csv",
        url,
    ]
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


def children_cpu_seconds() -> float:
    """user+system CPU seconds of all reaped child processes of this process."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------ prometheus


def histogram(text: str | None, metric: str, **labels: str) -> dict[str, Any]:
    """Cumulative buckets, sum and count of one Prometheus histogram (labels filtered,
    series summed, e.g. over workers)."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    total_sum = total_count = 0.0
    if text:
        for family in text_string_to_metric_families(text):
            if family.name != metric:
                continue
            for sample in family.samples:
                if any(sample.labels.get(k) != v for k, v in labels.items()):
                    continue
                if sample.name.endswith("_bucket"):
                    le = float(sample.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + sample.value
                elif sample.name.endswith("_sum"):
                    total_sum += sample.value
                elif sample.name.endswith("_count"):
                    total_count += sample.value
    return {"buckets": buckets, "sum": total_sum, "count": total_count}


def histogram_delta(start: str | None, end: str | None, metric: str, **labels: str) -> dict:
    """The histogram's observations between two scrapes: per-bucket counts (non-cumulative,
    keyed by the bucket's upper bound), number of observations and their mean."""
    before, after = histogram(start, metric, **labels), histogram(end, metric, **labels)
    cumulative = {
        le: after["buckets"][le] - before["buckets"].get(le, 0.0) for le in after["buckets"]
    }
    per_bucket, previous = {}, 0.0
    for le in sorted(cumulative):
        count = cumulative[le] - previous
        previous = cumulative[le]
        if count:
            label = "+Inf" if le == float("inf") else f"{le:g}"
            per_bucket[f"<={label}"] = round(count)
    count = after["count"] - before["count"]
    mean = (after["sum"] - before["sum"]) / count if count else None
    return {"observations": round(count), "mean": mean, "buckets": per_bucket}


# ------------------------------------------------------------------------------ results


def versions() -> dict[str, str]:
    """Versions of what the numbers depend on."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    packages = ("bentoml", "mlflow", "torch", "chronos-forecasting", "xgboost-cpu", "fastapi")
    for package in (*packages, "uvicorn", "uvloop", "httptools"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout.strip()
    return {
        "python_executable": sys.executable,
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory, 1),
        "kernel": platform.release(),
        "git_commit": commit,
        "versions": versions(),
    }


def write_results(name: str, result: Mapping[str, Any], markdown: str) -> tuple[Path, Path]:
    """``bench/results/<name>.json`` and ``.md``; the table also goes into bench/README.md."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    json_path, md_path = RESULTS_DIR / f"{name}.json", RESULTS_DIR / f"{name}.md"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
    tmp.replace(json_path)
    md_path.write_text(markdown)
    update_readme(name, markdown)
    return json_path, md_path


def update_readme(name: str, markdown: str) -> None:
    """Replace the block between ``<!-- results:NAME -->`` markers in bench/README.md."""
    if not README.is_file():
        return
    begin, end = f"<!-- results:{name} -->", f"<!-- /results:{name} -->"
    text = README.read_text()
    if begin not in text or end not in text:
        return
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    README.write_text(f"{head}{begin}\n{markdown.strip()}\n{end}{tail}")


def now_iso() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_local_port() -> int:
    return free_port()
