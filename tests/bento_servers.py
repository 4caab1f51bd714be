"""Run real ``bentoml serve`` processes for integration tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from tests.servers import LOCALHOST, free_port, log_tail, wait_until

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGURATION = REPO_ROOT / "configuration.yaml"
BENTOML = Path(sys.executable).with_name("bentoml")


class BentoServer:
    """One ``bentoml serve`` process on a free localhost port."""

    def __init__(
        self, target: str, env: Mapping[str, str], log_path: Path, port: int | None = None
    ):
        self.target = target
        self.port = port or free_port()
        self.log_path = log_path
        self.env = {"BENTOML_CONFIG": str(CONFIGURATION), **env}  # exactly what the caller gives
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def start(self, timeout: float = 180) -> None:
        """Start and wait until ``/readyz`` answers 200 (fails fast if the process dies)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(BENTOML), "serve", self.target, "--host", LOCALHOST, "--port", str(self.port)],
                cwd=REPO_ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            wait_until(self._ready, timeout=timeout, interval=0.2, what=f"{self.target} /readyz")
        except TimeoutError as error:
            self.stop()
            raise TimeoutError(f"{error}; server log:\n{log_tail(self.log_path)}") from error
        except Exception:
            self.stop()
            raise

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.target} exited with {self.process.returncode}:\n{log_tail(self.log_path)}"
            )
        if "Application startup failed" in log_tail(self.log_path, lines=200):
            raise RuntimeError(f"{self.target} failed to start:\n{log_tail(self.log_path)}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """Stop the arbiter and its workers (SIGTERM, then SIGKILL for what is left)."""
        if self.process is None or self.process.poll() is not None:
            return
        tree = process_tree(self.process.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=20)
        # workers still finishing their shutdown get a moment, then whatever outlived the
        # arbiter is killed
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not _alive(tree), timeout=10, interval=0.1, what="workers exit")
        _kill_all(tree)
        self.process.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL the arbiter and every worker at once: a crash, no shutdown hook runs."""
        assert self.process is not None
        _kill_all(process_tree(self.process.pid))
        self.process.wait(timeout=30)


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants. circus starts each worker in a session of its own,
    so signalling the arbiter's process group does not reach them."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _alive(pids: list[int]) -> bool:
    """Whether any of ``pids`` still runs (zombies count as gone)."""
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            return True
    return False


def _kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def bento_server(
    target: str, env: Mapping[str, str], log_path: Path, timeout: float = 180
) -> Iterator[BentoServer]:
    """A started :class:`BentoServer`, always stopped afterwards."""
    server = BentoServer(target, env, log_path)
    server.start(timeout=timeout)
    try:
        yield server
    finally:
        server.stop()
