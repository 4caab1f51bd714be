"""Import promoted registry versions into the BentoML model store (``tradeserve build``).

Each registered version becomes one BentoML model, tagged ``<name>:v<version>`` (the name
lowercased and reduced to BentoML's tag alphabet) and labelled with its registry lineage,
which :class:`bentos.shared.model_source.ModelSet` reads back when it serves from a bento.
``bentoml.mlflow.import_model`` puts the MLflow model folder at ``path_of("mlflow_model")``.
A version imported before is reused, never downloaded twice.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from pydantic import BaseModel, Field

from bentos.shared.model_source import LABEL_ALIAS, LABEL_FAMILY, LABEL_NAME, LABEL_VERSION
from registry import store
from registry.errors import TradeserveError
from registry.resolve import ResolvedVersion

LABEL_RUN_ID = "run_id"
LABEL_SOURCE = "source_uri"
LABEL_STAGE = "stage"
# Labels that identify the artifact: a stored model whose identity labels differ from the
# registry's is a different model under the same tag (e.g. another registry), never reused.
IDENTITY_LABELS = (LABEL_NAME, LABEL_VERSION, LABEL_RUN_ID, LABEL_SOURCE)
_TAG_NAME_MAX = 63
_INVALID = re.compile(r"[^a-z0-9._-]+")


class ImportedModel(BaseModel):
    """A registered version as it sits in the BentoML model store."""

    tag: str = Field(description="BentoML model tag, e.g. factor-spx_ret_1d:v3")
    name: str = Field(description="Registered model name")
    version: str = Field(description="Registered version")
    alias: str | None = Field(description="Alias it was resolved through")
    reused: bool = Field(description="True when the store already held this version")


def bentoml_model_name(registered_name: str) -> str:
    """The BentoML model name of a registered model: lowercase, ``[a-z0-9._-]``, <= 63.

    Names longer than that are cut and get a short hash of the original. Two registered
    names that still map to one BentoML name (they differ only in case) are caught by the
    identity labels when the second is imported.
    """
    name = _INVALID.sub("-", registered_name.lower()).strip("-._") or "model"
    if len(name) <= _TAG_NAME_MAX:
        return name
    digest = hashlib.sha256(registered_name.encode()).hexdigest()[:8]
    return f"{name[: _TAG_NAME_MAX - 9].rstrip('-._')}-{digest}"


def bentoml_tag(resolved: ResolvedVersion) -> str:
    """``<bentoml model name>:v<registered version>``."""
    return f"{bentoml_model_name(resolved.name)}:v{resolved.version}"


def lineage_labels(resolved: ResolvedVersion) -> dict[str, str]:
    """Labels recording where a stored model came from (all values are strings)."""
    return {
        LABEL_FAMILY: resolved.family.value,
        LABEL_NAME: resolved.name,
        LABEL_VERSION: resolved.version,
        LABEL_ALIAS: resolved.alias or "",
        LABEL_STAGE: "" if resolved.stage in (None, "None") else resolved.stage,
        LABEL_RUN_ID: resolved.run_id or "",
        LABEL_SOURCE: resolved.source or "",
    }


def import_version(resolved: ResolvedVersion) -> ImportedModel:
    """Put ``resolved`` into the BentoML model store (or reuse the copy already there)."""
    import bentoml
    from bentoml.exceptions import NotFound

    tag = bentoml_tag(resolved)
    labels = lineage_labels(resolved)
    try:
        existing = bentoml.models.get(tag)
    except NotFound:
        existing = None
    if existing is not None:
        _check_same_artifact(tag, existing.info.labels, labels)
        return _imported(tag, resolved, reused=True)
    store.configure()
    with store.translate_errors(f"artifacts of {resolved.name} version {resolved.version}"):
        bentoml.mlflow.import_model(
            tag,
            resolved.model_uri,
            labels=labels,
            metadata=_metadata(resolved),
        )
    return _imported(tag, resolved, reused=False)


def _imported(tag: str, resolved: ResolvedVersion, reused: bool) -> ImportedModel:
    return ImportedModel(
        tag=tag, name=resolved.name, version=resolved.version, alias=resolved.alias, reused=reused
    )


def _check_same_artifact(tag: str, stored: dict[str, str], wanted: dict[str, str]) -> None:
    different = [key for key in IDENTITY_LABELS if stored.get(key, "") != wanted[key]]
    if different:
        detail = ", ".join(f"{key} {stored.get(key)!r} != {wanted[key]!r}" for key in different)
        raise TradeserveError(
            f"the BentoML store already holds {tag} for another artifact ({detail}); remove it "
            f"with `bentoml models delete {tag}` or use another BENTOML_HOME"
        )


def _metadata(resolved: ResolvedVersion) -> dict[str, Any]:
    """Registry tags worth keeping beside the model (primitive values only)."""
    keep = (
        "validation_status",
        "data_source",
        "data_window_start",
        "data_window_end",
        "code_version",
    )
    return {key: value for key, value in resolved.tags.items() if key in keep}
