"""Factor logging: register a booster as a version of ``factor-<group>``.

A factor model is logged with MLflow's native xgboost flavor (JSON, never pickle), its
:class:`~training_hooks.factor.schemas.FactorMetadata` in ``MLmodel`` ``metadata``. The
training run also gets the group as readable model_manager-style files
(``<group>_model.json``, ``_factors.txt``, ``_ic.csv``, ``_info.json``), which
``registry.importer`` reads back.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.models import infer_signature
from scipy.stats import kendalltau

from registry.families import Family, check_name
from training_hooks.factor.runtime import (
    FactorMismatchError,
    booster_objective,
    group_key_of,
    named_booster,
)
from training_hooks.factor.schemas import FactorMetadata, FactorTrainingInfo, IcEntry
from training_hooks.portable import model_dependencies
from training_hooks.registration import (
    Lineage,
    RegisteredVersion,
    register_logged_model,
    training_run,
)

ARTIFACT_FOLDER = "factor"
SHA_TAG = "source_sha256"


def model_json_sha256(booster: xgb.Booster) -> str:
    """sha256 of the booster's JSON text (what ``<group>_model.json`` holds)."""
    return hashlib.sha256(booster.save_raw("json")).hexdigest()


def ic_table_for(features: pd.DataFrame, target: pd.Series | np.ndarray) -> list[IcEntry]:
    """Kendall tau of every column of ``features`` against ``target`` (NaN rows dropped)."""
    target = np.asarray(target, dtype=float)
    table = []
    for column in features.columns:
        values = features[column].to_numpy(dtype=float)
        keep = np.isfinite(values) & np.isfinite(target)
        tau = kendalltau(values[keep], target[keep]).statistic if keep.sum() > 2 else math.nan
        table.append(IcEntry(factor_name=str(column), kendall_tau=_finite_or_none(tau)))
    return table


def _finite_or_none(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


# ── model_manager artifact group files ───────────────────────────────────────────────


def write_artifact_group(
    directory: Path,
    group_key: str,
    booster: xgb.Booster,
    factors: Sequence[str],
    ic_table: Sequence[IcEntry],
    info: FactorTrainingInfo,
) -> list[Path]:
    """Write one model_manager artifact group (JSON model, factors, IC csv, info JSON)."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "_model.json": booster.save_raw("json").decode(),
        "_factors.txt": "".join(f"{factor}\n" for factor in factors),
        "_ic.csv": _ic_csv(ic_table, info),
        "_info.json": info.model_dump_json(indent=2),
    }
    written = []
    for suffix, text in files.items():
        path = directory / f"{group_key}{suffix}"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def _ic_csv(ic_table: Sequence[IcEntry], info: FactorTrainingInfo) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["symbol", "factor_name", "return_name", "Kendall_tau"])
    for entry in ic_table:
        tau = "" if entry.kendall_tau is None else repr(entry.kendall_tau)
        writer.writerow([info.symbol, entry.factor_name, info.return_name, tau])
    return buffer.getvalue()


# ── logging ──────────────────────────────────────────────────────────────────────────


def log_factor(
    name: str,
    booster: xgb.Booster,
    *,
    factors: Sequence[str],
    ic_table: Sequence[IcEntry | Mapping[str, Any]],
    training_info: FactorTrainingInfo | Mapping[str, Any],
    lineage: Lineage,
    metrics: Mapping[str, float] | None = None,
    description: str | None = None,
    input_example: pd.DataFrame | None = None,
    tags: Mapping[str, str] | None = None,
    feature_version: str | None = None,
) -> RegisteredVersion:
    """Log ``booster`` with the xgboost flavor (JSON) and register a version of ``name``.

    ``input_example`` (factor columns) defaults to one row of zeros; ``feature_version`` is
    set when the factors are ``training_hooks.features`` columns. Version tags: symbol,
    return_name, feature_dim, group_key, objective, ``source_sha256`` (of the model JSON;
    the importer passes the source file's) plus ``tags``.
    """
    check_name(name, Family.FACTOR)
    booster = named_booster(booster, factors)
    info = FactorTrainingInfo.model_validate(training_info)
    metadata = FactorMetadata(
        model_name=name,
        group_key=group_key_of(name),
        objective=booster_objective(booster),
        factors=list(factors),
        ic_table=[IcEntry.model_validate(entry) for entry in ic_table],
        training_info=info,
        feature_version=feature_version,
    )
    example = _example_frame(input_example, metadata.factors)
    signature = infer_signature(example, _predict_frame(booster, example))
    with (
        training_run(name, Family.FACTOR, lineage),
        model_dependencies(flavor="xgboost") as dependencies,
    ):
        if metrics:
            mlflow.log_metrics({key: float(value) for key, value in metrics.items()})
        _log_group_files(metadata, booster)
        model_info = mlflow.xgboost.log_model(
            booster,
            name=name,
            model_format="json",
            signature=signature,
            input_example=example,
            metadata=metadata.model_dump(mode="json"),
            pip_requirements=dependencies.pip_requirements,
        )
        return register_logged_model(
            model_info,
            name=name,
            family=Family.FACTOR,
            lineage=lineage,
            metrics=metrics,
            tags={**_version_tags(metadata, booster), **(tags or {})},
            description=description,
        )


def _example_frame(example: pd.DataFrame | None, factors: list[str]) -> pd.DataFrame:
    if example is None:
        return pd.DataFrame(np.zeros((1, len(factors))), columns=factors)
    missing = [factor for factor in factors if factor not in example.columns]
    if missing:
        raise FactorMismatchError("input_example", missing, [])
    return example[factors].astype(float).reset_index(drop=True)


def _predict_frame(booster: xgb.Booster, frame: pd.DataFrame) -> np.ndarray:
    return booster.inplace_predict(frame.to_numpy(dtype=np.float32), validate_features=False)


def _version_tags(metadata: FactorMetadata, booster: xgb.Booster) -> dict[str, str]:
    return {
        SHA_TAG: model_json_sha256(booster),
        "symbol": metadata.training_info.symbol,
        "return_name": metadata.training_info.return_name,
        "group_key": metadata.group_key,
        "feature_dim": str(len(metadata.factors)),
        "objective": metadata.objective,
    }


def _log_group_files(metadata: FactorMetadata, booster: xgb.Booster) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        write_artifact_group(
            Path(tmp),
            metadata.group_key,
            booster,
            metadata.factors,
            metadata.ic_table,
            metadata.training_info,
        )
        mlflow.log_artifacts(tmp, ARTIFACT_FOLDER)
