"""The metrics of a registered version: its training run's, overlaid by those logged on its
MLflow 3 logged model (training hooks and ``tradeserve evaluate`` log there).

Promotion requirements (``--require sharpe>=0.5``) and the version description read them
through :func:`version_metrics`, so a walk-forward result logged on the model after training
gates promotion like a training metric does.
"""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, Field

from registry import store

MODELS_URI = "models:/"
LOGGED_MODEL_ID_PREFIX = "m-"


class VersionMetric(BaseModel):
    """The latest value of one metric of a version, and where it was logged."""

    value: float
    run_id: str | None = Field(default=None, description="Run that logged it")
    timestamp: int = Field(default=0, description="Milliseconds since the epoch")
    on_model: bool = Field(description="Logged on the logged model, not only on the run")


def logged_model_id(version: ModelVersion) -> str | None:
    """The MLflow 3 logged model behind a version (its source is ``models:/<model id>``);
    None for versions registered from a run (MLflow 2 style)."""
    if getattr(version, "model_id", None):
        return version.model_id
    model_id = (version.source or "").removeprefix(MODELS_URI)
    return model_id if model_id.startswith(LOGGED_MODEL_ID_PREFIX) else None


def version_metrics(version: ModelVersion, client: MlflowClient) -> dict[str, VersionMetric]:
    """Each metric of ``version`` at its latest value: the training run's, replaced by the
    logged model's where the model has one of the same name."""
    metrics: dict[str, VersionMetric] = {}
    with store.translate_errors(f"version {version.version} of model '{version.name}'"):
        if version.run_id:
            try:
                run = client.get_run(version.run_id)
            except MlflowException as error:  # a deleted training run leaves the model's own
                if not store.is_not_found(error):
                    raise
            else:
                for key, value in run.data.metrics.items():
                    metrics[key] = VersionMetric(value=value, run_id=version.run_id, on_model=False)
        model_id = logged_model_id(version)
        if model_id:
            latest = sorted(
                client.get_logged_model(model_id).metrics or [],
                key=lambda m: (m.timestamp, m.step),
            )
            for metric in latest:  # oldest first: the newest value of a key wins
                metrics[metric.key] = VersionMetric(
                    value=metric.value,
                    run_id=metric.run_id,
                    timestamp=metric.timestamp,
                    on_model=True,
                )
    return metrics
