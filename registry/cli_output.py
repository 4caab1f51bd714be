"""What the ``tradeserve`` CLI prints: rich tables and progress bars on a terminal, plain
fixed-width text and one line per progress step everywhere else (pipes, tests, CI logs read
the plain text, so it stays stable)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

Report = Callable[[str], object]


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


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A rich table when stdout is a terminal, else the plain one."""
    if not sys.stdout.isatty():
        typer.echo(render_table(headers, rows))
        return
    table = Table(header_style="bold")
    for header in headers:  # fold, never cut: people copy tags and names from here
        table.add_column(header, overflow="fold")
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    Console().print(table)


@contextmanager
def progress_reporter(
    title: str,
    *,
    to_stderr: bool,
    total: int | None = None,
    step_done: re.Pattern[str] | None = None,
) -> Iterator[Report]:
    """A ``progress`` callback for long work. On a terminal (stderr) every line is logged
    above a rich bar that shows the latest line and advances on lines matching
    ``step_done`` (out of ``total``; a spinner when the total is unknown). Elsewhere each
    line is echoed as is: on stderr when ``to_stderr`` (stdout holds JSON), else stdout."""
    if not sys.stderr.isatty():
        yield lambda line: typer.echo(line, err=to_stderr)
        return
    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if total is not None:
        columns += [BarColumn(), MofNCompleteColumn()]
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(title, total=total)

        def report(line: str) -> None:
            bar.console.print(line, markup=False, highlight=False)
            text = line.strip()
            bar.update(task, description=text if len(text) <= 60 else text[:59] + "…")
            if step_done is not None and step_done.search(line):
                bar.advance(task)

        yield report
        bar.update(task, description=title, completed=total)
