"""A real ``mlflow server`` for tests: :class:`MlflowServer` / :func:`mlflow_server`."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from harness.ports import LOCALHOST, free_port, port_is_open
from harness.process import ManagedProcess
from harness.wait import wait_until


class MlflowServer(ManagedProcess):
    """A real ``mlflow server`` subprocess (uvicorn, one worker) with proxied artifacts.

    The port is chosen once, so :meth:`stop` followed by :meth:`start` brings the server back
    at the same :attr:`url` with the same backend store and artifact destination — the way to
    simulate a registry outage and its recovery. ``env`` (e.g. :meth:`S3Endpoint.server_env`)
    is given to the server process only, never set in the test process. Output of all starts
    is appended to :attr:`log_path`.
    """

    def __init__(
        self,
        backend_store_uri: str,
        artifacts_destination: str,
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 120,
    ) -> None:
        self.backend_store_uri = backend_store_uri
        self.artifacts_destination = artifacts_destination
        port = port or free_port()
        argv = [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", backend_store_uri,
            "--serve-artifacts", "--artifacts-destination", artifacts_destination,
            "--host", LOCALHOST, "--port", str(port), "--workers", "1",
            *extra_args,
        ]  # fmt: skip
        super().__init__(
            "mlflow server",
            argv,
            env=server_env(env or {}),
            log_path=Path(log_dir) / f"mlflow-server-{port}.log",
            port=port,
            ready="/health",
            start_timeout=start_timeout,
            stop_grace=20,
            # once uvicorn has exited, the `mlflow server` parent only runs its slow (~1-2 s)
            # interpreter teardown
            kill_root_after_children=True,
        )

    def stop(self, grace: float | None = None, graceful: bool = True) -> None:
        """Stop the server's process tree and wait until its port is closed."""
        was_started = self.process is not None
        super().stop(grace, graceful)
        if was_started:
            wait_until(lambda: not port_is_open(self.port), 10, what=f"port {self.port} to close")

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"MlflowServer({self.url}, {state}, backend={self.backend_store_uri})"


def server_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The server process's environment: ours, minus client settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.pop("MLFLOW_REGISTRY_URI", None)
    return {
        **env,
        "PYTHONUNBUFFERED": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        # Background job runner (huey consumers) is not needed by tradeserve tests.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        # No network here: telemetry would only delay startup and shutdown.
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **extra,
    }


@contextlib.contextmanager
def mlflow_server(
    backend_store_uri: str,
    artifacts_destination: str,
    env: Mapping[str, str] | None = None,
    *,
    log_dir: Path,
    port: int | None = None,
    extra_args: Sequence[str] = (),
    start_timeout: float = 120,
) -> Iterator[MlflowServer]:
    """Start an :class:`MlflowServer`, yield it, and stop it on exit (also on errors)."""
    with MlflowServer(
        backend_store_uri,
        artifacts_destination,
        log_dir=log_dir,
        env=env,
        port=port,
        extra_args=extra_args,
        start_timeout=start_timeout,
    ) as server:
        yield server
