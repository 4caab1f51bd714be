"""Live promotion: running services follow their models' alias without a rebuild.

Every worker process polls the registry (``TRADESERVE_POLL_INTERVAL_S``, default 10 s).
When a served model's alias points at another version, the worker downloads it (in a thread
of its own, under ``TRADESERVE_DOWNLOAD_TIMEOUT_S``), loads it and runs it through the
gate's check (:func:`registry.gate.load_checked`, the same as at start-up; also the
warm-up), and only then swaps it in atomically; requests already running finish on the old
version.

Transient and permanent failures are told apart. Anything that goes wrong before the
version is on disk (registry or artifact store unreachable, HTTP 5xx, a timeout, a dropped
connection) is retried with backoff and never held against the version; only a version that
downloaded and then fails to load or fails the check is rejected, for good. Each model is
followed on its own: one that cannot be resolved or downloaded holds up no other.
``POST /admin/reload`` retries at once, and waits at most ``RELOAD_WAIT_S`` for downloads:
it never hangs behind a slow one. An unreachable registry keeps the loaded versions serving.

A move of the alias made outside tradeserve (the MLflow UI) is recorded in the audit with
the gate's verdict when first seen, and mirrored to the legacy stage
(:func:`registry.observed.record_observed`).

Workers share one folder under ``TRADESERVE_HOME``: a request to reload (``POST
/admin/reload``, a registry webhook) touches a marker that every worker watches, and each
worker publishes its status there for ``GET /admin/models`` (:mod:`bentos.shared.live_status`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import Counter

from bentos.shared.lineage import ModelRef
from bentos.shared.live_download import DownloadError, downloaded
from bentos.shared.live_status import (
    PendingUpdate,
    RegistryStatus,
    ServedStatus,
    WorkerStatus,
    live_dir,
    publish,
    worker_statuses,
)
from bentos.shared.model_source import ModelSet, ServedModel
from registry.errors import RegistryUnavailableError, TradeserveError
from registry.gate import load_checked
from registry.loading import LoadedModel
from registry.observed import record_observed
from registry.resolve import ResolvedVersion, resolve
from registry.settings import get_settings
from registry.trust import UntrustedPickleError

logger = logging.getLogger("tradeserve.live")

SWAPS = Counter(
    "tradeserve_model_swaps",
    "Model versions swapped in, rejected, or deferred (transient failure) by live promotion",
    ["service", "model", "outcome"],
)
MARKER_POLL_S = 0.5
MAX_BACKOFF_S = 30.0
RELOAD_WAIT_S = 5.0  # an explicit reload waits this long for downloads, then answers

__all__ = ["LiveUpdater", "WorkerStatus", "start_live_updates", "worker_statuses"]


@dataclass
class _Fetch:
    """The download of one model's promoted version and its transient failures."""

    target: ResolvedVersion
    failures: int = 0
    last_error: str | None = None
    next_at: float = 0.0  # time.monotonic() of the next try
    thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class LiveUpdater:
    """Follows the alias of every model in ``model_sets`` from a background thread."""

    def __init__(
        self,
        service: str,
        model_sets: Sequence[ModelSet],
        interval_s: float,
        worker: int,
        download_timeout_s: float = 900.0,
    ) -> None:
        self.service = service
        self.model_sets = list(model_sets)
        self.interval_s = interval_s
        self.worker = worker
        self.download_timeout_s = download_timeout_s
        self.registry = RegistryStatus()
        # name -> (version, reason); a start-up fallback is a rejection of the promoted one
        self.rejected: dict[str, tuple[str, str]] = {
            name: (served.fallback_from, served.fallback_reason or "")
            for name, served in self._served().items()
            if served.fallback_from is not None
        }
        self._fetches: dict[str, _Fetch] = {}
        self._wanted: dict[str, str] = {}  # name -> the version its alias points at now
        self._observed: dict[str, str] = {}  # name -> alias holder whose move is on record
        self._observer = f"observed by {service} on {socket.gethostname()}"
        self._check_lock = threading.Lock()  # one check at a time; never held by downloads
        self._state = threading.RLock()  # the dicts above, the served sets' swaps, publish
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        live_dir(service).mkdir(parents=True, exist_ok=True)
        self._marker = live_dir(service) / "reload-requested"
        self._seen_marker = self._marker_mtime()

    def start(self) -> None:
        self.publish()
        self._thread = threading.Thread(target=self._run, name="tradeserve-live", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        (live_dir(self.service) / f"worker-{self.worker}.json").unlink(missing_ok=True)

    def request_reload(self) -> None:
        """Ask every worker of this service to check the registry now."""
        self._marker.touch()

    def check_now(self, retry_now: bool = True, wait_s: float = RELOAD_WAIT_S) -> None:
        """Resolve every served model and fetch any newly promoted version (at once when
        ``retry_now``, else once its backoff is over); wait up to ``wait_s`` for those
        fetches, then publish. The wait holds no lock."""
        with self._check_lock:
            unreachable: Exception | None = None
            started = []
            for name in sorted(self._served()):
                try:
                    target = resolve(name)
                except (RegistryUnavailableError, OSError) as error:
                    unreachable = error
                    continue
                except TradeserveError as error:  # e.g. alias removed: keep serving what works
                    logger.warning("live: cannot resolve %s: %s", name, error)
                    continue
                thread = self._follow(name, target, retry_now)
                if thread is not None:
                    started.append(thread)
            if unreachable is not None:
                self._registry_failed(unreachable)
            else:
                self.registry = RegistryStatus(last_success=datetime.now(UTC))
        deadline = time.monotonic() + wait_s
        for thread in started:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.publish()

    def _served(self) -> dict[str, ServedModel]:
        return {name: m for models in self.model_sets for name, m in models.models.items()}

    def _set_of(self, name: str) -> ModelSet:
        return next(models for models in self.model_sets if name in models.models)

    def _follow(
        self, name: str, target: ResolvedVersion, retry_now: bool
    ) -> threading.Thread | None:
        """Act on ``target``, the version ``name``'s alias points at; the fetch thread that
        is now getting it, if any."""
        with self._state:
            self._wanted[name] = target.version
            served = self._served()[name].ref.version
            rejected = self.rejected.get(name)
            if target.version == served:
                self._fetches.pop(name, None)  # e.g. the alias moved back
                verdict: tuple[bool, list[str]] | None = (True, [])
            elif rejected is not None and rejected[0] == target.version:
                verdict = (False, [rejected[1]])
            else:
                verdict = None
        if verdict is not None:
            self._observe(target, *verdict)
            return None
        with self._state:
            fetch = self._fetches.get(name)
            if fetch is not None and fetch.running:
                return fetch.thread if fetch.target.version == target.version else None
            if fetch is None or fetch.target.version != target.version:
                fetch = self._fetches[name] = _Fetch(target)
            elif not retry_now and time.monotonic() < fetch.next_at:
                return None
            fetch.thread = threading.Thread(
                target=self._fetch, args=(fetch,), name=f"tradeserve-fetch-{name}", daemon=True
            )
            fetch.thread.start()
            return fetch.thread

    def _fetch(self, fetch: _Fetch) -> None:
        """Download, load and check ``fetch.target``; then swap it in, reject it, or (for a
        transient failure) schedule another try."""
        target = fetch.target
        try:
            with downloaded(target, self.download_timeout_s) as model_dir:
                loaded, problems = load_checked(target, self._set_of(target.name).device, model_dir)
        except (DownloadError, RegistryUnavailableError) as error:
            self._deferred(fetch, error)
            return
        except UntrustedPickleError as error:  # the operator's refusal: as final as a failure
            loaded, problems = None, [str(error)]
        except Exception as error:  # a bug of ours must not kill the thread silently
            logger.exception("live: fetching %s version %s failed", target.name, target.version)
            self._deferred(fetch, error)
            return
        self._observe(target, not problems, problems)
        with self._state:
            if self._wanted.get(target.name) != target.version:
                return  # the alias moved on while this one was fetched
            self._fetches.pop(target.name, None)
            if problems or loaded is None:
                self._reject(target, "; ".join(problems))
            else:
                self._swap(target, loaded)
        self.publish()

    def _swap(self, target: ResolvedVersion, loaded: LoadedModel) -> None:
        self._set_of(target.name).replace(
            ServedModel(
                ref=ModelRef(name=target.name, version=target.version, alias=target.alias),
                family=target.family,
                runtime=loaded.runtime,
                metadata=loaded.metadata,
            )
        )
        self.rejected.pop(target.name, None)
        SWAPS.labels(self.service, target.name, "swapped").inc()
        logger.info("live: now serving %s version %s", target.name, target.version)

    def _reject(self, target: ResolvedVersion, reason: str) -> None:
        self.rejected[target.name] = (target.version, reason)
        SWAPS.labels(self.service, target.name, "rejected").inc()
        logger.error(
            "live: rejected %s version %s: %s (still serving version %s)",
            target.name,
            target.version,
            reason,
            self._served()[target.name].ref.version,
        )

    def _deferred(self, fetch: _Fetch, error: Exception) -> None:
        """A transient failure: try again after a backoff (at once on /admin/reload)."""
        with self._state:
            fetch.failures += 1
            fetch.last_error = str(error)
            delay = backoff(self.interval_s, fetch.failures)
            fetch.next_at = time.monotonic() + delay
        SWAPS.labels(self.service, fetch.target.name, "deferred").inc()
        logger.warning(
            "live: cannot fetch %s version %s yet (%s); retrying in %.0f s",
            fetch.target.name,
            fetch.target.version,
            error,
            delay,
        )
        self.publish()

    def _observe(self, target: ResolvedVersion, passed: bool, problems: list[str]) -> None:
        """Record a move of the alias made outside tradeserve, once per worker and version
        (and again while a passed holder's legacy stage lags: the mirror is being caught up).
        Failures are retried at the next check."""
        settings = get_settings()
        on_record = self._observed.get(target.name) == target.version
        stage_lags = passed and target.alias == settings.alias
        stage_lags = stage_lags and target.stage != settings.legacy_stage
        if target.alias is None or (on_record and not stage_lags):
            return
        try:
            record_observed(target, passed, problems, self._observer)
        except Exception as error:  # the registry is down: the next check retries
            logger.warning("live: cannot record the move of %s yet: %s", target.name, error)
            return
        self._observed[target.name] = target.version

    def _registry_failed(self, error: Exception) -> None:
        failures = self.registry.consecutive_failures + 1
        self.registry = RegistryStatus(
            reachable=False,
            last_success=self.registry.last_success,
            last_error=str(error),
            consecutive_failures=failures,
        )
        logger.warning("live: registry unreachable (%s); keeping loaded versions", error)

    def _run(self) -> None:
        due = time.monotonic() + self.interval_s
        while not self._stop.wait(MARKER_POLL_S):
            marker = self._marker_mtime()
            requested = marker != self._seen_marker
            if requested or time.monotonic() >= due:
                self._seen_marker = marker
                try:  # a reload request waits for its downloads, as /admin/reload does
                    self.check_now(retry_now=requested, wait_s=RELOAD_WAIT_S if requested else 0)
                except Exception:  # never let the poller die
                    logger.exception("live: unexpected error while checking the registry")
                due = time.monotonic() + backoff(
                    self.interval_s, self.registry.consecutive_failures
                )

    def _marker_mtime(self) -> float:
        try:
            return self._marker.stat().st_mtime
        except FileNotFoundError:
            return 0.0

    def status(self) -> WorkerStatus:
        with self._state:
            return WorkerStatus(
                service=self.service,
                worker=self.worker,
                pid=os.getpid(),
                live=True,
                updated_at=datetime.now(UTC),
                registry=self.registry,
                models=[
                    ServedStatus(
                        model=served.ref,
                        loaded_at=served.loaded_at,
                        rejected=(
                            f"rejected version {self.rejected[name][0]}: {self.rejected[name][1]}"
                            if name in self.rejected
                            else None
                        ),
                        pending=self._pending(name),
                        fallback_from=served.fallback_from,
                        fallback_reason=served.fallback_reason,
                    )
                    for name, served in sorted(self._served().items())
                ],
            )

    def _pending(self, name: str) -> PendingUpdate | None:
        fetch = self._fetches.get(name)
        if fetch is None:
            return None
        return PendingUpdate(
            version=fetch.target.version,
            state="downloading" if fetch.running else "retrying",
            attempts=fetch.failures + (1 if fetch.running else 0),
            last_error=fetch.last_error,
            retry_in_s=None if fetch.running else max(0.0, fetch.next_at - time.monotonic()),
        )

    def publish(self) -> None:
        """Write this worker's status where every worker (and /admin/models) can read it."""
        with self._state:
            publish(self.status())


def backoff(interval_s: float, failures: int) -> float:
    """Delay before the next try after ``failures`` consecutive ones: the poll interval,
    doubling, capped at ``MAX_BACKOFF_S`` (or the interval, if longer)."""
    if not failures:
        return interval_s
    return min(interval_s * 2 ** (failures - 1), max(MAX_BACKOFF_S, interval_s))


def start_live_updates(service: str, *model_sets: ModelSet) -> LiveUpdater | None:
    """Start following promotions when live mode is on (default: serving from the registry)."""
    import bentoml

    from bentos.shared.model_source import source_kind
    from bentos.shared.settings import get_serving_settings

    settings = get_serving_settings()
    live = settings.live if settings.live is not None else source_kind() == "registry"
    if not live:
        return None
    worker = bentoml.server_context.worker_index or os.getpid()
    updater = LiveUpdater(
        service, model_sets, settings.poll_interval_s, worker, settings.download_timeout_s
    )
    updater.start()
    return updater
