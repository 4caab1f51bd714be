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
from registry.families import Family
from registry.resolve import ResolvedVersion

PYFUNC = "python_function"
MODEL_ARTIFACT = "model"


@dataclass
class LoadedModel:
    """A version's runtime plus what was logged with it."""

    resolved: ResolvedVersion
    runtime: Any  # training_hooks.runtime.FamilyRuntime
    model_dir: Path | None  # None once a temporary download has been removed
    metadata: dict[str, Any] = field(default_factory=dict)
    # The logged input example as read at load time, or why it could not be read.
    example: pd.DataFrame | Exception | None = field(default=None, repr=False)

    def input_example(self) -> pd.DataFrame | None:
        """The input example logged with the version, if any."""
        if isinstance(self.example, Exception):
            raise self.example
        return self.example


def read_input_example(model_dir: Path) -> pd.DataFrame | Exception | None:
    """The input example in an MLflow model folder (None if none was logged), or the error
    that reading it raised: a broken example fails the gate, not the load."""
    try:
        example = Model.load(str(model_dir)).load_input_example(str(model_dir))
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
) -> tuple[Any, dict[str, Any]]:
    """The family runtime stored in ``model_dir`` and the model's logged metadata."""
    from training_hooks.runtime import runtime_class

    mlmodel = Model.load(str(model_dir))
    pyfunc_conf = mlmodel.flavors.get(PYFUNC, {})
    config = dict(pyfunc_conf.get("config") or pyfunc_conf.get("model_config") or {})
    runtime_cls = runtime_class(family)
    if config.get("family"):
        if config.pop("family") != family.value:
            raise ValueError(f"{model_dir} holds a model of another family than {family.value}")
        config.pop("device", None)
        artifact = pyfunc_conf["artifacts"][MODEL_ARTIFACT]["path"]
        runtime = runtime_cls.load(model_dir / artifact, config, device=device)
    else:  # native flavors (XGBoost) read the MLflow model folder themselves
        runtime = runtime_cls.load(model_dir, config, device=device)
    return runtime, dict(mlmodel.metadata or {})


def load_version(
    resolved: ResolvedVersion, device: str = "cpu", destination: Path | None = None
) -> LoadedModel:
    """Download and load ``resolved`` onto ``device``.

    The files stay in ``destination`` when one is given; otherwise they are downloaded to a
    temporary folder that is removed once the runtime is in memory (a Chronos version is
    hundreds of MB, and a service loads one per promotion).
    """
    if destination is not None:
        model_dir = download(resolved, destination)
        runtime, metadata = load_runtime(model_dir, resolved.family, device)
        return LoadedModel(resolved, runtime, model_dir, metadata, read_input_example(model_dir))
    with tempfile.TemporaryDirectory(
        prefix=f"tradeserve-{resolved.name}-v{resolved.version}-", ignore_cleanup_errors=True
    ) as scratch:
        model_dir = download(resolved, Path(scratch))
        runtime, metadata = load_runtime(model_dir, resolved.family, device)
        example = read_input_example(model_dir)
    return LoadedModel(resolved, runtime, None, metadata, example)
