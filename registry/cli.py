"""The ``tradeserve`` command line: list, promote, roll back and audit registry models;
import model_manager directories; build bentos."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ValidationError
from typer.exceptions import TyperException

from registry.cli_output import print_table, progress_reporter
from registry.errors import TradeserveError

if TYPE_CHECKING:
    from registry.audit import AuditEntry

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
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout (and nothing else there).")
]
# Lines of training_hooks.demo / bentos.build progress that end one step of the bar.
DEMO_STEP_DONE = re.compile(r"already promoted$|^\s+done in ")
BENTO_BUILT = re.compile(r"^\S+: built ")


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
    print_table(headers, rows)


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    version: Annotated[int, typer.Argument(min=1, help="Version number to promote.")],
    alias: AliasOption = None,
    reason: ReasonOption = None,
    require: Annotated[
        list[str] | None,
        typer.Option(
            "--require",
            metavar="METRIC>=VALUE",
            help="A bound the version's metrics must meet, e.g. sharpe>=0.5 (>=, >, <=, <, ==; "
            "training metrics and those `tradeserve evaluate` logged on it); repeatable. "
            "An unmet or missing metric refuses the promotion.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Validate a version through the gate and promote it."""
    from registry.gate import MetricThreshold
    from registry.promotion import promote as promote_version

    thresholds = [MetricThreshold.parse(text) for text in require or []]
    with json_stdout(as_json):
        result = promote_version(
            name, str(version), alias=alias, reason=reason, thresholds=thresholds
        )
    echo_result(result, result.summary(), as_json)


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    alias: AliasOption = None,
    reason: ReasonOption = None,
    as_json: JsonOption = False,
) -> None:
    """Return the alias to the previous promoted version (gated)."""
    from registry.promotion import rollback as rollback_alias

    with json_stdout(as_json):
        result = rollback_alias(name, alias=alias, reason=reason)
    echo_result(result, result.summary(), as_json)


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
            gate_column(e),
            e.reason or "",
        ]
        for e in entries
    ]
    headers = ["TIME (UTC)", "EVENT", "ALIAS", "FROM", "TO", "ACTOR", "GATE", "REASON"]
    print_table(headers, rows)


@app.command(name="import")
def import_directory(
    directory: Annotated[Path, typer.Argument(help="model_manager artifact directory.")],
    name: Annotated[
        str, typer.Option("--name", "-n", help="Name to register it under (its model_name).")
    ],
    watch: Annotated[
        bool, typer.Option("--watch", help="Then import every change until interrupted.")
    ] = False,
    auto_promote: Annotated[
        bool,
        typer.Option("--auto-promote/--no-auto-promote", help="Promote what it registers (gated)."),
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Register a model_manager directory as ModelManager's POST /api/models does."""
    from bentos.model_manager.directories import DirectoryManager
    from bentos.model_manager.settings import get_model_manager_settings
    from bentos.model_manager.state import DirectoryStore
    from bentos.model_manager.watcher import DirectoryWatcher

    settings = get_model_manager_settings()
    root = directory.expanduser().resolve()
    with json_stdout(as_json), progress_reporter(f"importing {root}", to_stderr=True):
        manager = DirectoryManager(DirectoryStore(settings.effective_database_url))
        summary = manager.add(name, root, auto_promote).response()
    if as_json:
        typer.echo(summary.model_dump_json(indent=2))
    else:
        rows = [
            [v.name, v.version, "yes" if v.promoted else "; ".join(v.problems) or "no"]
            for v in summary.versions
        ]
        if rows:
            print_table(["MODEL", "VERSION", "PROMOTED"], rows)
        else:
            typer.echo("No change.")
        groups = f"{summary.group_count} group(s) under {summary.root_path}"
        typer.echo(f"{summary.model_name}: {groups}")
    if watch:
        typer.echo(f"Watching {summary.root_path} (Ctrl-C stops)", err=True)
        DirectoryWatcher(
            manager, settings.watch_interval_s, settings.watch_debounce_s, only={summary.model_name}
        ).run_forever()


@app.command()
def demo(
    chronos_size: Annotated[
        str, typer.Option(help="Size of the random-weight Chronos demo models.")
    ] = "tiny",
    as_json: JsonOption = False,
) -> None:
    """Fill an empty registry with demo models trained on real market data (idempotent)."""
    from registry.families import Family, check_name
    from training_hooks.chronos.demo import demo_plan
    from training_hooks.demo import STEPS, run_demo

    for _, _, chronos_name in demo_plan(chronos_size):  # before hours of training, not after
        check_name(chronos_name, Family.CHRONOS)
    steps = progress_reporter(
        "demo models", to_stderr=as_json, total=len(STEPS), step_done=DEMO_STEP_DONE
    )
    with json_stdout(as_json), steps as progress:
        report = run_demo(chronos_size=chronos_size, progress=progress)
    echo_result(report, report.summary(), as_json)


@app.command()
def build(
    family: Annotated[
        list[str] | None,
        typer.Option(
            "--family",
            "-f",
            help="Bento to build: chronos, factor, specialists, regime_blend or model_manager "
            "(repeatable; default: all).",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Also bake versions that have not passed the gate.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Bake the promoted versions into one bento per family (plus the composite)."""
    from bentos.build import build as build_bentos
    from bentos.build import select_targets

    bentos = progress_reporter(
        "bentos", to_stderr=as_json, total=len(select_targets(family)), step_done=BENTO_BUILT
    )
    with json_stdout(as_json), bentos as progress:
        report = build_bentos(family, progress=progress, force=force)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
        return
    rows = [
        [bento.tag if i == 0 else "", m.name, m.version, m.alias or "-", m.bentoml_tag]
        for bento in report.bentos
        for i, m in enumerate(bento.models)
    ]
    print_table(["BENTO", "MODEL", "VERSION", "ALIAS", "BENTOML MODEL"], rows)
    typer.echo(f"BentoML store: {report.bentoml_home}")


@app.command()
def evaluate(
    start: Annotated[
        date, typer.Option(parser=parse_day, metavar="YYYY-MM-DD", help="First held-out day.")
    ] = date(2015, 1, 1),
    end: Annotated[
        date, typer.Option(parser=parse_day, metavar="YYYY-MM-DD", help="Last held-out day.")
    ] = date(2018, 12, 31),
    symbols: Annotated[
        str, typer.Option(callback=require_items, help="Comma-separated symbols.")
    ] = "SPX,NASDAQ",
    modes: Annotated[
        str, typer.Option(callback=require_items, help="Blend modes: argmax, mixture.")
    ] = "argmax,mixture",
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            callback=require_pins,
            metavar="NAME=VERSION",
            help="Evaluate this version instead of the promoted one (repeatable).",
        ),
    ] = None,
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="Do not log a run.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Walk-forward evaluation of RegimeBlend's decisions vs buy-and-hold, logged to MLflow
    and on every evaluated version's model (so `promote --require sharpe>=X` can gate)."""
    from bentos.regime_blend.evaluate import EvaluationConfig
    from bentos.regime_blend.evaluate import evaluate as run_evaluation

    if start > end:
        raise TradeserveError(f"--start {start} is after --end {end}; nothing to evaluate")
    config = EvaluationConfig(
        start=start,
        end=end,
        symbols=tuple(symbol.upper() for symbol in items(symbols)),
        modes=tuple(items(modes)),
        versions=dict(pin.split("=", 1) for pin in model or []),
    )
    with json_stdout(as_json), progress_reporter("evaluation", to_stderr=as_json) as progress:
        report = run_evaluation(config, log_to_mlflow=not no_mlflow, progress=progress)
    echo_result(report, report.summary(), as_json)


def gate_column(entry: AuditEntry) -> str:
    """The gate's verdict as the history shows it: a rejected promotion did not happen; an
    observed move did (in the registry), but its version is not served."""
    if entry.passed:
        return "passed"
    failed = "FAILED, not served" if entry.event == "observed" else "REJECTED"
    return f"{failed}: " + "; ".join(entry.problems)


def parse_day(text: str | date) -> date:
    """Option parser: a calendar day, or a usage error naming the option (one line)."""
    if isinstance(text, date):  # the default
        return text
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a day; write it as YYYY-MM-DD") from None


def items(text: str) -> list[str]:
    """The non-empty entries of a comma-separated option."""
    return [item.strip() for item in text.split(",") if item.strip()]


def require_pins(pins: list[str] | None) -> list[str] | None:
    """Option callback: each ``--model`` is NAME=VERSION with a version number."""
    for pin in pins or []:
        name, _, version = pin.partition("=")
        if not name.strip() or not version.isdigit() or int(version) < 1:
            raise typer.BadParameter(f"{pin!r} is not NAME=VERSION (e.g. specialist-bull=3)")
    return pins


def require_items(text: str) -> str:
    """Option callback: a comma-separated list must name at least one entry."""
    if not items(text):
        raise typer.BadParameter(f"{text!r} names nothing; give a comma-separated list")
    return text


@contextmanager
def json_stdout(as_json: bool) -> Iterator[None]:
    """With ``--json``, stray prints of the work go to stderr: stdout holds the JSON alone."""
    if not as_json:
        yield
        return
    with redirect_stdout(sys.stderr):
        yield


def echo_result(result: BaseModel, summary: str, as_json: bool) -> None:
    """The command's result on stdout: its model as JSON, or its one-line summary."""
    typer.echo(result.model_dump_json(indent=2) if as_json else summary)


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 1."""
    # MLflow draws download progress bars on stderr (the gate downloads every candidate);
    # they would bury the one-line error. Users can still switch them back on.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        result = app(standalone_mode=False)
    except typer.Abort:
        typer.echo("tradeserve: interrupted", err=True)
        sys.exit(130)
    except TyperException as error:  # missing or bad arguments: one line, not a usage box
        context = getattr(error, "ctx", None)
        command = context.command_path if context else "tradeserve"
        typer.echo(f"tradeserve: {error.format_message()} (see `{command} --help`)", err=True)
        sys.exit(2)
    except TradeserveError as error:
        typer.echo(f"tradeserve: {error}", err=True)
        sys.exit(1)
    except ValidationError as error:  # an argument a pydantic model refused
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or error.title
        typer.echo(f"tradeserve: invalid {where}: {first['msg']}", err=True)
        sys.exit(1)
    except MlflowException as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        typer.echo(f"tradeserve: MLflow error: {first}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("tradeserve: interrupted", err=True)
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
