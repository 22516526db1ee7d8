"""indexes for learning from answered touches

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

The engine learns how fatigue dulls attention from the sends of the last weeks and the events
that answered them: sends are found by time, their answers by touchpoint. Both indexes also
serve analysts (sends over a period; the events of one touch).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SENT = sa.text("decision = 'sent'")


def upgrade() -> None:
    op.create_index("ix_event_touchpoint", "event", ["touchpoint_id"])
    op.create_index("ix_send_log_sent_at", "send_log", ["at"], postgresql_where=SENT, sqlite_where=SENT)


def downgrade() -> None:
    op.drop_index("ix_send_log_sent_at", table_name="send_log")
    op.drop_index("ix_event_touchpoint", table_name="event")
