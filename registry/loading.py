"""Load a registered version as its native family runtime (no pickle).

The promotion gate, the demo, the BentoML services and ``tradeserve build`` all load models
here, so a version behaves identically wherever it runs.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import Model

from registry import store
from registry.families import Family, runtime_class
from registry.resolve import ResolvedVersion
from registry.runtime import FamilyRuntime

PYFUNC = "python_function"
MODEL_ARTIFACT = "model"


@dataclass
class LoadedModel:
    """A version's runtime plus what was logged with it (its files are gone once loaded)."""

    resolved: ResolvedVersion
    runtime: FamilyRuntime
    metadata: dict[str, Any] = field(default_factory=dict)
    # The logged input example as read at load time, or why it could not be read.
    example: pd.DataFrame | Exception | None = field(default=None, repr=False)

    def input_example(self) -> pd.DataFrame | None:
        """The input example logged with the version, if any."""
        if isinstance(self.example, Exception):
            raise self.example
        return self.example


def read_input_example(mlmodel: Model, model_dir: Path) -> pd.DataFrame | Exception | None:
    """The input example of the MLflow model in ``model_dir`` (None if none was logged), or
    the error that reading it raised: a broken example fails the gate, not the load."""
    try:
        example = mlmodel.load_input_example(str(model_dir))
    except Exception as error:
        return error
    if example is None or isinstance(example, pd.DataFrame):
        return example
    return pd.DataFrame(example)


def download(resolved: ResolvedVersion, destination: Path) -> Path:
    """Download the version's MLflow model folder (the one holding ``MLmodel``) into
    ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    store.configure()
    with store.translate_errors(f"artifacts of {resolved.name} version {resolved.version}"):
        path = mlflow.artifacts.download_artifacts(
            artifact_uri=resolved.model_uri, dst_path=str(destination)
        )
    return Path(path)


def load_runtime(
    model_dir: Path, family: Family, device: str = "cpu"
) -> tuple[FamilyRuntime, dict[str, Any]]:
    """The family runtime stored in ``model_dir`` and the model's logged metadata."""
    mlmodel = Model.load(str(model_dir))
    return _runtime(mlmodel, model_dir, family, device), dict(mlmodel.metadata or {})


def _runtime(mlmodel: Model, model_dir: Path, family: Family, device: str) -> FamilyRuntime:
    pyfunc_conf = mlmodel.flavors.get(PYFUNC, {})
    config = dict(pyfunc_conf.get("config") or pyfunc_conf.get("model_config") or {})
    runtime_cls = runtime_class(family)
    if config.get("family"):
        if config.pop("family") != family.value:
            raise ValueError(f"{model_dir} holds a model of another family than {family.value}")
        config.pop("device", None)
        artifact = pyfunc_conf["artifacts"][MODEL_ARTIFACT]["path"]
        return runtime_cls.load(model_dir / artifact, config, device=device)
    # native flavors (XGBoost) read the MLflow model folder themselves
    return runtime_cls.load(model_dir, config, device=device)


def load_version(
    resolved: ResolvedVersion, device: str = "cpu", model_dir: Path | None = None
) -> LoadedModel:
    """Download ``resolved`` to a temporary folder, load it onto ``device`` with its input
    example, and remove the folder (a Chronos version is hundreds of MB, and a service
    loads one per promotion). ``model_dir``: its copy, already downloaded (live updates
    download apart, under a timeout, to tell an outage from a broken version)."""
    if model_dir is not None:
        return _load_downloaded(resolved, model_dir, device)
    with tempfile.TemporaryDirectory(
        prefix=f"tradeserve-{resolved.name}-v{resolved.version}-", ignore_cleanup_errors=True
    ) as scratch:
        return _load_downloaded(resolved, download(resolved, Path(scratch)), device)


def _load_downloaded(resolved: ResolvedVersion, model_dir: Path, device: str) -> LoadedModel:
    mlmodel = Model.load(str(model_dir))
    return LoadedModel(
        resolved=resolved,
        runtime=_runtime(mlmodel, model_dir, resolved.family, device),
        metadata=dict(mlmodel.metadata or {}),
        example=read_input_example(mlmodel, model_dir),
    )
