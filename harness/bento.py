"""Real ``bentoml serve`` processes: :class:`BentoServer` / :func:`bento_server`."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from harness.ports import LOCALHOST, free_port
from harness.process import ManagedProcess
from harness.wait import log_tail

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGURATION = REPO_ROOT / "configuration.yaml"
BENTOML = Path(sys.executable).with_name("bentoml")
STARTUP_FAILED = "Application startup failed"


class BentoServer(ManagedProcess):
    """One ``bentoml serve TARGET`` (arbiter, workers, dependency services) on a free port.

    ``env`` is exactly the server's environment, plus ``BENTOML_CONFIG`` =
    configuration.yaml unless it names another; ``cwd`` is where BentoML finds the service
    (the repository root by default). Ready when ``/readyz`` answers 200; a worker whose
    startup failed fails the start at once rather than at the timeout.
    """

    def __init__(
        self,
        target: str,
        env: Mapping[str, str],
        log_path: Path,
        port: int | None = None,
        *,
        cwd: Path = REPO_ROOT,
        start_timeout: float = 180,
    ) -> None:
        self.target = target
        port = port or free_port()
        super().__init__(
            target,
            [BENTOML, "serve", target, "--host", LOCALHOST, "--port", str(port)],
            env={"BENTOML_CONFIG": str(CONFIGURATION), **env},
            log_path=log_path,
            cwd=cwd,
            port=port,
            ready="/readyz",
            start_timeout=start_timeout,
        )

    def is_ready(self) -> bool:
        if STARTUP_FAILED in log_tail(self.log_path, lines=200):
            raise RuntimeError(f"{self.target} failed to start:\n{self.log_tail()}")
        return super().is_ready()


@contextlib.contextmanager
def bento_server(
    target: str, env: Mapping[str, str], log_path: Path, timeout: float = 180
) -> Iterator[BentoServer]:
    """A started :class:`BentoServer`, always stopped afterwards."""
    with BentoServer(target, env, log_path, start_timeout=timeout) as server:
        yield server


def own_bentoml_home(home: Path, where: Path) -> str:
    """A BentoML home of one server that sees the bentos and models of ``home``'s store.

    Every ``bentoml serve`` empties ``$BENTOML_HOME/prometheus_multiproc_dir`` as it starts
    (``bentoml.serving.ensure_prometheus_dir``): two servers on one home share that folder,
    and the second one started unlinks the first one's metric files, whose ``/metrics``
    then shows the other server's series. Pods never share a home; neither do these servers.
    The store folders are created first: BentoML refuses a home whose links lead nowhere.
    """
    own = where / "bentoml"
    own.mkdir(parents=True, exist_ok=True)
    for name in ("bentos", "models"):
        shared = home / "bentoml" / name
        shared.mkdir(parents=True, exist_ok=True)
        link = own / name
        if not link.exists():
            link.symlink_to(shared, target_is_directory=True)
    return str(own)
