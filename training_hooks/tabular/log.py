"""Tabular logging: register an XGBoost or scikit-learn model as a version of any name.

XGBoost models (a ``Booster`` or its scikit-learn wrapper) are logged with MLflow's xgboost
flavor as JSON; scikit-learn estimators with the sklearn flavor as a pickle (what N1V1's
users log; loading it needs the operator's trust, see :mod:`registry.trust`). Either way the
version carries a signature, an input example (what the promotion gate runs), the
``family=tabular`` tag, lineage and metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.models import infer_signature

from registry.families import Family, check_name
from training_hooks.factor.runtime import FactorMismatchError
from training_hooks.portable import model_dependencies
from training_hooks.registration import (
    Lineage,
    RegisteredVersion,
    register_logged_model,
    training_run,
)

FLAVOR_TAG = "flavor"


def log_tabular(
    name: str,
    model: Any,
    *,
    input_example: pd.DataFrame,
    lineage: Lineage,
    metrics: Mapping[str, float] | None = None,
    description: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> RegisteredVersion:
    """Log ``model`` and register a new version of ``name`` (family ``tabular``).

    ``input_example`` holds the feature columns (a few rows); when the model knows its
    feature names (fitted on a DataFrame) the example is put in that order, and its
    columns name the features otherwise. Version tags: ``flavor`` (xgboost or sklearn),
    ``feature_dim``, plus ``tags``.
    """
    check_name(name, Family.TABULAR)
    booster = model if isinstance(model, xgb.Booster) else None
    if booster is None and isinstance(model, xgb.XGBModel):
        booster = model.get_booster()
    example = _example_frame(input_example, _own_features(model, booster))
    signature = infer_signature(example, _predict(model, booster, example))
    flavor = "xgboost" if booster is not None else "sklearn"
    common: dict[str, Any] = {
        "name": name,
        "signature": signature,
        "input_example": example,
        "metadata": {"model_name": name},
    }
    with (
        training_run(name, Family.TABULAR, lineage),
        model_dependencies(flavor=flavor) as dependencies,
    ):
        if metrics:
            mlflow.log_metrics({key: float(value) for key, value in metrics.items()})
        if booster is not None:
            model_info = mlflow.xgboost.log_model(
                model,
                model_format="json",
                pip_requirements=dependencies.pip_requirements,
                **common,
            )
        else:
            model_info = mlflow.sklearn.log_model(
                model,
                serialization_format="pickle",
                pip_requirements=dependencies.pip_requirements,
                **common,
            )
        return register_logged_model(
            model_info,
            name=name,
            family=Family.TABULAR,
            lineage=lineage,
            metrics=metrics,
            tags={FLAVOR_TAG: flavor, "feature_dim": str(example.shape[1]), **(tags or {})},
            description=description,
        )


def _own_features(model: Any, booster: xgb.Booster | None) -> list[str] | None:
    if booster is not None:
        return booster.feature_names
    names = getattr(model, "feature_names_in_", None)
    return None if names is None else [str(name) for name in names]


def _example_frame(example: pd.DataFrame, features: list[str] | None) -> pd.DataFrame:
    """The example's feature columns as floats, in the model's own order when it has one."""
    if features is not None:
        missing = [feature for feature in features if feature not in example.columns]
        if missing:
            raise FactorMismatchError("input_example", missing, [])
        example = example[features]
    return example.astype(float).reset_index(drop=True)


def _predict(model: Any, booster: xgb.Booster | None, example: pd.DataFrame) -> np.ndarray:
    """The model's answer to its example (for the output signature)."""
    if booster is not None:
        return booster.inplace_predict(example.to_numpy(dtype=np.float32))
    if hasattr(model, "predict_proba"):
        return model.predict_proba(example)
    return np.asarray(model.predict(example))
