"""Walk-forward evaluation of RegimeBlend's decision logic on held-out real data.

``tradeserve evaluate`` replays the composite's decisions day by day over the demo's test
window (S&P 500 and NASDAQ, 2015–2018) with the promoted regime detector and specialists,
for ``argmax`` and ``mixture`` blending, against buy-and-hold, and logs P&L, Sharpe, maximum
drawdown and turnover with an equity-curve plot to an MLflow evaluation run.

It runs the service's own code: the market series (features + causal regime filter) from
``bentos.regime_blend.market.build_series``, and every decision through
``bentos.regime_blend.decision.decide`` (weights, blending, sizing, risk checks). Only the
expensive parts are vectorised: the filter runs once over each symbol's whole history (it
is causal, so the probability on a date only uses bars up to that date) and each specialist
scores all test dates in one batch.

Simulation: one book for all symbols starting with ``initial_capital`` cash. Each day every
symbol with a bar is decided at its close; an approved BUY/SELL trades its recommended
quantity at that close, a rejected one trades the risk checks' allowed quantity, HOLD trades
nothing; ``cost_bps`` is charged on traded notional. The day's start equity (for the daily
loss check) is the previous close's equity.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from bentos.regime_blend.blending import plan_roles
from bentos.regime_blend.decision import DecisionPolicy, decide
from bentos.regime_blend.evaluation_log import log_run, write_artifacts
from bentos.regime_blend.market import SymbolSeries, build_series
from bentos.regime_blend.portfolio import Portfolio
from bentos.regime_blend.settings import BlendSettings
from registry.errors import TradeserveError
from registry.families import REGIME_DETECTOR_NAME, SPECIALIST_ROLES, specialist_name
from training_hooks.market_data import DEMO_SPLITS, MarketDataStore
from training_hooks.regime.runtime import REGIME_LABELS, RegimeRuntime

if TYPE_CHECKING:
    from registry.resolve import ResolvedVersion

TRADING_DAYS = 252
BUY_AND_HOLD = "buy_and_hold"


class EvaluationConfig(BaseModel):
    """What to replay and how."""

    model_config = ConfigDict(frozen=True)

    symbols: tuple[str, ...] = ("SPX", "NASDAQ")
    start: date = date(2015, 1, 1)
    end: date = DEMO_SPLITS.test_end
    modes: tuple[str, ...] = ("argmax", "mixture")
    initial_capital: float = Field(default=1_000_000.0, gt=0)
    cost_bps: float = Field(default=1.0, ge=0, description="cost per traded notional, in bps")
    versions: dict[str, str] = Field(
        default_factory=dict,
        description="registered name -> version to evaluate instead of the promoted one (a "
        "candidate, before `tradeserve promote --require`)",
    )


class StrategyMetrics(BaseModel):
    final_equity: float
    pnl: float
    total_return: float
    annualized_return: float
    sharpe: float = Field(description="annualised, daily equity returns")
    max_drawdown: float = Field(description="largest peak-to-trough loss, as a fraction")
    turnover: float = Field(description="traded notional / mean equity, per year")
    trades: int
    rejected: int = Field(description="decisions the risk checks rejected (traded the allowed)")
    days: int


class EvaluationReport(BaseModel):
    config: EvaluationConfig
    models: dict[str, str] = Field(description="registered name -> version")
    metrics: dict[str, StrategyMetrics]
    run_id: str | None = None
    artifacts: list[str] = Field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"Walk-forward {self.config.start} .. {self.config.end} on "
            f"{', '.join(self.config.symbols)} ({self.seconds:.1f} s)",
            f"{'strategy':<14}{'P&L':>14}{'return':>9}{'Sharpe':>8}{'max DD':>8}"
            f"{'turnover':>10}{'trades':>8}{'rejected':>10}",
        ]
        for name, m in self.metrics.items():
            lines.append(
                f"{name:<14}{m.pnl:>14,.0f}{m.total_return:>9.1%}{m.sharpe:>8.2f}"
                f"{m.max_drawdown:>8.1%}{m.turnover:>10.2f}{m.trades:>8}{m.rejected:>10}"
            )
        if self.run_id:
            lines.append(f"MLflow run {self.run_id} (models: {_versions_text(self.models)})")
        return "\n".join(lines)


@dataclass(frozen=True)
class Models:
    regime: RegimeRuntime
    specialists: dict[str, Any]  # role -> SpecialistRuntime
    versions: dict[str, str]  # registered name -> version


@dataclass(frozen=True)
class Signals:
    """One symbol's test window: closes, regime probabilities, specialist probabilities."""

    dates: pd.DatetimeIndex
    close: np.ndarray
    regime: np.ndarray  # [days, REGIME_LABELS]
    probabilities: dict[str, np.ndarray]  # role -> [days, ACTIONS]


@dataclass
class Simulation:
    equity: pd.Series
    traded_notional: float
    trades: int
    rejected: int
    decisions: pd.DataFrame


def load_promoted_models(pinned: Mapping[str, str] | None = None) -> Models:
    """The promoted regime detector and specialists, loaded in-process from the registry;
    ``pinned`` (registered name -> version) replaces a promoted version by a given one."""
    from registry.catalog import list_models
    from registry.loading import load_version
    from registry.resolve import get_version, resolve

    pinned = dict(pinned or {})
    roles = {specialist_name(role): role for role in SPECIALIST_ROLES}
    unknown = sorted(set(pinned) - {REGIME_DETECTOR_NAME, *roles})
    if unknown:
        known = ", ".join([REGIME_DETECTOR_NAME, *roles])
        raise TradeserveError(f"the evaluation runs no model named {unknown}; it runs {known}")

    def chosen(name: str) -> ResolvedVersion:
        return get_version(name, pinned[name]) if name in pinned else resolve(name)

    promoted = {summary.name for summary in list_models() if summary.version} | set(pinned)
    regime = load_version(chosen(REGIME_DETECTOR_NAME))
    versions = {REGIME_DETECTOR_NAME: regime.resolved.version}
    specialists = {}
    for role in SPECIALIST_ROLES:
        if specialist_name(role) not in promoted:
            continue
        loaded = load_version(chosen(specialist_name(role)))
        specialists[role] = loaded.runtime
        versions[loaded.resolved.name] = loaded.resolved.version
    if not specialists:
        raise TradeserveError("no specialist is promoted; run `tradeserve demo`")
    return Models(regime.runtime, specialists, versions)


def window_indices(series: SymbolSeries, start: date, end: date) -> np.ndarray:
    """Indices of the bars in ``[start, end]`` (whole days)."""
    first = np.datetime64(pd.Timestamp(start), "ns")
    last = np.datetime64(pd.Timestamp(end) + pd.Timedelta(days=1), "ns")
    return np.flatnonzero((series.dates >= first) & (series.dates < last))


def symbol_signals(bars: pd.DataFrame, models: Models, start: date, end: date) -> Signals:
    """Signals of one symbol: the causal filter once over all bars, one batch per specialist."""
    series = build_series(bars, models.regime)
    index = window_indices(series, start, end)
    if not len(index):
        raise TradeserveError(f"no bars between {start} and {end}")
    features = series.features[index]
    regime = series.regime[index]
    if np.isnan(features).any() or np.isnan(regime).any():
        raise TradeserveError(f"not enough history before {start} for features and regimes")
    return Signals(
        dates=pd.DatetimeIndex(series.dates[index]),
        close=series.close[index],
        regime=regime,
        probabilities={
            role: runtime.probabilities(features.astype(np.float32))
            for role, runtime in models.specialists.items()
        },
    )


def simulate(
    mode: str,
    signals: Mapping[str, Signals],
    policy: DecisionPolicy,
    served: set[str],
    config: EvaluationConfig,
) -> Simulation:
    """Replay ``mode`` day by day through the service's decision function."""
    plan = plan_roles(policy.mapping, served)
    rows: dict[str, dict[pd.Timestamp, int]] = {
        symbol: {day: i for i, day in enumerate(s.dates)} for symbol, s in signals.items()
    }
    days = sorted(set().union(*(s.dates for s in signals.values())))
    book = Portfolio(cash=config.initial_capital)
    previous_equity = config.initial_capital
    equity, decisions = [], []
    traded = 0.0
    trades = rejected = 0
    for day in days:
        today = {symbol: rows[symbol][day] for symbol in signals if day in rows[symbol]}
        for symbol, i in today.items():
            book = book.marked(symbol, float(signals[symbol].close[i]))
        book = book.model_copy(update={"day_start_equity": previous_equity})
        for symbol, i in today.items():
            s = signals[symbol]
            price = float(s.close[i])
            decision = decide(
                s.regime[i],
                {role: s.probabilities[role][i] for role in plan.needed},
                plan,
                mode=mode,
                policy=policy,
                symbol=symbol,
                price=price,
                portfolio=book,
                risk_check=True,
            )
            risk = decision.risk
            assert risk is not None
            quantity = decision.quantity if risk.approved else risk.allowed_quantity
            rejected += not risk.approved
            if decision.action != "HOLD" and quantity > 0:
                signed = quantity if decision.action == "BUY" else -quantity
                notional = abs(signed) * price
                book = book.after_fill(symbol, signed, price)
                book = book.model_copy(
                    update={"cash": book.cash - notional * config.cost_bps / 10_000}
                )
                traded += notional
                trades += 1
            decisions.append(
                {
                    "date": day,
                    "symbol": symbol,
                    "action": decision.action,
                    "confidence": decision.confidence,
                    "quantity": decision.quantity,
                    "approved": risk.approved,
                    "traded": quantity if decision.action != "HOLD" else 0,
                    "price": price,
                    **dict(zip(REGIME_LABELS, decision.regime.tolist(), strict=True)),
                }
            )
        previous_equity = book.equity()
        equity.append(previous_equity)
    return Simulation(
        equity=pd.Series(equity, index=pd.DatetimeIndex(days), name=mode),
        traded_notional=traded,
        trades=trades,
        rejected=rejected,
        decisions=pd.DataFrame(decisions),
    )


def buy_and_hold(signals: Mapping[str, Signals], config: EvaluationConfig) -> Simulation:
    """Equal capital in every symbol at its first close, held to the end."""
    days = pd.DatetimeIndex(sorted(set().union(*(s.dates for s in signals.values()))))
    budget = config.initial_capital / len(signals)
    cost = config.cost_bps / 10_000
    values = []
    for s in signals.values():
        shares = budget * (1 - cost) / s.close[0]
        values.append(pd.Series(shares * s.close, index=s.dates).reindex(days).ffill().bfill())
    equity = sum(values)
    return Simulation(
        equity=pd.Series(np.asarray(equity, dtype=np.float64), index=days, name=BUY_AND_HOLD),
        traded_notional=config.initial_capital,
        trades=len(signals),
        rejected=0,
        decisions=pd.DataFrame(),
    )


def strategy_metrics(sim: Simulation, initial_capital: float) -> StrategyMetrics:
    equity = sim.equity.to_numpy(np.float64)
    curve = np.concatenate([[initial_capital], equity])
    returns = curve[1:] / curve[:-1] - 1.0
    std = float(returns.std(ddof=1)) if len(returns) > 1 else 0.0
    sharpe = float(returns.mean() / std * math.sqrt(TRADING_DAYS)) if std > 0 else 0.0
    drawdown = 1.0 - curve / np.maximum.accumulate(curve)
    years = max(len(equity) / TRADING_DAYS, 1e-9)
    total_return = float(curve[-1] / initial_capital - 1.0)
    return StrategyMetrics(
        final_equity=float(curve[-1]),
        pnl=float(curve[-1] - initial_capital),
        total_return=total_return,
        annualized_return=float((1.0 + total_return) ** (1.0 / years) - 1.0),
        sharpe=sharpe,
        max_drawdown=float(drawdown.max()),
        turnover=float(sim.traded_notional / float(np.mean(curve)) / years),
        trades=sim.trades,
        rejected=sim.rejected,
        days=len(equity),
    )


def evaluate(
    config: EvaluationConfig | None = None,
    *,
    settings: BlendSettings | None = None,
    log_to_mlflow: bool = True,
    out_dir: Path | None = None,
    progress: Callable[[str], object] = lambda _: None,
) -> EvaluationReport:
    """Run the walk-forward evaluation; log it to MLflow unless ``log_to_mlflow`` is False."""
    started = time.perf_counter()
    config = config or EvaluationConfig()
    settings = settings or BlendSettings()
    unknown = [mode for mode in config.modes if mode not in ("argmax", "mixture")]
    if unknown:
        raise TradeserveError(f"unknown blend mode(s) {unknown}; use argmax and/or mixture")
    policy = DecisionPolicy.from_settings(settings)
    progress("loading the promoted regime detector and specialists")
    models = load_promoted_models(config.versions)
    store = MarketDataStore(settings.market_path)
    signals = {
        symbol: symbol_signals(store.load(symbol), models, config.start, config.end)
        for symbol in config.symbols
    }
    progress(f"replaying {len(config.modes)} blend modes over {len(signals)} symbols")
    runs = {
        mode: simulate(mode, signals, policy, set(models.specialists), config)
        for mode in config.modes
    }
    runs[BUY_AND_HOLD] = buy_and_hold(signals, config)
    metrics = {name: strategy_metrics(run, config.initial_capital) for name, run in runs.items()}
    report = EvaluationReport(config=config, models=models.versions, metrics=metrics)
    directory = Path(out_dir or tempfile.mkdtemp(prefix="regime-blend-eval-"))
    directory.mkdir(parents=True, exist_ok=True)
    artifacts = write_artifacts(report, runs, directory)
    report.artifacts = [str(path) for path in artifacts]
    report.seconds = time.perf_counter() - started
    if log_to_mlflow:
        progress("logging the evaluation run to MLflow")
        report.run_id = log_run(report, runs, artifacts, settings)
    report.seconds = time.perf_counter() - started
    return report


def _versions_text(versions: Mapping[str, str]) -> str:
    return ", ".join(f"{name} v{version}" for name, version in versions.items())
