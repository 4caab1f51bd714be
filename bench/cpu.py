"""CPU on a shared machine: accounting per process tree, waiting for a quiet machine,
repeating disturbed runs, and giving the measured processes priority.

The box is shared with other work. :class:`SharedMachine` (built once from the command line
by :func:`apply_quiet_arguments`) says how much other work a measurement tolerates, how long
to wait for a quieter machine, how often to repeat, and the autogroup niceness; it is passed
to whatever needs it.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from harness.process import ManagedProcess, proc_table, process_tree

CLK_TCK = os.sysconf("SC_CLK_TCK")
Server = TypeVar("Server", bound=ManagedProcess)


# ------------------------------------------------------------------------------ accounting


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user
    return (total - idle) / CLK_TCK, total / CLK_TCK


def tree_cpu_seconds(root_pid: int) -> float:
    """user+system CPU seconds of the live process ``root_pid`` and all its descendants
    (BentoML's circus workers get sessions of their own, so process groups miss them)."""
    table = proc_table()
    ticks = sum(table[pid].cpu_ticks for pid in process_tree(root_pid, table) if pid in table)
    return ticks / CLK_TCK


def self_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def children_cpu_seconds() -> float:
    """user+system CPU seconds of all reaped child processes of this process."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class CpuMeter:
    """CPU used over a window: the whole machine, the server's process tree, this process.

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


# --------------------------------------------------------------------------- shared machine


class SharedMachine(BaseModel):
    """How a benchmark shares the machine (recorded in the results as ``measurement``)."""

    model_config = ConfigDict(frozen=True)

    max_other_cores: float = 0.3  # other work tolerated during a measurement, in cores
    wait_s: float = 180.0  # how long to wait for a quiet machine before each scenario
    attempts: int = 3  # runs per scenario at most
    nice: int = 0  # autogroup niceness of the benchmark and everything it starts


def add_quiet_arguments(parser: Any) -> None:
    defaults = SharedMachine()
    parser.add_argument(
        "--max-other-cores",
        type=float,
        default=defaults.max_other_cores,
        help="CPU other work may use during a measurement before it is repeated",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=defaults.wait_s,
        help="seconds to wait for a quiet machine before each scenario",
    )
    parser.add_argument(
        "--attempts", type=int, default=defaults.attempts, help="runs per scenario at most"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=defaults.nice,
        help="autogroup niceness of the benchmark and every process it starts (e.g. -10 on "
        "a shared box gives the measured processes priority over other sessions; root only)",
    )


def apply_quiet_arguments(args: Any) -> SharedMachine:
    """The shared-machine options as a :class:`SharedMachine`; also makes SIGTERM stop the
    benchmark cleanly (servers and load generators are stopped by ``finally`` blocks) and
    prioritizes this process."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    sharing = SharedMachine(
        max_other_cores=args.max_other_cores,
        wait_s=args.quiet_wait,
        attempts=max(1, args.attempts),
        nice=args.nice,
    )
    prioritize(os.getpid(), sharing.nice)
    return sharing


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def prioritize(root_pid: int | None, nice: int) -> None:
    """Apply ``--nice`` to ``root_pid`` and its descendants.

    With ``kernel.sched_autogroup_enabled`` (the default) every session (``setsid``: each
    server we start, each BentoML worker) is its own scheduling group and CPU is shared
    fairly *between groups*; a plain nice value only ranks threads inside one group. So the
    autogroup's nice is set (``/proc/<pid>/autogroup``), plus the process nice.
    """
    if not nice or root_pid is None:
        return
    for pid in process_tree(root_pid):
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/autogroup").write_text(str(nice))
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, pid, nice)


@contextlib.contextmanager
def running(server: Server, sharing: SharedMachine, timeout: float = 240) -> Iterator[Server]:
    """Start ``server``, give it priority, yield it, always stop it."""
    server.start(timeout=timeout)
    prioritize(server.pid, sharing.nice)
    try:
        yield server
    finally:
        server.stop()


def wait_for_quiet(sharing: SharedMachine, log: Callable[[str], Any] = print) -> float:
    """Wait (up to ``wait_s``) until other work uses at most ``max_other_cores``."""
    deadline = time.monotonic() + sharing.wait_s
    announced = False
    while True:
        other = busy_other_cores()
        if other <= sharing.max_other_cores:
            return other
        if time.monotonic() >= deadline:
            log(f"  machine still busy ({other:.2f} cores used by other work); going on")
            return other
        if not announced:
            log(f"  waiting for a quieter machine ({other:.2f} cores used by other work)")
            announced = True


def quiet_run(
    label: str,
    scenario: Callable[[], dict[str, Any]],
    sharing: SharedMachine,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run ``scenario()`` (returns a result with ``cpu.other_cores``) after waiting for a
    quiet machine; repeat it while other work took more than ``max_other_cores`` during the
    measurement, up to ``attempts`` times, and keep the least disturbed run."""
    runs = []
    for attempt in range(1, sharing.attempts + 1):
        wait_for_quiet(sharing, log)
        result = scenario()
        other = result["cpu"]["other_cores"]
        runs.append(result)
        if other <= sharing.max_other_cores:
            break
        if attempt < sharing.attempts:
            log(f"  {label}: other work took {other:.2f} cores during the run; repeating")
    best = min(runs, key=lambda run: run["cpu"]["other_cores"])
    best["attempts"] = len(runs)
    best["other_cores_per_attempt"] = [run["cpu"]["other_cores"] for run in runs]
    return best
