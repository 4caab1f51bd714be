"""Shared pytest fixtures: an isolated embedded registry per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from registry import store
from registry.settings import Settings, get_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


MLFLOW_URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def clear_mlflow_uris(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset MLflow's URI variables for one test and restore them afterwards.

    ``mlflow.set_tracking_uri``/``set_registry_uri`` export these to ``os.environ``;
    setting before deleting makes pytest undo whatever a test leaves behind.
    """
    for variable in MLFLOW_URI_VARIABLES:
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)


@pytest.fixture
def embedded_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A fresh embedded (SQLite + local artifacts) registry in ``tmp_path``."""
    monkeypatch.setenv("TRADESERVE_HOME", str(tmp_path / "home"))
    clear_mlflow_uris(monkeypatch)
    get_settings.cache_clear()
    settings = store.configure()
    yield settings
    if mlflow.active_run():
        mlflow.end_run()
    get_settings.cache_clear()
