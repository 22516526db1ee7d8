"""outcome windows in the attention state

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attention") as batch:
        batch.add_column(sa.Column("outcomes", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
        batch.add_column(sa.Column("resolve_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_attention_resolve_at", "attention", ["resolve_at"])


def downgrade() -> None:
    op.drop_index("ix_attention_resolve_at", table_name="attention")
    with op.batch_alter_table("attention") as batch:
        batch.drop_column("resolve_at")
        batch.drop_column("outcomes")
