"""Chronos logging: register a model folder as a version of ``chronos-*``.

The folder (local, Hugging Face cache or ``s3://``, see
:mod:`training_hooks.chronos.sources`) is logged as the artifact of the tradeserve pyfunc,
with its :class:`~training_hooks.chronos.validation.ChronosModelInfo` as model config.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from registry.families import Family
from training_hooks.chronos.runtime import kind_of_name
from training_hooks.chronos.sources import fetch_model_folder
from training_hooks.chronos.validation import (
    DEFAULT_PREDICTION_LENGTH,
    DEFAULT_QUANTILE_LEVELS,
    ChronosModelInfo,
    ChronosSourceError,
    validate_num_samples,
    validate_prediction_length,
    validate_quantile_levels,
)
from training_hooks.registration import Lineage, RegisteredVersion, log_pyfunc_model


def example_frame() -> pd.DataFrame:
    """A tiny deterministic input example (two series, no missing values)."""
    steps = np.arange(48, dtype=np.float64)
    return pd.DataFrame(
        {
            "item_id": ["seasonal", "trend"],
            "target": [
                np.round(10.0 + np.sin(steps / 4.0), 4).tolist(),
                np.round(1.0 + 0.05 * steps[:40], 4).tolist(),
            ],
        }
    )


def default_params(
    info: ChronosModelInfo, prediction_length: int, quantile_levels: Sequence[float]
) -> dict[str, Any]:
    """Signature params with their defaults (T5 adds ``num_samples`` and ``seed``)."""
    params: dict[str, Any] = {
        "prediction_length": validate_prediction_length(prediction_length, info),
        "quantile_levels": list(validate_quantile_levels(quantile_levels, info)),
    }
    if info.kind == "t5":
        params |= {"num_samples": validate_num_samples(None, info), "seed": 0}
    return params


def log_chronos(
    name: str,
    source: str | Path,
    *,
    lineage: Lineage,
    untrained: bool = False,
    metrics: Mapping[str, float] | None = None,
    prediction_length: int = DEFAULT_PREDICTION_LENGTH,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
    description: str | None = None,
) -> RegisteredVersion:
    """Log a Chronos model folder as a new version of ``name`` and register it.

    ``source``: local folder, cached Hugging Face id or ``s3://`` prefix (see
    :func:`fetch_model_folder`). ``prediction_length``/``quantile_levels`` are the defaults
    of the signature params and of the logged example's forecast.
    """
    expected_kind = kind_of_name(name)
    with tempfile.TemporaryDirectory(prefix="tradeserve-chronos-") as tmp:
        folder = fetch_model_folder(source, Path(tmp) / "model")
        info = ChronosModelInfo.from_folder(folder)
        if info.kind != expected_kind:
            raise ChronosSourceError(
                f"{source} holds a chronos {info.kind} model; "
                f"'{name}' needs a {expected_kind} model"
            )
        return log_pyfunc_model(
            name=name,
            family=Family.CHRONOS,
            artifact_dir=folder,
            model_config=info.model_dump(),
            input_example=example_frame(),
            lineage=lineage,
            params=default_params(info, prediction_length, quantile_levels),
            metrics=metrics,
            metadata={"chronos": info.model_dump()},
            tags={
                "chronos_kind": info.kind,
                "untrained": str(untrained).lower(),
                "source": str(source),
            },
            description=description,
        )
