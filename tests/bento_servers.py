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
        """Stop the whole process group (the arbiter and its workers)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


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
