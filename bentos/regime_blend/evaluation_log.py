"""Writing and logging a walk-forward evaluation's results: the equity-curve figure, the
curve and decision tables, the metrics, and the MLflow run that carries them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from bentos.regime_blend.evaluate import EvaluationReport, Simulation
    from bentos.regime_blend.settings import BlendSettings

RUN_NAME = "regime-blend-walk-forward"


def plot_equity(curves: Mapping[str, pd.Series], path: Path, title: str) -> Path:
    """Equity curves and drawdowns as a PNG (matplotlib, Agg backend)."""
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_artifacts(
    report: EvaluationReport, runs: Mapping[str, Simulation], directory: Path
) -> list[Path]:
    curves = {name: run.equity for name, run in runs.items()}
    plot = plot_equity(
        curves,
        directory / "equity_curve.png",
        f"RegimeBlend walk-forward {report.config.start} .. {report.config.end} "
        f"({', '.join(report.config.symbols)})",
    )
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


def log_run(report: EvaluationReport, artifacts: list[Path], settings: BlendSettings) -> str:
    import mlflow

    from registry import store

    store.ensure_experiment()
    config = report.config
    tags = {
        "run_type": "evaluation",
        "evaluation": "regime_blend_walk_forward",
        "family": "composite",
        **{f"model.{name}": version for name, version in report.models.items()},
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
        mlflow.log_metrics(
            {
                f"{name}_{key}": float(value)
                for name, metrics in report.metrics.items()
                for key, value in metrics.model_dump().items()
            }
        )
        for path in artifacts:
            mlflow.log_artifact(str(path))
        return run.info.run_id
