"""A version's download for live updates: under an overall timeout, every failure transient.

MLflow bounds each HTTP request (``MLFLOW_HTTP_REQUEST_TIMEOUT``) but not a whole download,
and cannot be interrupted: a registry that stalls mid-download would hold the worker's
update for that model indefinitely. The download runs in a thread of its own; past the
timeout it is abandoned (it ends at MLflow's own request timeout and removes its files) and
reported as transient, like any other download failure: nothing that happens before the
version is on disk says anything about the version.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from registry.errors import RegistryUnavailableError
from registry.loading import download
from registry.resolve import ResolvedVersion


class DownloadError(RegistryUnavailableError):
    """A download failed or timed out: retry it later, never reject the version for it."""


class Download:
    """One download into a folder of its own, in a daemon thread."""

    def __init__(self, resolved: ResolvedVersion) -> None:
        self.resolved = resolved
        self.folder = Path(
            tempfile.mkdtemp(prefix=f"tradeserve-{resolved.name}-v{resolved.version}-")
        )
        self.model_dir: Path | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="tradeserve-download", daemon=True)

    def start(self) -> Download:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.model_dir = download(self.resolved, self.folder)
        except BaseException as error:  # reported by wait(); the thread must not die loudly
            self.error = error
        finally:
            with self._lock:
                self.done.set()
                if self._abandoned:
                    self.remove()

    def wait(self, timeout_s: float) -> Path:
        """The downloaded model folder; :class:`DownloadError` if it failed or is not done
        within ``timeout_s`` (then it is abandoned)."""
        what = f"{self.resolved.name} version {self.resolved.version}"
        if not self.done.wait(timeout_s):
            self.abandon()
            raise DownloadError(f"download of {what} not done after {timeout_s:g} s")
        if self.error is not None or self.model_dir is None:
            self.remove()
            raise DownloadError(
                f"download of {what} failed: {describe(self.error)}"
            ) from self.error
        return self.model_dir

    def abandon(self) -> None:
        """Stop caring: the folder goes when the thread ends (now, if it has)."""
        with self._lock:
            self._abandoned = True
            if self.done.is_set():
                self.remove()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def describe(error: BaseException | None) -> str:
    """``error`` and what caused it (a 502, a refused connection), one line each joined."""
    parts = []
    while error is not None and len(parts) < 2:
        lines = str(error).strip().splitlines()
        parts.append(f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": "))
        error = error.__cause__ or error.__context__
    return "; caused by ".join(parts) or "no model folder"


@contextlib.contextmanager
def downloaded(resolved: ResolvedVersion, timeout_s: float) -> Iterator[Path]:
    """``resolved``'s MLflow model folder, downloaded within ``timeout_s`` (else
    :class:`DownloadError`), removed on exit."""
    job = Download(resolved).start()
    model_dir = job.wait(timeout_s)
    try:
        yield model_dir
    finally:
        job.remove()
