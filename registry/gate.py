"""The promotion gate: a candidate must load, run its input example and pass its checks.

The same check guards every way a version becomes served: promotion (:func:`validate_version`),
live swaps and start-up (:func:`check_loaded`, :func:`load_servable`).
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from pydantic import BaseModel, Field

from registry import model_metrics, store
from registry.errors import GateError, RegistryUnavailableError, TradeserveError
from registry.families import Family, runtime_class
from registry.resolve import ResolvedVersion, resolve, to_resolved
from registry.trust import UntrustedPickleError

if TYPE_CHECKING:
    from pathlib import Path

    from registry.loading import LoadedModel

_OPERATORS = {
    ">=": operator.ge,
    "<=": operator.le,
    "==": operator.eq,
    ">": operator.gt,
    "<": operator.lt,
}
_THRESHOLD = re.compile(r"^\s*([A-Za-z0-9_.\-/ ]+?)\s*(>=|<=|==|>|<)\s*(-?[0-9.eE+\-]+)\s*$")


class MetricThreshold(BaseModel):
    """A required bound on one of the version's logged metrics, e.g. ``val_accuracy>=0.4``."""

    metric: str
    op: Literal[">=", "<=", "==", ">", "<"]
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
                f"cannot read threshold '{text}'; write it as METRIC>=VALUE (or <=, ==, >, <)"
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
        report.problems.extend(threshold_problems(candidate, thresholds, client))
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


@dataclass
class Servable:
    """The version a service serves at start-up, and the promoted one it replaces if any."""

    loaded: LoadedModel
    fallback_from: ResolvedVersion | None = None  # the alias holder that failed the check
    reason: str | None = None  # why it failed


def load_servable(name: str, device: str = "cpu", client: MlflowClient | None = None) -> Servable:
    """The promoted version of ``name`` if it passes :func:`check_loaded`, else the newest
    version that passed the promotion gate and still passes the check now.

    One broken version promoted outside tradeserve (the MLflow UI) must not crash-loop every
    pod. Each version is downloaded once, on ``device``: the check is also the warm-up. An
    unreachable registry is raised, not held against the version.
    """
    mlflow_client = client or store.client()
    promoted = resolve(name, client=mlflow_client)
    loaded, problems = load_checked(promoted, device)
    if loaded is not None and not problems:
        return Servable(loaded)
    reason = "; ".join(problems)
    for candidate in validated_versions(name, mlflow_client):
        if candidate.version == promoted.version:
            continue
        fallback, fallback_problems = load_checked(candidate, device)
        if fallback is not None and not fallback_problems:
            return Servable(fallback, fallback_from=promoted, reason=reason)
    raise GateError(
        f"cannot serve '{name}': its promoted version {promoted.version} fails the gate "
        f"({reason}) and no version that passed the gate before passes it now; promote a "
        f"working version with `tradeserve promote {name} VERSION`"
    )


def load_checked(
    resolved: ResolvedVersion, device: str = "cpu", model_dir: Path | None = None
) -> tuple[LoadedModel | None, list[str]]:
    """``resolved`` loaded onto ``device`` (from ``model_dir`` when already downloaded) and
    the problems :func:`check_loaded` finds (the load failure when it does not load). An
    unreachable registry and an untrusted pickle are raised: they say nothing about the
    version (the operator's network, the operator's trust), and no other version of the
    model would do better."""
    from registry.loading import load_version

    try:
        loaded = load_version(resolved, device=device, model_dir=model_dir)
    except (RegistryUnavailableError, UntrustedPickleError):
        raise
    except Exception as error:  # any other load failure is the version's
        return None, [f"cannot load: {_describe(error)}"]
    return loaded, check_loaded(loaded)


def validated_versions(name: str, client: MlflowClient | None = None) -> list[ResolvedVersion]:
    """Versions of ``name`` whose ``validation_status`` tag says they passed the gate,
    newest first."""
    from registry.promotion import VALIDATION_TAG  # promotion imports this module

    mlflow_client = client or store.client()
    with store.translate_errors(f"registered model '{name}'"):
        versions = store.versions_of(mlflow_client, name)
    passed = [v for v in versions if (v.tags or {}).get(VALIDATION_TAG) == "passed"]
    return [to_resolved(v, alias=None) for v in sorted(passed, key=lambda v: -int(v.version))]


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


def threshold_problems(
    candidate: ResolvedVersion, thresholds: Iterable[MetricThreshold], client: MlflowClient | None
) -> list[str]:
    """One line per threshold the version's metrics miss; a metric never logged fails."""
    metrics = version_metrics(candidate, client)
    problems = []
    for threshold in thresholds:
        if threshold.metric not in metrics:
            problems.append(
                f"metric '{threshold.metric}' was not logged ({_known(threshold, metrics)})"
            )
        elif not _OPERATORS[threshold.op](metrics[threshold.metric], threshold.value):
            problems.append(f"{threshold.metric}={metrics[threshold.metric]:g} fails {threshold}")
    return problems


def _known(threshold: MetricThreshold, metrics: Mapping[str, float]) -> str:
    """The logged names closest to a missing one (or the first few), for its error line."""
    close = difflib.get_close_matches(threshold.metric, list(metrics), n=3)
    if close:
        return f"did you mean {' or '.join(close)}?"
    names = sorted(metrics)
    more = f", ... ({len(names) - 12} more)" if len(names) > 12 else ""
    return f"logged: {', '.join(names[:12]) or 'none'}{more}"


def version_metrics(
    candidate: ResolvedVersion, client: MlflowClient | None = None
) -> dict[str, float]:
    """The version's metrics at their latest values: its training run's, overlaid by those
    logged on its logged model (``tradeserve evaluate``'s walk-forward results)."""
    mlflow_client = client or store.client()
    with store.translate_errors(f"version {candidate.version} of model '{candidate.name}'"):
        version = mlflow_client.get_model_version(candidate.name, candidate.version)
    return {
        key: metric.value
        for key, metric in model_metrics.version_metrics(version, mlflow_client).items()
    }


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
