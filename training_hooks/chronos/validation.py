"""What a Chronos model folder is and which forecast requests it can answer.

:class:`ChronosModelInfo` reads a folder's ``config.json``; the ``validate_*`` helpers check
a request against it, so the pyfunc model, the promotion gate and every HTTP route turn bad
requests into the same clear :class:`ForecastInputError` messages (4xx in the service).
Chronos-2 also takes multivariate targets and past/future covariates (numeric or
categorical); :func:`input_schema` says which series one Chronos-2 call may hold together.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from numbers import Integral
from pathlib import Path
from typing import Any, Literal, NamedTuple, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from registry.errors import TradeserveError

ChronosKind = Literal["t5", "bolt", "chronos2"]
CovariateKind = Literal["numeric", "categorical"]

DEFAULT_PREDICTION_LENGTH = 8
DEFAULT_QUANTILE_LEVELS: tuple[float, ...] = (0.1, 0.5, 0.9)
MIN_OBSERVATIONS = 5  # as SageMaker's Chronos endpoints (30+ recommended)
LONG_HORIZON_FACTOR = 16  # hard cap on allowed long horizons, in native horizons
MAX_NUM_SAMPLES = 1000
# Chronos computes in float32 and normalises each series by its spread: squared deviations
# beyond ~1.8e19 overflow float32 (max 3.4e38), and Bolt and Chronos-2 forecasts come back
# scaled wrongly by orders of magnitude (NaN near float32's limit, 1e300 is inf). 1e15 keeps
# a margin for sums over a full 8192-point context.
MAX_ABS_VALUE = 1e15
CHRONOS2_NAME = "chronos-2"  # the registered name of every Chronos-2 model (registry rules)

_PIPELINE_KINDS: dict[str, ChronosKind] = {
    "ChronosPipeline": "t5",
    "ChronosBoltPipeline": "bolt",
    "Chronos2Pipeline": "chronos2",
}


class ForecastInputError(TradeserveError):
    """A forecast request the model cannot answer; the message says what to fix."""


class ChronosSourceError(TradeserveError):
    """A Chronos model source (folder, cache entry, s3 prefix) cannot be used."""


class ChronosModelInfo(BaseModel):
    """What a Chronos model folder is: kind, context, native horizon, trained quantiles."""

    model_config = ConfigDict(frozen=True)

    kind: ChronosKind
    context_length: int = Field(description="Longer contexts are truncated to the last N points")
    prediction_length: int = Field(description="Native (maximum recommended) horizon")
    quantile_levels: list[float] = Field(
        description="Quantile levels the model was trained on; empty for T5 (sample-based)"
    )
    num_samples: int | None = Field(default=None, description="Default sample count (T5)")

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any]) -> Self:
        """Read the info from a Chronos ``config.json`` (as a dict)."""
        if "chronos_config" not in config:
            raise ChronosSourceError("config.json has no 'chronos_config': not a Chronos model")
        pipeline_class = config.get("chronos_pipeline_class", "ChronosPipeline")
        kind = _PIPELINE_KINDS.get(pipeline_class)
        if kind is None:
            raise ChronosSourceError(f"unsupported chronos_pipeline_class '{pipeline_class}'")
        chronos = config["chronos_config"]
        if kind == "chronos2":
            horizon = chronos["max_output_patches"] * chronos["output_patch_size"]
        else:
            horizon = chronos["prediction_length"]
        return cls(
            kind=kind,
            context_length=chronos["context_length"],
            prediction_length=horizon,
            quantile_levels=[] if kind == "t5" else list(chronos["quantiles"]),
            num_samples=chronos.get("num_samples") if kind == "t5" else None,
        )

    @classmethod
    def from_folder(cls, folder: Path) -> Self:
        config_file = Path(folder) / "config.json"
        if not config_file.is_file():
            raise ChronosSourceError(
                f"{folder} has no config.json: not a Hugging Face model folder"
            )
        return cls.from_hf_config(json.loads(config_file.read_text()))


class ForecastParams(BaseModel):
    """Request parameters shared by pyfunc ``params`` and the HTTP API."""

    model_config = ConfigDict(extra="forbid")

    prediction_length: int = Field(default=DEFAULT_PREDICTION_LENGTH, ge=1)
    quantile_levels: list[float] = Field(
        default_factory=lambda: list(DEFAULT_QUANTILE_LEVELS), min_length=1
    )
    num_samples: int | None = Field(default=None, ge=1, description="T5 only; ignored otherwise")
    seed: int | None = Field(default=None, description="T5 only: seeds sampling for this call")

    @classmethod
    def parse(cls, params: Mapping[str, Any] | None) -> Self:
        """Validate ``params``; errors become :class:`ForecastInputError`."""
        try:
            return cls.model_validate(dict(params or {}))
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}"
                for e in error.errors()
            )
            raise ForecastInputError(f"invalid forecast parameters: {problems}") from error


class T5Sampling(BaseModel):
    """T5's sampling knobs as ``ChronosPipeline.predict`` takes them; None keeps the model
    config's value (temperature 1.0, top_k 50, top_p 1.0 in Amazon's configs). Hashable:
    T5 series share a model call only with the same knobs."""

    model_config = ConfigDict(frozen=True)

    temperature: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    top_k: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, gt=0, le=1)


class CheckedRequest(NamedTuple):
    """A forecast request that passed :meth:`ChronosRuntime.validate`."""

    series: list[np.ndarray]  # [T], or [n_variates, T] (Chronos-2)
    prediction_length: int
    quantile_levels: tuple[float, ...]
    num_samples: int | None  # None for quantile models
    past_covariates: list[dict[str, np.ndarray]]  # per series, [T] each (Chronos-2)
    future_covariates: list[dict[str, np.ndarray]]  # per series, [prediction_length] each


def validate_series(values: Any, label: str = "series", multivariate: bool = False) -> np.ndarray:
    """One target series as a float array; NaN/None mark missing values. With
    ``multivariate`` (Chronos-2) a list of equally long lists is one series of several
    variates, each checked as a series."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        rows = values if multivariate and isinstance(values, Sequence) else []
        lengths = {len(row) for row in rows if isinstance(row, Sequence | np.ndarray)}
        if len(lengths) > 1:
            raise ForecastInputError(
                f"{label}: the variates of a multivariate target need the same length; got "
                f"lengths {sorted(lengths)}"
            ) from None
        raise ForecastInputError(f"{label}: target must be a list of numbers ({error})") from None
    if array.ndim == 2 and multivariate:
        if array.shape[0] == 0:
            raise ForecastInputError(f"{label}: target has no variates; send at least one list")
        for variate, row in enumerate(array):
            _check_target(row, f"{label} (variate {variate})")
        return array
    if array.ndim != 1:
        raise ForecastInputError(
            f"{label}: target must be a flat list of numbers; multivariate targets (a list of "
            f"lists) need a Chronos-2 model ('{CHRONOS2_NAME}')"
            if array.ndim == 2
            else f"{label}: target must be a list of numbers, or a list of lists (variates)"
        )
    _check_target(array, label)
    return array


def _check_target(array: np.ndarray, label: str) -> None:
    if array.size == 0:
        raise ForecastInputError(
            f"{label}: target is empty; send at least {MIN_OBSERVATIONS} values"
        )
    _check_finite(array, f"{label}: target")
    observed = int(np.count_nonzero(~np.isnan(array)))
    if observed == 0:
        raise ForecastInputError(f"{label}: target has no observed values (all NaN/null)")
    if observed < MIN_OBSERVATIONS:
        raise ForecastInputError(
            f"{label}: target has {observed} observed values; at least {MIN_OBSERVATIONS} are "
            "needed (30 or more recommended)"
        )


def _check_finite(array: np.ndarray, what: str) -> None:
    """No infinities, and no magnitude the model's float32 arithmetic overflows on."""
    if np.isinf(array).any():
        position = int(np.flatnonzero(np.isinf(array))[0])
        raise ForecastInputError(
            f"{what} contains an infinite value at position {position}; use null/NaN for "
            "missing values"
        )
    too_large = np.abs(array) > MAX_ABS_VALUE  # NaN compares False
    if too_large.any():
        position = int(np.flatnonzero(too_large)[0])
        raise ForecastInputError(
            f"{what} has {array[position]:g} at position {position}, beyond +-{MAX_ABS_VALUE:g}: "
            "Chronos computes in float32, whose normalisation overflows on such values (the "
            "forecast would be wrong or NaN); rescale the series, e.g. divide it by a constant"
        )


def validate_prediction_length(
    prediction_length: int, info: ChronosModelInfo, allow_long_horizon: bool = False
) -> int:
    """Check the horizon against the model's native one (and a hard cap when allowed)."""
    native = info.prediction_length
    if isinstance(prediction_length, bool) or not isinstance(prediction_length, Integral):
        raise ForecastInputError(f"prediction_length must be an integer, got {prediction_length!r}")
    horizon = int(prediction_length)
    if horizon < 1:
        raise ForecastInputError(f"prediction_length must be at least 1, got {horizon}")
    if horizon > native and not allow_long_horizon:
        raise ForecastInputError(
            f"prediction_length {horizon} exceeds the native horizon {native} of this chronos "
            f"{info.kind} model; longer forecasts are produced autoregressively and lose "
            f"accuracy. Ask for at most {native} steps (or enable allow_long_horizon)"
        )
    cap = native * LONG_HORIZON_FACTOR
    if horizon > cap:
        raise ForecastInputError(f"prediction_length {horizon} is above the limit of {cap} steps")
    return horizon


def validate_quantile_levels(levels: Sequence[float], info: ChronosModelInfo) -> tuple[float, ...]:
    """Levels strictly inside (0, 1), unique, and within the trained range for Bolt/Chronos-2."""
    try:
        checked = tuple(float(level) for level in levels)
    except (TypeError, ValueError):
        raise ForecastInputError(f"quantile_levels must be numbers, got {levels!r}") from None
    if not checked:
        raise ForecastInputError("quantile_levels is empty; ask for at least one level, e.g. 0.5")
    outside = [level for level in checked if not 0.0 < level < 1.0]  # also catches NaN
    if outside:
        raise ForecastInputError(
            f"quantile levels must lie strictly between 0 and 1; got {outside}"
        )
    if len(set(checked)) != len(checked):
        raise ForecastInputError(f"quantile_levels has duplicates: {list(checked)}")
    if info.quantile_levels:
        low, high = min(info.quantile_levels), max(info.quantile_levels)
        untrained = [level for level in checked if not low <= level <= high]
        if untrained:
            raise ForecastInputError(
                f"quantile levels {untrained} are outside [{low}, {high}], the range this chronos "
                f"{info.kind} model was trained on; it cannot estimate them (they would be "
                f"clamped to {low}/{high}). Ask for levels within [{low}, {high}]"
            )
    return checked


def validate_num_samples(num_samples: int | None, info: ChronosModelInfo) -> int | None:
    """Sample count for T5 (default from the model config); None for quantile models."""
    if info.kind != "t5":
        return None
    count = info.num_samples if num_samples is None else num_samples
    if count is None or not 1 <= count <= MAX_NUM_SAMPLES:
        raise ForecastInputError(
            f"num_samples must be between 1 and {MAX_NUM_SAMPLES}, got {count}"
        )
    return int(count)


def covariate_kind(values: Any) -> CovariateKind:
    """Categorical when any value is a string; null/NaN is a missing value of either kind."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        return "numeric"
    return "categorical" if any(isinstance(value, str) for value in values) else "numeric"


def validate_covariates(
    past: Mapping[str, Any] | None,
    future: Mapping[str, Any] | None,
    *,
    history: int,
    horizon: int,
    info: ChronosModelInfo,
    label: str = "series",
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A series' covariates as Chronos-2 takes them (numeric: float arrays, NaN = missing;
    categorical: object arrays of strings, None = missing): past ones span the target's
    ``history``, known-future ones the ``horizon`` and also need their past values."""
    past, future = dict(past or {}), dict(future or {})
    if not past and not future:
        return {}, {}
    if info.kind != "chronos2":
        raise ForecastInputError(
            f"{label}: covariates need a Chronos-2 model ('{CHRONOS2_NAME}'); this chronos "
            f"{info.kind} model forecasts from the target alone. Send the series without "
            f"past_covariates/future_covariates, or ask for model '{CHRONOS2_NAME}'"
        )
    if "" in past or "" in future:
        raise ForecastInputError(f"{label}: covariate names must not be empty")
    unknown = sorted(set(future) - set(past))
    if unknown:
        raise ForecastInputError(
            f"{label}: future_covariates {unknown} have no past values; a known-future "
            "covariate also needs its history in past_covariates (one value per observation)"
        )
    checked_past = {
        name: _covariate(
            values, f"{label}: past covariate '{name}'", history, "the target's length", None
        )
        for name, values in past.items()
    }
    checked_future = {
        name: _covariate(
            values,
            f"{label}: future covariate '{name}'",
            horizon,
            "prediction_length",
            covariate_kind(checked_past[name]),
        )
        for name, values in future.items()
    }
    return checked_past, checked_future


def _covariate(
    values: Any, what: str, length: int, length_name: str, kind: CovariateKind | None
) -> np.ndarray:
    """One covariate checked; ``kind`` is that of its past values (None: these are)."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
        raise ForecastInputError(f"{what} must be a list of numbers or strings")
    if len(values) != length:
        raise ForecastInputError(
            f"{what} has {len(values)} values; it needs {length} ({length_name})"
        )
    own = covariate_kind(values)
    observed = any(value is not None for value in values)
    if kind is not None and own != kind and (own == "categorical" or observed):
        raise ForecastInputError(
            f"{what} is {own} but its past values are {kind}; a covariate keeps one kind"
        )
    if (kind or own) == "categorical":
        numbers = [value for value in values if value is not None and not isinstance(value, str)]
        if numbers:
            raise ForecastInputError(
                f"{what} mixes strings and other values ({numbers[0]!r}); a categorical "
                "covariate takes strings only (null = missing)"
            )
        return np.asarray(values, dtype=object)
    try:
        array = np.asarray(
            [np.nan if value is None else value for value in values], dtype=np.float64
        )
    except (TypeError, ValueError) as error:
        raise ForecastInputError(f"{what} must be a list of numbers or strings ({error})") from None
    if array.ndim != 1:
        raise ForecastInputError(f"{what} must be a flat list of numbers or strings")
    _check_finite(array, what)
    return array


class InputSchema(NamedTuple):
    """What every series of one Chronos-2 call must share (its list-of-dicts input): the
    number of target variates, the past covariates' names and kinds, the future ones' names."""

    variates: int
    past: tuple[tuple[str, CovariateKind], ...]
    future: tuple[str, ...]

    @property
    def shareable(self) -> bool:
        """Whether series of this schema may share a call without changing each other's
        forecasts. Chronos-2 encodes a categorical covariate of a univariate target per
        series (target encoding) but that of a multivariate one as ordinal codes of every
        category in the call, so such a series needs a call of its own."""
        return self.variates == 1 or all(kind == "numeric" for _, kind in self.past)


def input_schema(
    target: Any, past: Mapping[str, Any] | None, future: Mapping[str, Any] | None
) -> InputSchema:
    """The schema of one (validated) series."""
    nested = len(target) > 0 and isinstance(target[0], Sequence | np.ndarray)
    return InputSchema(
        variates=len(target) if nested else 1,
        past=tuple(sorted((name, covariate_kind(values)) for name, values in (past or {}).items())),
        future=tuple(sorted(future or {})),
    )
