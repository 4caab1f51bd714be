"""Tabular runtime: an XGBoost or scikit-learn model as MLflow's own flavors logged it.

A tabular model is served exactly like a factor model: both are a
:class:`~training_hooks.factor.runtime.FeatureRuntime` (request handling: columns matched by
name, nulls as missing, inf, width and row-limit checks, the gate's ``predict``; output
naming for boosters). What differs is where the model comes from: the feature order
is the booster's feature names, the estimator's ``feature_names_in_`` or the logged
signature, never factor metadata.

XGBoost loads natively from its JSON/UBJ file. A scikit-learn model is a pickle (or a skops
file that names its own trusted types): it is loaded only when the operator trusts it
(:func:`registry.trust.require_sklearn_trust`), otherwise loading fails saying how to.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.models import Model

from registry.families import Family
from registry.trust import require_sklearn_trust
from training_hooks.factor.runtime import (
    DEFAULT_NTHREAD,
    FactorInputError,
    FactorModelError,
    FeatureRuntime,
    booster_objective,
    named_booster,
)

SKLEARN_OBJECTIVE_PREFIX = "sklearn:"


class TabularRuntime(FeatureRuntime):
    """A loaded tabular model: an XGBoost booster or a scikit-learn estimator, with its
    feature order (and class labels, for scikit-learn classifiers)."""

    family: ClassVar[Family] = Family.TABULAR

    def __init__(
        self,
        name: str,
        features: Sequence[str],
        *,
        objective: str,
        booster: xgb.Booster | None = None,
        estimator: Any = None,
    ) -> None:
        """Exactly one of ``booster`` and ``estimator``."""
        if (booster is None) == (estimator is None):
            raise FactorModelError("a tabular model is either a booster or an estimator")
        super().__init__(name, features, objective, booster)
        self.estimator = estimator
        classes = (
            getattr(estimator, "classes_", None) if hasattr(estimator, "predict_proba") else None
        )
        self.classes: tuple[Any, ...] | None = None if classes is None else tuple(classes.tolist())
        self._named_input = estimator is not None and hasattr(estimator, "feature_names_in_")

    @classmethod
    def load(cls, artifact_dir: Path, config: Mapping[str, Any], device: str = "cpu") -> Self:
        """Load the MLflow model directory of an ``xgboost`` or ``sklearn`` flavored model.

        ``config`` may set ``nthread`` for boosters (as for factor models, default 1).
        Prediction runs on CPU whatever ``device`` says.
        """
        model_dir = Path(artifact_dir)
        mlmodel = Model.load(model_dir)
        name = str((mlmodel.metadata or {}).get("model_name") or model_dir.name)
        logged = _signature_names(mlmodel)
        if (flavor := mlmodel.flavors.get("xgboost")) is not None:
            booster = xgb.Booster()
            booster.load_model(model_dir / flavor["data"])
            features = _feature_order(name, booster.feature_names, logged)
            booster = named_booster(booster, features)
            booster.set_param({"nthread": int(config.get("nthread", DEFAULT_NTHREAD))})
            return cls(name, features, objective=booster_objective(booster), booster=booster)
        if (flavor := mlmodel.flavors.get("sklearn")) is not None:
            require_sklearn_trust(f"the scikit-learn model {name} ({model_dir})")
            estimator = _deserialize(model_dir / flavor["pickled_model"], flavor)
            own = getattr(estimator, "feature_names_in_", None)
            features = _feature_order(name, None if own is None else own.tolist(), logged)
            width = getattr(estimator, "n_features_in_", len(features))
            if width != len(features):
                raise FactorModelError(
                    f"{name}: the estimator reads {width} features but {len(features)} are named"
                )
            objective = SKLEARN_OBJECTIVE_PREFIX + type(estimator).__name__
            return cls(name, features, objective=objective, estimator=estimator)
        raise FactorModelError(
            f"{model_dir} is neither an MLflow xgboost nor an sklearn model "
            f"(flavors: {', '.join(mlmodel.flavors)})"
        )

    def predict_rows(self, rows: np.ndarray) -> np.ndarray:
        """Raw output for ``rows`` (N, F) in feature order: the booster's, or the estimator's
        class probabilities (classifiers) or predictions (others)."""
        if self.estimator is None:
            return super().predict_rows(rows)
        data: Any = np.asarray(rows, dtype=np.float32)
        if self._named_input:  # fitted on a frame: give it one (no warning, named columns)
            data = pd.DataFrame(data, columns=list(self._factors), copy=False)
        try:
            if self.classes is not None:
                return self.estimator.predict_proba(data)
            return np.asarray(self.estimator.predict(data))
        except ValueError as error:  # wrong width, NaN where the estimator takes none, ...
            raise FactorInputError(f"{self.name}: {error}") from error

    def output_columns(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        """``prediction`` (+ ``proba_<class label>`` for scikit-learn classifiers, whose
        prediction is the most probable label); boosters as factor models."""
        if self.estimator is None:
            return super().output_columns(raw)
        if self.classes is None:
            return {"prediction": np.asarray(raw, dtype=float)}
        proba = np.asarray(raw, dtype=float)
        columns = {f"proba_{label}": proba[:, k] for k, label in enumerate(self.classes)}
        return {"prediction": np.asarray(self.classes)[proba.argmax(axis=1)], **columns}


def _signature_names(mlmodel: Model) -> list[str] | None:
    """Column names of the logged signature's inputs, if it names them."""
    signature = mlmodel.signature
    if signature is None or not signature.inputs.has_input_names():
        return None
    return [str(name) for name in signature.inputs.input_names()]


def _feature_order(name: str, own: Sequence[str] | None, logged: Sequence[str] | None) -> list[str]:
    """The model's own feature names, else the logged signature's; one of them is needed to
    match request columns by name."""
    features = list(own or logged or [])
    if not features:
        raise FactorModelError(
            f"{name} names no features: fit it on a DataFrame or log it with a signature "
            "(training_hooks.tabular.log.log_tabular does both)"
        )
    return features


def _deserialize(path: Path, flavor: Mapping[str, Any]) -> Any:
    """Read a trusted scikit-learn model file in the format MLflow saved it."""
    serialization = flavor.get("serialization_format", "pickle")
    if serialization == "skops":
        import skops.io

        return skops.io.load(path, trusted=flavor.get("skops_trusted_types"))
    with path.open("rb") as file:
        if serialization == "cloudpickle":
            import cloudpickle

            return cloudpickle.load(file)
        return pickle.load(file)
