"""Real backing services for integration tests: PostgreSQL, an S3 emulator, an MLflow server.

Plain functions and context managers, usable from any fixture or script:

* :func:`free_port` / :func:`wait_until` — small building blocks (poll, never sleep blindly).
* :func:`postgres_cluster` — a throw-away PostgreSQL cluster; yields a SQLAlchemy URL.
* :func:`moto_s3` — a moto S3 server on an ephemeral port with one bucket; yields
  :class:`S3Endpoint`.
* :class:`MlflowServer` / :func:`mlflow_server` — a real ``mlflow server`` subprocess that can
  be stopped and started again on the same port and stores (outage simulations).

Every process started here is cleaned up when its context exits (also when the test fails);
MLflow servers are additionally stopped at interpreter exit and die with the test process.
The pytest fixtures built on these live in ``tests/server_fixtures.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

LOCALHOST = "127.0.0.1"
POSTGRES_SUPERUSER = "postgres"
POSTGRES_OS_USER = "postgres"
# SQLAlchemy 2.1 resolves a bare postgresql:// to psycopg 3; tradeserve ships psycopg2.
SQLALCHEMY_PG_DRIVER = "psycopg2"
_POSTGRES_BIN_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/bin")


# --------------------------------------------------------------------------- building blocks


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that was free a moment ago (the OS picks it; tiny reuse race possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    what: str = "condition",
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll ``predicate`` until it returns a truthy value and return that value.

    Exceptions of the types in ``ignore`` count as "not yet" (the last one is chained to the
    timeout error); any other exception propagates at once, which lets a predicate fail fast,
    e.g. when the process it waits for has died.

    Raises:
        TimeoutError: naming ``what`` when ``timeout`` seconds pass without success.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = predicate()
        except ignore as error:
            last_error = error
        else:
            if result:
                return result
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{detail}") from (
                last_error
            )
        time.sleep(interval)


def port_is_open(port: int, host: str = LOCALHOST) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def log_tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file ('' when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------- PostgreSQL


class PostgresNotFoundError(RuntimeError):
    """The PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed."""


def find_postgres_bin_dir() -> Path:
    """The folder holding ``initdb`` and ``pg_ctl``: PATH first, then usual install folders."""
    on_path = shutil.which("initdb")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    for pattern in _POSTGRES_BIN_GLOBS:
        candidates += [Path(p) for p in sorted(glob.glob(pattern), reverse=True)]
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    raise PostgresNotFoundError(
        "PostgreSQL server binaries not found: no initdb/pg_ctl on PATH or under "
        f"{', '.join(_POSTGRES_BIN_GLOBS)}; install PostgreSQL (e.g. apt-get install postgresql)"
    )


def _postgres_os_user() -> str | None:
    """The OS user to run PostgreSQL as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        import pwd

        pwd.getpwnam(POSTGRES_OS_USER)
    except KeyError as error:
        raise RuntimeError(
            f"running as root, but there is no '{POSTGRES_OS_USER}' OS user to run PostgreSQL "
            "as (initdb refuses root)"
        ) from error
    return POSTGRES_OS_USER


def libpq_url(sqlalchemy_url: str) -> str:
    """``postgresql+psycopg2://...`` -> ``postgresql://...`` (for ``psycopg2.connect``)."""
    scheme, rest = sqlalchemy_url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


def _make_pg_dir() -> Path:
    """A short, private folder the PostgreSQL user owns (data directory + unix socket).

    It lives in the system temp folder rather than pytest's ``tmp_path`` because pytest's
    folders are private to the current user (unreadable for ``postgres`` when we are root) and
    unix-socket paths must stay under ~100 characters.
    """
    pg_dir = Path(tempfile.mkdtemp(prefix="tradeserve-pg-"))
    user = _postgres_os_user()
    if user is not None:
        shutil.chown(pg_dir, user=user, group=user)
    return pg_dir


def _as_postgres_user(cwd: Path) -> dict[str, Any]:
    """``subprocess`` keyword arguments that run a command as the PostgreSQL OS user."""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    user = _postgres_os_user()
    if user is None:
        return {"cwd": cwd, "env": env}
    return {
        "cwd": cwd,
        "env": {**env, "HOME": str(cwd)},
        "user": user,
        "group": user,
        "extra_groups": [],
    }


def _run_pg_tool(
    args: Sequence[str], *, cwd: Path, stdout: Any = subprocess.PIPE, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL tool as the PostgreSQL OS user; raise with its output on failure."""
    result = subprocess.run(
        list(args),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is subprocess.PIPE else stdout,
        text=True,
        timeout=timeout,
        check=False,
        **_as_postgres_user(cwd),
    )
    if result.returncode != 0:
        output = (result.stdout or "").strip()
        raise RuntimeError(f"{Path(args[0]).name} failed ({result.returncode}): {output}")
    return result


def _initdb(bin_dir: Path, data_dir: Path) -> None:
    """Create a cluster with trust authentication (no passwords) and a C locale."""
    _run_pg_tool(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            POSTGRES_SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ],
        cwd=data_dir.parent,
    )


def _pg_ctl_start(bin_dir: Path, pg_dir: Path, port: int, log_path: Path) -> None:
    """Start the server on ``127.0.0.1:port``; ``pg_ctl -w`` waits until it accepts connections.

    The server's output goes to ``log_path`` (opened by us, so it may live in a folder the
    PostgreSQL user cannot write to). Durability is switched off: this is a test database.
    """
    options = (
        f"-p {port} -k {pg_dir} -c listen_addresses={LOCALHOST} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    with log_path.open("a") as log:
        _run_pg_tool(
            [str(bin_dir / "pg_ctl"), "-D", str(pg_dir / "data"), "-o", options, "-w", "start"],
            cwd=pg_dir,
            stdout=log,
            timeout=90,
        )


def _pg_ctl_stop(bin_dir: Path, pg_dir: Path) -> None:
    """Stop the server (fast mode, then immediate mode if that fails)."""
    data_dir = str(pg_dir / "data")
    for mode in ("fast", "immediate"):
        try:
            _run_pg_tool(
                [str(bin_dir / "pg_ctl"), "-D", data_dir, "-m", mode, "-w", "-t", "30", "stop"],
                cwd=pg_dir,
                timeout=45,
            )
            return
        except (RuntimeError, subprocess.TimeoutExpired):
            continue


# Blocks on stdin; EOF means the test process is gone (closed the pipe or died, even by
# SIGKILL): then stop PostgreSQL and remove its folder. Plain sh, as the postgres user.
_PG_WATCHDOG_SCRIPT = 'dir=$1; shift; cat >/dev/null; "$@" >/dev/null 2>&1; rm -rf "$dir"'


@contextlib.contextmanager
def _pg_watchdog(bin_dir: Path, pg_dir: Path) -> Iterator[None]:
    """While active, a dying test process takes its PostgreSQL server down with it.

    On a normal exit the watchdog is killed first and the caller stops PostgreSQL itself.
    """
    stop = [str(bin_dir / "pg_ctl"), "-D", str(pg_dir / "data"), "-m", "immediate", "stop"]
    watchdog = subprocess.Popen(
        ["/bin/sh", "-c", _PG_WATCHDOG_SCRIPT, "pg-watchdog", str(pg_dir), *stop],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C in the terminal must not reach it
        **_as_postgres_user(pg_dir),
    )
    try:
        yield
    finally:
        watchdog.kill()
        watchdog.wait()
        if watchdog.stdin is not None:
            watchdog.stdin.close()


def _create_database(admin_url: str, database: str, timeout: float) -> None:
    """Wait until PostgreSQL accepts logins, then ``CREATE DATABASE database``."""
    import psycopg2

    connection = wait_until(
        lambda: psycopg2.connect(admin_url, connect_timeout=2),
        timeout=timeout,
        what=f"PostgreSQL at {admin_url}",
        ignore=(psycopg2.OperationalError,),
    )
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{database}"')
    finally:
        connection.close()


def _start_on_free_port(bin_dir: Path, pg_dir: Path, log_path: Path, attempts: int = 3) -> int:
    """Start PostgreSQL on a free port, retrying when another process grabbed it first."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        try:
            _pg_ctl_start(bin_dir, pg_dir, port, log_path)
            return port
        except RuntimeError as error:
            if attempt == attempts or "already in use" not in log_tail(log_path, 20):
                raise RuntimeError(f"{error}\n--- postgres log ---\n{log_tail(log_path)}") from None
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _running_postgres(bin_dir: Path, pg_dir: Path, log_path: Path) -> Iterator[int]:
    """PostgreSQL started on a free port (yielded) and stopped on exit."""
    port = _start_on_free_port(bin_dir, pg_dir, log_path)
    try:
        yield port
    finally:
        _pg_ctl_stop(bin_dir, pg_dir)


@contextlib.contextmanager
def postgres_cluster(
    tmp_dir: Path, database: str = "mlflow", start_timeout: float = 60
) -> Iterator[str]:
    """A fresh PostgreSQL cluster with one database; yields its SQLAlchemy URL.

    ``postgresql+psycopg2://postgres@127.0.0.1:<port>/<database>`` (trust auth, no password):
    the driver is explicit because SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3,
    which is not installed. Use :func:`libpq_url` for psycopg2/libpq. The server
    log is ``tmp_dir/postgres.log``; data and socket live in a private ``tradeserve-pg-*``
    folder in the system temp dir, removed on exit after ``pg_ctl stop -m fast``. Runs the
    server as the ``postgres`` OS user when we are root.

    Raises:
        PostgresNotFoundError: PostgreSQL is not installed.
    """
    bin_dir = find_postgres_bin_dir()
    tmp_dir.mkdir(parents=True, exist_ok=True)
    log_path = tmp_dir / "postgres.log"
    pg_dir = _make_pg_dir()
    try:
        _initdb(bin_dir, pg_dir / "data")
        with _pg_watchdog(bin_dir, pg_dir), _running_postgres(bin_dir, pg_dir, log_path) as port:
            address = f"{POSTGRES_SUPERUSER}@{LOCALHOST}:{port}"
            _create_database(f"postgresql://{address}/postgres", database, start_timeout)
            yield f"postgresql+{SQLALCHEMY_PG_DRIVER}://{address}/{database}"
    finally:
        shutil.rmtree(pg_dir, ignore_errors=True)


# ------------------------------------------------------------------------------------ moto S3


@dataclass(frozen=True)
class S3Endpoint:
    """Where the S3 emulator listens, with the (fake) credentials that it accepts."""

    endpoint_url: str
    bucket: str
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    region: str = "us-east-1"

    def artifacts_destination(self, prefix: str = "mlartifacts") -> str:
        """``s3://<bucket>/<prefix>`` for ``mlflow server --artifacts-destination``."""
        return f"s3://{self.bucket}/{prefix.strip('/')}" if prefix else f"s3://{self.bucket}"

    def server_env(self) -> dict[str, str]:
        """Environment a process (the MLflow *server*) needs to use this endpoint."""
        return {
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self) -> Any:
        """A boto3 S3 client for the emulator (explicit settings, no process env needed)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )

    def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (moto state is process-global, see moto_s3)."""
        s3 = self.client()
        existing = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
        if self.bucket not in existing:
            s3.create_bucket(Bucket=self.bucket)

    def object_keys(self, prefix: str = "") -> list[str]:
        """Keys of all objects in the bucket under ``prefix``."""
        paginator = self.client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]

    def read(self, key: str) -> bytes:
        """The bytes of one object."""
        return bytes(self.client().get_object(Bucket=self.bucket, Key=key)["Body"].read())


@contextlib.contextmanager
def moto_s3(
    bucket: str = "tradeserve-artifacts", region: str = "us-east-1"
) -> Iterator[S3Endpoint]:
    """A moto S3 server in a background thread on an ephemeral port, with ``bucket`` created.

    Caveat: moto keeps its data in process-global state, so ``moto.mock_aws`` used in the same
    test process resets (wipes) this server's buckets too. Call
    :meth:`S3Endpoint.ensure_bucket` after such tests, or keep them in another process.
    Werkzeug's per-request log lines are silenced while it runs.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=LOCALHOST, port=0, verbose=False)
    with _quiet_logger("werkzeug"):
        server.start()
        try:
            host, port = server.get_host_and_port()
            url = f"http://{host}:{port}"
            endpoint = S3Endpoint(endpoint_url=url, bucket=bucket, region=region)
            endpoint.ensure_bucket()
            yield endpoint
        finally:
            server.stop()


@contextlib.contextmanager
def _quiet_logger(name: str, level: int = logging.WARNING) -> Iterator[None]:
    """Raise a logger's level for the duration of the block."""
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(max(level, previous))
    try:
        yield
    finally:
        logger.setLevel(previous)


# ------------------------------------------------------------------------------ MLflow server

_PR_SET_PDEATHSIG = 1
_LIVE_SERVERS: set[MlflowServer] = set()


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
    """preexec_fn: SIGTERM the child when the test process dies, even on SIGKILL.

    ``mlflow server`` forwards SIGTERM to its uvicorn child, so nothing is left behind.
    """
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _health_ok(url: str) -> bool:
    """True when ``GET url`` answers 200 (no proxies; a refused connection is False)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class MlflowServer:
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
        self.port = port or free_port()
        self.log_path = Path(log_dir) / f"mlflow-server-{self.port}.log"
        self.start_timeout = start_timeout
        self._env = dict(env or {})
        self._extra_args = list(extra_args)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (what MLFLOW_TRACKING_URI should be)."""
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        """PID of the ``mlflow server`` process while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def is_running(self) -> bool:
        """True while the server process is alive (not necessarily healthy)."""
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        """The ``mlflow server`` command line."""
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.backend_store_uri,
            "--serve-artifacts",
            "--artifacts-destination",
            self.artifacts_destination,
            "--host",
            LOCALHOST,
            "--port",
            str(self.port),
            "--workers",
            "1",
            *self._extra_args,
        ]

    def server_env(self) -> dict[str, str]:
        """The server process's environment: ours, minus client settings, plus ``env``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        env.pop("MLFLOW_REGISTRY_URI", None)
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
                # Background job runner (huey consumers) is not needed by tradeserve tests.
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                # No network here: telemetry would only delay startup and shutdown.
                "MLFLOW_DISABLE_TELEMETRY": "true",
            }
        )
        env.update(self._env)
        return env

    def start(self) -> None:
        """Start the server and wait until ``GET /health`` answers 200.

        Raises:
            RuntimeError: already running, or the process exited (message has the log tail).
            TimeoutError: not healthy within ``start_timeout`` (the process is stopped).
        """
        if self.is_running:
            raise RuntimeError(f"MLflow server at {self.url} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')}: {self.command()}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.command(),
                env=self.server_env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        _LIVE_SERVERS.add(self)
        try:
            wait_until(self._healthy_or_raise, self.start_timeout, 0.1, f"{self.url}/health")
        except BaseException as error:
            self.stop()
            if isinstance(error, TimeoutError):
                raise TimeoutError(f"{error}\n--- {self.log_path} ---\n{self.log_tail()}") from None
            raise

    def ensure_running(self) -> None:
        """Start the server unless it is already running."""
        if not self.is_running:
            self.start()

    def stop(self, timeout: float = 20, graceful: bool = True) -> None:
        """Stop the server's whole process group and wait until the port is closed.

        Graceful: SIGTERM first; once uvicorn has exited (the ``mlflow server`` parent then
        only runs its slow interpreter teardown, ~1-2 s) or ``timeout`` passes, SIGKILL the
        rest. ``graceful=False`` SIGKILLs at once (a crash rather than a shutdown). Does
        nothing when the server is not running.
        """
        process, self._process = self._process, None
        _LIVE_SERVERS.discard(self)
        if process is None:
            return
        if graceful:
            _signal_group(process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                wait_until(
                    lambda: (
                        process.poll() is not None or not _group_members(process.pid, process.pid)
                    ),
                    timeout,
                    what=f"uvicorn of {self.url} to exit",
                )
        _signal_group(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        wait_until(lambda: not port_is_open(self.port), 10, what=f"port {self.port} to close")

    def restart(self) -> None:
        """Stop, then start again on the same port and stores."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the server log."""
        return log_tail(self.log_path, lines)

    def _healthy_or_raise(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            code = None if self._process is None else self._process.returncode
            raise RuntimeError(
                f"mlflow server exited with code {code} during startup\n"
                f"--- {self.log_path} ---\n{self.log_tail()}"
            )
        return _health_ok(f"{self.url}/health")

    def __enter__(self) -> MlflowServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"MlflowServer({self.url}, {state}, backend={self.backend_store_uri})"


def _group_members(pgid: int, exclude: int | None = None) -> list[int]:
    """Live (non-zombie) processes of process group ``pgid``, read from ``/proc`` (Linux)."""
    members = []
    for stat_path in glob.glob("/proc/[0-9]*/stat"):
        try:
            stat = Path(stat_path).read_text()
        except OSError:
            continue
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        pid = int(stat_path.split("/")[2])
        if int(pgrp) == pgid and state != "Z" and pid != exclude:
            members.append(pid)
    return members


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


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
    server = MlflowServer(
        backend_store_uri,
        artifacts_destination,
        log_dir=log_dir,
        env=env,
        port=port,
        extra_args=extra_args,
        start_timeout=start_timeout,
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


@atexit.register
def _stop_live_servers() -> None:
    """Safety net: stop servers whose owners never exited their context."""
    for server in list(_LIVE_SERVERS):
        with contextlib.suppress(Exception):
            server.stop(timeout=5)
