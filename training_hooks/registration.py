"""What every training hook shares: runs, lineage, registration and version tags.

Family modules call :func:`log_pyfunc_model` (or :func:`register_logged_model` after logging
a native flavor themselves); both leave a registered version that carries its ``family``,
its training lineage, its metrics and ``validation_status=pending`` until the gate runs.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import subprocess
from collections.abc import Iterator, Mapping
from datetime import date
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Run
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from pydantic import BaseModel, ConfigDict, Field

from registry import store
from registry.description import refresh as refresh_description
from registry.families import Family, check_name, family_spec, runtime_class
from training_hooks.portable import model_dependencies
from training_hooks.pyfunc import ARTIFACT_KEY, ENTRY_FILE, TradeservePyfunc

FAMILY_TAG = "family"
VALIDATION_TAG = "validation_status"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """tradeserve's version, plus the git commit when running from a checkout."""
    try:
        version = importlib.metadata.version("tradeserve")
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        if commit:
            return f"{version}+g{commit}"
    return version


class Lineage(BaseModel):
    """Where a model version came from; stored as version tags and run params."""

    model_config = ConfigDict(frozen=True)

    data_source: str = Field(description="Dataset the model was fitted on, e.g. arch.data.sp500")
    data_window_start: date | None = None
    data_window_end: date | None = None
    code_version: str = Field(default_factory=code_version)
    extra: dict[str, str] = Field(default_factory=dict)

    def as_tags(self) -> dict[str, str]:
        tags = {"data_source": self.data_source, "code_version": self.code_version}
        if self.data_window_start:
            tags["data_window_start"] = self.data_window_start.isoformat()
        if self.data_window_end:
            tags["data_window_end"] = self.data_window_end.isoformat()
        return {**tags, **self.extra}


class RegisteredVersion(BaseModel):
    """A model version created by a training hook."""

    name: str
    version: str
    family: Family
    run_id: str | None
    model_uri: str = Field(description="Concrete registry URI, models:/<name>/<version>")


@contextlib.contextmanager
def training_run(name: str, family: Family, lineage: Lineage) -> Iterator[Run]:
    """An MLflow run for training ``name``; reuses the caller's active run if there is one."""
    active = mlflow.active_run()
    if active is not None:
        yield active
        return
    store.ensure_experiment()
    with mlflow.start_run(run_name=name) as run:
        mlflow.set_tags({FAMILY_TAG: family.value, "registered_model": name, **lineage.as_tags()})
        yield run


def register_logged_model(
    model_info: ModelInfo,
    *,
    name: str,
    family: Family,
    lineage: Lineage,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
) -> RegisteredVersion:
    """Register a logged model as a new version of ``name`` with tags and metrics."""
    check_name(name, family)
    mlflow_client = store.client()
    with store.translate_errors():
        _ensure_registered_model(mlflow_client, name, family, description)
        version_tags = {
            FAMILY_TAG: family.value,
            VALIDATION_TAG: "pending",
            **lineage.as_tags(),
            **(tags or {}),
        }
        created = mlflow.register_model(model_info.model_uri, name, tags=version_tags)
        if metrics:
            clean = {key: float(value) for key, value in metrics.items()}
            mlflow.log_metrics(clean, model_id=model_info.model_id)
    refresh_description(name, [str(created.version)], mlflow_client)  # the UI's version page
    return RegisteredVersion(
        name=name,
        version=str(created.version),
        family=family,
        run_id=model_info.run_id,
        model_uri=f"models:/{name}/{created.version}",
    )


def log_pyfunc_model(
    *,
    name: str,
    family: Family,
    artifact_dir: Path,
    model_config: Mapping[str, Any],
    input_example: pd.DataFrame,
    lineage: Lineage,
    params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, float] | None = None,
    metadata: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
) -> RegisteredVersion:
    """Log ``artifact_dir`` as a tradeserve pyfunc of ``family`` and register a version.

    The runtime is loaded and run on ``input_example`` first, so a model that cannot load
    or predict is never logged, and the signature (with ``params`` and their defaults) is
    inferred from real output. The adapter and the family runtime travel with the model as
    ``code_paths``, with the pinned requirements of what they import
    (:mod:`training_hooks.portable`): ``mlflow.pyfunc.load_model`` needs no tradeserve.
    """
    check_name(name, family)
    config = {"family": family.value, **model_config}
    runtime = runtime_class(family).load(Path(artifact_dir), model_config)
    output = runtime.predict(input_example, params)
    signature: ModelSignature = infer_signature(input_example, output, params=dict(params or {}))
    modules = [TradeservePyfunc.__module__, family_spec(family).runtime.split(":")[0]]
    with (
        training_run(name, family, lineage),
        model_dependencies(modules=modules) as dependencies,
    ):
        if metrics:
            mlflow.log_metrics({key: float(value) for key, value in metrics.items()})
        model_info = mlflow.pyfunc.log_model(
            name=name,
            python_model=str(ENTRY_FILE),
            artifacts={ARTIFACT_KEY: str(artifact_dir)},
            model_config=config,
            signature=signature,
            input_example=input_example,
            metadata=dict(metadata or {}),
            code_paths=dependencies.code_paths,
            pip_requirements=dependencies.pip_requirements,
        )
        return register_logged_model(
            model_info,
            name=name,
            family=family,
            lineage=lineage,
            metrics=metrics,
            tags=tags,
            description=description,
        )


def _ensure_registered_model(
    mlflow_client: mlflow.MlflowClient, name: str, family: Family, description: str | None
) -> None:
    try:
        mlflow_client.get_registered_model(name)
    except mlflow.exceptions.MlflowException as error:
        if not store.is_not_found(error):
            raise
        mlflow_client.create_registered_model(
            name, tags={FAMILY_TAG: family.value}, description=description
        )
        return
    mlflow_client.set_registered_model_tag(name, FAMILY_TAG, family.value)
