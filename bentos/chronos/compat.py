"""What the Sapheneia and AleutianLocal routes share: model names as those clients write them,
and one forecast through ChronosForecaster's own ``/forecast`` path.

Every seed route ends in :func:`forecast`, which builds the same :class:`SeriesInput` and
:class:`ForecastParameters` a ``/forecast`` client would send and awaits
``ChronosForecaster.forecast_inputs``: the same validation, batching queue, model calls,
metrics and lineage, in-process (the seed called its own API over HTTP).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import ValidationError

from bentos.chronos.schemas import ForecastParameters, SeriesInput
from bentos.chronos.settings import get_chronos_settings
from bentos.shared.lineage import ModelRef
from registry.errors import ModelNotFoundError, TradeserveError
from training_hooks.chronos.runtime import quantile_key

if TYPE_CHECKING:
    from bentos.chronos.service import ChronosForecaster

# Sapheneia's quantile keys "10".."90"
SEED_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MEDIAN = 0.5
ALIAS_PREFIX = "forecast-"  # AleutianLocal: amazon/<slug> -> http://forecast-<slug>:8000
# The Chronos slugs AleutianLocal routes that way (its T5 and Bolt variants) and Chronos-2:
# deploy/ names a forecast-<slug> Service (and compose alias) for each (tests/deploy checks).
SEED_SLUGS = (
    "chronos-t5-tiny",
    "chronos-t5-mini",
    "chronos-t5-small",
    "chronos-t5-base",
    "chronos-t5-large",
    "chronos-bolt-mini",
    "chronos-bolt-small",
    "chronos-bolt-base",
    "chronos-2",
)


class UnknownModelError(ModelNotFoundError):
    """A model name that no served model normalises to; the answer lists the served ones."""

    def __init__(self, message: str, served: list[str]) -> None:
        super().__init__(message)
        self.served = served


def normalize_model_name(name: str) -> str:
    """AleutianLocal's slug: lower-case, org prefix stripped, non-alphanumerics to ``-``
    (``amazon/Chronos-T5-Tiny`` -> ``chronos-t5-tiny``)."""
    slug = name.lower().rsplit("/", 1)[-1]
    return re.sub(r"[^a-z0-9]+", "-", slug).strip("-")


def host_alias(host: str | None) -> str | None:
    """The slug a ``forecast-<slug>`` host name stands for (``forecast-service`` is none)."""
    if not host:
        return None
    label = host.rsplit(":", 1)[0].split(".", 1)[0].lower()
    slug = label.removeprefix(ALIAS_PREFIX)
    return slug if label.startswith(ALIAS_PREFIX) and slug != "service" else None


def served_model(service: ChronosForecaster, name: str, source: str = "model") -> str:
    """The served registry name ``name`` normalises to; :class:`UnknownModelError` if none."""
    served = sorted(service.models.models)
    by_slug = {normalize_model_name(candidate): candidate for candidate in served}
    match = by_slug.get(normalize_model_name(name))
    if match is None:
        raise UnknownModelError(
            f"Unknown model '{name}' ({source}): not served here; served models: "
            f"{', '.join(served)}",
            served,
        )
    return match


def select_model(service: ChronosForecaster, requested: str | None, host: str | None = None) -> str:
    """The model a request means: its own field, else the ``forecast-<slug>`` host it was
    sent to, else ``MODEL_VARIANT``, else the service's default model."""
    if requested:
        return served_model(service, requested)
    if alias := host_alias(host):
        return served_model(service, alias, f"host name {ALIAS_PREFIX}{alias}")
    if variant := get_chronos_settings().model_variant:
        return served_model(service, variant, "MODEL_VARIANT")
    return service.default_model


@dataclass(frozen=True)
class SeedForecast:
    """One series' forecast from the service, keyed as the seeds need it."""

    ref: ModelRef
    kind: str
    quantiles: dict[float, list[float]]
    mean: list[float]
    samples: list[list[float]]
    num_samples: int  # paths drawn; 0 for quantile models
    seconds: float

    @property
    def median(self) -> list[float]:
        return self.quantiles[MEDIAN]


async def forecast(
    service: ChronosForecaster,
    model: str,
    values: list[float | None],
    horizon: int,
    *,
    levels: tuple[float, ...] = SEED_LEVELS,
    num_samples: int | None = None,
    seed: int | None = None,
    sampling: dict[str, float | int | None] | None = None,
    return_samples: bool = False,
) -> SeedForecast:
    """Forecast ``values`` ``horizon`` steps ahead with the served ``model``, as ``/forecast``
    does. Horizons beyond the native one are allowed (the seeds' T5 pipeline produced them)."""
    runtime = service.runtime(model)
    try:
        parameters = ForecastParameters(
            prediction_length=horizon,
            quantile_levels=sorted({*levels, MEDIAN}),
            model=model,
            num_samples=num_samples,
            seed=seed,
            return_samples=return_samples,
            allow_long_horizon=True,
            **(sampling or {}),  # T5's knobs; Bolt and Chronos-2 do not sample
        )
        series = SeriesInput(target=values)
    except ValidationError as error:
        raise TradeserveError(f"invalid forecast request: {error.errors()[0]['msg']}") from None
    started = time.perf_counter()
    response = await service.forecast_inputs([series], parameters)
    seconds = time.perf_counter() - started
    row = response.predictions[0]
    samples = row.get("samples") or []
    return SeedForecast(
        ref=response.model,
        kind=runtime.kind,
        quantiles={level: row[quantile_key(level)] for level in parameters.quantile_levels},
        mean=row["mean"],
        samples=samples,
        num_samples=(num_samples or runtime.info.num_samples or 0) if runtime.kind == "t5" else 0,
        seconds=seconds,
    )
