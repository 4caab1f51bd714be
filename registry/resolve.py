"""Find the promoted version of a registered model: alias first, legacy stage second."""

from __future__ import annotations

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, Field

from registry import store
from registry.errors import ModelNotFoundError, NotPromotedError
from registry.families import Family, family_of
from registry.settings import get_settings


class ResolvedVersion(BaseModel):
    """A concrete registered version, with how it was found."""

    name: str
    version: str
    family: Family
    alias: str | None = Field(description="Alias it was resolved through, if any")
    stage: str | None = Field(default=None, description="Legacy stage of the version")
    run_id: str | None = None
    source: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)

    @property
    def model_uri(self) -> str:
        """Concrete URI; load this, never the alias, so the version cannot move underneath."""
        return f"models:/{self.name}/{self.version}"


def resolve(
    name: str, alias: str | None = None, client: MlflowClient | None = None
) -> ResolvedVersion:
    """The version of ``name`` promoted under ``alias`` (default: the configured alias).

    Falls back to the newest version in the legacy stage (``Production``) for registries
    promoted through stages; raises :class:`NotPromotedError` when neither exists.
    """
    settings = get_settings()
    alias = alias or settings.alias
    mlflow_client = client or store.client()
    with store.translate_errors(f"registered model '{name}'"):
        version = _by_alias(mlflow_client, name, alias)  # one light query: live mode polls it
        if version is not None:
            return to_resolved(version, alias=alias)
        mlflow_client.get_registered_model(name)  # a clear error when the model does not exist
        staged = mlflow_client.get_latest_versions(name, stages=[settings.legacy_stage])
    if staged:
        return to_resolved(staged[0], alias=None)
    raise NotPromotedError(
        f"model '{name}' has no version with alias '{alias}' or stage "
        f"'{settings.legacy_stage}'; promote one with `tradeserve promote {name} VERSION`"
    )


def get_version(
    name: str, version: str | int, client: MlflowClient | None = None
) -> ResolvedVersion:
    """A specific version of ``name`` (clear error when it does not exist)."""
    mlflow_client = client or store.client()
    with store.translate_errors(f"registered model '{name}'"):
        mlflow_client.get_registered_model(name)
    with store.translate_errors(f"version {version} of model '{name}'"):
        found = mlflow_client.get_model_version(name, str(version))
    return to_resolved(found, alias=None)


def latest_version(name: str, client: MlflowClient | None = None) -> ResolvedVersion:
    """The newest version of ``name``."""
    mlflow_client = client or store.client()
    with store.translate_errors(f"registered model '{name}'"):
        versions = store.versions_of(mlflow_client, name)
    if not versions:
        raise ModelNotFoundError(f"registered model '{name}' has no versions")
    return to_resolved(max(versions, key=lambda v: int(v.version)), alias=None)


def to_resolved(version: ModelVersion, alias: str | None) -> ResolvedVersion:
    return ResolvedVersion(
        name=version.name,
        version=str(version.version),
        family=Family(version.tags.get("family") or family_of(version.name)),
        alias=alias,
        stage=version.current_stage,
        run_id=version.run_id,
        source=version.source,
        tags=dict(version.tags or {}),
    )


def _by_alias(mlflow_client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if store.is_not_found(error) or "alias" in str(error).lower():
            return None
        raise


__all__ = [
    "ModelNotFoundError",
    "NotPromotedError",
    "ResolvedVersion",
    "get_version",
    "latest_version",
    "resolve",
]
