"""Run the statements of a hot transaction with as little per-execution work as possible.

Every decision group runs the same few statements (read the book, record reservations, refs
and decisions). SQLAlchemy's per-execution work (execution context, parameter processing,
result wrapping, events) costs ~40 µs a statement: on SQLite, several times what SQLite's
own work costs. :func:`run` compiles a statement once for SQLite and executes it on the
transaction's DBAPI cursor, with the bind processors of its types (a decision id still
becomes its 16 bytes); on PostgreSQL, where a statement is a round trip and SQLAlchemy
batches inserts, it goes through SQLAlchemy.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Params = Mapping[str, Any]


def run(
    connection: Connection, statement: ClauseElement, params: Params | list[Params] | None = None
) -> Sequence[Sequence[Any]]:
    """Execute ``statement`` (once, or for each of a list of ``params``) in ``connection``'s
    transaction; the rows it returns, as the driver gives them: use it for statements whose
    result columns need no conversion (numbers, text, bytes)."""
    if connection.dialect.name != "sqlite":
        result = connection.execute(statement, params)
        return result.all() if result.returns_rows else []
    many = isinstance(params, list)
    rows: list[Params] = params if isinstance(params, list) else [params or {}]
    if not rows:
        return []
    plan = _plan(connection.dialect, statement, tuple(rows[0]))
    values = [plan.values(row) for row in rows]
    cursor = connection.connection.cursor()
    try:
        if many:
            cursor.executemany(plan.sql, values)
            return []
        cursor.execute(plan.sql, values[0])
        return cursor.fetchall()
    except sqlite3.Error as error:  # raised as SQLAlchemy raises it: callers catch that
        raise DBAPIError.instance(
            plan.sql, values, error, sqlite3.Error, dialect=connection.dialect
        ) from error
    finally:
        cursor.close()


@dataclass(frozen=True)
class _Plan:
    """A statement compiled for SQLite: its SQL, the values it holds itself (a literal in a
    WHERE), and per positional parameter its name and its type's bind processor."""

    sql: str
    own: dict[str, Any]
    binds: tuple[tuple[str, Callable[[Any], Any] | None], ...]

    def values(self, params: Params) -> tuple[Any, ...]:
        given = {**self.own, **params}
        return tuple(
            given[name] if process is None else process(given[name]) for name, process in self.binds
        )


@functools.lru_cache(maxsize=256)
def _plan(dialect: Dialect, statement: ClauseElement, keys: tuple[str, ...]) -> _Plan:
    """Built once per engine, statement object and parameter names (the statements are
    module or store constants)."""
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    assert isinstance(compiled, SQLCompiler) and compiled.positiontup is not None
    own = {name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required}
    binds = tuple(
        (name, compiled.binds[name].type.bind_processor(dialect)) for name in compiled.positiontup
    )
    return _Plan(compiled.string, own, binds)
