"""Built bentos serve their baked models with the registry unreachable.

* factor: exported to S3 (a moto server), imported into a fresh BentoML home on "another
  machine" with no registry at all, served with ``bentoml serve TAG`` and compared with
  the promoted models loaded in-process.
* chronos: every baked family forecasts like its promoted version, registry unreachable.
* specialists + the composite, deployed as on Kubernetes: the Specialists family bento
  served on its own, RegimeBlend's bento started separately and pointed at it by URL
  (``TRADESERVE_SPECIALISTS_URL``), each with its own BentoML home as in its own pod, both
  secured with one ``TRADESERVE_API_KEY`` (the composite sends it to Specialists). The
  Specialists bento can reach the registry, yet without ``TRADESERVE_LIVE`` it serves what
  was baked and does not follow promotions.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import bentoml
import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bentos.build import BuiltBento
from harness.bento import BENTOML, BentoServer, bento_server
from harness.s3 import S3Endpoint, moto_s3
from registry.families import SPECIALIST_ROLES, specialist_name
from registry.loading import load_version
from registry.resolve import resolve
from registry.settings import Settings
from tests.demo_fixtures import demo_env, own_bentoml_home
from tests.deploy.conftest import check_baked_factor_models, offline_env
from training_hooks.features import FEATURE_NAMES
from training_hooks.specialist.runtime import ACTIONS

BUCKET = "tradeserve-bentos"
KEY = "deploy-test-key-0123456789abcdef0123"
AUTH = {"Authorization": f"Bearer {KEY}"}


def bento_config(bento_path: Path) -> str:
    """The configuration.yaml packed in a bento (what BENTOML_CONFIG names in its image)."""
    return str(bento_path / "src" / "configuration.yaml")


def s3_env(s3: S3Endpoint, home: Path) -> dict[str, str]:
    """A `bentoml` CLI environment whose boto3 credentials and endpoint reach ``s3``."""
    return offline_env(
        home,
        AWS_ACCESS_KEY_ID=s3.access_key_id,
        AWS_SECRET_ACCESS_KEY=s3.secret_access_key,
        AWS_DEFAULT_REGION=s3.region,
        AWS_ENDPOINT_URL_S3=s3.endpoint_url,
    )


def scrape(server: BentoServer) -> dict[tuple[str, frozenset], float]:
    """Every sample of the server's ``/metrics``, by (name, labels)."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).raise_for_status().text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` that carry all of ``labels``."""
    wanted = set(labels.items())
    return sum(
        value for (sample, have), value in samples.items() if sample == name and wanted <= have
    )


def bentoml_cli(*args: str, env: dict[str, str]) -> None:
    result = subprocess.run(
        [str(BENTOML), *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"bentoml {' '.join(args)}:\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def factor_from_s3(
    built: dict[str, BuiltBento], demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BentoServer, Path, S3Endpoint]]:
    """The factor bento, exported to S3 and imported into an empty home, served there."""
    bento = built["factor"]
    other = tmp_path_factory.mktemp("other-machine")
    key = f"bentos/{bento.tag.replace(':', '-')}.bento"
    with moto_s3(BUCKET) as s3:
        bentoml_cli("export", bento.tag, f"s3://{BUCKET}/{key}", env=s3_env(s3, demo_home))
        bentoml_cli("import", f"s3://{BUCKET}/{key}", env=s3_env(s3, other))
        name, version = bento.tag.split(":")
        imported = other / "bentoml" / "bentos" / name / version
        env = offline_env(other, BENTOML_CONFIG=bento_config(imported))
        with bento_server(bento.tag, env, other / "serve.log") as server:
            yield server, other, s3


def test_bento_export_to_s3_holds_the_bento_and_its_models(factor_from_s3, built, demo_home: Path):
    """What came back from S3 is the bento, byte for byte: its code and every model."""
    _, other, s3 = factor_from_s3
    (key,) = s3.object_keys("bentos/")
    assert key.endswith(".bento")
    bento = built["factor"]
    folders = [
        Path("bentos", *bento.tag.split(":")),
        *(Path("models", *m.bentoml_tag.split(":")) for m in bento.models),
    ]
    assert len(folders) >= 4  # the bento, two factor models and a venue table
    for folder in folders:
        source, copy = demo_home / "bentoml" / folder, other / "bentoml" / folder
        files = sorted(p.relative_to(source) for p in source.rglob("*") if p.is_file())
        assert files, source
        assert sorted(p.relative_to(copy) for p in copy.rglob("*") if p.is_file()) == files
        for relative in files:
            assert (copy / relative).read_bytes() == (source / relative).read_bytes(), relative


def test_imported_factor_bento_serves_without_any_registry(
    factor_from_s3, built, demo_registry: Settings
):
    server, other, _ = factor_from_s3
    baked = {m.name: m.version for m in built["factor"].models}
    with bentoml.SyncHTTPClient(server.url) as client:
        check_baked_factor_models(client, baked)
        venue = client.venue_quantiles(venue="us-equities")
    assert venue["model"]["version"] == baked["venue-quantiles-us-equities"]
    # Nothing touched a registry on the other machine: no embedded store was created.
    assert not (other / "mlflow.db").exists()


def test_chronos_bento_forecasts_like_the_promoted_models_without_a_registry(
    built, demo_home: Path, demo_registry: Settings, tmp_path: Path
):
    """Every Chronos family baked into the bento answers with the registry unreachable,
    equal to the promoted version loaded in-process."""
    bento = built["chronos"]
    env = offline_env(
        demo_home,
        BENTOML_CONFIG=bento_config(Path(bento.path)),
        BENTOML_HOME=own_bentoml_home(demo_home, tmp_path),
    )
    baked = {m.name: m.version for m in bento.models}
    series = np.cumsum(np.random.default_rng(3).normal(size=96)) + 100.0
    levels = [0.1, 0.5, 0.9]
    with (
        bento_server(bento.tag, env, tmp_path / "serve.log") as server,
        bentoml.SyncHTTPClient(server.url) as client,
    ):
        answers = {
            name: client.forecast(
                inputs=[{"target": series.tolist(), "item_id": "SPX"}],
                parameters={
                    "prediction_length": 5,
                    "quantile_levels": levels,
                    "model": name,
                    **({"num_samples": 8, "seed": 5} if "t5" in name else {}),
                },
            )
            for name in baked
        }
    assert sorted(baked) == ["chronos-2", "chronos-bolt-tiny", "chronos-t5-tiny"]
    for name, body in answers.items():
        assert body["model"] == {"name": name, "version": baked[name], "alias": "champion"}
        runtime = load_version(resolve(name)).runtime
        options = {"num_samples": 8, "seed": 5} if "t5" in name else {}
        expected = runtime.forecast([series], 5, levels, **options).row(0)
        [served] = body["predictions"]
        for key in ("mean", "0.1", "0.5", "0.9"):
            np.testing.assert_allclose(served[key], expected[key], rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def specialists_bento_server(
    built: dict[str, BuiltBento], demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    bento = built["specialists"]
    logs = tmp_path_factory.mktemp("specialists-bento")
    env = demo_env(  # the registry is reachable: a built bento still does not follow it
        demo_home,
        BENTOML_CONFIG=bento_config(Path(bento.path)),
        BENTOML_HOME=own_bentoml_home(demo_home, logs),
        TRADESERVE_API_KEY=KEY,
    )
    with bento_server(bento.tag, env, logs / "serve.log") as server:
        yield server


def test_specialists_bento_acts_like_the_promoted_models(
    specialists_bento_server, built, demo_registry: Settings
):
    observations = np.random.default_rng(11).normal(size=(5, len(FEATURE_NAMES)))
    observations = observations.astype(np.float32)
    baked = {m.name: m.version for m in built["specialists"].models}
    with bentoml.SyncHTTPClient(specialists_bento_server.url, token=KEY) as client:
        body = client.act(observations=observations.tolist(), specialists=list(SPECIALIST_ROLES))
    for role in SPECIALIST_ROLES:
        name = specialist_name(role)
        runtime = load_version(resolve(name)).runtime
        served = body["results"][role]
        assert served["model"]["version"] == baked[name]
        np.testing.assert_allclose(
            served["probabilities"], runtime.probabilities(observations), rtol=1e-5, atol=1e-6
        )


def test_built_bento_does_not_follow_the_registry_without_live_mode(
    specialists_bento_server,
) -> None:
    url = specialists_bento_server.url
    assert httpx.get(f"{url}/admin/models", timeout=30).status_code == 401  # secured
    admin = httpx.get(f"{url}/admin/models", headers=AUTH, timeout=30).json()
    assert admin["live"] is False and admin["workers"] == []
    reload = httpx.post(f"{url}/admin/reload", headers=AUTH, timeout=30)
    assert reload.status_code == 409
    assert "TRADESERVE_LIVE" in reload.text


def test_composite_uses_the_separately_deployed_specialists(
    specialists_bento_server, built, demo_home: Path, tmp_path: Path
):
    if "regime_blend" not in built:
        pytest.skip("no composite bento: the root bentofile.yaml does not exist")
    bento = built["regime_blend"]
    env = offline_env(
        demo_home,
        BENTOML_CONFIG=bento_config(Path(bento.path)),
        TRADESERVE_SPECIALISTS_URL=specialists_bento_server.url,
        TRADESERVE_BLEND_STATE_DIR=str(tmp_path / "state"),
        TRADESERVE_API_KEY=KEY,  # its own routes, and what it sends to Specialists
        BENTOML_HOME=own_bentoml_home(demo_home, tmp_path),
    )
    with bento_server(bento.tag, env, tmp_path / "serve.log") as composite:
        before = scrape(specialists_bento_server)
        # the verdict in the body: approved trades reserve exposure on the service's
        # portfolio, and a fourth BUY would be the seed's 403
        explained = {"symbol": "SPX", "explain": True, "risk_mode": "body"}
        response = _post(composite, "/api/v1/predict", explained)
        assert response.status_code == 200, response.text
        decision = response.json()
        bars = {decision["metadata"]["as_of"]}
        # earlier bars, far apart: features never asked about yet, so no memoised answer
        for day in ("2016-05-03", "2017-03-01", "2018-06-01"):
            body = {"symbol": "SPX", "timestamp": day, "risk_mode": "body"}
            response = _post(composite, "/api/v1/predict", body)
            assert response.status_code == 200, response.text
            bars.add(response.json()["metadata"]["as_of"])
        after = scrape(specialists_bento_server)
        local = "Service Specialists initialized" in composite.log_path.read_text()
    assert not local, (
        "the composite started its own Specialists: it must declare "
        "bentoml.depends(Specialists, url=get_blend_settings().specialists_url)"
    )
    assert len(bars) == 4, bars
    # The separate server answered: one act_batch request per bar (the composite's workers
    # memoise answers per feature row, so only a bar seen before could skip the hop) ...
    act_batch = {"endpoint": "/act_batch", "http_response_code": "200"}
    requests = total(after, "bentoml_service_request_total", **act_batch) - total(
        before, "bentoml_service_request_total", **act_batch
    )
    assert requests >= len(bars), f"{requests} act_batch requests reached Specialists"
    # ... and its models saw each bar's feature row (observations, however batched).
    for model in decision["metadata"]["models"]:
        if model["role"] == "regime":
            continue
        mine = {"service": "Specialists", "model": model["name"]}
        rows = total(after, "tradeserve_model_batch_size_sum", **mine) - total(
            before, "tradeserve_model_batch_size_sum", **mine
        )
        assert rows >= len(bars), f"{model['name']} saw {rows} observations"
    explanation = decision["explanation"]
    observation = [explanation["features"][name] for name in FEATURE_NAMES]
    with bentoml.SyncHTTPClient(specialists_bento_server.url, token=KEY) as specialists:
        remote = specialists.act(observations=[observation], specialists=list(SPECIALIST_ROLES))
    baked = {m.name: m.version for m in bento.models}
    for model in decision["metadata"]["models"]:
        assert model["version"] == baked[model["name"]]
    for role, answer in explanation["specialists"].items():
        expected = remote["results"][answer["served_by"]]["probabilities"][0]
        got = [answer["probabilities"][action] for action in ACTIONS]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=role)
    if explanation["method"].startswith("mixture"):
        mixture = sum(
            np.asarray([a["probabilities"][x] for x in ACTIONS]) * (a["weight"] or 0.0)
            for a in explanation["specialists"].values()
        )
        blended = [explanation["blended"][action] for action in ACTIONS]
        np.testing.assert_allclose(blended, mixture, rtol=1e-6, atol=1e-9)
    assert decision["action"] in ACTIONS


def _post(server: BentoServer, route: str, body: dict) -> httpx.Response:
    return httpx.post(f"{server.url}{route}", json=body, headers=AUTH, timeout=60)
