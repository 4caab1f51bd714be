"""Portfolio, reservations, fills and the compact decision log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bentos.regime_blend.state.tables import DecisionId

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portfolios",
        sa.Column("portfolio_id", sa.String(64), primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("updated_us", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "reservations",
        sa.Column("reservation_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("portfolio_id", sa.String(64), nullable=False),
        sa.Column("decision_id", sa.String(36), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("price", sa.Float, nullable=False),
        sa.Column("sector", sa.String(200)),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("expires_us", sa.BigInteger, nullable=False),
    )
    op.create_index("reservations_portfolio", "reservations", ["portfolio_id", "symbol"])
    op.create_table(
        "fills",
        sa.Column("fill_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("portfolio_id", sa.String(64), nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("quantity", sa.BigInteger, nullable=False),
        sa.Column("price", sa.Float, nullable=False),
        sa.Column("sector", sa.String(200)),
        sa.Column("filled_us", sa.BigInteger, nullable=False),
    )
    op.create_index("fills_portfolio_time", "fills", ["portfolio_id", "filled_us"])
    op.create_table(
        "decisions",
        sa.Column("decision_id", DecisionId, primary_key=True),
        sa.Column("created_us", sa.BigInteger, nullable=False),
        sa.Column("symbol", sa.String(32), nullable=False),
        sa.Column("action", sa.String(8), nullable=False),
        sa.Column("approved", sa.Boolean),
        sa.Column("inputs_digest", sa.LargeBinary(32), nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
    )
    op.create_index("decisions_created", "decisions", ["created_us"])
    op.create_table(
        "decision_refs",
        sa.Column("digest", sa.LargeBinary(16), primary_key=True),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("last_used_us", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("decision_refs", "decisions", "fills", "reservations", "portfolios"):
        op.drop_table(table)
