"""Accounting: usage counters per (user, model, UTC day).

Revision ID: 0003_accounting
Revises: 0002_serving
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_accounting"
down_revision = "0002_serving"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("predictions", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "day", "model", name="pk_usage_daily"),
    )


def downgrade() -> None:
    op.drop_table("usage_daily")
