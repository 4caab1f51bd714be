"""Chronos forecasting models (T5, Bolt, Chronos-2) as a tradeserve family.

:class:`ChronosRuntime` loads a Hugging Face model folder with
``BaseChronosPipeline.from_pretrained`` and hides the differences between the three
pipelines behind one batched :meth:`ChronosRuntime.forecast`. The validation helpers here are
what the HTTP service uses to turn bad requests into clear 4xx messages, and
:func:`log_chronos` logs a folder (local, Hugging Face cache or ``s3://``) as a registered
version.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Self

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from registry.errors import TradeserveError
from registry.families import Family, check_name
from training_hooks.chronos_builders import (
    SIZES,
    ChronosKind,
    backbone,
    build_random_chronos,
)
from training_hooks.registration import (
    Lineage,
    RegisteredVersion,
    log_pyfunc_model,
    requirements,
)

if TYPE_CHECKING:
    from chronos import BaseChronosPipeline

logger = logging.getLogger(__name__)

DEFAULT_PREDICTION_LENGTH = 8
DEFAULT_QUANTILE_LEVELS: tuple[float, ...] = (0.1, 0.5, 0.9)
MIN_OBSERVATIONS = 5  # as SageMaker's Chronos endpoints (30+ recommended)
LONG_HORIZON_FACTOR = 16  # hard cap on allowed long horizons, in native horizons
MAX_NUM_SAMPLES = 1000
DTYPE_ENV = "TRADESERVE_CHRONOS_DTYPE"
# T5 samples from torch's process-wide random stream; a seeded call must own it from seeding
# to its last draw, so sampling calls of concurrent threads take turns.
_SAMPLING_LOCK = threading.Lock()
DEMO_CHRONOS2_SIZE = "small"

# Files copied from a source folder into the logged model: JSON configs and safetensors
# weights only, so a logged Chronos model never contains pickled tensors.
MODEL_FILE_PATTERNS = (
    "config.json",
    "generation_config.json",
    "*.safetensors",
    "*.safetensors.index.json",
    "adapter_config.json",
    "README.md",
    "LICENSE*",
)

_PIPELINE_KINDS: dict[str, ChronosKind] = {
    "ChronosPipeline": "t5",
    "ChronosBoltPipeline": "bolt",
    "Chronos2Pipeline": "chronos2",
}
_NAME_KINDS: dict[str, ChronosKind] = {"chronos-t5-": "t5", "chronos-bolt-": "bolt"}
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class ForecastInputError(TradeserveError):
    """A forecast request the model cannot answer; the message says what to fix."""


class ChronosSourceError(TradeserveError):
    """A Chronos model source (folder, cache entry, s3 prefix) cannot be used."""


def quantile_key(level: float) -> str:
    """Column/JSON key of a quantile level: 0.1 -> "0.1" (as chronos' ``predict_df``)."""
    return str(float(level))


def kind_of_name(name: str) -> ChronosKind:
    """The Chronos kind a registered-model name stands for."""
    check_name(name, Family.CHRONOS)
    if name == "chronos-2":
        return "chronos2"
    return next(kind for prefix, kind in _NAME_KINDS.items() if name.startswith(prefix))


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


@dataclass(frozen=True)
class ForecastBatch:
    """Forecasts for B series over H steps (CPU float32 numpy arrays)."""

    quantile_levels: tuple[float, ...]
    quantiles: np.ndarray  # [B, H, Q]
    mean: np.ndarray  # [B, H]; the median for Bolt and Chronos-2
    samples: np.ndarray | None = None  # [B, S, H], T5 only

    def row(self, index: int) -> dict[str, list[float]]:
        """One series' forecast keyed "mean" and :func:`quantile_key` of each level."""
        out = {"mean": self.mean[index].tolist()}
        for position, level in enumerate(self.quantile_levels):
            out[quantile_key(level)] = self.quantiles[index, :, position].tolist()
        return out


class CheckedRequest(NamedTuple):
    """A forecast request that passed :meth:`ChronosRuntime.validate`."""

    series: list[np.ndarray]
    prediction_length: int
    quantile_levels: tuple[float, ...]
    num_samples: int | None  # None for quantile models


# ---------------------------------------------------------------------------- validation


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


# ---------------------------------------------------------------------------- runtime


def native_cpu_bf16() -> bool:
    """True when this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX; Linux flags)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(avx512_bf16|amx_bf16)\b", cpuinfo) is not None


def resolve_dtype(requested: str | None, device: str) -> torch.dtype:
    """float32 unless config or ``TRADESERVE_CHRONOS_DTYPE`` asks for bfloat16, which is
    honoured on CUDA and on CPUs with native bf16; elsewhere bf16 is emulated (slower than
    float32), so the request falls back to float32 with a warning."""
    name = (requested or os.environ.get(DTYPE_ENV) or "float32").lower()
    if name not in ("float32", "bfloat16"):
        raise ChronosSourceError(f"unsupported Chronos dtype '{name}'; use float32 or bfloat16")
    if name == "bfloat16" and not device.startswith("cuda") and not native_cpu_bf16():
        logger.warning(
            "bfloat16 requested on %s, whose CPU has no native bf16 (AVX512-BF16 or AMX); "
            "using float32",
            device,
        )
        return torch.float32
    return torch.bfloat16 if name == "bfloat16" else torch.float32


class ChronosRuntime:
    """A loaded Chronos pipeline of any kind, with one batched forecast API."""

    family: ClassVar[Family] = Family.CHRONOS

    def __init__(
        self,
        pipeline: BaseChronosPipeline,
        info: ChronosModelInfo,
        *,
        device: str = "cpu",
        dtype: torch.dtype = torch.float32,
        allow_long_horizon: bool = False,
    ) -> None:
        self.pipeline = pipeline
        self.info = info
        self.device = device
        self.dtype = dtype
        self.allow_long_horizon = allow_long_horizon

    @classmethod
    def load(cls, artifact_dir: Path, config: Mapping[str, Any], device: str = "cpu") -> Self:
        """Load the folder with ``BaseChronosPipeline.from_pretrained`` on ``device``.

        ``config`` may hold ``kind`` (checked against the folder), ``dtype`` and
        ``allow_long_horizon``; the folder's config.json is the source of truth.
        """
        from chronos import BaseChronosPipeline

        folder = Path(artifact_dir)
        info = ChronosModelInfo.from_folder(folder)
        expected = config.get("kind")
        if expected is not None and expected != info.kind:
            raise ChronosSourceError(f"{folder} holds a chronos {info.kind} model, not {expected}")
        dtype = resolve_dtype(config.get("dtype"), device)
        try:
            pipeline = BaseChronosPipeline.from_pretrained(
                str(folder), device_map=device, dtype=dtype
            )
        except (OSError, ValueError, AssertionError) as error:
            raise ChronosSourceError(
                f"cannot load the Chronos model in {folder}: {error}"
            ) from error
        return cls(
            pipeline,
            info,
            device=device,
            dtype=dtype,
            allow_long_horizon=bool(config.get("allow_long_horizon", False)),
        )

    @property
    def kind(self) -> ChronosKind:
        return self.info.kind

    @property
    def context_length(self) -> int:
        return self.info.context_length

    @property
    def prediction_length(self) -> int:
        """Native horizon; longer ones need ``allow_long_horizon``."""
        return self.info.prediction_length

    @property
    def quantile_levels(self) -> list[float]:
        """Trained quantile levels (empty for T5, whose quantiles come from samples)."""
        return self.info.quantile_levels

    def validate(
        self,
        series: Sequence[Any],
        prediction_length: int,
        quantile_levels: Sequence[float],
        num_samples: int | None = None,
        allow_long_horizon: bool | None = None,
        labels: Sequence[str] | None = None,
    ) -> CheckedRequest:
        """Validate a whole request against this model; raises :class:`ForecastInputError`."""
        if len(series) == 0:
            raise ForecastInputError("no series to forecast; send at least one")
        labels = labels or [f"series {index}" for index in range(len(series))]
        allow = self.allow_long_horizon if allow_long_horizon is None else allow_long_horizon
        return CheckedRequest(
            series=[
                validate_series(values, label) for values, label in zip(series, labels, strict=True)
            ],
            prediction_length=validate_prediction_length(prediction_length, self.info, allow),
            quantile_levels=validate_quantile_levels(quantile_levels, self.info),
            num_samples=validate_num_samples(num_samples, self.info),
        )

    def forecast(
        self,
        series: Sequence[np.ndarray],
        prediction_length: int,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
        num_samples: int | None = None,
        seed: int | None = None,
        *,
        allow_long_horizon: bool | None = None,
        labels: Sequence[str] | None = None,
    ) -> ForecastBatch:
        """Forecast a batch of 1-D series (NaN = missing) ``prediction_length`` steps ahead.

        ``num_samples`` and ``seed`` apply to T5 only (sampling) and are ignored otherwise;
        with a ``seed`` T5 results are reproducible. Raises :class:`ForecastInputError`.
        """
        request = self.validate(
            series, prediction_length, quantile_levels, num_samples, allow_long_horizon, labels
        )
        context = [torch.as_tensor(values, dtype=torch.float32) for values in request.series]
        horizon, levels = request.prediction_length, request.quantile_levels
        with torch.inference_mode():
            if self.kind == "t5":
                return self._forecast_t5(context, horizon, levels, request.num_samples, seed)
            return self._forecast_quantiles(context, horizon, levels)

    def _forecast_t5(
        self,
        context: list[torch.Tensor],
        horizon: int,
        levels: tuple[float, ...],
        num_samples: int | None,
        seed: int | None,
    ) -> ForecastBatch:
        with _SAMPLING_LOCK, self._seeded(seed):
            samples = self.pipeline.predict(
                context, prediction_length=horizon, num_samples=num_samples
            )
        # Same reduction as ChronosPipeline.predict_quantiles, keeping the samples.
        paths = samples.swapaxes(1, 2)  # [B, H, S]
        quantiles = torch.quantile(
            paths, q=torch.tensor(levels, dtype=paths.dtype), dim=-1
        ).permute(1, 2, 0)
        return ForecastBatch(
            quantile_levels=levels,
            quantiles=quantiles.numpy(),
            mean=paths.mean(dim=-1).numpy(),
            samples=samples.numpy(),
        )

    def _forecast_quantiles(
        self, context: list[torch.Tensor], horizon: int, levels: tuple[float, ...]
    ) -> ForecastBatch:
        quantiles, mean = self.pipeline.predict_quantiles(
            context, prediction_length=horizon, quantile_levels=list(levels)
        )
        if isinstance(quantiles, list):  # Chronos-2: one [n_variates=1, H, Q] per series
            quantiles, mean = torch.cat(quantiles, dim=0), torch.cat(mean, dim=0)
        return ForecastBatch(
            quantile_levels=levels, quantiles=quantiles.float().numpy(), mean=mean.float().numpy()
        )

    @contextlib.contextmanager
    def _seeded(self, seed: int | None) -> Iterator[None]:
        """Seed torch for one call and restore the previous RNG state afterwards."""
        if seed is None:
            yield
            return
        model_device = self.pipeline.inner_model.device
        devices = [model_device] if model_device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    def predict(self, frame: pd.DataFrame, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Forecast every row of ``frame`` (``item_id``, ``target``); one output row each."""
        request = ForecastParams.parse(params)
        item_ids, series = series_from_frame(frame)
        batch = self.forecast(
            series,
            request.prediction_length,
            request.quantile_levels,
            num_samples=request.num_samples,
            seed=request.seed,
            labels=[f"series '{item}' (row {row})" for row, item in enumerate(item_ids)],
        )
        rows = [{"item_id": item, **batch.row(index)} for index, item in enumerate(item_ids)]
        return pd.DataFrame(
            rows, columns=["item_id", "mean", *map(quantile_key, batch.quantile_levels)]
        )

    @classmethod
    def check_output(
        cls, frame: pd.DataFrame, output: pd.DataFrame, params: Mapping[str, Any] | None = None
    ) -> list[str]:
        """Problems with ``output`` for ``frame``: rows, columns, horizon, finiteness."""
        request = ForecastParams.parse(params)
        if len(output) != len(frame):
            return [f"expected {len(frame)} rows, got {len(output)}"]
        columns = ["mean", *map(quantile_key, request.quantile_levels)]
        problems = [f"missing column '{column}'" for column in columns if column not in output]
        for column in (column for column in columns if column in output):
            for row, values in enumerate(output[column]):
                array = np.asarray(values, dtype=np.float64)
                if array.shape != (request.prediction_length,):
                    problems.append(
                        f"row {row} '{column}': {array.size} steps, "
                        f"expected {request.prediction_length}"
                    )
                elif not np.isfinite(array).all():
                    problems.append(f"row {row} '{column}': non-finite values")
        return problems


def series_from_frame(frame: pd.DataFrame) -> tuple[list[str], list[Any]]:
    """Item ids (row positions when there is no ``item_id``) and targets of a request frame."""
    if "target" not in frame.columns:
        raise ForecastInputError(
            f"input needs a 'target' column (list of floats per row); got {list(frame.columns)}"
        )
    if "item_id" in frame.columns:
        item_ids = [str(item) for item in frame["item_id"]]
    else:
        item_ids = [str(row) for row in range(len(frame))]
    return item_ids, list(frame["target"])


# ---------------------------------------------------------------------------- sources


def is_model_file(name: str) -> bool:
    """Whether a file belongs in a logged Chronos model (configs and safetensors only)."""
    return any(fnmatch.fnmatch(name, pattern) for pattern in MODEL_FILE_PATTERNS)


def fetch_model_folder(source: str | Path, dest: Path) -> Path:
    """Copy the model files of ``source`` into ``dest`` and return it.

    ``source`` is a local folder, a Hugging Face model id already in the local cache
    (resolved offline), or an ``s3://bucket/prefix`` (boto3; ``AWS_ENDPOINT_URL`` selects
    an S3-compatible endpoint). Only configs and safetensors weights are kept.
    """
    text = str(source)
    dest = Path(dest)
    if text.startswith("s3://"):
        return _require_weights(_download_s3(text, dest), text)
    local = Path(text).expanduser()
    if local.is_dir():
        origin = local
    elif _REPO_ID.match(text):
        origin = _hf_cache_snapshot(text)
    else:
        raise ChronosSourceError(
            f"'{text}' is not a local folder, an s3:// prefix or a Hugging Face model id"
        )
    dest.mkdir(parents=True, exist_ok=True)
    for path in origin.iterdir():
        if path.is_file() and is_model_file(path.name):
            shutil.copyfile(path, dest / path.name)  # follows hub-cache symlinks
    return _require_weights(dest, text)


def _require_weights(folder: Path, source: str) -> Path:
    names = sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []
    if "config.json" not in names or not any(name.endswith(".safetensors") for name in names):
        raise ChronosSourceError(
            f"{source} has no config.json plus *.safetensors weights (usable files: {names}); "
            "tradeserve never loads pickled weights such as pytorch_model.bin"
        )
    return folder


def _hf_cache_dir() -> str:
    """The hub cache as configured now (huggingface_hub reads its env once at import)."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]) / "hub")
    return constants.HF_HUB_CACHE


def _hf_cache_snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    cache = _hf_cache_dir()
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError) as error:
        raise ChronosSourceError(
            f"'{repo_id}' is not a local folder and is not in the Hugging Face cache {cache}; "
            f"run `hf download {repo_id}` where the Hub is reachable, or pass a local folder "
            "or an s3:// prefix"
        ) from error


def _download_s3(uri: str, dest: Path) -> Path:
    """Download the model files directly under ``s3://bucket/prefix`` into ``dest``."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
    dest.mkdir(parents=True, exist_ok=True)
    s3 = boto3.client("s3")
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for entry in page.get("Contents", []):
                name = entry["Key"][len(prefix) :]
                if "/" not in name and is_model_file(name):
                    s3.download_file(bucket, entry["Key"], str(dest / name))
    except (BotoCoreError, ClientError) as error:
        raise ChronosSourceError(f"cannot read {uri}: {error}") from error
    return dest


# ---------------------------------------------------------------------------- logging


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
            pip_requirements=requirements(
                "mlflow", "chronos-forecasting", "torch", "transformers", "pandas", "numpy"
            ),
        )


def demo_plan(size: str) -> list[tuple[ChronosKind, str, str]]:
    """(kind, builder size, registered name) of the demo models at ``size``."""
    chronos2_size = size if size in SIZES["chronos2"] else DEMO_CHRONOS2_SIZE
    return [
        ("t5", size, f"chronos-t5-{size}"),
        ("bolt", size, f"chronos-bolt-{size}"),
        ("chronos2", chronos2_size, "chronos-2"),
    ]


def register_demo_chronos(
    size: str = "tiny", workdir: Path | None = None
) -> list[RegisteredVersion]:
    """Register random-weight T5, Bolt and Chronos-2 models, tagged untrained.

    Chronos-2 uses its ``small`` (28M) shape unless ``size`` is one of its own sizes.
    The caller decides about promotion.
    """
    plan = demo_plan(size)
    for kind, model_size, name in plan:  # fail before building anything
        kind_of_name(name)
        backbone(kind, model_size)
    versions = []
    with _work_folder(workdir) as root:
        for kind, model_size, name in plan:
            folder = build_random_chronos(kind, model_size, root / name)
            lineage = Lineage(
                data_source="random-init",
                extra={"init_seed": "0", "architecture": f"{kind}-{model_size}"},
            )
            versions.append(
                log_chronos(
                    name,
                    folder,
                    lineage=lineage,
                    untrained=True,
                    description=f"Random-weight chronos {kind} ({model_size} shape): untrained, "
                    "for pipeline and load tests only.",
                )
            )
    return versions


@contextlib.contextmanager
def _work_folder(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        yield Path(workdir)
        return
    with tempfile.TemporaryDirectory(prefix="tradeserve-chronos-demo-") as tmp:
        yield Path(tmp)


__all__ = [
    "DEFAULT_PREDICTION_LENGTH",
    "DEFAULT_QUANTILE_LEVELS",
    "MIN_OBSERVATIONS",
    "CheckedRequest",
    "ChronosModelInfo",
    "ChronosRuntime",
    "ChronosSourceError",
    "ForecastBatch",
    "ForecastInputError",
    "ForecastParams",
    "fetch_model_folder",
    "kind_of_name",
    "log_chronos",
    "quantile_key",
    "register_demo_chronos",
    "validate_prediction_length",
    "validate_quantile_levels",
    "validate_series",
]
