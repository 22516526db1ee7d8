"""analysts' views: UTC days on every database, configurable value tiers, v_decisions and
v_recipient_attention

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Earlier views, dropped here and re-created with UTC days and configurable tiers.
_OLD_VIEWS = ("v_campaign_daily_reasons", "v_campaign_daily", "v_sends", "v_recipient_tier")

# The value rule's own reasons: a decision the model took (the "model" arm against holdout).
_MODEL_REASONS = "'value_ok', 'value_below_threshold', 'fatigue', 'explore'"


def _day(column: str, dialect: str) -> str:
    """The UTC calendar day of a timestamp column, whatever the session's time zone."""
    if dialect == "postgresql":
        return f"CAST(({column} AT TIME ZONE 'UTC') AS DATE)"
    return f"date({column})"


def _views(dialect: str) -> dict[str, str]:
    def day(column: str) -> str:
        return _day(column, dialect)

    # Tier shares come from the meta table (written from [analytics] at start), with the
    # documented defaults when absent: top 20 % by value, the next 30 %, the rest.
    tiers = """
SELECT ranked.id AS recipient_id, ranked.value,
       CASE WHEN ranked.value_rank <= shares.top_share THEN 'top'
            WHEN ranked.value_rank <= shares.top_share + shares.middle_share THEN 'middle'
            ELSE 'rest' END AS tier
FROM (SELECT id, value, CUME_DIST() OVER (ORDER BY value DESC) AS value_rank FROM recipient) ranked
CROSS JOIN (
    SELECT COALESCE(MAX(CASE WHEN key = 'tier_top_share' THEN CAST(value AS DOUBLE PRECISION) END), 0.2)
               AS top_share,
           COALESCE(MAX(CASE WHEN key = 'tier_middle_share' THEN CAST(value AS DOUBLE PRECISION) END), 0.3)
               AS middle_share
    FROM meta
) shares
"""
    sends = """
SELECT s.id, s.at, {day_at} AS day, s.touchpoint_id, s.enrollment_id, s.recipient_id, s.campaign_id,
       c.name AS campaign_name, c.kind AS campaign_kind, s.step_id, s.channel, s.adapter,
       s.reason, s.provider_message_id, s.attempt, s.latency_ms,
       s.asset, s.expectation, s.fatigue, s.engagement_p, s.relevance, s.value, s.net_value,
       t.value AS recipient_value, t.tier
FROM send_log s
LEFT JOIN campaign c ON c.id = s.campaign_id
LEFT JOIN v_recipient_tier t ON t.recipient_id = s.recipient_id
WHERE s.decision = 'sent'
""".format(day_at=day("s.at"))
    daily = """
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
       SUM(d.complained) AS complained,
       SUM(d.converted) AS converted
FROM (
    SELECT campaign_id, {day_at} AS day, decision, reason, COUNT(*) AS n,
           0 AS engaged, 0 AS unsubscribed, 0 AS complained, 0 AS converted
    FROM send_log GROUP BY campaign_id, {day_at}, decision, reason
    UNION ALL
    SELECT t.campaign_id, {day_event} AS day, 'event' AS decision, e.type AS reason, 0 AS n,
           SUM(CASE WHEN e.type IN ('opened', 'clicked', 'replied', 'converted') THEN 1 ELSE 0 END),
           SUM(CASE WHEN e.type = 'unsubscribed' THEN 1 ELSE 0 END),
           SUM(CASE WHEN e.type = 'complained' THEN 1 ELSE 0 END),
           0
    FROM event e JOIN touchpoint t ON t.id = e.touchpoint_id
    GROUP BY t.campaign_id, {day_event}, e.type
    UNION ALL
    SELECT campaign_id, {day_converted} AS day, 'goal' AS decision, 'converted' AS reason,
           0 AS n, 0, 0, 0, COUNT(*)
    FROM enrollment WHERE converted_at IS NOT NULL GROUP BY campaign_id, {day_converted}
) d
GROUP BY d.campaign_id, d.day
""".format(day_at=day("at"), day_event=day("e.at"), day_converted=day("converted_at"))
    reasons = """
SELECT campaign_id, {day_at} AS day, decision, reason, COUNT(*) AS n
FROM send_log GROUP BY campaign_id, {day_at}, decision, reason
""".format(day_at=day("at"))
    decisions = """
SELECT s.id, s.at, {day_at} AS day, s.touchpoint_id, s.enrollment_id, s.recipient_id, s.campaign_id,
       c.name AS campaign_name, c.kind AS campaign_kind, s.step_id, s.channel, s.adapter,
       s.decision, s.reason, s.deferred_until,
       s.asset, s.expectation, s.fatigue, s.engagement_p, s.relevance, s.value, s.net_value,
       s.threshold, s.propensity, s.attempt,
       CASE WHEN s.reason = 'holdout' THEN 'holdout'
            WHEN s.reason IN ({model}) THEN 'model' END AS arm,
       t.value AS recipient_value, t.tier
FROM send_log s
LEFT JOIN campaign c ON c.id = s.campaign_id
LEFT JOIN v_recipient_tier t ON t.recipient_id = s.recipient_id
""".format(day_at=day("s.at"), model=_MODEL_REASONS)
    attention = """
SELECT r.id AS recipient_id, r.value, t.tier,
       a.asset, a.expectation, a.fatigue, a.updated_at,
       a.open_request, a.last_inbound_at, a.complained_at, r.suppressed_at
FROM recipient r
JOIN v_recipient_tier t ON t.recipient_id = r.id
LEFT JOIN attention a ON a.recipient_id = r.id
"""
    return {
        "v_recipient_tier": tiers,
        "v_sends": sends,
        "v_campaign_daily": daily,
        "v_campaign_daily_reasons": reasons,
        "v_decisions": decisions,
        "v_recipient_attention": attention,
    }


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name in _OLD_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for name, body in _views(dialect).items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    for name in reversed(list(_views(op.get_bind().dialect.name))):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    initial = importlib.import_module("scheduler.migrations.versions.0001_initial_schema")
    initial.create_views()
