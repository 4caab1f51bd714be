"""The ``tradeserve`` command line: list, promote, roll back and audit registry models."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Annotated

import typer
from mlflow.exceptions import MlflowException

from registry.errors import TradeserveError

app = typer.Typer(
    name="tradeserve",
    help="tradeserve: MLflow registry + BentoML serving for trading and forecasting models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

AliasOption = Annotated[
    str | None, typer.Option("--alias", "-a", help="Alias to move (default: champion).")
]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", "-r", help="Why; recorded in the audit trail.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.command()
def models(as_json: JsonOption = False) -> None:
    """List registered models with their promoted version."""
    from registry.catalog import list_models

    summaries = list_models()
    if as_json:
        typer.echo(json.dumps([s.model_dump(mode="json") for s in summaries], indent=2))
        return
    if not summaries:
        typer.echo("The registry is empty; `tradeserve demo` fills it with demo models.")
        return
    rows = [
        [
            s.family,
            s.name,
            s.version or "-",
            s.stage or "-",
            str(s.versions),
            s.last_promotion.strftime("%Y-%m-%d %H:%M:%S") if s.last_promotion else "-",
        ]
        for s in summaries
    ]
    headers = ["FAMILY", "NAME", "CHAMPION", "STAGE", "VERSIONS", "LAST PROMOTION (UTC)"]
    typer.echo(render_table(headers, rows))


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[str, typer.Argument(help="Version number to promote.")],
    alias: AliasOption = None,
    reason: ReasonOption = None,
    require: Annotated[
        list[str] | None,
        typer.Option("--require", help="Metric bound the version must meet, e.g. val_sharpe>=0.5"),
    ] = None,
) -> None:
    """Validate a version through the gate and promote it."""
    from registry.gate import MetricThreshold
    from registry.promotion import promote as promote_version

    thresholds = [MetricThreshold.parse(text) for text in require or []]
    result = promote_version(name, version, alias=alias, reason=reason, thresholds=thresholds)
    typer.echo(result.summary())


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: AliasOption = None,
    reason: ReasonOption = None,
) -> None:
    """Return the alias to the previous promoted version (gated)."""
    from registry.promotion import rollback as rollback_alias

    typer.echo(rollback_alias(name, alias=alias, reason=reason).summary())


@app.command()
def history(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: AliasOption = None,
    as_json: JsonOption = False,
) -> None:
    """Promotion history of a model: who, when, from which version to which, why, result."""
    from registry.audit import history as audit_history

    entries = audit_history(name, alias)
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in entries], indent=2))
        return
    if not entries:
        typer.echo(f"No promotions of '{name}' are recorded.")
        return
    rows = [
        [
            e.time.strftime("%Y-%m-%d %H:%M:%S"),
            e.event,
            e.alias,
            e.from_version or "-",
            e.to_version,
            e.actor,
            "passed" if e.passed else "REJECTED: " + "; ".join(e.problems),
            e.reason or "",
        ]
        for e in entries
    ]
    headers = ["TIME (UTC)", "EVENT", "ALIAS", "FROM", "TO", "ACTOR", "GATE", "REASON"]
    typer.echo(render_table(headers, rows))


@app.command()
def demo(
    chronos_size: Annotated[
        str, typer.Option(help="Size of the random-weight Chronos demo models.")
    ] = "tiny",
) -> None:
    """Fill an empty registry with demo models trained on real market data (idempotent)."""
    from training_hooks.demo import run_demo

    report = run_demo(chronos_size=chronos_size, progress=typer.echo)
    typer.echo(report.summary())


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain fixed-width table."""
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]
    lines = [headers, *rows]
    return "\n".join(
        "  ".join(
            str(cell).ljust(width) for cell, width in zip(line, widths, strict=False)
        ).rstrip()
        for line in lines
    )


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 1."""
    try:
        app()
    except TradeserveError as error:
        typer.echo(f"tradeserve: {error}", err=True)
        sys.exit(1)
    except MlflowException as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        typer.echo(f"tradeserve: MLflow error: {first}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("tradeserve: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
