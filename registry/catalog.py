"""What the registry holds: one summary per registered model (for `tradeserve models`)."""

from __future__ import annotations

from datetime import datetime

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from pydantic import BaseModel, Field

from registry import audit, store
from registry.errors import InvalidModelNameError
from registry.families import family_of
from registry.settings import get_settings


class ModelSummary(BaseModel):
    """One registered model and its promoted version."""

    family: str
    name: str
    version: str | None = Field(description="Version holding the alias (or legacy stage)")
    alias: str | None = Field(description="Alias the version holds; None if found by stage")
    stage: str | None
    versions: int
    validation_status: str | None
    last_promotion: datetime | None


def list_models(client: MlflowClient | None = None) -> list[ModelSummary]:
    """Summaries of every registered model, ordered by family then name."""
    mlflow_client = client or store.client()
    with store.translate_errors():
        registered = _all_registered_models(mlflow_client)
        summaries = [_summarize(model, mlflow_client) for model in registered]
    return sorted(summaries, key=lambda summary: (summary.family, summary.name))


def _summarize(model: RegisteredModel, client: MlflowClient) -> ModelSummary:
    settings = get_settings()
    versions = store.versions_of(client, model.name)
    aliases = dict(model.aliases or {})
    promoted = _find(versions, aliases.get(settings.alias))
    alias: str | None = settings.alias if promoted else None
    if promoted is None:
        staged = [v for v in versions if v.current_stage == settings.legacy_stage]
        promoted = max(staged, key=lambda v: int(v.version)) if staged else None
    entries = audit.model_history(versions, aliases)
    last = max((entry.time for entry in entries if entry.passed), default=None)
    return ModelSummary(
        family=model.tags.get("family") or _family_name(model.name),
        name=model.name,
        version=str(promoted.version) if promoted else None,
        alias=alias,
        stage=promoted.current_stage if promoted else None,
        versions=len(versions),
        validation_status=(promoted.tags or {}).get("validation_status") if promoted else None,
        last_promotion=last,
    )


def _find(versions: list[ModelVersion], number: str | None) -> ModelVersion | None:
    return next((v for v in versions if str(v.version) == str(number)), None) if number else None


def _family_name(name: str) -> str:
    try:
        return family_of(name).value
    except InvalidModelNameError:
        return "unknown"


def _all_registered_models(client: MlflowClient) -> list[RegisteredModel]:
    models: list[RegisteredModel] = []
    token = None
    while True:
        page = client.search_registered_models(max_results=200, page_token=token)
        models.extend(page)
        token = page.token
        if not token:
            return models
