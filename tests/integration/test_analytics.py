"""The cookbook of docs/send-log.md, the analysts' views and ``tact report``'s figures, on
SQLite and PostgreSQL, against a scenario whose answers are known (analytics_scenario.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scheduler import Engine
from scheduler.analytics import ReportFilter, build_report
from tests.integration.analytics_scenario import at, build_scenario

SEND_LOG_DOC = Path(__file__).resolve().parents[2] / "docs" / "send-log.md"


def cookbook() -> dict[str, str]:
    """The cookbook's SQL blocks, keyed by the name in each block's first comment."""
    text = SEND_LOG_DOC.read_text().split("## Cookbook", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)
    return {re.match(r"-- (\w+):", block).group(1): block for block in blocks}  # type: ignore[union-attr]


@pytest.fixture
def scenario(database_url: str, tmp_path: Path) -> Iterator[Engine]:
    engine = build_scenario(database_url, tmp_path / "campaigns")
    try:
        yield engine
    finally:
        engine.close()


def run(engine: Engine, query: str) -> list[tuple[Any, ...]]:
    with engine.store.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(sa.text(query.rstrip().rstrip(";")))]


def plain(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows with days as text and numbers rounded, comparable across databases (PostgreSQL's
    sums of integers are numeric, read as Decimal)."""
    return [
        tuple(
            str(v) if hasattr(v, "isoformat") else round(float(v), 6) if isinstance(v, float | Decimal) else v
            for v in row
        )
        for row in rows
    ]


def test_the_cookbook_has_every_query_the_tests_check() -> None:
    """docs/send-log.md carries the seven named cookbook queries."""
    assert set(cookbook()) == {
        "funnel", "reasons_by_day", "asset_by_tier", "asset_trend", "holdout", "attention_gap", "feedback_rates",
    }  # fmt: skip


def test_funnel_per_campaign_and_step(scenario: Engine) -> None:
    """The funnel counts enrolled, reached, sent, engaged and converted-after-send per step."""
    assert run(scenario, cookbook()["funnel"]) == [
        ("news", "n1", 4, 4, 3, 1, 0),
        ("promo", "a", 6, 6, 4, 2, 2),
        ("promo", "b", 6, 3, 2, 0, 1),
    ]


def test_decisions_by_reason_per_day(scenario: Engine) -> None:
    """Decisions are counted per UTC day, decision and reason."""
    assert plain(run(scenario, cookbook()["reasons_by_day"])) == [
        ("2026-03-02", "deferred", "open_request", 1),
        ("2026-03-02", "dropped", "no_consent", 1),
        ("2026-03-02", "dropped", "value_below_threshold", 1),
        ("2026-03-02", "sent", "holdout", 2),
        ("2026-03-02", "sent", "value_ok", 1),
        ("2026-03-03", "deferred", "open_request", 1),
        ("2026-03-03", "sent", "value_ok", 4),
        ("2026-03-04", "deferred", "fatigue", 1),
        ("2026-03-04", "sent", "holdout", 1),
        ("2026-03-04", "sent", "value_ok", 1),
        ("2026-03-05", "dropped", "fatigue", 1),
        ("2026-03-06", "dropped", "expired", 1),
    ]


def test_asset_distribution_by_value_tier(scenario: Engine) -> None:
    """Tiers split 2 / 3 / 5 recipients by value; the asset buckets and means follow."""
    assert plain(run(scenario, cookbook()["asset_by_tier"])) == [
        ("top", 2, 2, 0.8, 0, 0, 1, 1),
        ("middle", 3, 3, 0.4, 1, 1, 1, 0),
        ("rest", 5, 4, 0.5, 0, 0, 4, 0),
    ]


def test_asset_trend_per_day_and_tier(scenario: Engine) -> None:
    """The mean asset at decision time is grouped per day and tier."""
    rows = plain(run(scenario, cookbook()["asset_trend"]))
    assert ("2026-03-02", "top", 2, 0.8) in rows
    assert ("2026-03-02", "middle", 3, 0.4) in rows
    assert ("2026-03-02", "rest", 1, 0.5) in rows
    assert sum(row[2] for row in rows) == 16


def test_model_against_holdout(scenario: Engine) -> None:
    """Only campaigns with a goal compare arms: the model's 3 enrollments against 2 holdout ones."""
    assert plain(run(scenario, cookbook()["holdout"])) == [("promo", 3, 1, 2, 1, -0.5)]


def test_attention_gap(scenario: Engine) -> None:
    """Open-request holds are counted per campaign, with the touches that went out later."""
    assert run(scenario, cookbook()["attention_gap"]) == [("news", 1, 1, 1, 0), ("promo", 1, 1, 1, 1)]


def test_feedback_rates(scenario: Engine) -> None:
    """Complaints and unsubscribes are rated per send, per campaign."""
    assert plain(run(scenario, cookbook()["feedback_rates"])) == [
        ("news", 3, 0, 1, 0.0, round(1 / 3, 6)),
        ("promo", 6, 1, 0, round(1 / 6, 6), 0.0),
    ]


def test_tier_shares_are_configurable(database_url: str, tmp_path: Path) -> None:
    """[analytics] shares move recipients between tiers in every view."""
    engine = build_scenario(database_url, tmp_path / "campaigns", analytics={"top_tier": 0.3, "middle_tier": 0.5})
    try:
        tiers = dict(run(engine, "SELECT tier, COUNT(*) FROM v_recipient_tier GROUP BY tier"))
        attention = dict(run(engine, "SELECT recipient_id, tier FROM v_recipient_attention"))
    finally:
        engine.close()
    assert tiers == {"top": 3, "middle": 5, "rest": 2}
    assert attention["r2"] == "top" and attention["r7"] == "middle" and attention["r8"] == "rest"


def test_report_figures(scenario: Engine) -> None:
    """tact report's figures agree with the scenario."""
    report = build_report(scenario.store.engine, ReportFilter())
    assert report.decisions == {"sent": 9, "deferred": 3, "dropped": 4}
    assert (report.first_day, report.last_day) == ("2026-03-02", "2026-03-06")
    promo, = (c for c in report.campaigns if c.campaign_id == "promo")  # fmt: skip
    assert (promo.sent, promo.deferred, promo.dropped, promo.engaged) == (6, 2, 3, 2)
    assert (promo.unsubscribed, promo.complained, promo.converted, promo.name) == (0, 1, 2, "Promotion")
    assert report.complaint_rate == pytest.approx(1 / 9)
    assert report.tier_recipients == {"top": 2, "middle": 3, "rest": 5}
    assert report.tier_mean_asset["top"] == pytest.approx(0.8)
    assert report.asset_histogram["middle"] == [0, 0, 1, 0, 1, 0, 1, 0, 0, 0]
    assert (report.arms["model"].enrollments, report.arms["model"].converted) == (3, 1)
    assert (report.arms["holdout"].enrollments, report.arms["holdout"].converted) == (2, 1)
    lift = report.lift()
    assert lift is not None and lift.incremental == pytest.approx(-0.5)
    assert lift.low < lift.difference < lift.high
    assert any("0.3 %" in warning for warning in report.warnings())


def test_report_filters(scenario: Engine) -> None:
    """--since/--until and --campaign narrow every figure."""
    early = build_report(scenario.store.engine, ReportFilter(until=at(2)))
    assert early.decisions == {"sent": 3, "deferred": 1, "dropped": 2}
    assert [c.campaign_id for c in early.campaigns] == ["promo"]
    news = build_report(scenario.store.engine, ReportFilter(campaign="news"))
    assert news.decisions == {"sent": 3, "deferred": 1, "dropped": 1}
    assert [(c.campaign_id, c.unsubscribed, c.engaged) for c in news.campaigns] == [("news", 0 + 1, 1)]
    assert sum(news.tier_recipients.values()) == 4
    assert news.arms == {}


def test_tier_shares_must_fit() -> None:
    """Tier shares adding up to more than all recipients are refused."""
    from pydantic import ValidationError

    from scheduler.config import AnalyticsSettings

    with pytest.raises(ValidationError, match="must not exceed 1"):
        AnalyticsSettings(top_tier=0.6, middle_tier=0.5)
