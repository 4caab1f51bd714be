"""The server test stack is real: rows land in PostgreSQL, bytes in S3, and survive restarts."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import mlflow
import psycopg2
import pytest
from mlflow import MlflowClient

from harness.mlflow_server import MlflowServer
from harness.ports import port_is_open
from registry import store
from registry.errors import RegistryUnavailableError
from registry.settings import Settings
from tests.registry.conftest import ServerStack

pytestmark = pytest.mark.server

PAYLOAD = b"tradeserve infra check\n" + bytes(range(256))
ARTIFACT_PATH = "model/weights.bin"


@dataclass(frozen=True)
class Registered:
    """A run with one artifact and the model version registered from it."""

    name: str
    run_id: str
    version: str
    source: str


def _log_and_register(client: MlflowClient, name: str, suffix: str, tmp_path: Path) -> Registered:
    """Log ``PAYLOAD`` as a run artifact and register ``<run>/model`` as a version of ``name``."""
    experiment_id = client.create_experiment(f"infra-{suffix}")
    run = client.create_run(experiment_id)
    local = tmp_path / "upload" / "weights.bin"
    local.parent.mkdir(parents=True)
    local.write_bytes(PAYLOAD)
    client.log_artifact(run.info.run_id, str(local), artifact_path="model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(name)
    version = client.create_model_version(
        name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
    )
    return Registered(
        name=name, run_id=run.info.run_id, version=str(version.version), source=version.source
    )


def _download(server_url: str, artifact_uri: str, dst: Path) -> Path:
    """Download an artifact (file or folder) through the server's artifact proxy."""
    dst.mkdir(parents=True, exist_ok=True)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=artifact_uri, dst_path=str(dst), tracking_uri=server_url
    )
    return Path(local)


def _postgres_versions(libpq_url: str, name: str) -> list[tuple[str, int]]:
    """(name, version) rows for ``name`` read straight from MLflow's PostgreSQL tables."""
    with (
        contextlib.closing(psycopg2.connect(libpq_url)) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "SELECT r.name, v.version FROM registered_models r "
            "JOIN model_versions v ON v.name = r.name WHERE r.name = %s ORDER BY v.version",
            (name,),
        )
        rows = cursor.fetchall()
    return [(str(row[0]), int(row[1])) for row in rows]


@pytest.fixture
def registered(
    mlflow_pg_s3_stack: ServerStack,
    remote_registry: Settings,
    registry_suffix: str,
    tmp_path: Path,
) -> Registered:
    """One registered version on the session server."""
    client = MlflowClient(mlflow_pg_s3_stack.server.url, mlflow_pg_s3_stack.server.url)
    return _log_and_register(client, f"factor-{registry_suffix}", registry_suffix, tmp_path)


def test_registry_rows_in_postgres_and_artifacts_in_s3(
    mlflow_pg_s3_stack: ServerStack, registered: Registered, tmp_path: Path
) -> None:
    stack = mlflow_pg_s3_stack
    # Proxied artifacts: clients only see mlflow-artifacts:/ URIs, never s3://.
    assert registered.source.startswith("mlflow-artifacts:/"), registered.source

    assert _postgres_versions(stack.libpq_url, registered.name) == [
        (registered.name, int(registered.version))
    ]

    keys = stack.s3.object_keys(f"{stack.artifact_prefix}/")
    matching = [
        key for key in keys if key.endswith(f"{registered.run_id}/artifacts/{ARTIFACT_PATH}")
    ]
    assert len(matching) == 1, keys
    assert stack.s3.read(matching[0]) == PAYLOAD

    run_uri = f"runs:/{registered.run_id}/{ARTIFACT_PATH}"
    assert _download(stack.server.url, run_uri, tmp_path / "run").read_bytes() == PAYLOAD
    model_uri = f"models:/{registered.name}/{registered.version}"
    model_dir = _download(stack.server.url, model_uri, tmp_path / "model")
    assert (model_dir / "weights.bin").read_bytes() == PAYLOAD


def test_remote_registry_points_tradeserve_at_the_server(
    mlflow_pg_s3_server: MlflowServer, remote_registry: Settings, registered: Registered
) -> None:
    assert not remote_registry.embedded
    assert remote_registry.effective_tracking_uri == mlflow_pg_s3_server.url
    assert mlflow.get_tracking_uri() == mlflow_pg_s3_server.url
    with store.translate_errors():
        model = store.client().get_registered_model(registered.name)
    assert model.name == registered.name


def test_stop_and_start_keep_the_data(
    mlflow_pg_s3_stack: ServerStack,
    registered: Registered,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    server = mlflow_pg_s3_stack.server
    url_before = server.url
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")

    server.stop()
    assert not server.is_running
    assert not port_is_open(server.port)
    with pytest.raises(RegistryUnavailableError), store.translate_errors():
        store.client().get_registered_model(registered.name)

    server.start()
    assert server.url == url_before
    version = store.client().get_model_version(registered.name, registered.version)
    assert version.run_id == registered.run_id
    run_uri = f"runs:/{registered.run_id}/{ARTIFACT_PATH}"
    assert _download(server.url, run_uri, tmp_path).read_bytes() == PAYLOAD
