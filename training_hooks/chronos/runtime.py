"""Chronos runtime: a logged Chronos model (T5, Bolt, Chronos-2) loaded for forecasting.

:class:`ChronosRuntime` loads a Hugging Face model folder with
``BaseChronosPipeline.from_pretrained`` and hides the differences between the three
pipelines behind one batched :meth:`ChronosRuntime.forecast` (Chronos-2 also with
multivariate targets and covariates); requests are checked with
:mod:`training_hooks.chronos.validation` first. Also here: the forecast batch and the name
and column helpers that the service and the gate share; the dtype choice is in
:mod:`training_hooks.chronos.dtype`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import pandas as pd
import torch

from registry.families import Family, check_name
from training_hooks.chronos.dtype import resolve_dtype
from training_hooks.chronos.validation import (
    DEFAULT_QUANTILE_LEVELS,
    CheckedRequest,
    ChronosKind,
    ChronosModelInfo,
    ChronosSourceError,
    ForecastInputError,
    ForecastParams,
    T5Sampling,
    input_schema,
    validate_covariates,
    validate_num_samples,
    validate_prediction_length,
    validate_quantile_levels,
    validate_series,
)

if TYPE_CHECKING:
    from chronos import BaseChronosPipeline

logger = logging.getLogger(__name__)

# T5 samples from torch's process-wide random stream; a seeded call must own it from seeding
# to its last draw, so sampling calls of concurrent threads take turns.
_SAMPLING_LOCK = threading.Lock()
_NAME_KINDS: dict[str, ChronosKind] = {"chronos-t5-": "t5", "chronos-bolt-": "bolt"}


def quantile_key(level: float) -> str:
    """Column/JSON key of a quantile level: 0.1 -> "0.1" (as chronos' ``predict_df``)."""
    return str(float(level))


def kind_of_name(name: str) -> ChronosKind:
    """The Chronos kind a registered-model name stands for."""
    check_name(name, Family.CHRONOS)
    if name == "chronos-2":
        return "chronos2"
    return next(kind for prefix, kind in _NAME_KINDS.items() if name.startswith(prefix))


@dataclass(frozen=True)
class ForecastBatch:
    """Forecasts for B series over H steps (CPU float32 numpy arrays); a multivariate series
    (Chronos-2) has one row per target variate, in order."""

    quantile_levels: tuple[float, ...]
    quantiles: np.ndarray  # [rows, H, Q]; rows = B unless a series is multivariate
    mean: np.ndarray  # [rows, H]; the median for Bolt and Chronos-2
    samples: np.ndarray | None = None  # [B, S, H], T5 only
    variates: tuple[int | None, ...] | None = None  # per series: None (flat target) or V

    def rows(self, index: int) -> slice:
        """Rows of series ``index`` in ``quantiles`` and ``mean``."""
        if self.variates is None:
            return slice(index, index + 1)
        start = sum(count or 1 for count in self.variates[:index])
        return slice(start, start + (self.variates[index] or 1))

    def multivariate(self, index: int) -> bool:
        """Whether series ``index`` came as a list of variates (answered as lists of lists)."""
        return self.variates is not None and self.variates[index] is not None

    def row(self, index: int) -> dict[str, list[Any]]:
        """One series' forecast keyed "mean" and :func:`quantile_key` of each level (lists of
        lists, one per variate, for a multivariate series)."""
        rows = self.rows(index)

        def values(array: np.ndarray) -> list[Any]:
            return array.tolist() if self.multivariate(index) else array[0].tolist()

        out = {"mean": values(self.mean[rows])}
        for position, level in enumerate(self.quantile_levels):
            out[quantile_key(level)] = values(self.quantiles[rows, :, position])
        return out


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
        *,
        past_covariates: Sequence[Mapping[str, Any] | None] | None = None,
        future_covariates: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> CheckedRequest:
        """Validate a whole request against this model; raises :class:`ForecastInputError`.

        ``past_covariates``/``future_covariates`` hold one mapping (or None) per series;
        only Chronos-2 takes covariates and multivariate targets.
        """
        if len(series) == 0:
            raise ForecastInputError("no series to forecast; send at least one")
        labels = labels or [f"series {index}" for index in range(len(series))]
        allow = self.allow_long_horizon if allow_long_horizon is None else allow_long_horizon
        multivariate = self.kind == "chronos2"
        checked = [
            validate_series(values, label, multivariate)
            for values, label in zip(series, labels, strict=True)
        ]
        horizon = validate_prediction_length(prediction_length, self.info, allow)
        levels = validate_quantile_levels(quantile_levels, self.info)
        samples = validate_num_samples(num_samples, self.info)
        pasts = past_covariates or [None] * len(series)
        futures = future_covariates or [None] * len(series)
        covariates = [
            validate_covariates(
                past, future, history=values.shape[-1], horizon=horizon, info=self.info, label=label
            )
            for values, past, future, label in zip(checked, pasts, futures, labels, strict=True)
        ]
        return CheckedRequest(
            series=checked,
            prediction_length=horizon,
            quantile_levels=levels,
            num_samples=samples,
            past_covariates=[past for past, _ in covariates],
            future_covariates=[future for _, future in covariates],
        )

    def forecast(
        self,
        series: Sequence[np.ndarray],
        prediction_length: int,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
        num_samples: int | None = None,
        seed: int | None = None,
        *,
        sampling: T5Sampling | None = None,
        allow_long_horizon: bool | None = None,
        labels: Sequence[str] | None = None,
        past_covariates: Sequence[Mapping[str, Any] | None] | None = None,
        future_covariates: Sequence[Mapping[str, Any] | None] | None = None,
    ) -> ForecastBatch:
        """Forecast a batch of series (NaN = missing) ``prediction_length`` steps ahead.

        ``num_samples``, ``seed`` and ``sampling`` apply to T5 only (sampling) and are
        ignored otherwise; with a ``seed`` T5 results are reproducible. Chronos-2 also takes
        multivariate series and covariates (see :meth:`validate`). Raises
        :class:`ForecastInputError`.
        """
        request = self.validate(
            series,
            prediction_length,
            quantile_levels,
            num_samples,
            allow_long_horizon,
            labels,
            past_covariates=past_covariates,
            future_covariates=future_covariates,
        )
        horizon, levels = request.prediction_length, request.quantile_levels
        with torch.inference_mode():
            if self.kind == "chronos2":
                return self._forecast_chronos2(request)
            context = [torch.as_tensor(values, dtype=torch.float32) for values in request.series]
            if self.kind == "t5":
                return self._forecast_t5(
                    context, horizon, levels, request.num_samples, seed, sampling
                )
            return self._forecast_quantiles(context, horizon, levels)

    def _forecast_t5(
        self,
        context: list[torch.Tensor],
        horizon: int,
        levels: tuple[float, ...],
        num_samples: int | None,
        seed: int | None,
        sampling: T5Sampling | None = None,
    ) -> ForecastBatch:
        knobs = sampling.model_dump() if sampling is not None else {}
        with _SAMPLING_LOCK, self._seeded(seed):
            samples = self.pipeline.predict(
                context, prediction_length=horizon, num_samples=num_samples, **knobs
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
        return ForecastBatch(
            quantile_levels=levels, quantiles=quantiles.float().numpy(), mean=mean.float().numpy()
        )

    def _forecast_chronos2(self, request: CheckedRequest) -> ForecastBatch:
        """One pipeline call per input schema (Chronos-2 takes one per call; see
        :class:`~training_hooks.chronos.validation.InputSchema`), answers in request order."""
        calls: dict[Any, list[int]] = {}
        for index, (values, past, future) in enumerate(
            zip(request.series, request.past_covariates, request.future_covariates, strict=True)
        ):
            schema = input_schema(values, past, future)
            calls.setdefault(schema if schema.shareable else (schema, index), []).append(index)
        quantiles: list[torch.Tensor] = [torch.empty(0)] * len(request.series)
        mean: list[torch.Tensor] = [torch.empty(0)] * len(request.series)
        for indices in calls.values():
            answer_q, answer_m = self.pipeline.predict_quantiles(
                [self._chronos2_input(request, index) for index in indices],
                prediction_length=request.prediction_length,
                quantile_levels=list(request.quantile_levels),
            )
            for index, series_q, series_m in zip(indices, answer_q, answer_m, strict=True):
                quantiles[index], mean[index] = series_q, series_m  # [V, H, Q], [V, H]
        variates = tuple(None if values.ndim == 1 else len(values) for values in request.series)
        return ForecastBatch(
            quantile_levels=request.quantile_levels,
            quantiles=torch.cat(quantiles).float().numpy(),
            mean=torch.cat(mean).float().numpy(),
            variates=None if all(count is None for count in variates) else variates,
        )

    @staticmethod
    def _chronos2_input(request: CheckedRequest, index: int) -> torch.Tensor | dict[str, Any]:
        """A plain tensor, or Chronos-2's dict input when the series has covariates."""
        values, past = request.series[index], request.past_covariates[index]
        if not past:
            return torch.as_tensor(values, dtype=torch.float32)
        item: dict[str, Any] = {"target": values, "past_covariates": past}
        if request.future_covariates[index]:
            item["future_covariates"] = request.future_covariates[index]
        return item

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
