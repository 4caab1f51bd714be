"""Writing and logging a walk-forward evaluation's results: the equity-curve figure, the
curve and decision tables, the metrics, and the MLflow run that carries them.

The metrics are also logged on the logged model of every registered version the evaluation
ran (MLflow 3 logged-model metrics, linked to this run), so they show on the version's page
and ``tradeserve promote NAME VERSION --require sharpe>=0.5`` can gate on them. Names on the
model: the run's ``<strategy>_<metric>`` and, unprefixed (``sharpe``, ``max_drawdown``, ...),
those of the blend mode the service serves by default."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from bentos.regime_blend.evaluate import EvaluationReport, Simulation
    from bentos.regime_blend.settings import BlendSettings

RUN_NAME = "regime-blend-walk-forward"


FIGURE_FILE = "equity_curve.png"
TRADES_FILE = "trades.json"


def plot_equity(curves: Mapping[str, pd.Series], path: Path, title: str) -> Path:
    """Equity curves and drawdowns as a PNG."""
    import matplotlib.pyplot as plt

    fig = equity_figure(curves, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def equity_figure(curves: Mapping[str, pd.Series], title: str) -> Figure:
    """Equity curves (top) and drawdowns (bottom), drawn with matplotlib's Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    for name, curve in curves.items():
        top.plot(curve.index, curve.to_numpy() / 1e6, label=name, linewidth=1.2)
        bottom.plot(curve.index, 1.0 - curve / curve.cummax(), linewidth=0.8)
    top.set_ylabel("equity (million)")
    top.set_title(title)
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.set_ylabel("drawdown")
    bottom.invert_yaxis()
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def trade_table(runs: Mapping[str, Simulation]) -> pd.DataFrame:
    """The trades the replay made (decisions that traded), one row per fill, by mode."""
    frames = [run.decisions.assign(mode=name) for name, run in runs.items() if len(run.decisions)]
    if not frames:
        return pd.DataFrame()
    decisions = pd.concat(frames, ignore_index=True)
    trades = decisions[decisions["traded"] > 0].copy()
    trades["date"] = pd.to_datetime(trades["date"]).dt.strftime("%Y-%m-%d")
    return trades.reset_index(drop=True)


def model_metrics(report: EvaluationReport, served_mode: str) -> dict[str, float]:
    """What is logged on each evaluated model: every ``<strategy>_<metric>`` of the run and,
    unprefixed, the metrics of ``served_mode`` (the first mode evaluated if it was not)."""
    metrics = run_metrics(report)
    mode = served_mode if served_mode in report.metrics else report.config.modes[0]
    metrics.update({k: float(v) for k, v in report.metrics[mode].model_dump().items()})
    return metrics


def run_metrics(report: EvaluationReport) -> dict[str, float]:
    return {
        f"{name}_{key}": float(value)
        for name, metrics in report.metrics.items()
        for key, value in metrics.model_dump().items()
    }


def write_artifacts(
    report: EvaluationReport, runs: Mapping[str, Simulation], directory: Path
) -> list[Path]:
    curves = {name: run.equity for name, run in runs.items()}
    plot = plot_equity(curves, directory / FIGURE_FILE, _title(report))
    table = directory / "equity_curves.csv"
    pd.DataFrame(curves).to_csv(table, index_label="date")
    decisions = directory / "decisions.csv"
    pd.concat(
        [run.decisions.assign(mode=name) for name, run in runs.items() if len(run.decisions)]
    ).to_csv(decisions, index=False)
    summary = directory / "metrics.json"
    summary.write_text(
        json.dumps({name: m.model_dump() for name, m in report.metrics.items()}, indent=2)
    )
    return [plot, table, decisions, summary]


def log_run(
    report: EvaluationReport,
    runs: Mapping[str, Simulation],
    artifacts: list[Path],
    settings: BlendSettings,
) -> str:
    """Log the evaluation run (figure, trade table, metrics, artifacts) and the metrics on
    every evaluated version's logged model; then refresh those versions' descriptions."""
    import mlflow

    from registry import description, store
    from registry.model_metrics import logged_model_id

    store.ensure_experiment()
    client = store.client()
    config = report.config
    served_mode = settings.default_mode or "mixture"  # unset: the native /predict's mode
    tags = {
        "run_type": "evaluation",
        "evaluation": "regime_blend_walk_forward",
        "family": "composite",
        "served_mode": served_mode,
        description.FIGURE_TAG: FIGURE_FILE,
        **{f"model.{name}": version for name, version in report.models.items()},
    }
    with store.translate_errors():
        model_ids = {
            name: logged_model_id(client.get_model_version(name, version))
            for name, version in report.models.items()
        }
    with mlflow.start_run(run_name=RUN_NAME, tags=tags) as run:
        mlflow.log_params(
            {
                "symbols": ",".join(config.symbols),
                "start": config.start.isoformat(),
                "end": config.end.isoformat(),
                "modes": ",".join(config.modes),
                "initial_capital": config.initial_capital,
                "cost_bps": config.cost_bps,
                "weights": settings.weights.model_dump_json(),
                "sizing": settings.sizing.model_dump_json(),
                "risk_limits": settings.risk.model_dump_json(),
            }
        )
        mlflow.log_metrics(run_metrics(report))
        on_model = model_metrics(report, served_mode)
        for model_id in model_ids.values():
            if model_id:  # a version registered from a run (MLflow 2) has no logged model
                mlflow.log_metrics(on_model, model_id=model_id)
        curves = {name: sim.equity for name, sim in runs.items()}
        figure = equity_figure(curves, _title(report))
        try:
            mlflow.log_figure(figure, FIGURE_FILE)
        finally:
            import matplotlib.pyplot as plt

            plt.close(figure)
        mlflow.log_table(trade_table(runs), TRADES_FILE)
        for path in artifacts:
            if path.name != FIGURE_FILE:  # log_figure stored it
                mlflow.log_artifact(str(path))
        run_id = run.info.run_id
    for name, version in report.models.items():
        description.refresh(name, [version], client)
    return run_id


def _title(report: EvaluationReport) -> str:
    config = report.config
    return f"RegimeBlend walk-forward {config.start} .. {config.end} ({', '.join(config.symbols)})"
