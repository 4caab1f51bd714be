"""What a Chronos model folder is and which forecast requests it can answer.

:class:`ChronosModelInfo` reads a folder's ``config.json``; the ``validate_*`` helpers check
a request against it, so the pyfunc model, the promotion gate and the HTTP service turn bad
requests into the same clear :class:`ForecastInputError` messages (4xx in the service).
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

DEFAULT_PREDICTION_LENGTH = 8
DEFAULT_QUANTILE_LEVELS: tuple[float, ...] = (0.1, 0.5, 0.9)
MIN_OBSERVATIONS = 5  # as SageMaker's Chronos endpoints (30+ recommended)
LONG_HORIZON_FACTOR = 16  # hard cap on allowed long horizons, in native horizons
MAX_NUM_SAMPLES = 1000

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


class CheckedRequest(NamedTuple):
    """A forecast request that passed :meth:`ChronosRuntime.validate`."""

    series: list[np.ndarray]
    prediction_length: int
    quantile_levels: tuple[float, ...]
    num_samples: int | None  # None for quantile models


def validate_series(values: Any, label: str = "series") -> np.ndarray:
    """One target series as a float array; NaN/None mark missing values."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ForecastInputError(f"{label}: target must be a list of numbers ({error})") from None
    if array.ndim != 1:
        raise ForecastInputError(
            f"{label}: target must be a flat list of numbers; multivariate targets are not "
            "supported, send one row per series"
        )
    if array.size == 0:
        raise ForecastInputError(
            f"{label}: target is empty; send at least {MIN_OBSERVATIONS} values"
        )
    if np.isinf(array).any():
        position = int(np.flatnonzero(np.isinf(array))[0])
        raise ForecastInputError(
            f"{label}: target contains an infinite value at position {position}; use null/NaN "
            "for missing values"
        )
    observed = int(np.count_nonzero(~np.isnan(array)))
    if observed == 0:
        raise ForecastInputError(f"{label}: target has no observed values (all NaN/null)")
    if observed < MIN_OBSERVATIONS:
        raise ForecastInputError(
            f"{label}: target has {observed} observed values; at least {MIN_OBSERVATIONS} are "
            "needed (30 or more recommended)"
        )
    return array


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
