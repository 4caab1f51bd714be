"""Fixtures shared by every area: an isolated embedded registry per test, and (through
``tests.demo_fixtures``) the demo registry that is filled once per session.

``pytest_plugins`` may only be declared here, in the top-level conftest; the areas' own
conftests hold the fixtures of their modules.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import fluent as mlflow_fluent
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils

from registry import store
from registry.settings import Settings, get_settings

pytest_plugins = ["tests.demo_fixtures"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# What points the mlflow module at a store, and at an experiment in it (set_experiment
# exports MLFLOW_EXPERIMENT_ID: another store's id, once the test changed stores).
MLFLOW_URI_VARIABLES = (
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
    "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_EXPERIMENT_NAME",
)


def clear_mlflow_uris(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset MLflow's URI and experiment variables for one test and restore them afterwards.

    ``mlflow.set_tracking_uri``/``set_registry_uri`` export these to ``os.environ``;
    setting before deleting makes pytest undo whatever a test leaves behind.
    """
    for variable in MLFLOW_URI_VARIABLES:
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)
    # ... and the module globals they set, which win over the variables: a test that
    # configured another registry in this process must not leave it to the next one
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    monkeypatch.setattr(registry_utils, "_registry_uri", None)
    monkeypatch.setattr(mlflow_fluent, "_active_experiment_id", None)


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


@pytest.fixture(scope="module")
def single_torch_thread() -> Iterator[None]:
    """One torch intra-op thread for a module: micro models gain nothing from more, and
    they thrash on a busy host."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
