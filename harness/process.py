"""One way to run a server process for tests and benchmarks, and one way to see its tree.

:class:`ManagedProcess` starts a command in a session (process group) of its own, logs its
output to a file, waits until it is ready and stops it: SIGTERM to the group, SIGKILL to
whatever of the process tree is left after a grace period, then waits until every member is
gone. The tree matters because BentoML's circus workers run in sessions of their own: a
signal to the arbiter's group does not reach them. Every started process also gets
``PR_SET_PDEATHSIG`` (SIGTERM when the process that started it dies, even by SIGKILL), and
whatever is still running at interpreter exit is stopped.

:func:`proc_table` is the one walk over ``/proc``; :func:`process_tree` (and through it the
benchmarks' CPU and memory meters) builds on it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Self

from harness.ports import LOCALHOST
from harness.wait import http_ok, log_tail, wait_until

_PR_SET_PDEATHSIG = 1


# ------------------------------------------------------------------------------------ /proc


@dataclass(frozen=True)
class ProcStat:
    """What ``/proc/<pid>/stat`` says about one process."""

    pid: int
    ppid: int
    pgrp: int
    state: str  # R, S, D, Z (zombie: exited, not reaped yet), ...
    cpu_ticks: int  # user + system, in clock ticks


def read_stat(pid: int) -> ProcStat | None:
    """The process's ``/proc/<pid>/stat``, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and ')'
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        state=fields[0],
        cpu_ticks=int(fields[11]) + int(fields[12]),
    )


def proc_table() -> dict[int, ProcStat]:
    """Every process on the machine, by pid (one walk over ``/proc``)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := read_stat(int(entry.name))) is not None:
            table[stat.pid] = stat
    return table


def process_tree(root: int, table: Mapping[int, ProcStat] | None = None) -> list[int]:
    """``root`` and all its descendants, root first (``table``: a :func:`proc_table` taken
    earlier, e.g. to read CPU ticks from the same snapshot)."""
    children: dict[int, list[int]] = {}
    for stat in (proc_table() if table is None else table).values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def any_alive(pids: Iterable[int]) -> bool:
    """Whether any of ``pids`` still runs (zombies count as gone)."""
    return any((stat := read_stat(pid)) is not None and stat.state != "Z" for pid in pids)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# ------------------------------------------------------------------------- dying with us


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl (Linux only); resolved in the parent, never inside a forked child."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:
        return None
    return prctl


_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    """preexec_fn: SIGTERM the child when the thread that started it dies, even on SIGKILL
    (servers stop their own workers on SIGTERM, so nothing is left behind)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


_LIVE: set[ManagedProcess] = set()


@atexit.register
def _stop_live_processes() -> None:
    """Safety net: stop processes whose owners never stopped them."""
    for process in list(_LIVE):
        with contextlib.suppress(Exception):
            process.stop(grace=5)


# ------------------------------------------------------------------------- the process


class ManagedProcess:
    """A server command in a session of its own, ready once ``ready`` says so.

    ``env`` is the whole environment of the process (nothing of ours is added). ``ready`` is
    a path on :attr:`url` (``"/readyz"``) or a full URL that must answer 200, or a predicate;
    None means ready as soon as it runs. Subclasses may refine :meth:`is_ready`. Output of
    every start is appended to ``log_path`` (None: to our own stdout and stderr). With
    ``kill_root_after_children`` a graceful stop SIGKILLs the root as soon as its descendants
    are gone (``mlflow server``: what is left then is a slow interpreter teardown). ``port``
    is kept across stop/start, so a restarted server comes back at the same :attr:`url`.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path | None = None,
        cwd: Path | None = None,
        port: int | None = None,
        ready: str | Callable[[], bool] | None = None,
        start_timeout: float = 180,
        stop_grace: float = 30,
        kill_root_after_children: bool = False,
    ) -> None:
        self.name = name
        self.argv = [str(arg) for arg in argv]
        self.env = dict(env)
        self.log_path = None if log_path is None else Path(log_path)
        self.cwd = cwd
        self.port = port
        self.ready = ready
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.kill_root_after_children = kill_root_after_children
        self.process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------- state

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        if self.port is None:
            raise AttributeError(f"{self.name} has no port")
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the root process while it runs."""
        process = self.process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def is_running(self) -> bool:
        """True while the root process is alive (not necessarily ready)."""
        return self.pid is not None

    def tree(self) -> list[int]:
        """The root and its descendants ([] when not running)."""
        pid = self.pid
        return [] if pid is None else process_tree(pid)

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the log ('' without a log file)."""
        return "" if self.log_path is None else log_tail(self.log_path, lines)

    def _log_section(self) -> str:
        return f"--- {self.log_path} ---\n{self.log_tail()}" if self.log_path else ""

    # ------------------------------------------------------------------- start

    def launch(self) -> None:
        """Start the command (do not wait for readiness)."""
        if self.is_running:
            raise RuntimeError(f"{self.name} is already running")
        with self._log() as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=None if log is None else subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        _LIVE.add(self)

    @contextlib.contextmanager
    def _log(self) -> Iterator[IO[bytes] | None]:
        """The log file opened for appending, headed by this start's command line."""
        if self.log_path is None:
            yield None
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')}: {self.argv}\n".encode())
            log.flush()
            yield log

    def is_ready(self) -> bool:
        """One readiness probe (the process is known to run)."""
        if self.ready is None:
            return True
        if callable(self.ready):
            return bool(self.ready())
        return http_ok(self.url + self.ready if self.ready.startswith("/") else self.ready)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until :meth:`is_ready`; on failure stop the process and raise with the log.

        Raises:
            RuntimeError: the process exited, or :meth:`is_ready` found a fatal error.
            TimeoutError: not ready within ``timeout`` (default ``start_timeout``).
        """
        timeout = self.start_timeout if timeout is None else timeout
        try:
            wait_until(self._ready_or_raise, timeout, 0.1, f"{self.name} to be ready")
        except TimeoutError as error:
            self.stop()
            raise TimeoutError(f"{error}\n{self._log_section()}") from None
        except BaseException:
            self.stop()
            raise

    def start(self, timeout: float | None = None) -> None:
        """:meth:`launch`, then :meth:`wait_ready`."""
        self.launch()
        self.wait_ready(timeout)

    def ensure_running(self) -> None:
        """Start unless already running."""
        if not self.is_running:
            self.start()

    def _ready_or_raise(self) -> bool:
        process = self.process
        if process is None or process.poll() is not None:
            code = None if process is None else process.returncode
            raise RuntimeError(
                f"{self.name} exited with code {code} during startup\n{self._log_section()}"
            )
        return self.is_ready()

    # -------------------------------------------------------------------- stop

    def stop(self, grace: float | None = None, graceful: bool = True) -> None:
        """Stop the whole process tree and wait until every member of it is gone.

        Graceful: SIGTERM to the process group, then up to ``grace`` seconds (default
        ``stop_grace``) for the tree to exit; then SIGKILL to the group and to every member
        left. ``graceful=False`` SIGKILLs at once (a crash: no shutdown hook runs). Does
        nothing when not running.
        """
        process, self.process = self.process, None
        _LIVE.discard(self)
        if process is None:
            return
        if process.poll() is not None:
            process.wait()
            return
        tree = process_tree(process.pid)
        if graceful:
            _signal_group(process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                wait_until(
                    lambda: self._stopped(process, tree),
                    self.stop_grace if grace is None else grace,
                    what=f"{self.name} to exit",
                )
        if process.poll() is None:  # workers it started meanwhile
            tree = sorted(set(tree) | set(process_tree(process.pid)))
        _signal_group(process.pid, signal.SIGKILL)
        _signal_all(tree, signal.SIGKILL)
        process.wait(timeout=10)
        wait_until(lambda: not any_alive(tree), 10, what=f"every process of {self.name} to exit")

    def wait(self, timeout: float | None = None) -> int:
        """Wait until the root process exits by itself; its exit code.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` seconds.
        """
        if self.process is None:
            raise RuntimeError(f"{self.name} was not started")
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the whole tree at once: a crash, no shutdown hook runs."""
        self.stop(graceful=False)

    def restart(self) -> None:
        """Stop, then start again (same port, same command)."""
        self.stop()
        self.start()

    def _stopped(self, process: subprocess.Popen[bytes], tree: list[int]) -> bool:
        descendants_gone = not any_alive(tree[1:])
        if self.kill_root_after_children and descendants_gone:
            return True
        return process.poll() is not None and descendants_gone

    # ------------------------------------------------------------------ context

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self.port is not None else self.argv[0]
        state = "running" if self.is_running else "stopped"
        return f"{type(self).__name__}({self.name}, {where}, {state})"
