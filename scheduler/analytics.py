"""The figures of ``tact report``, read from the analysts' views (docs/send-log.md).

Every figure is one SQL aggregate over the documented views and tables, so an analyst can
reproduce it with the cookbook queries; nothing here reads the clock or the model. Days are
UTC calendar days, as the views define them.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa

from scheduler.tables import UTCDateTime

ENGAGEMENT_EVENTS = ("opened", "clicked", "replied", "converted")
"""Event types that count as engagement with a touch."""

_ENGAGED_TOUCHES = "(SELECT DISTINCT touchpoint_id FROM event WHERE type IN ({}) AND touchpoint_id IS NOT NULL)".format(
    ", ".join(f"'{kind}'" for kind in ENGAGEMENT_EVENTS)
)
"""Touchpoints with at least one engagement event, as a subquery."""

TIERS = ("top", "middle", "rest")
COMPLAINT_TARGET = 0.001
"""Mailbox providers' bulk-sender guidance: keep complaints under 0.1 % of messages sent ..."""
COMPLAINT_LIMIT = 0.003
"""... and never reach 0.3 %."""
ASSET_BUCKETS = 10


@dataclass(frozen=True)
class ReportFilter:
    """What ``tact report`` narrows to: ``since`` ≤ at < ``until``, one campaign."""

    since: datetime | None = None
    until: datetime | None = None
    campaign: str | None = None


@dataclass(frozen=True)
class CampaignFigures:
    """One campaign's totals over the period."""

    campaign_id: str
    name: str
    sent: int
    deferred: int
    dropped: int
    engaged: int
    unsubscribed: int
    complained: int
    converted: int


@dataclass(frozen=True)
class ArmFigures:
    """Enrollments, in campaigns with a goal, decided by the value rule (``model``) or sent as
    the holdout's fixed cadence (``holdout``), and how many reached the goal."""

    arm: str
    enrollments: int
    converted: int

    @property
    def rate(self) -> float:
        return self.converted / self.enrollments if self.enrollments else 0.0


@dataclass(frozen=True)
class Lift:
    """Model against holdout: the conversion-rate difference with its 95 % interval (normal
    approximation), and the incremental conversions it implies for the model's enrollments."""

    difference: float
    low: float
    high: float
    incremental: float


@dataclass
class Report:
    """Everything ``tact report`` shows."""

    filter: ReportFilter
    first_day: str | None = None
    last_day: str | None = None
    decisions: dict[str, int] = field(default_factory=dict)
    reasons_by_day: dict[str, dict[str, int]] = field(default_factory=dict)
    campaigns: list[CampaignFigures] = field(default_factory=list)
    sends_by_day: dict[str, int] = field(default_factory=dict)
    unsubscribed_by_day: dict[str, int] = field(default_factory=dict)
    complained_by_day: dict[str, int] = field(default_factory=dict)
    tier_recipients: dict[str, int] = field(default_factory=dict)
    tier_mean_asset: dict[str, float | None] = field(default_factory=dict)
    asset_histogram: dict[str, list[int]] = field(default_factory=dict)
    asset_by_week: dict[str, dict[str, float]] = field(default_factory=dict)
    engagement_by_week: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    arms: dict[str, ArmFigures] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        return sum(c.sent for c in self.campaigns)

    @property
    def complaint_rate(self) -> float:
        return sum(c.complained for c in self.campaigns) / self.sent if self.sent else 0.0

    @property
    def unsubscribe_rate(self) -> float:
        return sum(c.unsubscribed for c in self.campaigns) / self.sent if self.sent else 0.0

    def weekly(self, by_day: dict[str, int]) -> dict[str, int]:
        """Daily counts summed per week (weeks start on Monday)."""
        weeks: dict[str, int] = {}
        for day, n in by_day.items():
            weeks[week_of(day)] = weeks.get(week_of(day), 0) + n
        return weeks

    def lift(self) -> Lift | None:
        """Model against holdout, when both arms have enrollments."""
        model, holdout = self.arms.get("model"), self.arms.get("holdout")
        if not model or not holdout or not model.enrollments or not holdout.enrollments:
            return None
        difference = model.rate - holdout.rate
        spread = 1.96 * math.sqrt(
            model.rate * (1 - model.rate) / model.enrollments + holdout.rate * (1 - holdout.rate) / holdout.enrollments
        )
        return Lift(difference, difference - spread, difference + spread, difference * model.enrollments)

    def engagement_halves(self, tier: str | None) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """(sends, engaged sends) in the first and second half of the period's weeks, for one
        tier or all recipients (None); None with fewer than two weeks of sends."""
        weeks = sorted(self.engagement_by_week)
        if len(weeks) < 2:
            return None
        halves = []
        for part in (weeks[: len(weeks) // 2], weeks[len(weeks) // 2 :]):
            cells = [
                cell for week in part for name, cell in self.engagement_by_week[week].items() if tier in (None, name)
            ]
            halves.append((sum(s for s, _ in cells), sum(e for _, e in cells)))
        return halves[0], halves[1]

    def top_tier_drifting(self) -> bool:
        """Aggregate engagement per send rose from the first half of the period to the second
        while the top tier's fell, significantly (one-sided two-proportion z-test, 5 %)."""
        overall, top = self.engagement_halves(None), self.engagement_halves("top")
        if overall is None or top is None or not all(s for s, _ in (*overall, *top)):
            return False
        (sent_1, engaged_1), (sent_2, engaged_2) = top
        rate_1, rate_2 = engaged_1 / sent_1, engaged_2 / sent_2
        pooled = (engaged_1 + engaged_2) / (sent_1 + sent_2)
        spread = math.sqrt(pooled * (1 - pooled) * (1 / sent_1 + 1 / sent_2))
        rising = overall[1][1] / overall[1][0] > overall[0][1] / overall[0][0]
        return rising and spread > 0 and (rate_2 - rate_1) / spread < -1.645

    def warnings(self) -> list[str]:
        """What a reader must not miss."""
        notes = []
        if self.top_tier_drifting():
            notes.append(
                "aggregate engagement per send is rising while the top value tier's is falling: "
                "the most valuable recipients may be drifting away"
            )
        if self.complaint_rate >= COMPLAINT_LIMIT:
            notes.append(f"complaint rate {self.complaint_rate:.3%} is at or above the 0.3 % limit")
        elif self.complaint_rate >= COMPLAINT_TARGET:
            notes.append(f"complaint rate {self.complaint_rate:.3%} is above the 0.1 % target")
        return notes


def _day(value: Any) -> str:
    return value.isoformat() if isinstance(value, date) else str(value)


def week_of(day: str) -> str:
    """The Monday (ISO week start) of a ``YYYY-MM-DD`` day."""
    value = date.fromisoformat(day[:10])
    return date.fromordinal(value.toordinal() - value.weekday()).isoformat()


class _Where:
    """WHERE clauses of the filter for one query, with their bound parameters."""

    def __init__(self, report_filter: ReportFilter) -> None:
        self.filter = report_filter
        self.params: dict[str, Any] = {
            "since": report_filter.since,
            "until": report_filter.until,
            "campaign": report_filter.campaign,
        }

    def clause(self, at: str | None, campaign: str | None, *extra: str) -> str:
        parts = list(extra)
        if at and self.filter.since:
            parts.append(f"{at} >= :since")
        if at and self.filter.until:
            parts.append(f"{at} < :until")
        if campaign and self.filter.campaign:
            parts.append(f"{campaign} = :campaign")
        return " WHERE " + " AND ".join(parts) if parts else ""


def _bind(query: str, params: dict[str, Any]) -> sa.TextClause:
    statement = sa.text(query)
    for name in ("since", "until"):
        if f":{name}" in query:
            statement = statement.bindparams(sa.bindparam(name, type_=UTCDateTime()))
    return statement.bindparams(**{k: v for k, v in params.items() if f":{k}" in query})


def build_report(engine: sa.Engine, report_filter: ReportFilter) -> Report:
    """Read every figure of the report from the database."""
    report = Report(report_filter)
    where = _Where(report_filter)
    with engine.connect() as connection:

        def rows(query: str, **types: Any) -> list[Any]:
            statement = _bind(query, where.params)
            if types:
                statement = statement.columns(**types)  # type: ignore[assignment]
            return list(connection.execute(statement))

        per_campaign: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for day, campaign_id, decision, reason, n in rows(
            "SELECT day, campaign_id, decision, reason, COUNT(*) FROM v_decisions"
            + where.clause("at", "campaign_id")
            + " GROUP BY day, campaign_id, decision, reason"
        ):
            day = _day(day)
            report.decisions[decision] = report.decisions.get(decision, 0) + n
            by_reason = report.reasons_by_day.setdefault(day, {})
            by_reason[f"{decision}: {reason}"] = by_reason.get(f"{decision}: {reason}", 0) + n
            per_campaign[campaign_id][decision] += n
            if decision == "sent":
                report.sends_by_day[day] = report.sends_by_day.get(day, 0) + n
        days = sorted(report.reasons_by_day)
        report.first_day, report.last_day = (days[0], days[-1]) if days else (None, None)
        _campaigns(report, rows, where, per_campaign)
        _tiers(report, rows, where)
        for arm, enrollments, converted in rows(
            "SELECT a.arm, COUNT(*), SUM(CASE WHEN n.converted_at IS NOT NULL THEN 1 ELSE 0 END) "
            "FROM (SELECT DISTINCT enrollment_id, arm FROM v_decisions"
            + where.clause("at", "campaign_id", "arm IS NOT NULL")
            + ") a JOIN enrollment n ON n.id = a.enrollment_id "
            "JOIN campaign c ON c.id = n.campaign_id AND c.goal IS NOT NULL GROUP BY a.arm"
        ):
            report.arms[arm] = ArmFigures(arm, int(enrollments), int(converted or 0))
    return report


def _campaigns(report: Report, rows: Any, where: _Where, decisions: dict[str, dict[str, int]]) -> None:
    engaged = dict(
        rows(
            f"SELECT s.campaign_id, COUNT(*) FROM send_log s JOIN {_ENGAGED_TOUCHES} e "
            "ON e.touchpoint_id = s.touchpoint_id"
            + where.clause("s.at", "s.campaign_id", "s.decision = 'sent'")
            + " GROUP BY s.campaign_id"
        )
    )
    feedback: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for at, campaign_id, kind in rows(
        "SELECT e.at, t.campaign_id, e.type FROM event e JOIN touchpoint t ON t.id = e.touchpoint_id"
        + where.clause("e.at", "t.campaign_id", "e.type IN ('unsubscribed', 'complained')"),
        at=UTCDateTime(),
    ):
        feedback[campaign_id][kind] += 1
        by_day = report.unsubscribed_by_day if kind == "unsubscribed" else report.complained_by_day
        day = at.date().isoformat()
        by_day[day] = by_day.get(day, 0) + 1
    converted = dict(
        rows(
            "SELECT campaign_id, COUNT(*) FROM enrollment"
            + where.clause("converted_at", "campaign_id", "converted_at IS NOT NULL")
            + " GROUP BY campaign_id"
        )
    )
    names = dict(rows("SELECT id, name FROM campaign"))
    ids = sorted(set(decisions) | set(feedback) | set(converted))
    report.campaigns = [
        CampaignFigures(
            campaign_id=campaign_id,
            name=names.get(campaign_id, campaign_id),
            sent=decisions[campaign_id]["sent"],
            deferred=decisions[campaign_id]["deferred"],
            dropped=decisions[campaign_id]["dropped"],
            engaged=int(engaged.get(campaign_id, 0)),
            unsubscribed=feedback[campaign_id]["unsubscribed"],
            complained=feedback[campaign_id]["complained"],
            converted=int(converted.get(campaign_id, 0)),
        )
        for campaign_id in ids
    ]


def _tiers(report: Report, rows: Any, where: _Where) -> None:
    scope = (
        " AND recipient_id IN (SELECT recipient_id FROM enrollment WHERE campaign_id = :campaign)"
        if report.filter.campaign
        else ""
    )
    buckets = " ".join(f"WHEN asset < {(i + 1) / ASSET_BUCKETS} THEN {i}" for i in range(ASSET_BUCKETS - 1))
    report.tier_recipients = {t: 0 for t in TIERS}
    for tier, n, mean in rows(
        f"SELECT tier, COUNT(*), AVG(asset) FROM v_recipient_attention WHERE 1 = 1{scope} GROUP BY tier"
    ):
        report.tier_recipients[tier] = int(n)
        report.tier_mean_asset[tier] = float(mean) if mean is not None else None
    report.asset_histogram = {t: [0] * ASSET_BUCKETS for t in TIERS}
    for tier, bucket, n in rows(
        f"SELECT tier, CASE {buckets} ELSE {ASSET_BUCKETS - 1} END AS bucket, COUNT(*) "
        f"FROM v_recipient_attention WHERE asset IS NOT NULL{scope} GROUP BY tier, bucket"
    ):
        report.asset_histogram[tier][int(bucket)] = int(n)
    weekly: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    for day, tier, total, n in rows(
        "SELECT day, tier, SUM(asset), COUNT(asset) FROM v_decisions"
        + where.clause("at", "campaign_id", "asset IS NOT NULL", "tier IS NOT NULL")
        + " GROUP BY day, tier"
    ):
        cell = weekly[week_of(_day(day))][tier]
        cell[0] += float(total)
        cell[1] += int(n)
    report.asset_by_week = {
        week: {tier: total / n for tier, (total, n) in cells.items() if n} for week, cells in sorted(weekly.items())
    }
    engagement: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for day, tier, sent, engaged in rows(
        f"SELECT s.day, s.tier, COUNT(*), COUNT(e.touchpoint_id) FROM v_sends s LEFT JOIN {_ENGAGED_TOUCHES} e "
        "ON e.touchpoint_id = s.touchpoint_id"
        + where.clause("s.at", "s.campaign_id", "s.tier IS NOT NULL")
        + " GROUP BY s.day, s.tier"
    ):
        counts = engagement[week_of(_day(day))][tier]
        counts[0] += int(sent)
        counts[1] += int(engaged)
    report.engagement_by_week = {
        week: {tier: (s, e) for tier, (s, e) in cells.items()} for week, cells in sorted(engagement.items())
    }
