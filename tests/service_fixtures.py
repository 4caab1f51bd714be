"""Fixtures for service integration tests: a demo-filled registry and real servers.

Use from a test module with ``pytest_plugins = ["tests.service_fixtures"]``. The registry is
filled once per session by the real ``tradeserve demo`` command; each service runs as a real
``bentoml serve`` process on a free port, once per session.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry import store
from registry.settings import Settings, get_settings
from tests.bento_servers import BentoServer, bento_server
from tests.conftest import clear_mlflow_uris

TRADESERVE = Path(sys.executable).with_name("tradeserve")


def demo_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment of a process working on the demo registry in ``home``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env.pop("TRADESERVE_API_KEY", None)
    return {
        **env,
        "TRADESERVE_HOME": str(home),
        "BENTOML_HOME": str(home / "bentoml"),
        "HF_HUB_OFFLINE": "1",
        **extra,
    }


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TRADESERVE_HOME whose embedded registry `tradeserve demo` has filled."""
    home = tmp_path_factory.mktemp("demo-home")
    result = subprocess.run(
        [str(TRADESERVE), "demo"], env=demo_env(home), capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, f"tradeserve demo failed:\n{result.stdout}\n{result.stderr}"
    return home


@pytest.fixture
def demo_registry(demo_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Point this test process at the demo registry (for in-process reference results)."""
    monkeypatch.setenv("TRADESERVE_HOME", str(demo_home))
    clear_mlflow_uris(monkeypatch)
    get_settings.cache_clear()
    yield store.configure()
    get_settings.cache_clear()


def _serve(target: str, home: Path, logs: Path, **extra_env: str) -> Iterator[BentoServer]:
    with bento_server(target, demo_env(home, **extra_env), logs / "serve.log") as server:
        yield server


@pytest.fixture(scope="session")
def chronos_server(
    demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    yield from _serve(
        "bentos.chronos.service:ChronosForecaster", demo_home, tmp_path_factory.mktemp("chronos")
    )


@pytest.fixture(scope="session")
def factor_server(
    demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    yield from _serve(
        "bentos.factor.service:FactorModels", demo_home, tmp_path_factory.mktemp("factor")
    )


@pytest.fixture(scope="session")
def specialists_server(
    demo_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BentoServer]:
    yield from _serve(
        "bentos.specialists.service:Specialists", demo_home, tmp_path_factory.mktemp("specialists")
    )
