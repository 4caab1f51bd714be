"""Live promotion: a running FactorModels (2 workers) follows MLflow promotions.

A real ``mlflow server`` holds the registry; promotions are made by setting the alias
through MLflow's REST API exactly as the MLflow UI does, while clients keep calling.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from mlflow import MlflowClient

from harness.bento import BentoServer, bento_server
from harness.mlflow_server import MlflowServer
from harness.wait import wait_until
from registry.promotion import promote
from tests.conftest import clear_mlflow_uris
from tests.live_load import ContinuousLoad, set_alias_like_the_ui
from training_hooks.factor.log import ic_table_for, log_factor
from training_hooks.factor.schemas import FactorTrainingInfo
from training_hooks.registration import Lineage

pytestmark = pytest.mark.server

NAME = "factor-LIVE_ret_1d"
FACTORS = ["f_a", "f_b", "f_c"]
ROW = [[0.3, -0.2, 0.1]]
TRADESERVE = Path(sys.executable).with_name("tradeserve")


def _log_version(seed: int) -> str:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(300, 3)), columns=FACTORS)
    target = frame["f_a"] * (1 + seed) - frame["f_b"] + rng.normal(scale=0.1, size=300)
    booster = xgb.train(
        {"max_depth": 3, "eta": 0.3, "nthread": 1, "seed": seed},
        xgb.DMatrix(frame, label=target),
        20,
    )
    return log_factor(
        NAME,
        booster,
        factors=FACTORS,
        ic_table=ic_table_for(frame, target),
        training_info=FactorTrainingInfo(symbol="LIVE", return_name="ret_1d", train_samples=300),
        lineage=Lineage(data_source="synthetic", data_window_end=date(2020, 1, 1)),
        input_example=frame.head(3),
    ).version


@dataclass
class Registry:
    server: MlflowServer
    artifacts: Path
    versions: dict[str, str]

    def set_alias_like_the_ui(self, version: str) -> None:
        set_alias_like_the_ui(self.server.url, NAME, version)

    def break_version(self, version: str) -> None:
        """Corrupt the stored booster of ``version`` (a bad upload, a truncated file)."""
        source = MlflowClient(self.server.url).get_model_version(NAME, version).source
        model_id = source.removeprefix("models:/")
        [booster] = [p for p in self.artifacts.rglob("model.json") if model_id in str(p)]
        booster.write_text("{ not a booster")


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    home = tmp_path_factory.mktemp("live-registry")
    artifacts = home / "artifacts"
    server = MlflowServer(f"sqlite:///{home / 'mlflow.db'}", str(artifacts), log_dir=home / "logs")
    server.start()
    with pytest.MonkeyPatch.context() as monkeypatch:
        clear_mlflow_uris(monkeypatch)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        monkeypatch.setenv("TRADESERVE_HOME", str(home))
        from registry.settings import get_settings

        get_settings.cache_clear()
        versions = {"good": _log_version(0), "retrained": _log_version(1)}
        versions["broken"] = _log_version(2)
        promote(NAME, versions["good"], reason="initial")
        get_settings.cache_clear()
    try:
        yield Registry(server=server, artifacts=artifacts, versions=versions)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoServer]:
    home = tmp_path_factory.mktemp("live-service")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRADESERVE_"))},
        "MLFLOW_TRACKING_URI": registry.server.url,
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "BENTOML_HOME": str(home / "bentoml"),  # never the user's own (`make test` exports it)
        "TRADESERVE_DEVICE": "cpu",
        "TRADESERVE_HOME": str(home),
        "TRADESERVE_POLL_INTERVAL_S": "1",
        "TRADESERVE_FACTOR_MODELS": f'["{NAME}"]',
        "BENTOML_CONFIG_OPTIONS": "services.FactorModels.workers=2",
    }
    with bento_server("bentos.factor.service:FactorModels", env, home / "serve.log") as server:
        yield server


class Load(ContinuousLoad[tuple[float, int, str | None]]):
    """Clients calling /predict continuously: (when, status, version) of every answer."""

    def call(self, client: httpx.Client, rng: random.Random) -> tuple[float, int, str | None]:
        response = client.post("/predict", json={"model": NAME, "rows": ROW})
        version = response.json()["model"]["version"] if response.status_code == 200 else None
        return time.monotonic(), response.status_code, version

    def failed(self, answer: tuple[float, int, str | None]) -> bool:
        return answer[1] != 200

    def versions_since(self, moment: float) -> set[str | None]:
        return {version for at, _, version in list(self.answers) if at >= moment}


@pytest.fixture
def load(service: BentoServer) -> Iterator[Load]:
    with Load(service.url).running(clients=4, first_answers=20, timeout=30) as load:
        yield load


def admin_models(service: BentoServer) -> dict:
    response = httpx.get(f"{service.url}/admin/models", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def all_workers_serve(service: BentoServer, version: str) -> bool:
    workers = admin_models(service)["workers"]
    return len(workers) == 2 and all(w["models"][0]["model"]["version"] == version for w in workers)


def wait_for_version(service: BentoServer, load: Load, version: str) -> float:
    """Seconds until both workers serve ``version`` and every answer after that carries it."""
    started = time.monotonic()
    wait_until(lambda: all_workers_serve(service, version), timeout=15, what=f"version {version}")
    settled = time.monotonic()
    wait_until(lambda: len(load.versions_since(settled)) > 0, timeout=10, what="answers")
    assert load.versions_since(settled) == {version}
    return settled - started


def test_promotion_in_the_ui_and_rollback_reach_every_worker(registry, service, load) -> None:
    wait_until(
        lambda: all_workers_serve(service, registry.versions["good"]),
        timeout=30,
        what="both workers to load the champion",
    )

    registry.set_alias_like_the_ui(registry.versions["retrained"])
    assert wait_for_version(service, load, registry.versions["retrained"]) < 15

    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.server.url}
    rolled = subprocess.run(
        [str(TRADESERVE), "rollback", NAME, "--reason", "live test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rolled.returncode == 0, rolled.stderr
    assert wait_for_version(service, load, registry.versions["good"]) < 15
    assert load.failures() == []


def test_a_broken_version_is_rejected_and_the_old_one_keeps_serving(
    registry, service, load
) -> None:
    broken = registry.versions["broken"]
    registry.break_version(broken)
    registry.set_alias_like_the_ui(broken)

    def rejected_everywhere() -> bool:
        workers = admin_models(service)["workers"]
        return len(workers) == 2 and all(
            (w["models"][0]["rejected"] or "").startswith(f"rejected version {broken}:")
            for w in workers
        )

    wait_until(rejected_everywhere, timeout=15, what="rejection of the broken version")
    after = time.monotonic()
    wait_until(lambda: len(load.versions_since(after)) > 0, timeout=10, what="answers")
    assert load.versions_since(after) == {registry.versions["good"]}
    assert httpx.get(f"{service.url}/readyz", timeout=10).status_code == 200
    assert load.failures() == []
    registry.set_alias_like_the_ui(registry.versions["good"])


def test_registry_outage_keeps_serving_and_recovery_picks_up_promotions(
    registry, service, load
) -> None:
    registry.server.stop()
    wait_until(
        lambda: all(not w["registry"]["reachable"] for w in admin_models(service)["workers"]),
        timeout=15,
        what="workers to notice the outage",
    )
    during = time.monotonic()
    wait_until(
        lambda: len([a for a in load.answers if a[0] >= during]) > 10, timeout=10, what="answers"
    )
    assert load.failures() == []
    assert load.versions_since(during) == {registry.versions["good"]}

    registry.server.start()
    registry.set_alias_like_the_ui(registry.versions["retrained"])
    started = time.monotonic()
    wait_until(
        lambda: all_workers_serve(service, registry.versions["retrained"]),
        timeout=40,  # backoff after the outage is capped at 30 s
        what="the promotion after recovery",
    )
    assert time.monotonic() - started < 40
    assert load.failures() == []


def test_admin_reload_and_webhook(registry, service) -> None:
    reload = httpx.post(f"{service.url}/admin/reload", timeout=60)
    assert reload.status_code == 200
    assert reload.json()["live"] is True
    event = {
        "entity": "model_version_alias",
        "action": "created",
        "data": {"name": NAME, "alias": "champion", "version": "1"},
    }
    hook = httpx.post(f"{service.url}/admin/webhook", json=event, timeout=30)
    assert hook.json() == {"accepted": True, "reload": True}
    other = {**event, "data": {"name": "factor-other", "alias": "champion", "version": "1"}}
    assert httpx.post(f"{service.url}/admin/webhook", json=other, timeout=30).json() == {
        "accepted": True,
        "reload": False,
    }
