"""The decision log over months: its size in the metrics, old decisions exported to Parquet
(a folder or ``s3://`` prefix) and then pruned, refs no kept decision uses removed.

A background thread per process measures the size every ``interval_s``; the retention work
runs in whichever process takes the ``retention`` lock first (an advisory lock on
PostgreSQL, a file lock on SQLite), so replicas never export the same rows twice. A batch is
deleted only after its Parquet file is written.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select, text

from bentos.regime_blend.decision_log import DecisionRecord, from_us, unpack_row
from bentos.regime_blend.metrics import record_log_size
from bentos.regime_blend.state.db import StateDatabase
from bentos.regime_blend.state.portfolio_store import now_us
from bentos.regime_blend.state.tables import decision_refs, decisions
from bentos.regime_blend.storage import write_object

logger = logging.getLogger("tradeserve.regime_blend")
DAY_US = 86_400 * 1_000_000
REF_MARGIN_US = 2 * 3600 * 1_000_000  # > decision_log.REF_TOUCH_US
BATCH = 5_000
EXACT_BELOW = 1_000_000  # PostgreSQL: above, the planner's row estimate


@dataclass
class PruneReport:
    exported: int = 0
    deleted: int = 0
    refs_deleted: int = 0
    files: list[str] = field(default_factory=list)


def log_size(db: StateDatabase) -> tuple[int, int]:
    """(rows, bytes) of the decision log: decisions and refs with their indexes (SQLite: the
    database file's used pages)."""
    with db.read() as connection:
        if db.is_postgres:
            rows = connection.execute(
                text("SELECT reltuples::bigint FROM pg_class WHERE relname = 'decisions'")
            ).scalar()
            if rows is None or rows < EXACT_BELOW:  # exact unless counting would be slow
                rows = connection.execute(select(func.count()).select_from(decisions)).scalar()
            size = connection.execute(
                text(
                    "SELECT pg_total_relation_size('decisions')"
                    " + pg_total_relation_size('decision_refs')"
                )
            ).scalar()
        else:
            rows = connection.execute(select(func.count()).select_from(decisions)).scalar()
            # the file's used pages (portfolio and fills are a few pages beside the log);
            # dbstat would read every page of the file
            pages, free, page_size = (
                connection.exec_driver_sql(f"PRAGMA {name}").scalar() or 0
                for name in ("page_count", "freelist_count", "page_size")
            )
            size = (pages - free) * page_size
    return int(rows or 0), int(size or 0)


def export_and_prune(
    db: StateDatabase, retention_days: float, export_uri: str | None, now: int | None = None
) -> PruneReport:
    """Export decisions older than ``retention_days`` to Parquet under ``export_uri`` (None:
    none), delete them, then delete the refs no remaining decision can use."""
    now = now_us() if now is None else now
    cutoff = now - int(retention_days * DAY_US)
    report = PruneReport()
    while True:
        with db.read() as connection:
            rows = connection.execute(
                select(decisions)
                .where(decisions.c.created_us < cutoff)
                .order_by(decisions.c.created_us)
                .limit(BATCH)
            ).all()
            if not rows:
                break
            records = [unpack_row(connection, row._mapping) for row in rows] if export_uri else []
        if export_uri:
            first, last = rows[0].created_us, rows[-1].created_us
            name = f"decisions-{from_us(first):%Y%m%dT%H%M%S%f}-{from_us(last):%Y%m%dT%H%M%S%f}"
            report.files.append(write_object(export_uri, f"{name}.parquet", to_parquet(records)))
            report.exported += len(records)
        ids = [row.decision_id for row in rows]
        with db.write() as connection:
            connection.execute(delete(decisions).where(decisions.c.decision_id.in_(ids)))
        report.deleted += len(ids)
    with db.write() as connection:
        gone = connection.execute(
            delete(decision_refs).where(decision_refs.c.last_used_us < cutoff - REF_MARGIN_US)
        )
        report.refs_deleted = gone.rowcount or 0
    return report


def to_parquet(records: list[DecisionRecord]) -> bytes:
    """One Parquet file (zstd) of full records: columns plus inputs/outputs/models as JSON."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "decision_id": [r.decision_id for r in records],
            "created_at": pa.array([r.created_at for r in records], pa.string()).cast(
                pa.timestamp("us", tz="UTC")
            ),
            "symbol": [r.symbol for r in records],
            "as_of": [r.as_of for r in records],
            "action": [r.action for r in records],
            "approved": pa.array([r.approved for r in records], pa.bool_()),
            "inputs_digest": [r.inputs_digest for r in records],
            "inputs": [json.dumps(r.inputs, sort_keys=True) for r in records],
            "outputs": [json.dumps(r.outputs, sort_keys=True) for r in records],
            "models": [json.dumps(r.models, sort_keys=True) for r in records],
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


class Maintenance:
    """Every ``interval_s``: the log's size into the metrics, then retention (if set)."""

    def __init__(
        self,
        db: StateDatabase,
        interval_s: float,
        retention_days: float | None,
        export_uri: str | None,
    ) -> None:
        self.db = db
        self.interval_s = interval_s
        self.retention_days = retention_days
        self.export_uri = export_uri
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="decision-log-maintenance")
        self._thread.daemon = True

    def start(self) -> Maintenance:
        self._thread.start()
        return self

    def run_once(self) -> PruneReport | None:
        report = None
        if self.retention_days is not None:
            with self.db.exclusive("retention", blocking=False) as held:
                if held:
                    report = export_and_prune(self.db, self.retention_days, self.export_uri)
                    if report.deleted:
                        logger.info(
                            "decision log: %d decisions older than %s days pruned (%d exported"
                            " to %s), %d refs removed",
                            report.deleted, self.retention_days, report.exported,
                            self.export_uri, report.refs_deleted,
                        )  # fmt: skip
        record_log_size(*log_size(self.db))
        return report

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as error:  # report and keep going; the next tick retries
                logger.error("decision log maintenance failed: %s", error)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
