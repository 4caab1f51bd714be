"""ChronosForecaster: Chronos T5, Bolt and Chronos-2 forecasts with adaptive batching.

``POST /forecast`` validates a whole request (every series, the horizon, the levels, the
Chronos-2 covariates) and then queues its series on the adaptive batcher, which coalesces
series from concurrent requests into shared model calls. ``POST /forecast_series`` takes
single-series tasks into the same queue, each validated the same way before it is queued.
The Sapheneia and AleutianLocal routes (``bentos.chronos.seed_api``, mounted at ``/``)
translate to and from :meth:`ChronosForecaster.forecast_inputs`, the same path as
``/forecast``.
"""

from __future__ import annotations

from collections.abc import Sequence

import bentoml
import pandas as pd

from bentos.chronos.batching import group_tasks, slice_forecast
from bentos.chronos.schemas import (
    ForecastParameters,
    ForecastResponse,
    ModelsResponse,
    Prediction,
    SeriesForecast,
    SeriesInput,
    SeriesTask,
    ServedChronosModel,
    history_length,
)
from bentos.chronos.seed_api import app as seed_app
from bentos.chronos.settings import get_chronos_settings
from bentos.shared.batching import AdaptiveBatcher
from bentos.shared.declare import tradeserve_service
from bentos.shared.errors import client_errors
from bentos.shared.lifecycle import ModelService
from bentos.shared.lineage import ModelRef
from bentos.shared.metrics import observe_call
from bentos.shared.model_source import ModelSet, torch_device
from bentos.shared.runtime_config import configured_batching
from registry.errors import TradeserveError
from registry.families import Family
from training_hooks.chronos.runtime import ChronosRuntime

SERVICE_NAME = "ChronosForecaster"


@tradeserve_service(
    name=SERVICE_NAME,
    # One model copy computing two batches at once: on CPU each call gets cores / (workers
    # x threads) torch intra-op threads (TRADESERVE_TORCH_THREADS overrides), and two
    # single-threaded calls on half batches out-run one call on two threads (bench/README.md).
    # On a GPU one call prepares its batch while the other computes. One worker keeps the
    # whole burst of requests in one queue (two workers split it into small batches).
    workers=1,
    threads=2,  # batches computed at once per worker; requests stay async
    resources={"gpu": 1},  # becomes CUDA_VISIBLE_DEVICES; CPU machines just warn
    # max_concurrency: requests in flight per pod before 429 (split across workers)
    traffic={"timeout": 120, "max_concurrency": 512},
    # Generous latency budget: under load a series waits for the batch in flight instead of
    # being shed with 503 (/forecast and /forecast_series share the queue).
    batching={"max_batch_size": 64, "max_latency_ms": 30_000},
)
@bentoml.asgi_app(seed_app, path="/")  # Sapheneia's and AleutianLocal's routes
class ChronosForecaster(ModelService):
    """Serves every promoted Chronos model of the registry (or of the bento)."""

    def __init__(self) -> None:
        settings = get_chronos_settings()
        self.settings = settings
        self.models: ModelSet[ChronosRuntime] = ModelSet(
            Family.CHRONOS, settings.models, device=torch_device(SERVICE_NAME)
        )
        self.models.load()
        self.batcher = AdaptiveBatcher(self.run_tasks, configured_batching(SERVICE_NAME))
        self.serve(self.models)

    @property
    def default_model(self) -> str:
        names = sorted(self.models.models)
        return next((name for name in names if "bolt" in name), names[0])

    def runtime(self, name: str) -> ChronosRuntime:
        return self.models.get(name).runtime

    @bentoml.api(route="/forecast")
    @client_errors
    async def forecast(
        self, inputs: list[SeriesInput], parameters: ForecastParameters | None = None
    ) -> ForecastResponse:
        """Forecast every series in ``inputs`` with one model."""
        return await self.forecast_inputs(inputs, parameters or ForecastParameters())

    async def forecast_inputs(
        self, inputs: list[SeriesInput], parameters: ForecastParameters
    ) -> ForecastResponse:
        """``/forecast``'s work: validation, the batching queue, lineage (the seed routes too)."""
        name = parameters.model or self.default_model
        runtime = self.runtime(name)
        self._check_size(inputs)
        labels = [series.item_id or f"inputs[{i}]" for i, series in enumerate(inputs)]
        validate_series(runtime, inputs, parameters, labels)
        starts = [forecast_start(series, parameters.freq) for series in inputs]
        tasks = [
            SeriesTask(
                model=name,
                target=series.target,
                prediction_length=parameters.prediction_length,
                quantile_levels=parameters.quantile_levels,
                num_samples=parameters.num_samples,
                seed=parameters.seed,
                temperature=parameters.temperature,
                top_k=parameters.top_k,
                top_p=parameters.top_p,
                return_samples=parameters.return_samples,
                allow_long_horizon=parameters.allow_long_horizon,
                past_covariates=series.past_covariates,
                future_covariates=series.future_covariates,
            )
            for series in inputs
        ]
        results = await self.batcher.submit(tasks)
        predictions = [
            Prediction(
                item_id=series.item_id,
                mean=result.mean,
                start=start,
                samples=result.samples,
                **result.quantiles,
            ).model_dump()
            for series, start, result in zip(inputs, starts, results, strict=True)
        ]
        first = results[0]
        return ForecastResponse(
            predictions=predictions,
            model=ModelRef(name=name, version=first.version, alias=first.alias),
        )

    @bentoml.api(route="/forecast_series")
    @client_errors
    async def forecast_series(self, tasks: list[SeriesTask]) -> list[SeriesForecast]:
        """Single series from many callers, coalesced with /forecast's into shared model calls.

        Each task is validated as /forecast validates a series before it is queued, so a bad
        one gets its own 4xx and never joins (and fails) a batch: a BentoML ``batchable``
        endpoint validates only after merging callers, where one error fails them all.
        """
        self._check_size(tasks)
        for index, task in enumerate(tasks):
            label = f"tasks[{index}]"
            try:
                validate_series(self.runtime(task.model), [task], task, [label])
            except TradeserveError as error:
                if str(error).startswith(label):
                    raise
                raise type(error)(f"{label}: {error}") from None
        return await self.batcher.submit(tasks)

    def run_tasks(self, tasks: list[SeriesTask]) -> list[SeriesForecast]:
        """As few model calls as the families allow (see ``bentos.chronos.batching``)."""
        results: list[SeriesForecast | None] = [None] * len(tasks)
        served = {task.model: self.models.get(task.model) for task in tasks}
        for group in group_tasks(tasks, lambda name: served[name].runtime):
            model = served[group.model]
            with observe_call(SERVICE_NAME, model.ref, len(group.indices)):
                batch = model.runtime.forecast(
                    [tasks[i].target for i in group.indices],
                    group.horizon,
                    group.levels,
                    num_samples=group.num_samples,
                    seed=group.seed,
                    sampling=group.sampling,
                    allow_long_horizon=group.allow_long_horizon,
                    past_covariates=[tasks[i].past_covariates for i in group.indices],
                    future_covariates=[tasks[i].future_covariates for i in group.indices],
                )
            for row, index in enumerate(group.indices):
                results[index] = slice_forecast(
                    batch, row, tasks[index], model.ref.version, model.ref.alias
                )
        return results  # type: ignore[return-value]

    @bentoml.api(route="/models")
    def served_models(self) -> ModelsResponse:
        """The models this service answers with."""
        return ModelsResponse(default_model=self.default_model, models=self.model_infos())

    def model_infos(self) -> list[ServedChronosModel]:
        """What each served model is (``POST /models``, Sapheneia's ``GET /models``)."""
        return [
            ServedChronosModel(
                name=served.ref.name,
                version=served.ref.version,
                alias=served.ref.alias,
                kind=served.runtime.kind,
                context_length=served.runtime.context_length,
                prediction_length=served.runtime.prediction_length,
                quantile_levels=served.runtime.quantile_levels,
                device=self.models.device,
                dtype=str(served.runtime.dtype).removeprefix("torch."),
            )
            for served in self.models.models.values()
        ]

    def _check_size(self, inputs: Sequence[SeriesInput | SeriesTask]) -> None:
        limit = self.settings.max_series_per_request
        if len(inputs) > limit:
            raise TradeserveError(f"{len(inputs)} series in one request; the limit is {limit}")
        longest = max((history_length(series.target) for series in inputs), default=0)
        if longest > self.settings.max_series_length:
            raise TradeserveError(
                f"a series has {longest} observations; the limit is "
                f"{self.settings.max_series_length} (older points add nothing: Chronos keeps "
                "only its context length)"
            )


def validate_series(
    runtime: ChronosRuntime,
    series: Sequence[SeriesInput | SeriesTask],
    parameters: ForecastParameters | SeriesTask,
    labels: list[str],
) -> None:
    """The one check of every route's series: the model's own ``runtime.validate``."""
    runtime.validate(
        [item.target for item in series],
        parameters.prediction_length,
        parameters.quantile_levels,
        num_samples=parameters.num_samples,
        allow_long_horizon=parameters.allow_long_horizon,
        labels=labels,
        past_covariates=[item.past_covariates for item in series],
        future_covariates=[item.future_covariates for item in series],
    )


def forecast_start(series: SeriesInput, freq: str | None) -> str | None:
    """Timestamp of the first forecast step, when the series has a start and a frequency."""
    if series.start is None or freq is None:
        return None
    try:
        steps = pd.date_range(series.start, periods=history_length(series.target) + 1, freq=freq)
    except (ValueError, TypeError) as error:
        raise TradeserveError(
            f"cannot combine start '{series.start}' with freq '{freq}': {error}"
        ) from None
    return steps[-1].isoformat()
