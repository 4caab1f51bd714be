"""Fixtures of the registry tests: a real MLflow server on PostgreSQL + S3 (moto), shared by
the test session. A module uses them by name::

    import pytest

    from registry.settings import Settings

    pytestmark = pytest.mark.server


    def test_something(remote_registry: Settings, registry_suffix: str) -> None:
        name = f"factor-{registry_suffix}"
        ...

Tests that use these fixtures are also marked ``server`` automatically, so
``pytest -m "not server"`` skips the stack; mark them explicitly anyway for readers.

Fixtures:

* ``mlflow_pg_s3_stack`` (session) — :class:`ServerStack`: the server plus the PostgreSQL
  URL and the S3 endpoint behind it, for tests that inspect the stores directly.
* ``mlflow_pg_s3_server`` (session) — the :class:`~harness.mlflow_server.MlflowServer` alone. Tests
  may ``stop()``/``start()`` it; ``remote_registry`` restarts it if a test left it down.
* ``registry_suffix`` (function) — a unique token (``t`` + 10 hex digits) for names such as
  ``factor-<suffix>``.
* ``remote_registry`` (function) — points tradeserve (env + ``registry.store.configure()``) at
  the server and yields its :class:`~registry.settings.Settings`. Registered models created
  during the test are deleted afterwards, so fixed names (``specialist-bull``,
  ``regime-detector``) can be reused by later tests; each test gets its own experiment
  (``TRADESERVE_EXPERIMENT=tradeserve-<suffix>``). Runs, experiments, S3 objects and webhooks
  are not cleaned up.

The stack starts once per session (per xdist worker), on first use only.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from harness.mlflow_server import MlflowServer, mlflow_server
from harness.postgres import libpq_url, postgres_cluster
from harness.s3 import S3Endpoint, moto_s3
from registry import store
from registry.settings import Settings, get_settings
from tests.conftest import clear_mlflow_uris

ARTIFACT_BUCKET = "tradeserve-artifacts"
ARTIFACT_PREFIX = "mlartifacts"
# Client-side variables that must not leak into tests: the server alone talks to S3.
_CLIENT_VARIABLES_TO_CLEAR = (
    "MLFLOW_REGISTRY_URI",
    "TRADESERVE_TRACKING_URI",
    "TRADESERVE_REGISTRY_URI",
    "MLFLOW_S3_ENDPOINT_URL",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that (indirectly) uses the server stack with ``server``."""
    for item in items:
        if "mlflow_pg_s3_stack" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.server)


@dataclass(frozen=True)
class ServerStack:
    """The session's MLflow server and the stores behind it."""

    server: MlflowServer
    database_url: str  # SQLAlchemy URL (postgresql+psycopg2://...)
    s3: S3Endpoint
    artifact_prefix: str = ARTIFACT_PREFIX

    @property
    def libpq_url(self) -> str:
        """The database URL for ``psycopg2.connect``."""
        return libpq_url(self.database_url)


@pytest.fixture(scope="session")
def mlflow_pg_s3_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerStack]:
    """PostgreSQL cluster + moto S3 + ``mlflow server`` (proxied artifacts), once per session."""
    root: Path = tmp_path_factory.mktemp("mlflow-pg-s3")
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(postgres_cluster(root))
        s3 = stack.enter_context(moto_s3(ARTIFACT_BUCKET))
        server = stack.enter_context(
            mlflow_server(
                database_url,
                s3.artifacts_destination(ARTIFACT_PREFIX),
                s3.server_env(),
                log_dir=root,
            )
        )
        yield ServerStack(server=server, database_url=database_url, s3=s3)


@pytest.fixture(scope="session")
def mlflow_pg_s3_server(mlflow_pg_s3_stack: ServerStack) -> MlflowServer:
    """The session's MLflow server (see ``mlflow_pg_s3_stack``)."""
    return mlflow_pg_s3_stack.server


@pytest.fixture
def registry_suffix() -> str:
    """A unique, name-safe token for this test's registered models and experiments."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def remote_registry(
    mlflow_pg_s3_stack: ServerStack,
    registry_suffix: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Iterator[Settings]:
    """tradeserve configured against the session's MLflow server; yields its Settings."""
    server = mlflow_pg_s3_stack.server
    server.ensure_running()
    mlflow_pg_s3_stack.s3.ensure_bucket()
    clear_mlflow_uris(monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("TRADESERVE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TRADESERVE_EXPERIMENT", f"tradeserve-{registry_suffix}")
    for variable in _CLIENT_VARIABLES_TO_CLEAR:
        monkeypatch.delenv(variable, raising=False)
    get_settings.cache_clear()
    settings = store.configure()
    existing = _registered_model_names(server.url)
    try:
        yield settings
    finally:
        server.ensure_running()  # a test may have stopped it (outage tests)
        if mlflow.active_run():
            mlflow.end_run()
        _delete_registered_models(server.url, keep=existing)
        get_settings.cache_clear()


def _registered_model_names(tracking_uri: str) -> set[str]:
    """Names of all registered models on the server."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    names: set[str] = set()
    page_token: str | None = None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=page_token)
        names.update(model.name for model in page)
        page_token = page.token
        if not page_token:
            return names


def _delete_registered_models(tracking_uri: str, keep: set[str]) -> None:
    """Delete every registered model whose name is not in ``keep``."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    for name in _registered_model_names(tracking_uri) - keep:
        client.delete_registered_model(name)
