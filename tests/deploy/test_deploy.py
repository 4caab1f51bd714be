"""deploy/: Kubernetes manifests (validated offline against the Kubernetes API schema) and
the one-host compose file, checked against each other and against the bentos."""

from __future__ import annotations

import copy
import importlib
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from bentos.build import REPO_ROOT, TARGETS
from bentos.chronos.compat import SEED_SLUGS
from bentos.chronos.settings import ChronosSettings
from bentos.factor.settings import FactorSettings
from bentos.model_manager.settings import ModelManagerSettings
from bentos.regime_blend.settings import BlendSettings
from bentos.shared.runtime_config import service_config
from bentos.shared.settings import ServingSettings
from bentos.specialists.settings import SpecialistsSettings
from registry.settings import Settings

DEPLOY = REPO_ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.33.0"
BENTO_PORT = 3000
# family target -> Kubernetes/compose service name; each serves one bento
SERVICES = {
    "chronos": "tradeserve-chronos",
    "factor": "tradeserve-factor",
    "specialists": "tradeserve-specialists",
    "regime_blend": "tradeserve-regime-blend",
}
GPU_SERVICES = {"tradeserve-chronos", "tradeserve-specialists"}
# ModelManager answers on model_manager's port; one replica (its watcher runs once)
MODEL_MANAGER = "tradeserve-model-manager"
MODEL_MANAGER_PORT = 6300
# AleutianLocal sends amazon/<slug> to http://forecast-<slug>:8000, the rest (and its
# standalone mode) to http://forecast-service:8000
ALEUTIAN_PORT = 8000
ALEUTIAN_FORWARDER = "forecast-service"
ALEUTIAN_ALIASES = [f"forecast-{slug}" for slug in SEED_SLUGS]
API_KEY = "TRADESERVE_API_KEY"
OPTIONAL_SECRETS = (
    "TRADESERVE_WEBHOOK_SECRET",
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
)


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


def documents() -> list[dict[str, Any]]:
    return [doc for path in manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def find(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (main,) = deployment["spec"]["template"]["spec"]["containers"]
    return main


def env_of(main: dict[str, Any]) -> dict[str, Any]:
    return {entry["name"]: entry.get("value", entry.get("valueFrom")) for entry in main["env"]}


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def bento_name(target: str) -> str | None:
    path = next(t.bentofile_path for t in TARGETS if t.key == target)
    return yaml.safe_load(path.read_text()).get("name") if path.is_file() else None


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(K8S)))
def test_manifest_is_valid_kubernetes(path: Path):
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_validation_rejects_broken_manifests():
    deployment = copy.deepcopy(find("Deployment", "tradeserve-factor"))
    container(deployment)["readinesProbe"] = container(deployment).pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    hpa = copy.deepcopy(find("HorizontalPodAutoscaler", "tradeserve-factor"))
    hpa["spec"]["maxReplicas"] = "many"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)


def test_kustomization_deploys_every_manifest_but_the_example_secrets():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    top_level = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == top_level - {"secrets.example.yaml"}
    images = {
        d["spec"]["template"]["spec"]["containers"][0]["image"].split(":")[0]
        for d in documents()
        if d["kind"] == "Deployment"
    }
    assert {image["name"] for image in kustomization["images"]} == images


@pytest.mark.parametrize("target", SERVICES)
def test_each_bento_has_deployment_service_and_autoscaler(target: str):
    name = SERVICES[target]
    deployment = find("Deployment", name)
    pod = deployment["spec"]["template"]
    main = container(deployment)
    # the image is the bento (containerized under its bento name)
    expected_image = bento_name(target) or name
    assert main["image"].split(":")[0] == expected_image == name
    assert main["ports"] == [{"name": "http", "containerPort": BENTO_PORT, "protocol": "TCP"}]
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(BENTO_PORT),
        "prometheus.io/path": "/metrics",
    }
    gpus = {k: v for k, v in main["resources"]["limits"].items() if k == "nvidia.com/gpu"}
    assert gpus == ({"nvidia.com/gpu": "1"} if name in GPU_SERVICES else {})
    service = find("Service", name)
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["port"] == BENTO_PORT
    hpa = find("HorizontalPodAutoscaler", name)
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": name,
    }
    kinds = {metric["type"] for metric in hpa["spec"]["metrics"]}
    assert kinds == {"Resource", "Pods"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_grace_period_outlasts_the_traffic_timeout(monkeypatch):
    """Against each service's served timeout: its code's, under the bento's configuration."""
    monkeypatch.setenv("BENTOML_CONFIG", str(REPO_ROOT / "configuration.yaml"))
    service_names = {
        "tradeserve-chronos": ("bentos.chronos.service", "ChronosForecaster"),
        "tradeserve-factor": ("bentos.factor.service", "FactorModels"),
        "tradeserve-specialists": ("bentos.specialists.service", "Specialists"),
        "tradeserve-regime-blend": ("bentos.regime_blend.service", "RegimeBlend"),
        MODEL_MANAGER: ("bentos.model_manager.service", "ModelManager"),
    }
    for name, (module, service) in service_names.items():
        importlib.import_module(module)  # declares the service's configuration
        timeout = service_config(service)["traffic"]["timeout"]
        grace = find("Deployment", name)["spec"]["template"]["spec"]
        assert grace["terminationGracePeriodSeconds"] > timeout, name


def test_custom_metrics_of_autoscalers_come_from_adapter_rules():
    rules = yaml.safe_load(find("ConfigMap", "tradeserve-adapter-rules")["data"]["config.yaml"])[
        "rules"
    ]
    provided = {rule["name"]["as"] for rule in rules}
    used = {
        metric["pods"]["metric"]["name"]
        for doc in documents()
        if doc["kind"] == "HorizontalPodAutoscaler"
        for metric in doc["spec"]["metrics"]
        if metric["type"] == "Pods"
    }
    assert used <= provided


def test_composite_points_at_the_specialists_service_by_url():
    url = f"http://{SERVICES['specialists']}:{BENTO_PORT}"
    main = container(find("Deployment", SERVICES["regime_blend"]))
    assert env_of(main)["TRADESERVE_BLEND_SPECIALISTS_URL"] == url
    bento = compose()["services"][SERVICES["regime_blend"]]
    assert bento["environment"]["TRADESERVE_BLEND_SPECIALISTS_URL"] == url
    assert bento["depends_on"] == {
        SERVICES["specialists"]: {"condition": "service_healthy"},
        "mlflow-postgres": {"condition": "service_healthy"},  # its state database
    }
    assert "specialists_url" in BlendSettings.model_fields


def test_composite_state_lives_in_its_own_database_with_required_secrets():
    """Every replica shares one database (its own user and database on the deployed
    PostgreSQL) and one market-data location; a missing secret stops the pod."""
    url = "postgresql+psycopg2://regime_blend@mlflow-postgres:5432/regime_blend"
    env = env_of(container(find("Deployment", SERVICES["regime_blend"])))
    compose_env = compose()["services"][SERVICES["regime_blend"]]["environment"]
    assert env["TRADESERVE_DATABASE_URL"] == compose_env["TRADESERVE_DATABASE_URL"] == url
    for name, key in (
        ("PGPASSWORD", "REGIME_BLEND_DB_PASSWORD"),
        ("TRADESERVE_MARKET_DATA_URI", "TRADESERVE_MARKET_DATA_URI"),
        ("TRADESERVE_DECISION_EXPORT_URI", "TRADESERVE_DECISION_EXPORT_URI"),
        ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
        ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
    ):
        assert env[name]["secretKeyRef"] == {"name": "tradeserve-secrets", "key": key}, name
        assert compose_env[name] == f"${{{key}:?set {key}}}", name
    example = next(
        doc
        for doc in yaml.safe_load_all((K8S / "secrets.example.yaml").read_text())
        if doc["metadata"]["name"] == "tradeserve-secrets"
    )
    assert {"REGIME_BLEND_DB_PASSWORD", "TRADESERVE_MARKET_DATA_URI"} <= set(example["stringData"])
    # the database and user are created by the postgres image from the same script
    script = (DEPLOY / "mlflow" / "create-regime-blend-db.sh").read_text()
    assert find("ConfigMap", "mlflow-config")["data"]["create-regime-blend-db.sh"] == script
    assert "CREATE DATABASE regime_blend OWNER regime_blend" in script
    postgres = env_of(container(find("StatefulSet", "mlflow-postgres")))
    assert postgres["REGIME_BLEND_DB_PASSWORD"]["secretKeyRef"]["key"] == "REGIME_BLEND_DB_PASSWORD"
    assert "create-regime-blend-db.sh" in " ".join(
        compose()["services"]["mlflow-postgres"]["volumes"]
    )


def test_compose_has_the_same_services_images_and_ports():
    services = compose()["services"]
    k8s_services = {d["metadata"]["name"] for d in documents() if d["kind"] == "Service"}
    assert set(services) == k8s_services - set(ALEUTIAN_ALIASES)  # compose: network aliases
    for name in SERVICES.values():
        main = container(find("Deployment", name))
        assert services[name]["image"] == main["image"]
        assert services[name]["command"] == main["args"]
        assert services[name]["ports"][0].endswith(f":{BENTO_PORT}")
        devices = services[name].get("deploy", {}).get("resources", {}).get("reservations", {})
        assert bool(devices) == (name in GPU_SERVICES), name
    mlflow = container(find("Deployment", "mlflow"))
    assert services["mlflow"]["image"] == mlflow["image"]
    assert services["mlflow"]["command"] == mlflow["args"]


def test_aleutianlocal_routing_names_reach_the_chronos_pods():
    """Each name of AleutianLocal's routing table is, on Kubernetes, a Service on its port in
    front of the Chronos pods and, on one host, a name of the forwarder to the Chronos
    container."""
    chronos = find("Deployment", SERVICES["chronos"])
    for name in [ALEUTIAN_FORWARDER, *ALEUTIAN_ALIASES]:
        service = find("Service", name)
        assert service["spec"]["selector"] == chronos["spec"]["selector"]["matchLabels"], name
        assert service["spec"]["ports"] == [
            {"name": "http", "port": ALEUTIAN_PORT, "targetPort": "http", "protocol": "TCP"}
        ], name
    forwarder = compose()["services"][ALEUTIAN_FORWARDER]
    assert sorted(forwarder["networks"]["default"]["aliases"]) == sorted(ALEUTIAN_ALIASES)
    assert forwarder["command"] == [
        f"TCP-LISTEN:{ALEUTIAN_PORT},fork,reuseaddr",
        f"TCP:{SERVICES['chronos']}:{BENTO_PORT}",
    ]
    assert forwarder["depends_on"] == {SERVICES["chronos"]: {"condition": "service_started"}}


def test_compose_and_kubernetes_give_the_bentos_the_same_settings():
    config_map = find("ConfigMap", "tradeserve-env")["data"]
    for name in SERVICES.values():
        environment = compose()["services"][name]["environment"]
        for key, value in config_map.items():
            assert str(environment[key]) == value, (name, key)
        k8s_env = env_of(container(find("Deployment", name)))
        assert environment[API_KEY] == f"${{{API_KEY}:?set {API_KEY}}}"  # required
        assert k8s_env[API_KEY]["secretKeyRef"] == {"name": "tradeserve-secrets", "key": API_KEY}
        for key in OPTIONAL_SECRETS:
            assert environment[key] is None, (name, key)  # passed through only when set
            assert k8s_env[key]["secretKeyRef"] == {
                "name": "tradeserve-secrets",
                "key": key,
                "optional": True,
            }


def test_no_reference_to_the_api_key_secret_is_optional():
    """A missing secret must stop the pods, never start them without auth."""
    references = []
    for doc in documents():
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for main in pod.get("containers", []) + pod.get("initContainers", []):
            for entry in main.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef", {})
                if entry["name"] == API_KEY or ref.get("key") == API_KEY:
                    references.append((doc["metadata"]["name"], ref))
            for source in main.get("envFrom", []):
                assert "secretRef" not in source or not source["secretRef"].get("optional")
    served = {name for name, _ in references}
    assert served == {*SERVICES.values(), MODEL_MANAGER}
    for name, ref in references:
        assert ref.get("key") == API_KEY and not ref.get("optional", False), name
    example = yaml.safe_load_all((K8S / "secrets.example.yaml").read_text())
    assert any(API_KEY in doc.get("stringData", {}) for doc in example)
    for name, service in compose()["services"].items():
        if API_KEY in service.get("environment", {}):
            assert service["environment"][API_KEY].startswith(f"${{{API_KEY}:?"), name


def test_only_tradeserve_prometheus_and_labelled_clients_reach_the_composite():
    """The composite's /metrics (live BUY/SELL counters) is open to scrapers, so its port is
    closed at the network to everyone else."""
    policy = find("NetworkPolicy", "tradeserve-regime-blend-ingress")
    deployment = find("Deployment", SERVICES["regime_blend"])
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector and selector.items() <= pod_labels.items()
    assert policy["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]  # one rule; an empty "from" would admit everyone
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    scraped = deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"]
    [port] = container(deployment)["ports"]
    assert (port["name"], str(port["containerPort"])) == ("http", scraped)
    assert rule["from"] == [
        {"podSelector": {}},
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        },
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {"tradeserve.io/client": "true"}},
        },
    ]
    # the metrics the autoscalers read come from that Prometheus (the adapter's namespace)
    assert find("ConfigMap", "tradeserve-adapter-rules")["metadata"]["namespace"] == "monitoring"


def env_names(settings: type[BaseSettings]) -> set[str]:
    """The environment variables ``settings`` reads (each name of a renamed one)."""
    prefix = settings.model_config.get("env_prefix", "")
    names: set[str] = set()
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names |= {choice.upper() for choice in alias.choices if isinstance(choice, str)}
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def test_every_tradeserve_variable_in_deploy_is_a_known_setting():
    known = {f"TRADESERVE_{field.upper()}" for field in ServingSettings.model_fields}
    known |= {f"TRADESERVE_{field.upper()}" for field in Settings.model_fields}
    for settings in (
        ChronosSettings,
        FactorSettings,
        SpecialistsSettings,
        BlendSettings,
        ModelManagerSettings,
    ):
        known |= env_names(settings)
    text = (DEPLOY / "compose.yaml").read_text() + "".join(p.read_text() for p in manifest_files())
    used = set(re.findall(r"\bTRADESERVE_[A-Z_]+\b", text))
    used = {v for v in used if not v.startswith("TRADESERVE_BLEND_")}
    assert used <= known, used - known


def test_mlflow_server_runs_on_postgres_s3_with_basic_auth():
    main = container(find("Deployment", "mlflow"))
    env = env_of(main)
    assert "--app-name=basic-auth" in main["args"]
    assert "--serve-artifacts" in main["args"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["secretKeyRef"]["name"] == "mlflow-secrets"
    assert env["PGPASSWORD"]["secretKeyRef"]["key"] == "POSTGRES_PASSWORD"
    # the flags are real `mlflow server` options (parsed by MLflow's own CLI, not run)
    from mlflow.cli import cli

    cli.commands["server"].make_context("server", list(main["args"][1:]))
    # compose runs the same server with the same environment names (plus an optional
    # endpoint for an S3-compatible store on one host)
    service = compose()["services"]["mlflow"]
    assert set(service["environment"]) - {"MLFLOW_S3_ENDPOINT_URL"} == set(env)


def test_compose_and_kubernetes_share_the_mlflow_auth_config():
    config = find("ConfigMap", "mlflow-config")["data"]
    assert config["basic_auth.ini"] == (DEPLOY / "mlflow" / "basic_auth.ini").read_text()
    assert config["create-auth-db.sql"] == (DEPLOY / "mlflow" / "create-auth-db.sql").read_text()
    dockerfile = (DEPLOY / "mlflow" / "Dockerfile").read_text()
    assert "mlflow[auth]==3.17.2" in dockerfile
    assert "psycopg2-binary" in dockerfile and "boto3" in dockerfile


def test_model_manager_runs_once_on_its_seed_port_with_redis():
    deployment = find("Deployment", MODEL_MANAGER)
    main = container(deployment)
    assert main["image"].split(":")[0] == bento_name("model_manager") == MODEL_MANAGER
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # never two watchers
    assert main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert find("Service", MODEL_MANAGER)["spec"]["ports"] == [
        {"name": "http", "port": MODEL_MANAGER_PORT, "targetPort": "http", "protocol": "TCP"}
    ]
    autoscaled = {
        d["metadata"]["name"] for d in documents() if d["kind"] == "HorizontalPodAutoscaler"
    }
    assert MODEL_MANAGER not in autoscaled
    env = env_of(main)
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    assert mounts[env["TRADESERVE_MODEL_ROOTS"]]["readOnly"] is True
    assert env["TRADESERVE_HOME"] in mounts
    assert env["TRADESERVE_REDIS_URL"] == "redis://redis:6379/0"
    assert find("Service", "redis")["spec"]["ports"][0]["port"] == 6379
    service = compose()["services"][MODEL_MANAGER]
    assert service["image"] == main["image"] and service["command"] == main["args"]
    assert service["ports"] == [f"{MODEL_MANAGER_PORT}:{BENTO_PORT}"]
    for key in ("TRADESERVE_MODEL_ROOTS", "TRADESERVE_REDIS_URL", "TRADESERVE_HOME"):
        assert service["environment"][key] == env[key], key
    assert service["depends_on"] == {"redis": {"condition": "service_started"}}
