"""Log a specialist network that did not come out of training (random, corrupted or edited
copies) as a new registered version, through the real training hook."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd

from training_hooks.registration import RegisteredVersion
from training_hooks.specialist.log import log_specialist
from training_hooks.specialist.runtime import PolicyNetwork, SpecialistConfig
from training_hooks.specialist.train import SpecialistTraining


def log_saved_specialist(
    role: str,
    folder: Path,
    network: PolicyNetwork,
    example: pd.DataFrame,
    *,
    data_source: str,
    metrics: dict[str, float] | None = None,
    train_window: tuple[date, date] = (date(2000, 1, 3), date(2012, 12, 31)),
) -> RegisteredVersion:
    """Log the specialist saved in ``folder`` (``save_specialist``) as ``specialist-<role>``."""
    config = SpecialistConfig.model_validate_json((folder / "config.json").read_text())
    result = SpecialistTraining(
        role=role,
        artifact_dir=folder,
        config=config,
        metrics=metrics or {"val_accuracy": 0.5},
        validation_scope="all",
        early_stopping="validation",
        network=network,
        train_start=train_window[0],
        train_end=train_window[1],
    )
    return log_specialist(role, result, example, data_source=data_source)
