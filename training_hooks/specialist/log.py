"""Specialist logging: register a trained specialist as a version of ``specialist-<role>``
with its input example, label definition tags and data-window lineage."""

from __future__ import annotations

import pandas as pd

from registry.families import Family, specialist_name
from training_hooks.registration import Lineage, RegisteredVersion, log_pyfunc_model
from training_hooks.specialist.train import SpecialistTraining


def log_specialist(
    role: str,
    result: SpecialistTraining,
    input_example: pd.DataFrame,
    *,
    data_source: str,
    regime_version: RegisteredVersion | None = None,
    description: str | None = None,
) -> RegisteredVersion:
    """Log a trained specialist as a new version of ``specialist-<role>``."""
    tags = {
        "role": role,
        "feature_spec_version": result.config.feature_spec.version,
        "actions": ",".join(result.config.actions),
        "validation_scope": result.validation_scope,
        "label_horizon": str(result.config.labels.horizon),
        "label_threshold": str(result.config.labels.threshold),
    }
    if regime_version is not None:
        tags["regime_detector"] = f"{regime_version.name}/{regime_version.version}"
    lineage = Lineage(
        data_source=data_source,
        data_window_start=result.train_start,
        data_window_end=result.train_end,
    )
    return log_pyfunc_model(
        name=specialist_name(role),
        family=Family.SPECIALIST,
        artifact_dir=result.artifact_dir,
        model_config={"role": role},
        input_example=input_example,
        lineage=lineage,
        params=None,
        metrics=result.metrics,
        metadata={
            "role": role,
            "actions": list(result.config.actions),
            "feature_spec": result.config.feature_spec.model_dump(mode="json"),
        },
        tags=tags,
        description=description or f"{role} regime specialist: MLP policy over HOLD/BUY/SELL",
    )
