"""RegimeBlend's shared state (portfolio, reservations, fills, decision log) in one SQL
database through SQLAlchemy: PostgreSQL for replicas (``TRADESERVE_DATABASE_URL``), an
embedded SQLite file otherwise; the schema is migrated by Alembic at start-up."""
