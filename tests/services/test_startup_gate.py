"""Start-up through the gate: a broken version made champion directly through MLflow's API
(as the MLflow UI does, without the gate) does not take a fresh service down.

A real ``mlflow server`` holds ``factor-LIVE_ret_1d`` with versions 1 and 2 promoted through
the gate, version 3 promoted through it and broken afterwards (its ``validation_status`` is
still "passed") and version 4 broken and set as champion through the UI's REST call. A fresh
FactorModels serves version 2: the newest version that passed the gate and still passes it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient

from bentos.shared.model_source import ModelSet
from harness.bento import BentoServer, bento_server
from harness.mlflow_server import MlflowServer
from harness.wait import wait_until
from registry.errors import GateError
from registry.families import Family
from registry.promotion import promote
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

HOPELESS = "factor-HOPELESS_ret_1d"  # its only version is broken: nothing can be served


class GateWorld:
    """The registry of this module and what each version is."""

    def __init__(self, server: MlflowServer, artifacts: Path) -> None:
        self.server = server
        self.artifacts = artifacts
        self.versions: dict[str, str] = {}
        self.predictions: dict[str, float] = {}

    def break_version(self, name: str, version: str) -> None:
        """Corrupt the stored booster of ``version`` (a bad upload, a truncated file)."""
        source = MlflowClient(self.server.url).get_model_version(name, version).source
        model_id = source.removeprefix("models:/")
        [booster] = [p for p in self.artifacts.rglob("model.json") if model_id in str(p)]
        booster.write_text("{ not a booster")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GateWorld]:
    home = tmp_path_factory.mktemp("gate-registry")
    artifacts = home / "artifacts"
    server = MlflowServer(f"sqlite:///{home / 'mlflow.db'}", str(artifacts), log_dir=home / "logs")
    server.start()
    world = GateWorld(server, artifacts)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            clear_mlflow_uris(monkeypatch)
            monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
            monkeypatch.setenv("TRADESERVE_HOME", str(home))
            get_settings.cache_clear()
            for key, seed in (("first", 0), ("validated", 1), ("decayed", 2)):
                world.versions[key] = _log_version(seed)
                promote(NAME, world.versions[key], reason="through the gate")
            world.versions["broken"] = _log_version(3)
            world.versions["hopeless"] = _log_version(4, HOPELESS)
            world.predictions = {
                world.versions[k]: in_process(NAME, world.versions[k])
                for k in ("first", "validated")
            }
            get_settings.cache_clear()
        for name, key in ((NAME, "decayed"), (NAME, "broken"), (HOPELESS, "hopeless")):
            world.break_version(name, world.versions[key])
        set_alias_like_the_ui(server.url, NAME, world.versions["broken"])
        set_alias_like_the_ui(server.url, HOPELESS, world.versions["hopeless"])
        yield world
    finally:
        get_settings.cache_clear()
        server.stop()


@pytest.fixture(scope="module")
def service(world: GateWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoServer]:
    home = tmp_path_factory.mktemp("gate-service")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRADESERVE_"))},
        "MLFLOW_TRACKING_URI": world.server.url,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "BENTOML_HOME": str(home / "bentoml"),
        "TRADESERVE_DEVICE": "cpu",
        "TRADESERVE_HOME": str(home),
        "TRADESERVE_POLL_INTERVAL_S": "1",
        "TRADESERVE_FACTOR_MODELS": json.dumps([NAME]),
        "BENTOML_CONFIG_OPTIONS": "services.FactorModels.workers=1",
    }
    with bento_server("bentos.factor.service:FactorModels", env, home / "serve.log") as server:
        yield server


def predict(service: BentoServer) -> dict:
    response = httpx.post(f"{service.url}/predict", json={"model": NAME, "rows": ROW}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_fresh_service_starts_on_the_last_validated_version(world, service) -> None:
    validated, broken = world.versions["validated"], world.versions["broken"]
    [worker] = admin_models(service)["workers"]
    status = served(worker)
    assert status["model"]["version"] == validated
    assert status["fallback_from"] == broken
    assert status["fallback_reason"].startswith("cannot load: ")
    assert status["rejected"].startswith(f"rejected version {broken}: cannot load: ")
    answer = predict(service)
    assert answer["model"]["version"] == validated
    assert answer["predictions"][0] == pytest.approx(world.predictions[validated], rel=1e-6)
    fallbacks = metric_totals(
        service, "tradeserve_model_startup_fallbacks_total", "service", model=NAME
    )
    assert fallbacks == {"FactorModels": 1.0}
    log = service.log_path.read_text()
    assert f"not serving {NAME} version {broken} (champion): it fails the gate" in log

    # the start-up fallback counts as a rejection: live mode does not retry the broken champion
    reload = httpx.post(f"{service.url}/admin/reload", timeout=60)
    assert reload.status_code == 200, reload.text
    assert served(reload.json()["workers"][0])["model"]["version"] == validated
    swaps = metric_totals(service, "tradeserve_model_swaps_total", "outcome", model=NAME)
    assert swaps.get("rejected", 0) == 0
    assert predict(service)["model"]["version"] == validated

    # and the next working promotion is followed as usual
    first = world.versions["first"]
    set_alias_like_the_ui(world.server.url, NAME, first)
    wait_until(
        lambda: served(admin_models(service)["workers"][0])["model"]["version"] == first,
        timeout=30,
        what=f"the promotion of version {first}",
    )
    status = served(admin_models(service)["workers"][0])
    assert status["fallback_from"] is None and status["rejected"] is None
    assert predict(service)["predictions"][0] == pytest.approx(world.predictions[first], rel=1e-6)


def test_start_up_fails_in_one_line_when_no_version_passes(
    world, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_mlflow_uris(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world.server.url)
    get_settings.cache_clear()
    models = ModelSet(Family.FACTOR, [HOPELESS])
    with pytest.raises(GateError) as failure:
        models.load(kind="registry")
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith(
        f"cannot serve '{HOPELESS}': its promoted version {world.versions['hopeless']} fails "
        "the gate (cannot load: "
    )
    assert f"`tradeserve promote {HOPELESS} VERSION`" in message
    assert not models.ready
    get_settings.cache_clear()
