"""Alembic environment: migrates the connection ``state.db.migrate`` passes in (no ini file,
no URL of its own), recording the revision in ``regime_blend_alembic_version``."""

from __future__ import annotations

from alembic import context

from bentos.regime_blend.state.tables import VERSION_TABLE, metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
