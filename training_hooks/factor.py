"""Factor family: XGBoost boosters over an ordered list of named factors.

A factor model is logged with MLflow's native xgboost flavor (JSON, never pickle). Its
``MLmodel`` ``metadata`` carries the factor list (dimension i = factor i), the IC table
(Kendall tau of each factor against the target return) and the training information of
the model_manager system this family replaces; the training run also gets the same group
as readable model_manager-style files (``<group>_model.json``, ``_factors.txt``,
``_ic.csv``, ``_info.json``).

:class:`FactorRuntime` loads a downloaded MLflow model directory without pickle and
predicts with ``Booster.inplace_predict`` (lock-free, thread-safe).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import io
import json
import logging
import math
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.models import Model, infer_signature
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy.stats import kendalltau

from registry.errors import TradeserveError
from registry.families import Family, check_name
from training_hooks.features import FEATURE_NAMES, FEATURE_VERSION, compute_features
from training_hooks.market_data import DEMO_SOURCES, DEMO_SPLITS, DataSplits, data_window
from training_hooks.registration import (
    Lineage,
    RegisteredVersion,
    register_logged_model,
    requirements,
    training_run,
)

log = logging.getLogger(__name__)

NAME_PREFIX = "factor-"
ARTIFACT_FOLDER = "factor"
DEFAULT_NTHREAD = 1
SHA_TAG = "source_sha256"


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


# ── schemas ──────────────────────────────────────────────────────────────────────────


class IcEntry(BaseModel):
    """Kendall tau of one factor against the target return (model_manager ``ic.csv`` row)."""

    factor_name: str
    kendall_tau: float | None = None


class FactorTrainingInfo(BaseModel):
    """Training metadata, mirroring model_manager's ``info.pkl`` fields."""

    symbol: str
    return_name: str
    train_start_date: str | None = Field(default=None, description="ISO date of the first row")
    train_end_date: str | None = Field(default=None, description="ISO date of the last row")
    train_window_start_ts: int | None = Field(
        default=None, description="Train window start as an integer timestamp (tradeserve: Unix s)"
    )
    train_window_end_ts: int | None = None
    train_samples: int | None = None
    train_time_sec: float | None = None
    original_factors_count: int | None = None
    final_factors_count: int | None = None
    selected_factors: list[str] = Field(default_factory=list)


class FactorMetadata(BaseModel):
    """What a factor model stores in its ``MLmodel`` ``metadata``."""

    model_config = ConfigDict(extra="ignore")

    family: str = Family.FACTOR.value
    model_name: str
    group_key: str
    objective: str
    factors: list[str]
    ic_table: list[IcEntry] = Field(default_factory=list)
    training_info: FactorTrainingInfo
    feature_version: str | None = Field(
        default=None,
        description="training_hooks.features version when the factors are its features",
    )


class DimFactor(BaseModel):
    """One input dimension of the booster and the factor it reads."""

    dim: int
    factor_name: str
    kendall_tau: float | None = None


class PayloadMetadata(BaseModel):
    """model_manager's ``payload.metadata`` fields."""

    model_name: str
    symbol: str
    return_name: str
    feature_dim: int
    train_window_start_ts: int | None = None
    train_window_end_ts: int | None = None
    train_start_date: str | None = None
    train_end_date: str | None = None
    train_samples: int | None = None
    train_time_sec: float | None = None
    model_json_path: str
    source_root_path: str
    scanned_at: str


class FactorPayload(BaseModel):
    """model_manager's model payload: booster JSON text, metadata, dimension → factor."""

    model_json: str
    metadata: PayloadMetadata
    dim_factors: list[DimFactor]


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


def log_factor_model(
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
    with training_run(name, Family.FACTOR, lineage):
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
            pip_requirements=requirements("mlflow", "xgboost-cpu", "pandas", "numpy"),
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


# ── runtime ──────────────────────────────────────────────────────────────────────────


class FactorRuntime:
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
        self.booster = booster
        self.metadata = metadata
        self.source_root_path = source_root_path
        self.model_json_path = model_json_path
        self._logged_json = model_json
        self.loaded_at = datetime.now(UTC).replace(microsecond=0).isoformat()
        self._factors = tuple(metadata.factors)
        self._index = {factor: dim for dim, factor in enumerate(self._factors)}

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
                f"log_factor_model or import it with registry.importer): {error}"
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

    @property
    def factors(self) -> tuple[str, ...]:
        """Factor names in input-dimension order."""
        return self._factors

    @property
    def name(self) -> str:
        return self.metadata.model_name

    @property
    def objective(self) -> str:
        return self.metadata.objective

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
                train_window_start_ts=info.train_window_start_ts,
                train_window_end_ts=info.train_window_end_ts,
                train_start_date=info.train_start_date,
                train_end_date=info.train_end_date,
                train_samples=info.train_samples,
                train_time_sec=info.train_time_sec,
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


# ── demo: real factors on real index data ────────────────────────────────────────────

DEMO_SYMBOLS = ("SPX", "NASDAQ")
DEMO_RETURN_NAME = "ret_1d"
DEMO_TOP_FACTORS = 10
DEMO_ROUNDS = 100
DEMO_PARAMS: dict[str, Any] = {
    "objective": "reg:squarederror",
    "max_depth": 3,
    "eta": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 20,
    "tree_method": "hist",
    "seed": 0,
    "nthread": 1,
}
TARGET = "target"


def demo_dataset(bars: pd.DataFrame, splits: DataSplits = DEMO_SPLITS) -> dict[str, pd.DataFrame]:
    """Features at day t plus the next-day log return (``target``), split by realization.

    Bars after ``splits.validation_end`` are dropped before anything is computed, and a
    row belongs to the split in which its target is realized, so no train row sees a
    validation-period return. Keys: ``train``, ``validation`` (``test`` stays empty).
    """
    bars = bars.loc[: pd.Timestamp(splits.validation_end)]
    features = compute_features(bars)
    log_close = np.log(bars["close"])
    target = (log_close.shift(-1) - log_close).reindex(features.index)
    realized_on = pd.Series(bars.index, index=bars.index).shift(-1).reindex(features.index)
    keep = target.notna().to_numpy()
    frame = features.assign(**{TARGET: target, "feature_date": features.index})[keep]
    parts = splits.split(frame.set_index(pd.DatetimeIndex(realized_on[keep])))
    return {key: part.set_index("feature_date").rename_axis("date") for key, part in parts.items()}


def select_factors(ic_table: Sequence[IcEntry], top: int = DEMO_TOP_FACTORS) -> list[str]:
    """The ``top`` factors by |Kendall tau| (ties keep table order)."""
    ranked = sorted(
        (entry for entry in ic_table if entry.kendall_tau is not None),
        key=lambda entry: -abs(entry.kendall_tau or 0.0),
    )
    return [entry.factor_name for entry in ranked[:top]]


def evaluate_returns(predicted: np.ndarray, realized: np.ndarray) -> dict[str, float]:
    """RMSE, IC (Kendall tau) and directional hit rate of return predictions."""
    predicted, realized = np.asarray(predicted, float), np.asarray(realized, float)
    moved = realized != 0
    hits = np.sign(predicted[moved]) == np.sign(realized[moved])
    return {
        "rmse": float(np.sqrt(np.mean((predicted - realized) ** 2))),
        "ic": float(kendalltau(predicted, realized).statistic),
        "hit_rate": float(hits.mean()),
    }


@dataclass(frozen=True)
class DemoFit:
    """One trained demo model before it is logged."""

    group_key: str
    booster: xgb.Booster
    factors: list[str]
    ic_table: list[IcEntry]
    info: FactorTrainingInfo
    metrics: dict[str, float]
    example: pd.DataFrame


def fit_demo_factor_model(symbol: str, bars: pd.DataFrame) -> DemoFit:
    """Select factors on train (1999-2012), fit, evaluate on validation (2013-2014)."""
    data = demo_dataset(bars)
    train, valid = data["train"], data["validation"]
    ic_table = ic_table_for(train[list(FEATURE_NAMES)], train[TARGET])
    factors = select_factors(ic_table)
    started = time.perf_counter()
    booster = xgb.train(DEMO_PARAMS, xgb.DMatrix(train[factors], label=train[TARGET]), DEMO_ROUNDS)
    train_time = time.perf_counter() - started
    booster.set_param({"nthread": DEFAULT_NTHREAD})
    predicted = booster.inplace_predict(valid[factors].to_numpy(dtype=np.float32))
    scores = evaluate_returns(predicted, valid[TARGET].to_numpy())
    baseline = evaluate_returns(np.zeros(len(valid)), valid[TARGET].to_numpy())
    metrics = {f"val_{key}": value for key, value in scores.items()}
    metrics["val_rmse_zero_baseline"] = baseline["rmse"]
    return DemoFit(
        group_key=f"{symbol}_{DEMO_RETURN_NAME}",
        booster=booster,
        factors=factors,
        ic_table=ic_table,
        info=_demo_info(symbol, train, factors, train_time),
        metrics=metrics,
        example=valid[factors].head(3).reset_index(drop=True),
    )


def _demo_info(
    symbol: str, train: pd.DataFrame, factors: list[str], train_time: float
) -> FactorTrainingInfo:
    start, end = train.index[0], train.index[-1]
    return FactorTrainingInfo(
        symbol=symbol,
        return_name=DEMO_RETURN_NAME,
        train_start_date=start.date().isoformat(),
        train_end_date=end.date().isoformat(),
        train_window_start_ts=int(start.timestamp()),
        train_window_end_ts=int(end.timestamp()),
        train_samples=len(train),
        train_time_sec=round(train_time, 4),
        original_factors_count=len(FEATURE_NAMES),
        final_factors_count=len(factors),
        selected_factors=factors,
    )


def train_demo_factor_models(
    market: Mapping[str, pd.DataFrame], workdir: Path
) -> list[RegisteredVersion]:
    """Train and register ``factor-<SYMBOL>_ret_1d`` for SPX and NASDAQ (real OHLCV bars).

    Each group is also written to ``workdir`` in model_manager's layout, so the export can
    be re-imported (the importer recognises it as unchanged).
    """
    missing = [symbol for symbol in DEMO_SYMBOLS if symbol not in market]
    if missing:
        raise FactorInputError(f"demo market data lacks {', '.join(missing)}")
    return [_register_demo_model(symbol, market[symbol], Path(workdir)) for symbol in DEMO_SYMBOLS]


def _register_demo_model(symbol: str, bars: pd.DataFrame, workdir: Path) -> RegisteredVersion:
    fit = fit_demo_factor_model(symbol, bars)
    write_artifact_group(workdir, fit.group_key, fit.booster, fit.factors, fit.ic_table, fit.info)
    first_bar, last_bar = data_window({symbol: bars}, DEMO_SPLITS.validation_end)
    lineage = Lineage(
        data_source=DEMO_SOURCES.get(symbol, symbol),
        data_window_start=first_bar,
        data_window_end=last_bar,
        extra={"feature_version": FEATURE_VERSION},
    )
    return log_factor_model(
        factor_model_name(fit.group_key),
        fit.booster,
        factors=fit.factors,
        ic_table=fit.ic_table,
        training_info=fit.info,
        lineage=lineage,
        metrics=fit.metrics,
        input_example=fit.example,
        description=f"Next-day log return of {symbol} from causal OHLCV factors.",
        feature_version=FEATURE_VERSION,
    )
