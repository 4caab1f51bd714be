"""A throw-away PostgreSQL cluster for tests: :func:`postgres_cluster` yields its URL.

The server runs through ``pg_ctl`` (it daemonizes, so no process handle owns it); a watchdog
process stops it and removes its folder when the test process dies.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from harness.ports import LOCALHOST, free_port
from harness.wait import log_tail, wait_until

POSTGRES_SUPERUSER = "postgres"
POSTGRES_OS_USER = "postgres"
# SQLAlchemy 2.1 resolves a bare postgresql:// to psycopg 3; tradeserve ships psycopg2.
SQLALCHEMY_PG_DRIVER = "psycopg2"
_POSTGRES_BIN_GLOBS = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/opt/homebrew/bin")


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


def _pg_ctl_start(
    bin_dir: Path, pg_dir: Path, port: int, log_path: Path, durable: bool = False
) -> None:
    """Start the server on ``127.0.0.1:port``; ``pg_ctl -w`` waits until it accepts connections.

    The server's output goes to ``log_path`` (opened by us, so it may live in a folder the
    PostgreSQL user cannot write to). Durability is switched off (a test database) unless
    ``durable`` (benchmarks: commits fsync'd, as in production).
    """
    options = f"-p {port} -k {pg_dir} -c listen_addresses={LOCALHOST}"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
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


def _start_on_free_port(
    bin_dir: Path, pg_dir: Path, log_path: Path, attempts: int = 3, durable: bool = False
) -> int:
    """Start PostgreSQL on a free port, retrying when another process grabbed it first."""
    for attempt in range(1, attempts + 1):
        port = free_port()
        try:
            _pg_ctl_start(bin_dir, pg_dir, port, log_path, durable)
            return port
        except RuntimeError as error:
            if attempt == attempts or "already in use" not in log_tail(log_path, 20):
                raise RuntimeError(f"{error}\n--- postgres log ---\n{log_tail(log_path)}") from None
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _running_postgres(
    bin_dir: Path, pg_dir: Path, log_path: Path, durable: bool = False
) -> Iterator[int]:
    """PostgreSQL started on a free port (yielded) and stopped on exit."""
    port = _start_on_free_port(bin_dir, pg_dir, log_path, durable=durable)
    try:
        yield port
    finally:
        _pg_ctl_stop(bin_dir, pg_dir)


@contextlib.contextmanager
def postgres_cluster(
    tmp_dir: Path, database: str = "mlflow", start_timeout: float = 60, durable: bool = False
) -> Iterator[str]:
    """A fresh PostgreSQL cluster with one database; yields its SQLAlchemy URL.

    ``postgresql+psycopg2://postgres@127.0.0.1:<port>/<database>`` (trust auth, no password):
    the driver is explicit because SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3,
    which is not installed. Use :func:`libpq_url` for psycopg2/libpq. The server
    log is ``tmp_dir/postgres.log``; data and socket live in a private ``tradeserve-pg-*``
    folder in the system temp dir, removed on exit after ``pg_ctl stop -m fast``. Runs the
    server as the ``postgres`` OS user when we are root. ``durable``: fsync and synchronous
    commits on (for benchmarks; tests leave them off).

    Raises:
        PostgresNotFoundError: PostgreSQL is not installed.
    """
    bin_dir = find_postgres_bin_dir()
    tmp_dir.mkdir(parents=True, exist_ok=True)
    log_path = tmp_dir / "postgres.log"
    pg_dir = _make_pg_dir()
    try:
        _initdb(bin_dir, pg_dir / "data")
        with (
            _pg_watchdog(bin_dir, pg_dir),
            _running_postgres(bin_dir, pg_dir, log_path, durable) as port,
        ):
            address = f"{POSTGRES_SUPERUSER}@{LOCALHOST}:{port}"
            _create_database(f"postgresql://{address}/postgres", database, start_timeout)
            yield f"postgresql+{SQLALCHEMY_PG_DRIVER}://{address}/{database}"
    finally:
        shutil.rmtree(pg_dir, ignore_errors=True)
