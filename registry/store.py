"""The one place that connects to MLflow: tracking/registry URIs, client, experiment."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException, RestException

from registry.errors import ModelNotFoundError, RegistryUnavailableError
from registry.settings import Settings, get_settings

# MLflow retries unreachable servers for minutes by default; tradeserve fails fast and lets
# callers (CLI, services) decide how to retry. Users can still override both variables.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
# Stage APIs are deprecated but still mirrored on purpose (DESIGN.md); keep logs readable.
warnings.filterwarnings("ignore", message=".*[Ss]tage.*deprecated.*")
# get_latest_versions (the stage fallback) says "deprecated" before it says "stages", and its
# warning is attributed to our module, so neither filter around this one matches it.
warnings.filterwarnings("ignore", message=".*deprecated.*model registry stages will be removed")
warnings.filterwarnings("ignore", category=FutureWarning, module="mlflow")
logging.getLogger("alembic").setLevel(logging.WARNING)


def configure(settings: Settings | None = None) -> Settings:
    """Point the ``mlflow`` module at tradeserve's registry (creating the embedded store)."""
    settings = settings or get_settings()
    if settings.embedded:
        settings.home_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(settings.effective_tracking_uri)
    # Both setters also export MLFLOW_*_URI to os.environ (inherited by child processes);
    # the registry URI is set only when it differs, MLflow otherwise follows the tracking URI.
    if settings.registry_uri:
        mlflow.set_registry_uri(settings.registry_uri)
    return settings


def client(settings: Settings | None = None) -> MlflowClient:
    """A client for tradeserve's registry."""
    settings = configure(settings)
    return MlflowClient(
        tracking_uri=settings.effective_tracking_uri,
        registry_uri=settings.registry_uri or settings.effective_tracking_uri,
    )


def ensure_experiment(settings: Settings | None = None) -> str:
    """Create (once) and activate the training experiment; return its id."""
    settings = configure(settings)
    mlflow_client = client(settings)
    with translate_errors():
        experiment = mlflow_client.get_experiment_by_name(settings.experiment)
        if experiment is None:
            experiment_id = mlflow_client.create_experiment(
                settings.experiment, artifact_location=settings.artifact_root
            )
        else:
            experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def name_filter(name: str) -> tuple[str, bool]:
    """An MLflow filter string selecting registered model ``name``, and whether it is exact.

    MLflow's filter parser has no escape sequences (a quote inside a string literal cannot
    be written), and MLflow accepts any character in a name. So a name is quoted with ``'``,
    or with ``"`` when it contains ``'``; one with both quotes or a backslash (which would
    end the literal early) becomes a LIKE pattern with ``_`` in their place, which may also
    match other names: callers keep the exact matches (:func:`versions_of` does).
    """
    if "\\" not in name and "'" not in name:
        return f"name = '{name}'", True
    if "\\" not in name and '"' not in name:
        return f'name = "{name}"', True
    pattern = "".join("_" if char in "'\"\\" else char for char in name)
    return f"name LIKE '{pattern}'", False


def versions_of(
    mlflow_client: MlflowClient, name: str, newest: int | None = None
) -> list[ModelVersion]:
    """The versions of registered model ``name`` (only the ``newest`` ones, newest first,
    when given), whatever characters the name holds."""
    filter_string, exact = name_filter(name)
    options: dict[str, object] = {}
    if newest is not None:
        options["order_by"] = ["version_number DESC"]
        if exact:
            options["max_results"] = newest
    found = mlflow_client.search_model_versions(filter_string, **options)  # type: ignore[arg-type]
    versions = [version for version in found if version.name == name]
    return versions if newest is None else versions[:newest]


def is_not_found(error: MlflowException) -> bool:
    return error.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


@contextlib.contextmanager
def translate_errors(subject: str | None = None) -> Iterator[None]:
    """Turn MLflow connection and lookup failures into tradeserve errors with clear text."""
    settings = get_settings()
    try:
        yield
    except RestException as error:
        if is_not_found(error):
            raise ModelNotFoundError(
                _first_line(error.message)
                if subject is None
                else f"{subject} does not exist in the registry"
            ) from error
        raise
    except MlflowException as error:
        text = str(error)
        if "API request to" in text and ("failed" in text or "exceeded" in text):
            raise RegistryUnavailableError(
                f"cannot reach the MLflow registry at {settings.effective_tracking_uri}"
            ) from error
        if is_not_found(error):
            raise ModelNotFoundError(
                _first_line(text)
                if subject is None
                else f"{subject} does not exist in the registry"
            ) from error
        raise
    except OSError as error:
        raise RegistryUnavailableError(
            f"cannot reach the MLflow registry at {settings.effective_tracking_uri}: {error}"
        ) from error


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
