"""Live updates tell a registry outage from a broken version.

A real ``mlflow server`` sits behind a real reverse proxy (:class:`HoldingProxy`, like an
ingress); a FactorModels serves ``factor-LIVE_ret_1d`` and ``factor-OTHER_ret_1d`` through it.
The proxy holds the artifact requests of one new version, so the registry can be stopped at
an exact moment: while the service is downloading that version. The version is retried,
never rejected, and served once the registry is back, without a restart; the other model
follows its own promotion meanwhile.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from bentos.shared.live_download import Download, DownloadError
from harness.bento import BentoServer, bento_server
from harness.holding_proxy import HoldingProxy
from harness.mlflow_server import MlflowServer
from harness.wait import wait_until
from registry.promotion import promote
from registry.resolve import get_version
from registry.settings import get_settings
from tests.conftest import clear_mlflow_uris
from tests.live_load import set_alias_like_the_ui
from tests.services.test_live_promotion import (
    NAME,
    ROW,
    _log_version,
    admin_models,
    in_process,
    metric_totals,
    served,
)

pytestmark = pytest.mark.server

OTHER = "factor-OTHER_ret_1d"


@dataclass
class World:
    server: MlflowServer
    proxy: HoldingProxy
    versions: dict[str, str]
    predictions: dict[str, float]  # NAME's versions -> ROW's prediction in-process

    def model_id(self, name: str, version: str) -> str:
        """The id of ``version``'s artifact folder (``.../models/<id>/artifacts``): it is in
        the path of every request that downloads it."""
        uri = MlflowClient(self.server.url).get_model_version_download_uri(name, version)
        return uri.split("/models/")[1].split("/")[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    home = tmp_path_factory.mktemp("outage-registry")
    server = MlflowServer(
        f"sqlite:///{home / 'mlflow.db'}", str(home / "artifacts"), log_dir=home / "logs"
    )
    server.start()
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            clear_mlflow_uris(monkeypatch)
            monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
            monkeypatch.setenv("TRADESERVE_HOME", str(home))
            get_settings.cache_clear()
            versions = {"good": _log_version(0), "retrained": _log_version(1)}
            versions |= {"other-1": _log_version(2, OTHER), "other-2": _log_version(3, OTHER)}
            promote(NAME, versions["good"], reason="initial")
            promote(OTHER, versions["other-1"], reason="initial")
            predictions = {v: in_process(NAME, versions[v]) for v in ("good", "retrained")}
            get_settings.cache_clear()
        with HoldingProxy(server.port) as proxy:
            yield World(server, proxy, versions, predictions)
    finally:
        get_settings.cache_clear()
        server.stop()


@pytest.fixture(scope="module")
def service(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoServer]:
    home = tmp_path_factory.mktemp("outage-service")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRADESERVE_"))},
        "MLFLOW_TRACKING_URI": world.proxy.url,  # the service reaches MLflow through the proxy
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "BENTOML_HOME": str(home / "bentoml"),
        "TRADESERVE_DEVICE": "cpu",
        "TRADESERVE_HOME": str(home),
        "TRADESERVE_POLL_INTERVAL_S": "1",
        "TRADESERVE_FACTOR_MODELS": json.dumps([NAME, OTHER]),
        "BENTOML_CONFIG_OPTIONS": "services.FactorModels.workers=1",
    }
    with bento_server("bentos.factor.service:FactorModels", env, home / "serve.log") as server:
        yield server


class Watch:
    """``GET /admin/models`` of the one worker, every status seen kept (none may reject)."""

    def __init__(self, service: BentoServer) -> None:
        self.service = service
        self.seen: list[dict] = []

    def status(self, name: str = NAME) -> dict:
        [worker] = admin_models(self.service)["workers"]
        self.seen.extend(worker["models"])
        return served(worker, name)

    def serves(self, version: str, name: str = NAME) -> bool:
        return self.status(name)["model"]["version"] == version

    def rejections(self) -> list[str]:
        return [m["rejected"] for m in self.seen if m["rejected"]]


def test_the_registry_stopped_mid_download_delays_the_version_and_never_rejects_it(
    world, service
) -> None:
    watch = Watch(service)
    assert watch.serves(world.versions["good"]) and watch.serves(world.versions["other-1"], OTHER)
    retrained = world.versions["retrained"]
    before = metric_totals(service, "tradeserve_model_swaps_total", "outcome", model=NAME)
    world.proxy.hold(world.model_id(NAME, retrained))
    set_alias_like_the_ui(world.server.url, NAME, retrained)
    set_alias_like_the_ui(world.server.url, OTHER, world.versions["other-2"])
    wait_until(world.proxy.arrived.is_set, timeout=30, what="the download of the new version")

    # the other model follows its own promotion while this download hangs
    wait_until(
        lambda: watch.serves(world.versions["other-2"], OTHER), timeout=30, what="the other model"
    )
    # and /admin/reload answers, the download still pending, instead of waiting for it
    reload = httpx.post(f"{service.url}/admin/reload", timeout=60)
    assert reload.status_code == 200, reload.text
    status = served(reload.json()["workers"][0])
    assert status["model"]["version"] == world.versions["good"]
    assert status["pending"]["version"] == retrained
    assert status["pending"]["state"] == "downloading"

    world.server.stop()  # the registry goes down mid-download ...
    world.proxy.release()  # ... and the held request meets it: 502 from the proxy
    wait_until(
        lambda: (watch.status()["pending"] or {}).get("state") == "retrying",
        timeout=30,
        what="the failed download to be scheduled for a retry",
    )
    pending = watch.status()["pending"]
    assert pending["version"] == retrained and pending["attempts"] >= 1
    assert "502" in pending["last_error"]  # the proxy's answer for the stopped registry
    answer = httpx.post(f"{service.url}/predict", json={"model": NAME, "rows": ROW}, timeout=30)
    assert answer.json()["model"]["version"] == world.versions["good"]

    world.server.start()  # same port, same store
    wait_until(
        lambda: watch.serves(retrained),
        timeout=90,  # the poll backs off to 30 s while the registry is down
        what="the version once the registry is back",
    )
    assert watch.rejections() == []
    assert watch.status()["pending"] is None
    answer = httpx.post(f"{service.url}/predict", json={"model": NAME, "rows": ROW}, timeout=30)
    assert answer.json()["model"]["version"] == retrained
    assert answer.json()["predictions"][0] == pytest.approx(
        world.predictions["retrained"], rel=1e-6
    )
    swaps = metric_totals(service, "tradeserve_model_swaps_total", "outcome", model=NAME)
    assert swaps.get("deferred", 0) - before.get("deferred", 0) >= 1
    assert swaps.get("rejected", 0) == before.get("rejected", 0)
    assert swaps.get("swapped", 0) - before.get("swapped", 0) == 1


def test_a_download_past_its_timeout_is_abandoned_as_transient(
    world, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_mlflow_uris(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world.proxy.url)
    get_settings.cache_clear()
    resolved = get_version(NAME, world.versions["good"])
    world.proxy.hold(world.model_id(NAME, world.versions["good"]))
    try:
        job = Download(resolved).start()
        with pytest.raises(DownloadError, match=r"not done after 0\.2 s"):
            job.wait(0.2)
        wait_until(world.proxy.arrived.is_set, timeout=30, what="the held download request")
        assert not job.done.is_set()
    finally:
        world.proxy.release()
        get_settings.cache_clear()
    # the abandoned download finishes on its own and leaves no files behind
    wait_until(job.done.is_set, timeout=60, what="the abandoned download to end")
    wait_until(lambda: not Path(job.folder).exists(), timeout=10, what="its folder to go")
