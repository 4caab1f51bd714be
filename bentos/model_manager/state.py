"""The directory mapping: which artifact directory a model_manager name stands for.

One row per registered directory (name, root, auto-promote, the fingerprint last imported).
It is all ModelManager keeps outside the MLflow registry, which holds every version, its
lineage and the promotion: deleting a row forgets the directory, never a version. Stored
through SQLAlchemy (SQLite in ``TRADESERVE_HOME`` by default, PostgreSQL when deployed), so
``tradeserve import`` and the service see the same rows.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    insert,
    make_url,
    select,
    update,
)

from registry.artifact_scan import utc_now_iso

_metadata = MetaData()
DIRECTORIES = Table(
    "model_manager_directories",
    _metadata,
    Column("model_name", String(128), primary_key=True),
    Column("root_path", String(2048), nullable=False),
    Column("auto_promote", Boolean, nullable=False),
    Column("fingerprint", String(64), nullable=True),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
)


class DirectoryRow(BaseModel):
    model_name: str
    root_path: str
    auto_promote: bool
    fingerprint: str | None
    created_at: str
    updated_at: str


class DirectoryStore:
    """CRUD over the directory rows."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url)
        _metadata.create_all(self.engine)

    def list(self) -> list[DirectoryRow]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(DIRECTORIES).order_by(DIRECTORIES.c.model_name))
            return [DirectoryRow.model_validate(row._mapping) for row in rows]

    def get(self, model_name: str) -> DirectoryRow | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(DIRECTORIES).where(DIRECTORIES.c.model_name == model_name)
            ).first()
        return None if row is None else DirectoryRow.model_validate(row._mapping)

    def upsert(
        self, model_name: str, root_path: str, auto_promote: bool, fingerprint: str
    ) -> DirectoryRow:
        now = utc_now_iso()
        values = {
            "root_path": root_path,
            "auto_promote": auto_promote,
            "fingerprint": fingerprint,
            "updated_at": now,
        }
        with self.engine.begin() as connection:
            changed = connection.execute(
                update(DIRECTORIES).where(DIRECTORIES.c.model_name == model_name).values(**values)
            ).rowcount
            if not changed:
                connection.execute(
                    insert(DIRECTORIES).values(model_name=model_name, created_at=now, **values)
                )
        row = self.get(model_name)
        assert row is not None
        return row

    def delete(self, model_name: str) -> bool:
        with self.engine.begin() as connection:
            result = connection.execute(
                delete(DIRECTORIES).where(DIRECTORIES.c.model_name == model_name)
            )
        return bool(result.rowcount)
