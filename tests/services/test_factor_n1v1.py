"""N1V1's serving routes on a real FactorModels (``bentoml serve``): its request shapes, exact
response keys and status codes, on the demo registry (factor models and the demo's
scikit-learn RandomForest), and ``/reload/{name}`` reaching both workers under load."""

from __future__ import annotations

import contextlib
import json
import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from prometheus_client.parser import text_string_to_metric_families

from bentos.factor.n1v1 import MissingFeaturesError, feature_matrix, is_n1v1_body
from bentos.factor.settings import FactorSettings
from bentos.shared.lineage import ModelRef
from bentos.shared.model_source import ServedModel
from harness.bento import BentoServer, bento_server
from harness.metrics import sample_totals
from harness.wait import wait_until
from registry import store
from registry.loading import load_version
from registry.promotion import promote
from registry.resolve import resolve
from registry.settings import get_settings
from tests.conftest import clear_mlflow_uris
from tests.demo_fixtures import demo_env, own_bentoml_home
from tests.live_load import ContinuousLoad
from training_hooks.factor.runtime import FactorInputError
from training_hooks.features import FEATURE_NAMES, compute_features
from training_hooks.market_data import MarketDataStore
from training_hooks.registration import Lineage
from training_hooks.tabular.demo import DEMO_NAME as FOREST
from training_hooks.tabular.log import log_tabular

SERVICE = "bentos.factor.service:FactorModels"
FACTOR = "factor-SPX_ret_1d"
RESPONSE_KEYS = {
    "prediction",
    "confidence",
    "probabilities",
    "correlation_id",
    "model_version",
    "latency_ms",
}
OPT_IN = "TRADESERVE_ALLOW_SKLEARN_PICKLES"


@contextlib.contextmanager
def on_registry(home: Path) -> Iterator[None]:
    """This test process on the embedded registry in ``home`` for the block."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("TRADESERVE_HOME", str(home))
        clear_mlflow_uris(monkeypatch)
        get_settings.cache_clear()
        store.configure()
        try:
            yield
        finally:
            get_settings.cache_clear()


def serve(home: Path, logs: Path, **extra: str) -> contextlib.AbstractContextManager[BentoServer]:
    env = demo_env(home, BENTOML_HOME=own_bentoml_home(home, logs), **extra)
    if OPT_IN not in extra:
        env.pop(OPT_IN, None)
    return bento_server(SERVICE, env, logs / "serve.log")


@pytest.fixture(scope="module")
def n1v1_server(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoServer]:
    """FactorModels on the demo registry, scikit-learn pickles allowed, live mode off."""
    logs = tmp_path_factory.mktemp("factor-n1v1")
    with serve(demo_home, logs, **{OPT_IN: "true", "TRADESERVE_LIVE": "false"}) as server:
        yield server


@pytest.fixture(scope="module")
def reference(demo_home: Path) -> dict:
    """The promoted models loaded in-process (the forest as MLflow loads it) and real
    feature rows of the demo market."""
    with on_registry(demo_home), pytest.MonkeyPatch.context() as monkeypatch:
        factor = load_version(resolve(FACTOR)).runtime
        monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
        forest_version = resolve(FOREST).version
        forest = mlflow.sklearn.load_model(f"models:/{FOREST}/{forest_version}")
    bars = MarketDataStore(demo_home / "market_data").load("SPX")
    rows = compute_features(bars).dropna().tail(6)
    return {"factor": factor, "forest": forest, "forest_version": forest_version, "rows": rows}


def columns(rows: pd.DataFrame, names: object) -> dict[str, list[float]]:
    return {name: rows[name].tolist() for name in names}


def post(server: BentoServer, path: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=30)


def metrics(server: BentoServer) -> str:
    return httpx.get(f"{server.url}/metrics", timeout=10).raise_for_status().text


def test_single_request_answers_like_the_registered_model(n1v1_server, reference) -> None:
    runtime, rows = reference["factor"], reference["rows"].head(1)
    body = {"model_name": FACTOR, "features": columns(rows, runtime.factors)}
    response = post(n1v1_server, "/predict", {**body, "correlation_id": "order-17"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert set(answer) == RESPONSE_KEYS
    assert answer["correlation_id"] == "order-17"
    assert answer["model_version"] == "1"
    assert answer["probabilities"] is None and answer["confidence"] == [1.0]
    assert answer["latency_ms"] > 0
    expected = runtime.predict_rows(rows[list(runtime.factors)].to_numpy(np.float32))
    np.testing.assert_allclose(answer["prediction"], expected, rtol=1e-6)
    assert "x-ignored-features" not in response.headers
    native = post(n1v1_server, "/predict", {"model": FACTOR, "features": body["features"]})
    assert set(native.json()) == {"predictions", "probabilities", "model"}
    np.testing.assert_allclose(native.json()["predictions"], expected, rtol=1e-6)


def test_columns_in_any_order_predict_many_rows(n1v1_server, reference) -> None:
    runtime, rows = reference["factor"], reference["rows"]
    features = columns(rows, reversed(runtime.factors))
    response = post(n1v1_server, "/predict", {"model_name": FACTOR, "features": features})
    assert response.status_code == 200, response.text
    answer = response.json()
    uuid.UUID(answer["correlation_id"])  # generated when the client sends none
    expected = runtime.predict_rows(rows[list(runtime.factors)].to_numpy(np.float32))
    np.testing.assert_allclose(answer["prediction"], expected, rtol=1e-6)
    assert answer["confidence"] == [1.0] * len(rows)


def test_the_forest_answers_like_predict_proba_in_process(n1v1_server, reference) -> None:
    forest, rows = reference["forest"], reference["rows"][list(FEATURE_NAMES)]
    response = post(
        n1v1_server, "/predict", {"model_name": FOREST, "features": columns(rows, rows)}
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    expected = forest.predict_proba(rows)
    assert set(answer["probabilities"]) == {f"proba_{label}" for label in forest.classes_}
    for k, label in enumerate(forest.classes_):
        np.testing.assert_allclose(answer["probabilities"][f"proba_{label}"], expected[:, k])
    assert answer["prediction"] == forest.predict(rows).tolist()
    np.testing.assert_allclose(answer["confidence"], expected.max(axis=1))
    assert answer["model_version"] == reference["forest_version"]
    native = post(n1v1_server, "/predict", {"model": FOREST, "rows": rows.to_numpy().tolist()})
    assert native.status_code == 200, native.text
    np.testing.assert_allclose(native.json()["probabilities"]["proba_1"], expected[:, 1])


def test_a_batch_calls_each_model_once_and_isolates_bad_items(n1v1_server, reference) -> None:
    runtime, forest, rows = reference["factor"], reference["forest"], reference["rows"]
    factor_columns = columns(rows.head(2), runtime.factors)
    items = [
        {"model_name": FACTOR, "features": factor_columns, "correlation_id": "a"},
        {"model_name": "factor-NOPE", "features": factor_columns},
        {"model_name": FOREST, "features": columns(rows.tail(3), FEATURE_NAMES)},
        {"model_name": FACTOR, "features": dict(list(factor_columns.items())[1:])},
        {"model_name": FACTOR, "features": columns(rows.tail(1), runtime.factors)},
    ]
    before = sample_totals(metrics(n1v1_server), "tradeserve_model_requests_total", "model")
    response = post(n1v1_server, "/predict/batch", {"requests": items, "batch_size": 2})
    assert response.status_code == 200, response.text
    answers = response.json()
    assert len(answers) == len(items)
    assert answers[1]["status_code"] == 404 and "factor-NOPE" in answers[1]["error"]
    assert answers[3]["status_code"] == 400 and runtime.factors[0] in answers[3]["error"]
    assert set(answers[1]) == {"correlation_id", "model_name", "error", "status_code"}
    assert answers[0]["correlation_id"] == "a" and set(answers[0]) == RESPONSE_KEYS
    matrix = rows[list(runtime.factors)].to_numpy(np.float32)
    np.testing.assert_allclose(
        answers[0]["prediction"], runtime.predict_rows(matrix[:2]), rtol=1e-6
    )
    np.testing.assert_allclose(
        answers[4]["prediction"], runtime.predict_rows(matrix[-1:]), rtol=1e-6
    )
    assert answers[2]["prediction"] == forest.predict(rows.tail(3)[list(FEATURE_NAMES)]).tolist()
    after = sample_totals(metrics(n1v1_server), "tradeserve_model_requests_total", "model")
    assert after[FACTOR] - before.get(FACTOR, 0) == 1  # items 0 and 4: one model call
    assert after[FOREST] - before.get(FOREST, 0) == 1
    empty = post(n1v1_server, "/predict/batch", {"requests": []})
    assert (empty.status_code, empty.json()) == (200, [])


def test_unknown_models_are_404_and_counted(n1v1_server, reference) -> None:
    before = sample_totals(metrics(n1v1_server), "inference_requests_total", "status")
    response = post(n1v1_server, "/predict", {"model_name": "my_model", "features": {"x": [1.0]}})
    assert response.status_code == 404
    assert "my_model" in response.json()["detail"] and FACTOR in response.json()["detail"]
    after = sample_totals(metrics(n1v1_server), "inference_requests_total", "status")
    assert after["error"] - before.get("error", 0) == 1


def test_missing_features_are_named_and_extra_ones_ignored(n1v1_server, reference) -> None:
    runtime, rows = reference["factor"], reference["rows"].head(2)
    features = columns(rows, runtime.factors)
    missing = {name: values for name, values in features.items() if name != runtime.factors[-1]}
    response = post(n1v1_server, "/predict", {"model_name": FACTOR, "features": missing})
    assert response.status_code == 400
    assert response.json()["detail"] == f"{FACTOR}: missing features: {runtime.factors[-1]}"
    extra = {**features, "bid_ask": [0.1, 0.2], "flow": [1.0, 2.0]}
    response = post(n1v1_server, "/predict", {"model_name": FACTOR, "features": extra})
    assert response.status_code == 200, response.text
    assert response.headers["x-ignored-features"] == "bid_ask,flow"
    plain = post(n1v1_server, "/predict", {"model_name": FACTOR, "features": features})
    assert response.json()["prediction"] == plain.json()["prediction"]


@pytest.mark.parametrize(
    "body",
    [
        {"model_name": FACTOR},
        {"model_name": FACTOR, "features": {"ret_1": ["x"]}},
        {"model_name": "", "features": {"ret_1": [1.0]}},
    ],
)
def test_malformed_requests_get_422_like_n1v1(n1v1_server, body: dict) -> None:
    response = post(n1v1_server, "/predict", body)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], list)


def test_health_is_healthy_when_every_model_is_loaded(n1v1_server) -> None:
    response = httpx.get(f"{n1v1_server.url}/health", timeout=10)
    assert response.status_code == 200
    assert response.json() == {
        "status": "healthy",
        "models_loaded": sorted([FACTOR, "factor-NASDAQ_ret_1d", FOREST]),
    }


def test_reload_is_409_without_live_mode_and_404_for_unknown_models(n1v1_server) -> None:
    unknown = httpx.post(f"{n1v1_server.url}/reload/my_model", timeout=30)
    assert unknown.status_code == 404 and "my_model" in unknown.json()["detail"]
    baked = httpx.post(f"{n1v1_server.url}/reload/{FACTOR}", timeout=30)
    assert baked.status_code == 409
    assert "TRADESERVE_LIVE=true" in baked.json()["detail"]


def test_metrics_carry_n1v1_series_in_prometheus_text(n1v1_server, reference) -> None:
    runtime, rows = reference["factor"], reference["rows"].head(1)
    body = {"model_name": FACTOR, "features": columns(rows, runtime.factors)}
    assert post(n1v1_server, "/predict", body).status_code == 200
    response = httpx.get(f"{n1v1_server.url}/metrics", timeout=10)
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    ok = ("inference_requests_total", (("model_name", FACTOR), ("status", "success")))
    assert samples[ok] >= 1
    assert samples[("inference_latency_seconds_count", (("model_name", FACTOR),))] >= 1
    assert any(name == "inference_latency_seconds_bucket" for name, _ in samples)
    assert any(name == "tradeserve_model_latency_seconds_count" for name, _ in samples)


def test_the_forest_is_refused_without_the_opt_in(factor_server, reference) -> None:
    """The session's FactorModels has no opt-in: the factor models serve, the forest says why
    it does not, and /health is degraded."""
    rows = reference["rows"]
    response = post(
        factor_server, "/predict", {"model_name": FOREST, "features": columns(rows, FEATURE_NAMES)}
    )
    assert response.status_code == 404
    assert f"{OPT_IN}=true" in response.json()["detail"]
    health = httpx.get(f"{factor_server.url}/health", timeout=10)
    assert health.status_code == 503
    assert health.json()["status"] == "degraded" and FOREST not in health.json()["models_loaded"]
    assert httpx.get(f"{factor_server.url}/readyz", timeout=10).status_code == 200


def test_a_listed_forest_without_the_opt_in_fails_the_start_up(demo_home, tmp_path) -> None:
    with pytest.raises(RuntimeError) as failure, serve(demo_home, tmp_path, PRELOAD_MODELS=FOREST):
        pass
    assert f"cannot serve {FOREST}" in str(failure.value)
    assert f"{OPT_IN}=true" in str(failure.value)


@pytest.mark.parametrize(
    ("body", "n1v1"),
    [
        ({"model_name": FACTOR, "features": {}}, True),
        ({"model": FACTOR, "rows": [[1.0]]}, False),
        ({"model": FACTOR, "features": {"model_name": [1.0]}}, False),  # a column, not the key
        ({"model": FACTOR, "model_name": FACTOR}, False),
    ],
)
def test_one_dispatch_point_tells_the_bodies_apart(body: object, n1v1: bool) -> None:
    assert is_n1v1_body(json.dumps(body).encode()) is n1v1
    assert is_n1v1_body(b'{"model_name": ')  # malformed, N1V1's: its route answers 422
    assert not is_n1v1_body(b'{"model": "m", "model_name": ')  # the native endpoint does


def test_filling_missing_features_with_zero_is_an_opt_in(reference) -> None:
    runtime = reference["factor"]
    served = ServedModel(
        ref=ModelRef(name=FACTOR, version="1"), family=runtime.family, runtime=runtime
    )
    features = {name: [0.5, 0.25] for name in runtime.factors[1:]}
    with pytest.raises(MissingFeaturesError, match=runtime.factors[0]):
        feature_matrix(served, features, FactorSettings())
    with pytest.raises(FactorInputError, match="same length"):
        feature_matrix(served, {**features, runtime.factors[0]: [1.0]}, FactorSettings())
    filled = FactorSettings(fill_missing_features=True)
    matrix, ignored, missing = feature_matrix(served, {**features, "x": [1.0, 2.0]}, filled)
    assert (ignored, missing) == (["x"], [runtime.factors[0]])
    np.testing.assert_array_equal(matrix[:, 0], [0.0, 0.0])
    given = len(runtime.factors) - 1
    np.testing.assert_array_equal(matrix[:, 1:], [[0.5] * given, [0.25] * given])


def test_preload_models_is_another_spelling_of_the_served_list(monkeypatch) -> None:
    monkeypatch.delenv("TRADESERVE_FACTOR_MODELS", raising=False)
    monkeypatch.setenv("PRELOAD_MODELS", f" {FOREST}, {FACTOR},")
    assert FactorSettings().models == [FOREST, FACTOR]
    monkeypatch.setenv("PRELOAD_MODELS", "")
    assert FactorSettings().models is None
    monkeypatch.setenv("TRADESERVE_FACTOR_MODELS", f'["{FACTOR}"]')
    assert FactorSettings().models == [FACTOR]


# ── /reload/{name}: every worker, under load ─────────────────────────────────────────

RELOADED = "n1v1-reload"
RELOAD_FEATURES = ["a", "b", "c"]


def log_reload_version(seed: int) -> str:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.normal(size=(200, 3)), columns=RELOAD_FEATURES)
    label = (frame["a"] * (1 + seed) - frame["b"] > 0).astype(int)
    model = xgb.XGBClassifier(n_estimators=10, max_depth=3, n_jobs=1, random_state=seed)
    model.fit(frame, label)
    lineage = Lineage(data_source="synthetic")
    return log_tabular(RELOADED, model, input_example=frame.head(3), lineage=lineage).version


@pytest.fixture(scope="module")
def reload_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("n1v1-reload")
    with on_registry(home):
        promote(RELOADED, log_reload_version(0), reason="first")
    return home


@pytest.fixture(scope="module")
def reload_server(reload_home: Path) -> Iterator[BentoServer]:
    """Two workers serving only ``n1v1-reload`` (named the N1V1 way); live mode on, its
    periodic check too rare to matter: only /reload moves it."""
    with serve(
        reload_home,
        reload_home / "logs",
        PRELOAD_MODELS=RELOADED,
        TRADESERVE_POLL_INTERVAL_S="3600",
        BENTOML_CONFIG_OPTIONS="services.FactorModels.workers=2",
    ) as server:
        yield server


class PredictLoad(ContinuousLoad[tuple[float, int, str | None]]):
    """N1V1 clients calling back to back: (start time, status, model version)."""

    def call(self, client: httpx.Client, rng: random.Random) -> tuple[float, int, str | None]:
        started = time.monotonic()
        features = {name: [rng.uniform(-2, 2)] for name in RELOAD_FEATURES}
        response = client.post("/predict", json={"model_name": RELOADED, "features": features})
        version = response.json().get("model_version") if response.status_code == 200 else None
        return started, response.status_code, version

    def failed(self, answer: tuple[float, int, str | None]) -> bool:
        return answer[1] != 200


def test_reload_reaches_every_worker_under_load(reload_server, reload_home) -> None:
    health = httpx.get(f"{reload_server.url}/health", timeout=10).json()
    assert health == {"status": "healthy", "models_loaded": [RELOADED]}
    with PredictLoad(reload_server.url).running(clients=4, first_answers=50, timeout=60) as load:
        with on_registry(reload_home):
            new = log_reload_version(1)
            promote(RELOADED, new, reason="retrained")
        response = httpx.post(f"{reload_server.url}/reload/{RELOADED}", timeout=30)
        reloaded_at = time.monotonic()
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["message"] == f"Reloading model {RELOADED}"
        assert answer["model_version"] == new
        assert sorted(worker["worker"] for worker in answer["workers"]) == [1, 2]
        assert all(w["model_version"] == new and w["confirmed"] for w in answer["workers"])
        wait_until(
            lambda: sum(started > reloaded_at for started, _, _ in list(load.answers)) > 100,
            timeout=60,
            what="answers after the reload",
        )
    assert not load.failures(), load.failures()[:5]
    versions_before = {version for started, _, version in load.answers if started < reloaded_at}
    assert "1" in versions_before
    assert {version for started, _, version in load.answers if started > reloaded_at} == {new}
