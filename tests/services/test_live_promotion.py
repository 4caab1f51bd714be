"""Live promotion: a running FactorModels (2 workers) follows MLflow promotions.

A real ``mlflow server`` holds the registry; promotions are made by setting the alias (or,
for a model promoted the legacy way, the stage) through MLflow's REST API exactly as the
MLflow UI does, while clients keep calling. Every test starts from the same champion, so
the module holds in any order.
"""

from __future__ import annotations

import json
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
from harness.metrics import sample_totals
from harness.mlflow_server import MlflowServer
from harness.wait import wait_until
from registry.loading import load_version
from registry.promotion import promote
from registry.resolve import get_version
from tests.conftest import clear_mlflow_uris
from tests.live_load import ContinuousLoad, set_alias_like_the_ui
from tests.services.webhook_signing import signed as signed_with
from training_hooks.factor.log import ic_table_for, log_factor
from training_hooks.factor.schemas import FactorTrainingInfo
from training_hooks.registration import Lineage

pytestmark = pytest.mark.server

NAME = "factor-LIVE_ret_1d"
STAGED = "factor-STAGED_ret_1d"  # promoted through the legacy stage only, never an alias
WEBHOOK_SECRET = "webhook-secret-for-tests"
FACTORS = ["f_a", "f_b", "f_c"]
ROW = [[0.3, -0.2, 0.1]]
TRADESERVE = Path(sys.executable).with_name("tradeserve")


def _log_version(seed: int, name: str = NAME) -> str:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(300, 3)), columns=FACTORS)
    target = frame["f_a"] * (1 + seed) - frame["f_b"] + rng.normal(scale=0.1, size=300)
    booster = xgb.train(
        {"max_depth": 3, "eta": 0.3, "nthread": 1, "seed": seed},
        xgb.DMatrix(frame, label=target),
        20,
    )
    return log_factor(
        name,
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
    predictions: dict[str, dict[str, float]]  # name -> version -> ROW's prediction in-process

    def set_alias_like_the_ui(self, version: str) -> None:
        set_alias_like_the_ui(self.server.url, NAME, version)

    def break_version(self, version: str) -> None:
        """Corrupt the stored booster of ``version`` (a bad upload, a truncated file)."""
        source = MlflowClient(self.server.url).get_model_version(NAME, version).source
        model_id = source.removeprefix("models:/")
        [booster] = [p for p in self.artifacts.rglob("model.json") if model_id in str(p)]
        booster.write_text("{ not a booster")


def in_process(name: str, version: str) -> float:
    """What ``version`` of ``name`` predicts for ROW, loaded in this process."""
    runtime = load_version(get_version(name, version)).runtime
    return float(runtime.predict_rows(np.array(ROW, dtype=np.float32))[0])


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
        staged = [_log_version(seed, STAGED) for seed in (3, 4)]
        MlflowClient(server.url).transition_model_version_stage(STAGED, staged[0], "Production")
        versions |= {"staged-1": staged[0], "staged-2": staged[1]}
        predictions = {
            NAME: {v: in_process(NAME, v) for v in (versions["good"], versions["retrained"])},
            STAGED: {v: in_process(STAGED, v) for v in staged},
        }
        get_settings.cache_clear()
    try:
        yield Registry(server, artifacts, versions, predictions)
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
        "TRADESERVE_FACTOR_MODELS": json.dumps([NAME, STAGED]),
        "TRADESERVE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "BENTOML_CONFIG_OPTIONS": "services.FactorModels.workers=2",
    }
    with bento_server("bentos.factor.service:FactorModels", env, home / "serve.log") as server:
        yield server


Answer = tuple[float, int, str | None, float | None]  # sent, status, version, prediction


class Load(ContinuousLoad[Answer]):
    """Clients calling /predict continuously: (sent, status, version, prediction) of every
    answer. Answers are stamped when the request was sent: one sent before a swap may be
    answered by the old version after it."""

    def call(self, client: httpx.Client, rng: random.Random) -> Answer:
        sent = time.monotonic()
        response = client.post("/predict", json={"model": NAME, "rows": ROW})
        if response.status_code != 200:
            return sent, response.status_code, None, None
        body = response.json()
        return sent, 200, body["model"]["version"], body["predictions"][0]

    def failed(self, answer: Answer) -> bool:
        return answer[1] != 200

    def mislabelled(self, expected: dict[str, float]) -> list[Answer]:
        """Answers whose prediction is not what the version they name predicts in-process."""
        return [
            answer
            for answer in list(self.answers)
            if answer[1] == 200 and answer[3] != pytest.approx(expected[answer[2]], rel=1e-6)
        ]

    def versions_since(self, moment: float) -> set[str | None]:
        return {answer[2] for answer in list(self.answers) if answer[0] >= moment}


@pytest.fixture
def load(service: BentoServer) -> Iterator[Load]:
    with Load(service.url).running(clients=4, first_answers=20, timeout=30) as load:
        yield load


def admin_models(service: BentoServer) -> dict:
    response = httpx.get(f"{service.url}/admin/models", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def served(worker: dict, name: str = NAME) -> dict:
    """One worker's status of model ``name`` (``GET /admin/models``)."""
    [status] = [m for m in worker["models"] if m["model"]["name"] == name]
    return status


def all_workers_serve(service: BentoServer, version: str, name: str = NAME) -> bool:
    workers = admin_models(service)["workers"]
    return len(workers) == 2 and all(
        served(w, name)["model"]["version"] == version for w in workers
    )


@pytest.fixture
def from_the_champion(registry: Registry, service: BentoServer) -> None:
    """Every test starts with both workers serving the ``good`` champion."""
    registry.set_alias_like_the_ui(registry.versions["good"])
    wait_until(
        lambda: all_workers_serve(service, registry.versions["good"]),
        timeout=40,
        what="both workers to serve the champion",
    )


def metric_totals(service: BentoServer, sample: str, label: str, **match: str) -> dict:
    """``sample_totals`` over the service's /metrics, only rows whose labels match."""
    text = httpx.get(f"{service.url}/metrics", timeout=30).text
    lines = [
        line
        for line in text.splitlines()
        if line.startswith("#") or all(f'{k}="{v}"' in line for k, v in match.items())
    ]
    return sample_totals("\n".join(lines), sample, label)


def wait_for_version(service: BentoServer, load: Load, version: str) -> float:
    """Seconds until both workers serve ``version`` and every answer after that carries it."""
    started = time.monotonic()
    wait_until(lambda: all_workers_serve(service, version), timeout=15, what=f"version {version}")
    settled = time.monotonic()
    wait_until(lambda: len(load.versions_since(settled)) > 0, timeout=10, what="answers")
    assert load.versions_since(settled) == {version}
    return settled - started


def test_promotion_in_the_ui_and_rollback_reach_every_worker(
    registry, service, from_the_champion, load
) -> None:
    swaps_before = metric_totals(service, "tradeserve_model_swaps_total", "outcome", model=NAME)
    registry.set_alias_like_the_ui(registry.versions["retrained"])
    assert wait_for_version(service, load, registry.versions["retrained"]) < 15
    swaps = metric_totals(service, "tradeserve_model_swaps_total", "outcome", model=NAME)
    assert swaps.get("swapped", 0) - swaps_before.get("swapped", 0) == 2  # one per worker
    # per-model request and latency metrics, labelled with the version that answered
    version = registry.versions["retrained"]
    requests = metric_totals(
        service, "tradeserve_model_requests_total", "outcome", model=NAME, version=version
    )
    assert requests.get("ok", 0) > 0
    calls = metric_totals(service, "tradeserve_model_latency_seconds_count", "version", model=NAME)
    assert calls.get(version, 0) > 0

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
    # every answer, before, during and after both swaps, is the named version's prediction
    assert load.mislabelled(registry.predictions[NAME]) == []


def tradeserve_history(registry: Registry) -> list[dict]:
    """``tradeserve history NAME --json`` against the module's registry."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": registry.server.url}
    done = subprocess.run(
        [str(TRADESERVE), "history", NAME, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def stages(registry: Registry) -> dict[str, str]:
    versions = MlflowClient(registry.server.url).search_model_versions(f"name = '{NAME}'")
    return {str(v.version): v.current_stage for v in versions}


def test_a_move_in_the_ui_is_recorded_once_and_mirrored_to_the_stage(
    registry, service, from_the_champion
) -> None:
    """Both workers observe the move; one audit entry results, and the stage follows."""
    good, retrained = registry.versions["good"], registry.versions["retrained"]
    before = tradeserve_history(registry)
    MlflowClient(registry.server.url).set_registered_model_alias(NAME, "champion", retrained)
    wait_until(lambda: all_workers_serve(service, retrained), timeout=30, what="the new version")
    new = [entry for entry in tradeserve_history(registry) if entry not in before]
    assert [(e["event"], e["from_version"], e["to_version"], e["passed"]) for e in new] == [
        ("observed", good, retrained, True)
    ]
    assert new[0]["actor"].startswith("observed by FactorModels")
    now = stages(registry)
    assert (now[good], now[retrained]) == ("Archived", "Production")


def test_a_broken_version_is_rejected_and_the_old_one_keeps_serving(
    registry, service, from_the_champion, load
) -> None:
    broken = registry.versions["broken"]
    before = metric_totals(service, "tradeserve_model_swaps_total", "outcome", model=NAME)
    registry.break_version(broken)
    registry.set_alias_like_the_ui(broken)

    def rejected_everywhere() -> bool:
        workers = admin_models(service)["workers"]
        return len(workers) == 2 and all(
            (served(w)["rejected"] or "").startswith(f"rejected version {broken}:") for w in workers
        )

    wait_until(rejected_everywhere, timeout=15, what="rejection of the broken version")
    after = time.monotonic()
    wait_until(lambda: len(load.versions_since(after)) > 0, timeout=10, what="answers")
    assert load.versions_since(after) == {registry.versions["good"]}
    assert httpx.get(f"{service.url}/readyz", timeout=10).status_code == 200
    assert load.failures() == []
    swaps = metric_totals(service, "tradeserve_model_swaps_total", "outcome", model=NAME)
    # each worker rejected it once, not again at every poll
    assert swaps.get("rejected", 0) - before.get("rejected", 0) == 2
    # the move is on record with the gate's verdict; the stage stays on the served version
    [observed] = [e for e in tradeserve_history(registry) if e["to_version"] == broken]
    assert (observed["event"], observed["from_version"], observed["passed"]) == (
        "observed",
        registry.versions["good"],
        False,
    )
    assert observed["problems"][0].startswith("cannot load: ")
    assert stages(registry)[registry.versions["good"]] == "Production"
    assert stages(registry)[broken] != "Production"


def test_registry_outage_keeps_serving_and_recovery_picks_up_promotions(
    registry, service, from_the_champion, load
) -> None:
    registry.server.stop()

    def outage_noticed() -> bool:
        workers = admin_models(service)["workers"]
        return len(workers) == 2 and not any(w["registry"]["reachable"] for w in workers)

    wait_until(outage_noticed, timeout=15, what="both workers to notice the outage")
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


def test_a_stage_set_in_the_ui_is_followed(registry, service, from_the_champion) -> None:
    """A model promoted the legacy way (stage Production, no alias) is followed too."""
    first, second = registry.versions["staged-1"], registry.versions["staged-2"]
    wait_until(lambda: all_workers_serve(service, first, STAGED), timeout=30, what="staged v1")
    response = httpx.post(
        f"{registry.server.url}/ajax-api/2.0/mlflow/model-versions/transition-stage",
        json={
            "name": STAGED,
            "version": second,
            "stage": "Production",
            "archive_existing_versions": True,
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    wait_until(lambda: all_workers_serve(service, second, STAGED), timeout=15, what="staged v2")
    answer = httpx.post(f"{service.url}/predict", json={"model": STAGED, "rows": ROW}, timeout=30)
    assert answer.json()["model"]["version"] == second
    assert answer.json()["predictions"][0] == pytest.approx(
        registry.predictions[STAGED][second], rel=1e-6
    )
    assert registry.predictions[STAGED][second] != pytest.approx(
        registry.predictions[STAGED][first], rel=1e-3
    )


def signed(body: bytes, secret: str = WEBHOOK_SECRET, sent: float | None = None) -> dict[str, str]:
    return signed_with(body, secret, sent)


def test_admin_reload_and_signed_webhook(registry, service) -> None:
    reload = httpx.post(f"{service.url}/admin/reload", timeout=60)
    assert reload.status_code == 200
    assert reload.json()["live"] is True
    event = {
        "entity": "model_version_alias",
        "action": "created",
        "data": {"name": NAME, "alias": "champion", "version": "1"},
    }
    body = json.dumps(event).encode()
    url = f"{service.url}/admin/webhook"
    unsigned = httpx.post(url, content=body, headers={"content-type": "application/json"})
    assert unsigned.status_code == 401
    wrong = httpx.post(url, content=body, headers=signed(body, secret="not-the-secret"))
    assert wrong.status_code == 401
    tampered = httpx.post(url, content=body.replace(b'"1"', b'"2"'), headers=signed(body))
    assert tampered.status_code == 401
    # a captured delivery replayed later than the window (5 minutes) allows: refused
    replayed = httpx.post(url, content=body, headers=signed(body, sent=time.time() - 301))
    assert replayed.status_code == 401
    assert "window" in replayed.text
    hook = httpx.post(url, content=body, headers=signed(body), timeout=30)
    assert hook.status_code == 200, hook.text
    assert hook.json() == {"accepted": True, "reload": True}
    other = json.dumps({**event, "data": {**event["data"], "name": "factor-other"}}).encode()
    ignored = httpx.post(url, content=other, headers=signed(other), timeout=30)
    assert ignored.json() == {"accepted": True, "reload": False}
