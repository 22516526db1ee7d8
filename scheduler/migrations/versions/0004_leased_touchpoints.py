"""an index of the leased touchpoints

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Claims skip recipients with a touch leased elsewhere. Leased rows are few (batches in flight),
so a partial index over them lets that check read a handful of entries instead of the queue.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LEASED = sa.text("lease_owner IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_touchpoint_leased",
        "touchpoint",
        ["lease_expires_at", "recipient_id"],
        postgresql_where=LEASED,
        sqlite_where=LEASED,
    )


def downgrade() -> None:
    op.drop_index("ix_touchpoint_leased", table_name="touchpoint")
