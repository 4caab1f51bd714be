"""harness.process: a stopped server leaves no process behind, a failed start says why, and
servers die with the process that started them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.bento import REPO_ROOT
from harness.process import ManagedProcess, any_alive, process_tree
from harness.wait import wait_until

# A parent that ignores nothing and a child in a session of its own that ignores SIGTERM:
# the shape of a BentoML arbiter with a stubborn circus worker.
STUBBORN_TREE = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    child = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"],
        start_new_session=True,
    )
    open(sys.argv[1], "w").write(str(child.pid))
    time.sleep(600)
    """
)


def python(code: str, *args: str, log: Path, **kwargs: object) -> ManagedProcess:
    return ManagedProcess(
        "python", [sys.executable, "-c", code, *args], env=dict(os.environ), log_path=log, **kwargs
    )


def test_stop_kills_the_whole_tree_even_outside_the_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "child.pid"
    server = python(
        STUBBORN_TREE, str(marker), log=tmp_path / "log", ready=marker.exists, stop_grace=1
    )
    server.start(timeout=30)
    root, child = server.pid, int(marker.read_text())
    assert root is not None and child in process_tree(root)
    server.stop()
    assert not server.is_running
    assert not any_alive([root, child])


def test_a_process_that_dies_during_startup_fails_the_start_with_its_log(tmp_path: Path) -> None:
    server = python("print('boom'); raise SystemExit(3)", log=tmp_path / "log", ready=lambda: False)
    with pytest.raises(RuntimeError, match=r"(?s)exited with code 3.*boom"):
        server.start(timeout=30)
    assert not server.is_running


def test_a_server_that_never_gets_ready_is_stopped(tmp_path: Path) -> None:
    server = python(
        "print('waiting', flush=True); import time; time.sleep(600)",
        log=tmp_path / "log",
        ready=lambda: False,
    )
    with pytest.raises(TimeoutError, match=r"(?s)python to be ready.*waiting"):
        server.start(timeout=1)
    assert not server.is_running


def test_servers_die_with_the_process_that_started_them(tmp_path: Path) -> None:
    starter = textwrap.dedent(
        """
        import time
        from harness.process import ManagedProcess
        server = ManagedProcess("sleep", ["sleep", "600"], env={"PATH": "/usr/bin:/bin"})
        server.launch()
        print(server.pid, flush=True)
        time.sleep(600)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", starter], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdout is not None
        server = int(process.stdout.readline())
        assert any_alive([server])
        process.kill()  # SIGKILL: no atexit, no finally
    wait_until(lambda: not any_alive([server]), 10, what="the orphaned server to exit")
