"""Live promotion through the composite: RegimeBlend (+ Specialists) follows MLflow promotions.

A real ``mlflow server`` holds the registry, filled by the real ``tradeserve demo``; the
composite is served by ``bentoml serve`` at the repository root in live mode. Under
continuous load on ``POST /api/v1/predict``, new versions of a specialist and of the regime
detector are registered and promoted by setting the alias through MLflow's REST API exactly
as the MLflow UI does; every decision's ``metadata`` (and explanation) must name the new
versions within seconds, without a failed request, and name the old ones again after a
rollback, also for bars whose specialist answers were memoised while the promotion was
under way. Decisions about one hot bar also check that the numbers are those of the
versions named.
"""

from __future__ import annotations

import contextlib
import copy
import random
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import torch

from harness.bento import BentoServer
from harness.mlflow_server import MlflowServer
from harness.wait import wait_until
from registry.families import REGIME_DETECTOR_NAME, specialist_name
from registry.loading import load_version
from registry.resolve import get_version, resolve
from tests.composite.conftest import serve_root
from tests.conftest import clear_mlflow_uris
from tests.demo_fixtures import TRADESERVE, demo_env
from tests.live_load import ContinuousLoad, set_alias_like_the_ui
from tests.specialist_versions import log_saved_specialist
from training_hooks.features import compute_features, latest_features
from training_hooks.market_data import MarketDataStore
from training_hooks.regime.log import log_regime
from training_hooks.regime.runtime import save_params
from training_hooks.regime.train import RegimeFit
from training_hooks.specialist.runtime import save_specialist

pytestmark = pytest.mark.server

SYMBOLS = ("SPX", "NASDAQ")
ROLE = "bull"  # the specialist that gets a new version
BULL = specialist_name(ROLE)
ROLES = ("regime", "bull", "bear", "sideways")  # what a mixture decision uses
NAMES = {
    "regime": REGIME_DETECTOR_NAME,
    **{role: specialist_name(role) for role in ROLES[1:]},
}
HOT_BAR = ("SPX", "2016-06-30")  # a bar every client keeps asking about
DAYS = [d.strftime("%Y-%m-%d") for d in pd.bdate_range("2003-01-02", "2018-12-28")]
SETTLE_S = 15.0  # promotion -> every decision names the promoted versions
FRESH_WINDOW_S = 2.0  # answers that must all be fresh before a switch counts as complete


@dataclass
class Registry:
    server: MlflowServer
    home: Path
    initial: dict[str, str]  # role -> champion version the demo promoted
    # (role, version) -> its hot-bar numbers computed in this process (see reference())
    hot: dict[tuple[str, str], tuple[float, ...]] = field(default_factory=dict)

    def set_alias_like_the_ui(self, name: str, version: str) -> None:
        set_alias_like_the_ui(self.server.url, name, version)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A real MLflow server that `tradeserve demo` filled; its TRADESERVE_HOME has the bars."""
    home = tmp_path_factory.mktemp("live-composite")
    server = MlflowServer(
        f"sqlite:///{home / 'mlflow.db'}", str(home / "artifacts"), log_dir=home / "logs"
    )
    server.start()
    try:
        demo = subprocess.run(
            [str(TRADESERVE), "demo"],
            env=demo_env(home, MLFLOW_TRACKING_URI=server.url),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert demo.returncode == 0, f"tradeserve demo failed:\n{demo.stdout}\n{demo.stderr}"
        with client_of(server, home):
            initial = {role: resolve(name).version for role, name in NAMES.items()}
        yield Registry(server=server, home=home, initial=initial)
    finally:
        server.stop()


@contextlib.contextmanager
def client_of(server: MlflowServer, home: Path) -> Iterator[None]:
    """This test process as a registry client of ``server`` for the duration of the block."""
    from registry.settings import get_settings

    with pytest.MonkeyPatch.context() as monkeypatch:
        clear_mlflow_uris(monkeypatch)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
        monkeypatch.setenv("TRADESERVE_HOME", str(home))
        get_settings.cache_clear()
        try:
            yield
        finally:
            get_settings.cache_clear()


@pytest.fixture(scope="module")
def service(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoServer]:
    folder = tmp_path_factory.mktemp("live-composite-serve")
    with serve_root(
        registry.home,
        folder / "state",
        folder / "serve.log",
        MLFLOW_TRACKING_URI=registry.server.url,
        TRADESERVE_LIVE="true",
        TRADESERVE_POLL_INTERVAL_S="1",
        TRADESERVE_BLEND_CATALOG_REFRESH_S="1",
    ) as server:
        yield server


# ------------------------------------------------------------------------------- new versions


def log_perturbed_specialist(role: str, home: Path, workdir: Path) -> str:
    """A new version of ``specialist-<role>``: the champion with a shifted output layer."""
    runtime = load_version(resolve(specialist_name(role))).runtime
    network = copy.deepcopy(runtime.network).cpu()
    last = [m for m in network.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias.add_(torch.tensor([-0.4, 0.5, -0.1]))  # HOLD, BUY, SELL logits
    folder = save_specialist(runtime.config, network, workdir / specialist_name(role))
    features = compute_features(MarketDataStore(home / "market_data").load("SPX"))
    return log_saved_specialist(
        role,
        folder,
        network,
        features.iloc[-5:].reset_index(drop=True),
        data_source="live test: perturbed copy",
        train_window=(features.index[0].date(), features.index[-1].date()),
    ).version


def log_perturbed_regime_detector(home: Path, workdir: Path) -> str:
    """A new version of ``regime-detector``: the champion with less sticky regimes."""
    params = load_version(resolve(REGIME_DETECTOR_NAME)).runtime.params
    transmat = 0.8 * np.asarray(params.transmat) + 0.2 / len(params.labels)
    changed = params.model_copy(update={"transmat": transmat.tolist()})
    folder = workdir / REGIME_DETECTOR_NAME
    save_params(changed, folder)
    bars = MarketDataStore(home / "market_data")
    fit = RegimeFit(
        artifact_dir=folder,
        params=changed,
        metrics={"train_loglik_per_bar": 0.0},
        symbols=SYMBOLS,
        data_start=params.train_start,
        data_end=params.train_end,
    )
    market = {symbol: bars.load(symbol) for symbol in SYMBOLS}
    return log_regime(fit, market, data_source="live test: perturbed copy").version


# ------------------------------------------------------------------------------------- load


@dataclass(frozen=True)
class Answer:
    sent: float
    done: float
    status: int
    bar: tuple[str, str]  # (symbol, timestamp) asked about
    models: dict[str, tuple[str, str, str | None]]  # role -> (name, version, alias)
    explained: dict[str, tuple[str, str]]  # role -> (served_by, version)
    bull: tuple[float, ...] = ()  # bull specialist's probabilities
    regime: tuple[float, ...] = ()
    decision_id: str = ""
    error: str = ""

    @property
    def hot(self) -> bool:
        return self.bar == HOT_BAR

    def names(self, versions: dict[str, str]) -> bool:
        """True when metadata and explanation name exactly ``versions`` (role -> version)."""
        if self.status != 200:
            return False
        expected = {role: (NAMES[role], versions[role], "champion") for role in ROLES}
        return self.models == expected and self.explained.get(ROLE) == (ROLE, versions[ROLE])


def parse(sent: float, bar: tuple[str, str], response: httpx.Response) -> Answer:
    done = time.monotonic()
    if response.status_code != 200:
        return Answer(sent, done, response.status_code, bar, {}, {})
    body = response.json()
    models = {m["role"]: (m["name"], m["version"], m["alias"]) for m in body["metadata"]["models"]}
    specialists = body["explanation"]["specialists"]
    explained = {
        role: (item["served_by"], item["model"]["version"]) for role, item in specialists.items()
    }
    regime = body["regime_probabilities"]
    return Answer(
        sent=sent,
        done=done,
        status=200,
        bar=bar,
        models=models,
        explained=explained,
        bull=tuple(specialists[ROLE]["probabilities"][a] for a in ("HOLD", "BUY", "SELL")),
        regime=tuple(regime[label] for label in ("bull", "bear", "sideways")),
        decision_id=body["decision_id"],
    )


def decide(client: httpx.Client, bar: tuple[str, str]) -> Answer:
    """One mixture decision with its explanation about ``bar`` (symbol, timestamp); a
    rejected trade in the body (approvals reserve exposure on the service's portfolio, so
    the seed's default 403 would come once the load has reserved up to a limit)."""
    body = {
        "symbol": bar[0],
        "timestamp": bar[1],
        "blend_mode": "mixture",
        "risk_mode": "body",
        "explain": True,
    }
    sent = time.monotonic()
    try:
        response = client.post("/api/v1/predict", json=body)
    except httpx.HTTPError as error:
        return Answer(sent, time.monotonic(), 0, bar, {}, {}, error=f"{error!r}")
    return parse(sent, bar, response)


class Load(ContinuousLoad[Answer]):
    """Clients deciding continuously: half about the hot bar (memoised specialist answers),
    half about random bars (calls to Specialists). Every answer is recorded."""

    def call(self, client: httpx.Client, rng: random.Random) -> Answer:
        hot = rng.random() < 0.5
        return decide(client, HOT_BAR if hot else (rng.choice(SYMBOLS), rng.choice(DAYS)))

    def failed(self, answer: Answer) -> bool:
        return answer.status != 200

    def since(self, moment: float) -> list[Answer]:
        return [answer for answer in list(self.answers) if answer.sent >= moment]


@pytest.fixture
def load(service: BentoServer) -> Iterator[Load]:
    with Load(service.url).running(clients=4, first_answers=40, timeout=60) as load:
        yield load


def wait_for_versions(load: Load, versions: dict[str, str], since: float) -> float:
    """Seconds from ``since`` until every decision names ``versions``; checks that every
    decision requested after that moment names them (no worker or cache flips back)."""

    def switched() -> float | None:
        answers = load.since(since)
        stale = [a.sent for a in answers if not a.names(versions)]
        switch = max(stale, default=since)
        fresh = [a for a in answers if a.sent > switch]
        covered = fresh and fresh[-1].done - fresh[0].sent >= FRESH_WINDOW_S
        return switch if covered and len(fresh) >= 20 else None

    switch = wait_until(switched, timeout=SETTLE_S + 3 * FRESH_WINDOW_S, what=f"{versions}")
    later = time.monotonic()
    wait_until(lambda: len(load.since(later)) >= 20, timeout=30, what="more answers")
    after = [a for a in load.since(switch) if a.sent > switch]
    assert after and all(a.names(versions) for a in after), [
        (a.models, a.explained) for a in after if not a.names(versions)
    ][:3]
    return switch - since


def hot_answer(load: Load, versions: dict[str, str], since: float) -> Answer:
    return next(a for a in reversed(load.since(since)) if a.hot and a.names(versions))


def reference(registry: Registry, role: str, version: str) -> tuple[float, ...]:
    """What ``version`` of ``role`` answers about the hot bar, computed in this process:
    regime probabilities (the filter over bars up to the hot bar) or the bull specialist's
    action probabilities (HOLD, BUY, SELL) on that bar's features."""
    key = (role, version)
    if key not in registry.hot:
        with client_of(registry.server, registry.home):
            runtime = load_version(get_version(NAMES[role], version)).runtime
        symbol, day = HOT_BAR
        bars = MarketDataStore(registry.home / "market_data").load(symbol, as_of=day)
        if role == "regime":
            row = runtime.filter_probabilities(bars).iloc[-1]
            registry.hot[key] = tuple(float(row[label]) for label in ("bull", "bear", "sideways"))
        else:
            observation = latest_features(bars)[None, :]
            registry.hot[key] = tuple(float(p) for p in runtime.probabilities(observation)[0])
    return registry.hot[key]


def inconsistent(registry: Registry, answers: list[Answer]) -> list[str]:
    """Hot-bar answers whose numbers are not what the versions their metadata names compute
    in this process (regime probabilities to 1e-9, the bull specialist's to 1e-5)."""
    problems = []
    for answer in answers:
        if not answer.hot or answer.status != 200:
            continue
        for role, numbers, tolerance in (
            ("regime", answer.regime, 1e-9),
            (ROLE, answer.bull, 1e-5),
        ):
            version = answer.models[role][1]
            if numbers != pytest.approx(reference(registry, role, version), abs=tolerance):
                problems.append(f"{role} named version {version} but answered {numbers}")
    return problems


def log_new_versions(registry: Registry, workdir: Path) -> dict[str, str]:
    """A retraining job under load: new versions of the bull specialist and the detector."""
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with client_of(registry.server, registry.home):
            bull = log_perturbed_specialist(ROLE, registry.home, workdir)
            regime = log_perturbed_regime_detector(registry.home, workdir)
    finally:
        torch.set_num_threads(previous_threads)
    assert int(bull) > int(registry.initial[ROLE])
    assert int(regime) > int(registry.initial["regime"])
    return {**registry.initial, ROLE: bull, "regime": regime}


def promote(registry: Registry, load: Load, versions: dict[str, str]) -> tuple[float, float]:
    """Point the aliases at ``versions`` like the UI; (when it was done, when every decision
    named them), after checking the switch took less than SETTLE_S."""
    promoted_at = time.monotonic()
    registry.set_alias_like_the_ui(BULL, versions[ROLE])
    registry.set_alias_like_the_ui(REGIME_DETECTOR_NAME, versions["regime"])
    took = wait_for_versions(load, versions, since=promoted_at)
    assert took < SETTLE_S
    return promoted_at, promoted_at + took


# ------------------------------------------------------------------------------------ tests


def test_a_promotion_and_its_rollback_are_named_in_every_decision(
    registry: Registry, service: BentoServer, load: Load, tmp_path: Path
) -> None:
    """One cycle, so the test holds alone and in any order: champions, new versions
    registered (not served), promoted (served within seconds), rolled back."""
    initial = registry.initial
    assert all(a.names(initial) for a in load.answers if a.status == 200)
    before = hot_answer(load, initial, since=0.0)

    promoted = log_new_versions(registry, tmp_path)
    registered = time.monotonic()
    wait_until(lambda: len(load.since(registered)) >= 20, timeout=30, what="answers")
    assert all(a.names(initial) for a in load.since(registered))  # registered is not served

    promoted_at, switched = promote(registry, load, promoted)
    after = hot_answer(load, promoted, since=promoted_at)
    assert not np.allclose(after.bull, before.bull, atol=1e-3)  # the new weights answered
    assert not np.allclose(after.regime, before.regime, atol=1e-6)  # the new filter ran
    logged = httpx.get(f"{service.url}/api/v1/decisions/{after.decision_id}", timeout=30)
    assert logged.status_code == 200, logged.text
    assert {m["role"]: m["version"] for m in logged.json()["models"]} == promoted
    served = httpx.get(f"{service.url}/api/v1/models", timeout=30).json()["models"]
    assert served["regime_detector"]["version"] == promoted["regime"]
    assert served["bull_specialist"]["version"] == promoted[ROLE]
    # bars first decided while the promotion was under way (memoised specialist answers)
    switching = sorted(
        {a.bar for a in load.since(promoted_at) if not a.hot and a.sent <= switched + 1.0}
    )
    assert switching

    rolled_back_at, _ = promote(registry, load, initial)
    again_hot = hot_answer(load, initial, since=rolled_back_at)
    assert again_hot.bull == pytest.approx(before.bull, abs=1e-5)
    assert again_hot.regime == pytest.approx(before.regime, abs=1e-9)
    # SpecialistPool once stored answers under the version its catalog named, not the one
    # that produced them: memoised answers must not outlive the rollback
    with httpx.Client(base_url=service.url, timeout=60) as client:
        again = [decide(client, bar) for bar in switching]
    assert [a.bar for a in again if not a.names(initial)] == []

    # every hot-bar decision of the cycle carries the numbers of the versions it names
    assert {a.models[ROLE][1] for a in load.answers if a.hot and a.status == 200} == {
        initial[ROLE],
        promoted[ROLE],
    }
    assert inconsistent(registry, list(load.answers)) == []
    assert load.failures() == []
