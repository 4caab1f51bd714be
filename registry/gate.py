"""The promotion gate: a candidate must load, run its input example and pass its checks."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from pydantic import BaseModel, Field

from registry import store
from registry.errors import TradeserveError
from registry.families import Family, runtime_class
from registry.resolve import ResolvedVersion

if TYPE_CHECKING:
    from registry.loading import LoadedModel

_OPERATORS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}
_THRESHOLD = re.compile(r"^\s*([A-Za-z0-9_.\-/ ]+?)\s*(>=|<=|>|<)\s*(-?[0-9.eE+\-]+)\s*$")


class MetricThreshold(BaseModel):
    """A required bound on one of the version's logged metrics, e.g. ``val_accuracy>=0.4``."""

    metric: str
    op: Literal[">=", "<=", ">", "<"]
    value: float

    @classmethod
    def parse(cls, text: str) -> MetricThreshold:
        match = _THRESHOLD.match(text)
        try:
            value = float(match.group(3)) if match else None
        except ValueError:  # the pattern admits non-numbers such as "1.2.3" or "e"
            value = None
        if match is None or value is None:
            raise TradeserveError(
                f"cannot read threshold '{text}'; write it as METRIC>=VALUE (or <=, >, <)"
            )
        return cls(metric=match.group(1), op=match.group(2), value=value)

    def __str__(self) -> str:
        return f"{self.metric}{self.op}{self.value:g}"


class GateReport(BaseModel):
    """Outcome of validating one version."""

    name: str
    version: str
    family: Family
    problems: list[str] = Field(default_factory=list)
    checks: list[str] = Field(default_factory=list, description="Checks that ran")

    @property
    def passed(self) -> bool:
        return not self.problems


def validate_version(
    candidate: ResolvedVersion,
    thresholds: Sequence[MetricThreshold] = (),
    client: MlflowClient | None = None,
) -> GateReport:
    """Load ``candidate`` as services will, run its input example and check the output."""
    from registry.loading import load_version

    report = GateReport(name=candidate.name, version=candidate.version, family=candidate.family)
    try:
        loaded = load_version(candidate)  # its download is removed once loaded
    except Exception as error:  # any load failure is a gate failure, reported with its cause
        report.problems.append(f"cannot load: {_describe(error)}")
        return report
    report.checks.append("load")
    report.problems.extend(check_loaded(loaded))
    report.checks.append("predict input example: shape and finite values")
    if thresholds:
        report.problems.extend(_check_thresholds(candidate, thresholds, client))
        report.checks.append("metric thresholds")
    return report


def check_loaded(loaded: LoadedModel) -> list[str]:
    """Problems found running a loaded version on its own input example."""
    try:
        example = loaded.input_example()
    except Exception as error:
        return [f"cannot read its input example: {_describe(error)}"]
    if example is None:
        return ["no input example was logged with the model"]
    try:
        output = loaded.runtime.predict(example, None)
    except Exception as error:
        return [f"predicting its input example fails: {_describe(error)}"]
    return check_prediction(loaded.resolved.family, example, output)


def check_prediction(family: Family, example: Any, output: Any) -> list[str]:
    """Generic and family-specific problems of ``output`` for input ``example``."""
    frame = _as_frame(output)
    problems = []
    if frame.empty:
        problems.append("the model returned no output for its input example")
    elif not _all_finite(frame):
        problems.append("the model returned non-finite values (NaN or inf)")
    example_frame = _as_frame(example)
    try:
        problems.extend(runtime_class(family).check_output(example_frame, frame, None))
    except Exception as error:
        problems.append(f"output check of the {family.value} family failed: {_describe(error)}")
    return problems


def _check_thresholds(
    candidate: ResolvedVersion, thresholds: Iterable[MetricThreshold], client: MlflowClient | None
) -> list[str]:
    metrics = version_metrics(candidate, client)
    problems = []
    for threshold in thresholds:
        if threshold.metric not in metrics:
            known = ", ".join(sorted(metrics)) or "none"
            problems.append(f"metric '{threshold.metric}' was not logged (logged: {known})")
        elif not _OPERATORS[threshold.op](metrics[threshold.metric], threshold.value):
            problems.append(f"{threshold.metric}={metrics[threshold.metric]:g} fails {threshold}")
    return problems


def version_metrics(
    candidate: ResolvedVersion, client: MlflowClient | None = None
) -> dict[str, float]:
    """Metrics logged for the version's training run."""
    if not candidate.run_id:
        return {}
    mlflow_client = client or store.client()
    with store.translate_errors():
        return dict(mlflow_client.get_run(candidate.run_id).data.metrics)


def _as_frame(value: Any) -> pd.DataFrame:
    if isinstance(value, pd.DataFrame):
        return value
    if isinstance(value, pd.Series):
        return value.to_frame()
    if isinstance(value, Mapping):
        return pd.DataFrame(value)
    array = np.asarray(value)
    return pd.DataFrame(array.reshape(len(array), -1) if array.ndim else array.reshape(1, 1))


def _all_finite(frame: pd.DataFrame) -> bool:
    for column in frame.columns:
        for value in frame[column]:
            if not _finite(value):
                return False
    return True


def _finite(value: Any) -> bool:
    if isinstance(value, str | bytes | None):
        return True
    if isinstance(value, float | int | np.number):
        return math.isfinite(float(value))
    if isinstance(value, pd.Timestamp):
        return True
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return True
    return bool(np.isfinite(array).all())


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".strip().rstrip(":")
