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


@pytest.fixture
def embedded_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A fresh embedded (SQLite + local artifacts) registry in ``tmp_path``."""
    monkeypatch.setenv("TRADESERVE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    get_settings.cache_clear()
    settings = store.configure()
    yield settings
    if mlflow.active_run():
        mlflow.end_run()
    get_settings.cache_clear()
