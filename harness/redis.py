"""A throw-away Redis for tests and benchmarks: :class:`RedisServer` / :func:`redis_server`.

A real ``redis-server`` (Debian's ``redis-server`` package) on a free localhost port, its
folder in a temporary directory, nothing persisted. The port is kept across
:meth:`~harness.process.ManagedProcess.stop` / ``start``, so an outage and its recovery keep
the same URL.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from harness.ports import LOCALHOST, free_port
from harness.process import ManagedProcess

if TYPE_CHECKING:
    import redis


class RedisNotFoundError(RuntimeError):
    """``redis-server`` is not installed."""


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        raise RedisNotFoundError(
            "redis-server not found on PATH; install it (e.g. apt-get install redis-server)"
        )
    return found


class RedisServer(ManagedProcess):
    """One ``redis-server`` on ``127.0.0.1:<port>``, ready once it answers PING."""

    def __init__(self, folder: Path, port: int | None = None, start_timeout: float = 30) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        argv = [
            find_redis_server(),
            "--port", str(port), "--bind", LOCALHOST, "--dir", str(folder),
            "--save", "", "--appendonly", "no", "--daemonize", "no",
        ]  # fmt: skip
        super().__init__(
            "redis-server",
            argv,
            env={"PATH": "/usr/bin:/bin"},
            log_path=folder / f"redis-{port}.log",
            port=port,
            ready=self._answers_ping,
            start_timeout=start_timeout,
            stop_grace=10,
        )

    @property
    def redis_url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://{LOCALHOST}:{self.port}/0"

    def client(self) -> redis.Redis:
        """A client of database 0 that decodes answers to text."""
        import redis

        return redis.Redis.from_url(self.redis_url, decode_responses=True, socket_timeout=2)

    def _answers_ping(self) -> bool:
        import redis

        try:
            with self.client() as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):
            return False


@contextlib.contextmanager
def redis_server(folder: Path) -> Iterator[RedisServer]:
    """A started :class:`RedisServer` with its files in ``folder``, always stopped after."""
    with RedisServer(folder) as server:
        yield server
