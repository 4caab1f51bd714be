"""Alembic migrations of RegimeBlend's state (run by ``state.db.migrate`` at start-up)."""
