"""Shared fixtures: the demo-filled registry, and the environment of processes working on it.

Registered for every area by ``tests/conftest.py`` (``pytest_plugins``), so the registry that
``tradeserve demo`` fills (minutes) is built once per session, whichever areas use it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.bento import own_bentoml_home as own_bentoml_home  # where it lived
from registry import store
from registry.settings import Settings, get_settings
from tests.conftest import clear_mlflow_uris

TRADESERVE = Path(sys.executable).with_name("tradeserve")


def demo_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment of a process working on the demo registry in ``home``.

    Models load on the CPU (``TRADESERVE_DEVICE=cpu``) as the in-process references do: a
    server on a GPU host would otherwise pick CUDA and answer with other rounding.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env.pop("TRADESERVE_API_KEY", None)
    return {
        **env,
        "TRADESERVE_HOME": str(home),
        "BENTOML_HOME": str(home / "bentoml"),
        "HF_HUB_OFFLINE": "1",
        "TRADESERVE_DEVICE": "cpu",
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
    monkeypatch.setenv("TRADESERVE_DEVICE", "cpu")
    clear_mlflow_uris(monkeypatch)
    get_settings.cache_clear()
    yield store.configure()
    get_settings.cache_clear()
