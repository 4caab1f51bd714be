"""Factor runtime: a logged factor model loaded for serving, without pickle.

:class:`FactorRuntime` reads a downloaded MLflow xgboost model directory (JSON booster plus
the :class:`~training_hooks.factor.schemas.FactorMetadata` in ``MLmodel``) and predicts
with ``Booster.inplace_predict`` (lock-free, thread-safe). Also here: the family's errors,
name helpers and booster helpers that the service, the gate and the importer share.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.models import Model
from pydantic import ValidationError

from registry.errors import TradeserveError
from registry.families import Family, check_name
from training_hooks.factor.schemas import (
    DimFactor,
    FactorMetadata,
    FactorPayload,
    PayloadMetadata,
)

log = logging.getLogger(__name__)

NAME_PREFIX = "factor-"
DEFAULT_NTHREAD = 1


class FactorMismatchError(TradeserveError):
    """Input columns do not match the model's factors."""

    def __init__(self, model: str, missing: Sequence[str], extra: Sequence[str]) -> None:
        self.missing = list(missing)
        self.extra = list(extra)
        parts = []
        if self.missing:
            parts.append(f"missing factors: {', '.join(self.missing)}")
        if self.extra:
            parts.append(f"unexpected factors: {', '.join(self.extra)}")
        super().__init__(f"{model}: {'; '.join(parts)}")


class FactorInputError(TradeserveError):
    """Input values have the wrong shape or length."""


class FactorModelError(TradeserveError):
    """A factor model or its metadata is unusable (wrong flavor, inconsistent factors)."""


# ── naming and booster helpers ───────────────────────────────────────────────────────


def factor_model_name(group_key: str) -> str:
    """Registered name of an artifact group, e.g. ``factor-SPX_ret_1d``."""
    name = f"{NAME_PREFIX}{group_key}"
    check_name(name, Family.FACTOR)
    return name


def group_key_of(name: str) -> str:
    check_name(name, Family.FACTOR)
    return name.removeprefix(NAME_PREFIX)


def booster_objective(booster: xgb.Booster) -> str:
    """The booster's objective name, e.g. ``reg:squarederror``."""
    return json.loads(booster.save_config())["learner"]["objective"]["name"]


def named_booster(booster: xgb.Booster, factors: Sequence[str]) -> xgb.Booster:
    """A copy of ``booster`` whose feature names are ``factors`` (checked, never guessed)."""
    factors = list(factors)
    if len(set(factors)) != len(factors):
        raise FactorModelError("factor names must be unique")
    if booster.num_features() != len(factors):
        raise FactorModelError(
            f"booster has {booster.num_features()} features but {len(factors)} factors were given"
        )
    if booster.feature_names is not None and list(booster.feature_names) != factors:
        raise FactorModelError(
            "booster feature names differ from the factor list: "
            f"{booster.feature_names} != {factors}"
        )
    named = booster.copy()
    named.feature_names = factors
    return named


# ── runtime ──────────────────────────────────────────────────────────────────────────


class FeatureRuntime:
    """A model over named numeric features in a fixed order (an XGBoost booster here):
    what factor and tabular models share, from request checks to output naming."""

    def __init__(
        self, name: str, features: Sequence[str], objective: str, booster: xgb.Booster | None
    ) -> None:
        self.booster = booster
        self._name = name
        self._objective = objective
        self._factors = tuple(features)
        self._index = {feature: dim for dim, feature in enumerate(self._factors)}
        self.loaded_at = datetime.now(UTC).replace(microsecond=0).isoformat()

    @property
    def factors(self) -> tuple[str, ...]:
        """Feature (factor) names in input-dimension order."""
        return self._factors

    @property
    def name(self) -> str:
        return self._name

    @property
    def objective(self) -> str:
        return self._objective

    def predict_rows(self, rows: np.ndarray) -> np.ndarray:
        """Raw booster output for ``rows`` of shape (N, F), columns in factor order."""
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != len(self._factors):
            raise FactorInputError(
                f"{self.name}: expected rows of shape (N, {len(self._factors)}), got {rows.shape}"
            )
        return self.booster.inplace_predict(rows, validate_features=False)

    def align_columns(self, features: Mapping[str, Sequence[float]]) -> np.ndarray:
        """Column-oriented ``{factor: values}`` → (N, F) float32 array in factor order."""
        self._check_names(features.keys())
        columns = [np.asarray(features[factor], dtype=np.float32) for factor in self._factors]
        lengths = {column.shape for column in columns}
        if len(lengths) != 1 or columns[0].ndim != 1:
            raise FactorInputError(
                f"{self.name}: every factor needs one flat list of the same length; "
                f"got shapes {sorted(lengths)}"
            )
        return np.stack(columns, axis=1)

    def request_matrix(
        self,
        rows: Sequence[Sequence[float | None]] | None = None,
        features: Mapping[str, Sequence[float | None]] | None = None,
        max_rows: int | None = None,
    ) -> np.ndarray:
        """The (N, F) float32 matrix of one request: ``rows`` in factor order, or
        ``features`` keyed by factor name; None (JSON null) and NaN mean missing, which
        XGBoost handles. :class:`FactorInputError` says what to fix."""
        if (rows is None) == (features is None):
            raise FactorInputError("send exactly one of 'rows' or 'features'")
        if features is not None:
            matrix = self.align_columns(
                {name: _floats(values) for name, values in features.items()}
            )
        else:
            width = len(self._factors)
            bad = next((i for i, row in enumerate(rows or []) if len(row) != width), None)
            if bad is not None:
                raise FactorInputError(
                    f"rows[{bad}] has {len(rows[bad])} values; each row needs {width} values "
                    f"in this order: {', '.join(self._factors)}"
                )
            matrix = np.asarray([_floats(row) for row in rows or []], dtype=np.float32)
        if len(matrix) == 0:
            raise FactorInputError("no rows to predict; send at least one")
        if max_rows is not None and len(matrix) > max_rows:
            raise FactorInputError(f"{len(matrix)} rows in one request; the limit is {max_rows}")
        if np.isinf(matrix).any():
            raise FactorInputError("features contain inf; use null (or NaN) for missing values")
        return matrix

    def predict(self, frame: pd.DataFrame, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """``prediction`` (+ ``proba_<class>`` for classifiers) for a frame of factor columns."""
        self._check_names(frame.columns)
        raw = self.predict_rows(frame[list(self._factors)].to_numpy(dtype=np.float32))
        return self.output_frame(raw, index=frame.index)

    def output_columns(self, raw: np.ndarray) -> dict[str, np.ndarray]:
        """Name raw booster output: regression → ``prediction``; classifiers add
        ``proba_<class>`` columns and predict the most probable class. No pandas: this is
        the serving hot path."""
        if self.objective == "binary:logistic":
            proba = np.column_stack([1.0 - raw, raw])
        elif self.objective == "multi:softprob":
            proba = np.asarray(raw).reshape(len(raw), -1)
        else:
            return {"prediction": np.asarray(raw, dtype=float)}
        columns = {f"proba_{k}": proba[:, k].astype(float) for k in range(proba.shape[1])}
        return {"prediction": proba.argmax(axis=1), **columns}

    def output_frame(self, raw: np.ndarray, index: pd.Index | None = None) -> pd.DataFrame:
        """:meth:`output_columns` as a frame (the pyfunc ``predict`` output)."""
        return pd.DataFrame(self.output_columns(raw), index=index)

    @classmethod
    def check_output(
        cls, frame: pd.DataFrame, output: pd.DataFrame, params: Mapping[str, Any] | None = None
    ) -> list[str]:
        """One output row per input row, all values finite (runtime or raw pyfunc output)."""
        problems = []
        if len(output) != len(frame):
            problems.append(f"expected {len(frame)} output rows, got {len(output)}")
        values = output.select_dtypes(include="number").to_numpy(dtype=float)
        if values.size == 0:
            problems.append("the output has no numeric prediction column")
        elif not np.isfinite(values).all():
            problems.append("the output has non-finite predictions")
        return problems

    def _check_names(self, names: Any) -> None:
        given = [str(name) for name in names]
        present = set(given)
        missing = [factor for factor in self._factors if factor not in present]
        extra = [name for name in given if name not in self._index]
        if missing or extra:
            raise FactorMismatchError(self.name, missing, extra)


class FactorRuntime(FeatureRuntime):
    """A loaded factor model: booster + factor list + IC table + training info."""

    family: ClassVar[Family] = Family.FACTOR

    def __init__(
        self,
        booster: xgb.Booster,
        metadata: FactorMetadata,
        *,
        source_root_path: str,
        model_json_path: str,
        model_json: str | None = None,
    ) -> None:
        """``model_json``: the booster's JSON as logged (None: rendered from ``booster``);
        the two paths say where the model lives in the registry's artifact store."""
        super().__init__(metadata.model_name, metadata.factors, metadata.objective, booster)
        self.metadata = metadata
        self.source_root_path = source_root_path
        self.model_json_path = model_json_path
        self._logged_json = model_json

    @classmethod
    def load(cls, artifact_dir: Path, config: Mapping[str, Any], device: str = "cpu") -> Self:
        """Load the MLflow model directory (with ``MLmodel``) of a factor model, no pickle.

        ``config`` may set ``nthread`` (threads per prediction call, default 1: OpenMP
        fan-out costs more than it saves for the small batches a service sees, and its
        tail latency explodes on busy hosts). Prediction runs on CPU whatever ``device``
        says: trees over ~10 factors are latency-bound, not FLOPs.
        """
        model_dir = Path(artifact_dir)
        mlmodel = Model.load(model_dir)
        flavor = mlmodel.flavors.get("xgboost")
        if flavor is None:
            raise FactorModelError(f"{model_dir} is not an MLflow xgboost model")
        try:
            metadata = FactorMetadata.model_validate(mlmodel.metadata or {})
        except ValidationError as error:
            raise FactorModelError(
                f"{model_dir} has no tradeserve factor metadata in MLmodel (log it with "
                f"log_factor or import it with registry.importer): {error}"
            ) from error
        booster_path = model_dir / flavor["data"]
        booster = xgb.Booster()
        booster.load_model(booster_path)
        booster = named_booster(booster, metadata.factors)
        booster.set_param({"nthread": int(config.get("nthread", DEFAULT_NTHREAD))})
        if device != "cpu":
            log.info(
                "%s: factor models predict on CPU (device %s ignored)", metadata.model_name, device
            )
        # Everything is read now: the folder may be a temporary download.
        source = str(mlmodel.artifact_path or model_dir).rstrip("/")
        return cls(
            booster,
            metadata,
            source_root_path=source,
            model_json_path=f"{source}/{flavor['data']}",
            model_json=(
                booster_path.read_text(encoding="utf-8") if booster_path.suffix == ".json" else None
            ),
        )

    def payload(self) -> FactorPayload:
        """model_manager's model payload for this model."""
        info = self.metadata.training_info
        return FactorPayload(
            model_json=self._model_json,
            metadata=PayloadMetadata(
                model_name=self.name,
                symbol=info.symbol,
                return_name=info.return_name,
                feature_dim=len(self._factors),
                **info.window(),
                model_json_path=self.model_json_path,
                source_root_path=self.source_root_path,
                scanned_at=self.loaded_at,
            ),
            dim_factors=self.dim_factors(),
        )

    def dim_factors(self) -> list[DimFactor]:
        taus = {entry.factor_name: entry.kendall_tau for entry in self.metadata.ic_table}
        return [
            DimFactor(dim=dim, factor_name=factor, kendall_tau=taus.get(factor))
            for dim, factor in enumerate(self._factors)
        ]

    @functools.cached_property
    def _model_json(self) -> str:
        return self._logged_json or self.booster.save_raw("json").decode()


def _floats(values: Sequence[float | None]) -> list[float]:
    """JSON nulls become NaN, which XGBoost treats as missing."""
    return [np.nan if value is None else value for value in values]
