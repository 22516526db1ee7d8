"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


# Recipient value tiers: top 20 % by value, next 30 %, rest (ties share a tier).
_TIERS = """
SELECT id AS recipient_id, value,
       CASE WHEN value_rank <= 0.2 THEN 'top'
            WHEN value_rank <= 0.5 THEN 'middle'
            ELSE 'rest' END AS tier
FROM (SELECT id, value, CUME_DIST() OVER (ORDER BY value DESC) AS value_rank FROM recipient) ranked
"""

VIEWS = {
    "v_recipient_tier": _TIERS,
    "v_sends": """
SELECT s.id, s.at, s.touchpoint_id, s.enrollment_id, s.recipient_id, s.campaign_id,
       c.name AS campaign_name, c.kind AS campaign_kind, s.step_id, s.channel, s.adapter,
       s.reason, s.provider_message_id, s.attempt, s.latency_ms,
       s.asset, s.expectation, s.fatigue, s.engagement_p, s.relevance, s.value, s.net_value,
       t.value AS recipient_value, t.tier
FROM send_log s
LEFT JOIN campaign c ON c.id = s.campaign_id
LEFT JOIN v_recipient_tier t ON t.recipient_id = s.recipient_id
WHERE s.decision = 'sent'
""",
    "v_campaign_daily": """
SELECT d.campaign_id, d.day,
       SUM(CASE WHEN d.decision = 'sent' THEN d.n ELSE 0 END) AS sent,
       SUM(CASE WHEN d.decision = 'deferred' THEN d.n ELSE 0 END) AS deferred,
       SUM(CASE WHEN d.decision = 'dropped' THEN d.n ELSE 0 END) AS dropped,
       SUM(CASE WHEN d.decision = 'dropped' AND d.reason IN ('value_below_threshold', 'fatigue')
                THEN d.n ELSE 0 END) AS dropped_value,
       SUM(CASE WHEN d.decision = 'dropped' AND d.reason IN ('no_consent', 'unsubscribed', 'suppressed')
                THEN d.n ELSE 0 END) AS dropped_permission,
       SUM(CASE WHEN d.decision = 'dropped' AND d.reason IN ('exited', 'skipped', 'step_removed')
                THEN d.n ELSE 0 END) AS dropped_journey,
       SUM(CASE WHEN d.decision = 'dropped' AND d.reason NOT IN ('value_below_threshold', 'fatigue',
                'no_consent', 'unsubscribed', 'suppressed', 'exited', 'skipped', 'step_removed')
                THEN d.n ELSE 0 END) AS dropped_other,
       SUM(CASE WHEN d.decision = 'failed' THEN d.n ELSE 0 END) AS failed,
       SUM(CASE WHEN d.decision = 'retrying' THEN d.n ELSE 0 END) AS retrying,
       SUM(d.engaged) AS engaged,
       SUM(d.unsubscribed) AS unsubscribed,
       SUM(d.converted) AS converted
FROM (
    SELECT campaign_id, date(at) AS day, decision, reason, COUNT(*) AS n,
           0 AS engaged, 0 AS unsubscribed, 0 AS converted
    FROM send_log GROUP BY campaign_id, date(at), decision, reason
    UNION ALL
    SELECT t.campaign_id, date(e.at) AS day, 'event' AS decision, e.type AS reason, 0 AS n,
           SUM(CASE WHEN e.type IN ('opened', 'clicked', 'replied', 'converted') THEN 1 ELSE 0 END),
           SUM(CASE WHEN e.type = 'unsubscribed' THEN 1 ELSE 0 END),
           0
    FROM event e JOIN touchpoint t ON t.id = e.touchpoint_id
    GROUP BY t.campaign_id, date(e.at), e.type
    UNION ALL
    SELECT campaign_id, date(converted_at) AS day, 'goal' AS decision, 'converted' AS reason,
           0 AS n, 0, 0, COUNT(*)
    FROM enrollment WHERE converted_at IS NOT NULL GROUP BY campaign_id, date(converted_at)
) d
GROUP BY d.campaign_id, d.day
""",
    "v_campaign_daily_reasons": """
SELECT campaign_id, date(at) AS day, decision, reason, COUNT(*) AS n
FROM send_log GROUP BY campaign_id, date(at), decision, reason
""",
}


def create_views() -> None:
    """Create the analysts' views (dropped and re-created by later migrations that change them)."""
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def drop_views() -> None:
    """Drop the analysts' views, dependents first."""
    for name in reversed(list(VIEWS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")


def upgrade() -> None:

    op.create_table(
        "campaign",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("goal", sa.String(length=64), nullable=True),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("removed_steps", sa.JSON(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("recipient_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("touchpoint_id", sa.Integer(), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=True),
        sa.Column("properties", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.create_index("ix_event_queue", ["applied_at", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_event_recipient_id"), ["recipient_id"], unique=False)

    op.create_table(
        "meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "recipient",
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=32), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column("locale", sa.String(length=35), nullable=True),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.Column("suppressed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("suppressed_reason", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "segment_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.String(length=255), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ran_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enrolled", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_id", "scheduled_at", name="uq_segment_run"),
    )
    op.create_table(
        "send_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("touchpoint_id", sa.Integer(), nullable=True),
        sa.Column("enrollment_id", sa.Integer(), nullable=True),
        sa.Column("recipient_id", sa.String(length=255), nullable=False),
        sa.Column("campaign_id", sa.String(length=255), nullable=False),
        sa.Column("step_id", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("adapter", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=True),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("deferred_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("asset", sa.Float(), nullable=True),
        sa.Column("expectation", sa.Float(), nullable=True),
        sa.Column("fatigue", sa.Float(), nullable=True),
        sa.Column("engagement_p", sa.Float(), nullable=True),
        sa.Column("relevance", sa.Float(), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("net_value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("propensity", sa.Float(), nullable=True),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("send_log", schema=None) as batch_op:
        batch_op.create_index("ix_send_log_campaign_at", ["campaign_id", "at"], unique=False)
        batch_op.create_index("ix_send_log_recipient_at", ["recipient_id", "at"], unique=False)
        batch_op.create_index("ix_send_log_touchpoint", ["touchpoint_id"], unique=False)

    op.create_table(
        "attention",
        sa.Column("recipient_id", sa.String(length=255), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("asset", sa.Float(), nullable=False),
        sa.Column("expectation", sa.Float(), nullable=False),
        sa.Column("fatigue", sa.Float(), nullable=False),
        sa.Column("engagement", sa.JSON(), nullable=False),
        sa.Column("interests", sa.JSON(), nullable=False),
        sa.Column("topic_last_sent", sa.JSON(), nullable=False),
        sa.Column("recent_sends", sa.JSON(), nullable=False),
        sa.Column("open_request", sa.Boolean(), nullable=False),
        sa.Column("last_inbound_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("request_resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("complained_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipient.id"],
        ),
        sa.PrimaryKeyConstraint("recipient_id"),
    )
    op.create_table(
        "consent",
        sa.Column("recipient_id", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipient.id"],
        ),
        sa.PrimaryKeyConstraint("recipient_id", "channel"),
    )
    op.create_table(
        "enrollment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.String(length=255), nullable=False),
        sa.Column("recipient_id", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("enrolled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("trigger", sa.String(length=255), nullable=True),
        sa.Column("seen_events", sa.JSON(), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exit_reason", sa.String(length=255), nullable=True),
        sa.Column("converted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["recipient.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("enrollment", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enrollment_campaign_id"), ["campaign_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_enrollment_recipient_id"), ["recipient_id"], unique=False)
        batch_op.create_index(
            "uq_enrollment_active",
            ["campaign_id", "recipient_id"],
            unique=True,
            sqlite_where=sa.text("state = 'active'"),
            postgresql_where=sa.text("state = 'active'"),
        )

    op.create_table(
        "touchpoint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("enrollment_id", sa.Integer(), nullable=False),
        sa.Column("campaign_id", sa.String(length=255), nullable=False),
        sa.Column("recipient_id", sa.String(length=255), nullable=False),
        sa.Column("step_id", sa.String(length=255), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_owner", sa.String(length=255), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("provider_message_id", sa.String(length=255), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollment.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    with op.batch_alter_table("touchpoint", schema=None) as batch_op:
        batch_op.create_index("ix_touchpoint_due", ["state", "due_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_touchpoint_enrollment_id"), ["enrollment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_touchpoint_provider_message_id"), ["provider_message_id"], unique=False)
        batch_op.create_index("ix_touchpoint_recipient_due", ["recipient_id", "state", "due_at"], unique=False)
    create_views()


def downgrade() -> None:
    drop_views()

    with op.batch_alter_table("touchpoint", schema=None) as batch_op:
        batch_op.drop_index("ix_touchpoint_recipient_due")
        batch_op.drop_index(batch_op.f("ix_touchpoint_provider_message_id"))
        batch_op.drop_index(batch_op.f("ix_touchpoint_enrollment_id"))
        batch_op.drop_index("ix_touchpoint_due")

    op.drop_table("touchpoint")
    with op.batch_alter_table("enrollment", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_enrollment_active",
            sqlite_where=sa.text("state = 'active'"),
            postgresql_where=sa.text("state = 'active'"),
        )
        batch_op.drop_index(batch_op.f("ix_enrollment_recipient_id"))
        batch_op.drop_index(batch_op.f("ix_enrollment_campaign_id"))

    op.drop_table("enrollment")
    op.drop_table("consent")
    op.drop_table("attention")
    with op.batch_alter_table("send_log", schema=None) as batch_op:
        batch_op.drop_index("ix_send_log_touchpoint")
        batch_op.drop_index("ix_send_log_recipient_at")
        batch_op.drop_index("ix_send_log_campaign_at")

    op.drop_table("send_log")
    op.drop_table("segment_run")
    op.drop_table("recipient")
    op.drop_table("meta")
    with op.batch_alter_table("event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_event_recipient_id"))
        batch_op.drop_index("ix_event_queue")

    op.drop_table("event")
    op.drop_table("campaign")
