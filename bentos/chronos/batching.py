"""Coalesce single-series tasks into as few model calls as the families allow.

Tasks for one model share a call when their results cannot depend on the grouping:
Bolt answers any horizon up to its native one from the same single pass, so Bolt tasks
of different horizons and quantile levels share one call (run at the longest horizon with
the union of levels, then sliced). Chronos-2 and T5 tasks share a call per horizon, T5
also per sample count and sampling knobs, Chronos-2 also per input schema (target variates,
covariate names and kinds: one call takes one schema, and a numeric covariate stacked with a
categorical one of the same name would be read as categorical). A seeded T5 series gets a
call of its own: sampling draws from one random stream per call, so only then does the seed
make the series reproducible whatever else is queued with it; so does a multivariate
Chronos-2 series with categorical covariates, whose encoding depends on the categories of
the whole call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from bentos.chronos.schemas import SeriesForecast, SeriesTask
from training_hooks.chronos.runtime import ChronosRuntime, ForecastBatch, quantile_key
from training_hooks.chronos.validation import T5Sampling, input_schema


@dataclass
class TaskGroup:
    """Tasks answered by one model call."""

    model: str
    horizon: int
    levels: tuple[float, ...]
    num_samples: int | None
    seed: int | None
    sampling: T5Sampling | None
    allow_long_horizon: bool
    indices: list[int] = field(default_factory=list)


def group_tasks(
    tasks: Sequence[SeriesTask], runtime_of: Callable[[str], ChronosRuntime]
) -> list[TaskGroup]:
    """Partition ``tasks`` (by index) into model calls."""
    groups: dict[tuple, TaskGroup] = {}
    for index, task in enumerate(tasks):
        runtime = runtime_of(task.model)
        merge_horizons = (
            runtime.kind == "bolt" and task.prediction_length <= runtime.prediction_length
        )
        seeded_t5 = runtime.kind == "t5" and task.seed is not None
        schema = None
        if runtime.kind == "chronos2":
            schema = input_schema(task.target, task.past_covariates, task.future_covariates)
        alone = seeded_t5 or (schema is not None and not schema.shareable)
        key = (
            task.model,
            None if merge_horizons else task.prediction_length,
            task.num_samples if runtime.kind == "t5" else None,
            task.seed if seeded_t5 else None,
            task.sampling if runtime.kind == "t5" else None,
            task.allow_long_horizon,
            index if alone else None,
            schema,
        )
        group = groups.get(key)
        if group is None:
            group = groups[key] = TaskGroup(
                model=task.model,
                horizon=task.prediction_length,
                levels=(),
                num_samples=key[2],
                seed=key[3],
                sampling=key[4],
                allow_long_horizon=task.allow_long_horizon,
            )
        group.horizon = max(group.horizon, task.prediction_length)
        group.levels = tuple(sorted(set(group.levels) | set(task.quantile_levels)))
        group.indices.append(index)
    return list(groups.values())


def slice_forecast(
    batch: ForecastBatch, row: int, task: SeriesTask, version: str, alias: str | None
) -> SeriesForecast:
    """One task's answer out of its group's batch: its horizon and its levels only (lists
    of lists, one per variate, for a multivariate series)."""
    horizon, rows = task.prediction_length, batch.rows(row)
    position = {level: i for i, level in enumerate(batch.quantile_levels)}

    def path(values: np.ndarray) -> list:  # [V, H] -> this task's shape
        return values.tolist() if batch.multivariate(row) else values[0].tolist()

    quantiles = {
        quantile_key(level): path(batch.quantiles[rows, :horizon, position[level]])
        for level in task.quantile_levels
    }
    samples = None
    if task.return_samples and batch.samples is not None:
        samples = np.asarray(batch.samples[row, :, :horizon]).tolist()
    return SeriesForecast(
        version=version,
        alias=alias,
        mean=path(batch.mean[rows, :horizon]),
        quantiles=quantiles,
        samples=samples,
    )
