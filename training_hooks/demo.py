"""``tradeserve demo``: fill an empty registry with models trained on real market data.

Each step trains only when one of its models has no version yet, and every model that
lacks a champion is promoted through the gate, so running the demo again adds nothing.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, Field

from registry import store
from registry.catalog import ModelSummary, list_models
from registry.families import REGIME_DETECTOR_NAME, SPECIALIST_ROLES, specialist_name
from registry.loading import load_version
from registry.promotion import promote
from registry.resolve import latest_version, resolve
from registry.settings import get_settings
from registry.trust import trusting_sklearn_pickles
from training_hooks.registration import RegisteredVersion

Progress = Callable[[str], object]
DEMO_REASON = "tradeserve demo: initial promotion"


class DemoReport(BaseModel):
    """What one demo run did."""

    promoted: list[str] = Field(default_factory=list, description="name@version promoted")
    already_promoted: list[str] = Field(default_factory=list)
    market_data_written: list[str] = Field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        if not self.promoted:
            return f"Nothing to do: all {len(self.already_promoted)} demo models are promoted."
        return (
            f"Promoted {len(self.promoted)} demo models in {self.seconds:.0f} s "
            f"({len(self.already_promoted)} were already promoted). "
            "`tradeserve models` lists them; `make mlflow-ui` shows them in the MLflow UI."
        )


@dataclass
class DemoContext:
    """What the steps share: real market data, a scratch folder, options."""

    workdir: Path
    chronos_size: str
    market_data_written: list[str] = field(default_factory=list)

    @cached_property
    def market(self) -> dict[str, pd.DataFrame]:
        from training_hooks.market_data import (
            DEMO_SOURCES,
            MarketDataStore,
            ensure_demo_market_data,
        )

        market_store = MarketDataStore(get_settings().market_data_dir)
        self.market_data_written = ensure_demo_market_data(market_store)
        return {symbol: market_store.load(symbol) for symbol in DEMO_SOURCES}

    def promoted_regime(self) -> tuple[object, RegisteredVersion]:
        """The champion regime detector's runtime, which the specialists are trained on."""
        resolved = resolve(REGIME_DETECTOR_NAME)
        runtime = load_version(resolved).runtime
        registered = RegisteredVersion(
            name=resolved.name,
            version=resolved.version,
            family=resolved.family,
            run_id=resolved.run_id,
            model_uri=resolved.model_uri,
        )
        return runtime, registered


@dataclass(frozen=True)
class DemoStep:
    title: str
    names: Callable[[DemoContext], list[str]]
    train: Callable[[DemoContext], list[RegisteredVersion]]
    # Its models are pickles the gate may load when this run has just trained them.
    own_pickles: bool = False


def _regime(ctx: DemoContext) -> list[RegisteredVersion]:
    from training_hooks.regime.demo import train_demo_regime

    return [train_demo_regime(ctx.market, ctx.workdir)]


def _specialists(ctx: DemoContext) -> list[RegisteredVersion]:
    from training_hooks.specialist.demo import train_demo_specialists

    runtime, regime_version = ctx.promoted_regime()
    return train_demo_specialists(ctx.market, runtime, ctx.workdir, regime_version=regime_version)


def _factors(ctx: DemoContext) -> list[RegisteredVersion]:
    from training_hooks.factor.demo import train_demo_factor_models

    return train_demo_factor_models(ctx.market, ctx.workdir)


def _factor_names(ctx: DemoContext) -> list[str]:
    from training_hooks.factor.runtime import factor_model_name
    from training_hooks.factor.train import DEMO_RETURN_NAME, DEMO_SYMBOLS

    return [factor_model_name(f"{symbol}_{DEMO_RETURN_NAME}") for symbol in DEMO_SYMBOLS]


def _venues(ctx: DemoContext) -> list[RegisteredVersion]:
    from training_hooks.venue_quantiles.demo import register_demo_venue_quantiles

    return [register_demo_venue_quantiles(ctx.market)]


def _venue_names(ctx: DemoContext) -> list[str]:
    from training_hooks.venue_quantiles.demo import DEMO_VENUE

    return [f"venue-quantiles-{DEMO_VENUE}"]


def _tabular(ctx: DemoContext) -> list[RegisteredVersion]:
    from training_hooks.tabular.demo import train_demo_forest

    return [train_demo_forest(ctx.market)]


def _tabular_names(ctx: DemoContext) -> list[str]:
    from training_hooks.tabular.demo import DEMO_NAME

    return [DEMO_NAME]


def _chronos(ctx: DemoContext) -> list[RegisteredVersion]:
    from training_hooks.chronos.demo import register_demo_chronos

    return register_demo_chronos(ctx.chronos_size, ctx.workdir / "chronos")


def _chronos_names(ctx: DemoContext) -> list[str]:
    from training_hooks.chronos.demo import demo_plan

    return [name for _, _, name in demo_plan(ctx.chronos_size)]


STEPS = (
    DemoStep(
        "regime detector (Gaussian HMM, forward filter)", lambda _: [REGIME_DETECTOR_NAME], _regime
    ),
    DemoStep(
        "specialists (PyTorch policies)",
        lambda _: [specialist_name(role) for role in SPECIALIST_ROLES],
        _specialists,
    ),
    DemoStep("factor models (XGBoost)", _factor_names, _factors),
    DemoStep("venue quantiles", _venue_names, _venues),
    DemoStep(
        "tabular RandomForest (scikit-learn, N1V1's kind of model)",
        _tabular_names,
        _tabular,
        own_pickles=True,
    ),
    DemoStep("Chronos forecasters (random weights, untrained)", _chronos_names, _chronos),
)


def run_demo(chronos_size: str = "tiny", progress: Progress = print) -> DemoReport:
    """Train, register and promote whatever demo model the registry lacks."""
    started = time.perf_counter()
    settings = store.configure()
    store.ensure_experiment()
    progress(f"registry: {settings.effective_tracking_uri}")
    report = DemoReport()
    settings.home_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="demo-", dir=settings.home_dir) as scratch:
        ctx = DemoContext(workdir=Path(scratch), chronos_size=chronos_size)
        for number, step in enumerate(STEPS, start=1):
            _run_step(number, step, ctx, report, progress)
    report.market_data_written = ctx.market_data_written
    report.seconds = time.perf_counter() - started
    return report


def _run_step(
    number: int, step: DemoStep, ctx: DemoContext, report: DemoReport, progress: Progress
) -> None:
    step_started = time.perf_counter()
    names = step.names(ctx)
    summaries: dict[str, ModelSummary] = {s.name: s for s in list_models()}
    missing = [name for name in names if summaries.get(name) is None or not summaries[name].version]
    prefix = f"[{number}/{len(STEPS)}] {step.title}"
    if not missing:
        report.already_promoted.extend(names)
        progress(f"{prefix}: already promoted")
        return
    progress(f"{prefix}: training and registering {', '.join(missing)} ...")
    latest: dict[str, str] = {}
    if any(name not in summaries for name in missing):
        latest = {version.name: version.version for version in step.train(ctx)}
    for name in missing:
        version = latest.get(name) or latest_version(name).version
        trusted = step.own_pickles and name in latest  # trained by this very run
        with trusting_sklearn_pickles() if trusted else contextlib.nullcontext():
            result = promote(name, version, reason=DEMO_REASON)
        report.promoted.append(f"{name}@{result.to_version}")
        progress(f"      {result.summary()}")
    report.already_promoted.extend(name for name in names if name not in missing)
    progress(f"      done in {time.perf_counter() - step_started:.1f} s")
