"""The engine end to end on a real database: journeys, windows across DST, caps, priority."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from scheduler import Engine

FOUR_STEPS = """
id = "onboarding"
name = "Onboarding"
kind = "marketing"
priority = 50
[trigger]
event = "signed_up"
[exit]
on_events = ["purchased"]
goal = "purchased"
[send_window]
timezone = "UTC"
days = ["mon", "tue", "wed", "thu", "fri"]
start = "09:00"
end = "17:00"
[[steps]]
id = "welcome"
after = "0m"
channel = "email"
subject = "Welcome {{ recipient.first_name }}"
text = "Hello {{ recipient.first_name }}, unsubscribe: {{ unsubscribe_url }}"
value = 0.9
[[steps]]
id = "tip"
after = "2d"
channel = "email"
subject = "A tip"
text = "Tip for {{ recipient.first_name }}"
value = 0.6
skip_if = ["activated"]
[[steps]]
id = "story"
after = "2d"
channel = "email"
subject = "A story"
text = "Story"
value = 0.5
[[steps]]
id = "ending"
after = "3d12h"
channel = "email"
subject = "Trial ending"
text = "Ending"
value = 0.7
"""

PEOPLE = [
    {"id": "ny", "email": "ny@example.com", "timezone": "America/New_York", "first_name": "Nia"},
    {"id": "paris", "email": "paris@example.com", "timezone": "Europe/Paris", "first_name": "Paul"},
    {"id": "tokyo", "email": "tokyo@example.com", "timezone": "Asia/Tokyo", "first_name": "Tomo"},
]


def write_campaign(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture
def campaigns_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "campaigns"
    directory.mkdir()
    return directory


@pytest.fixture
def engine_factory(database_url: str, campaigns_dir: Path) -> Iterator[object]:
    engines: list[Engine] = []

    def make(**overrides: object) -> Engine:
        overrides.setdefault("attention", {"holdout": 0.0})
        engine = Engine.from_config(
            None,
            database_url=database_url,
            channels={"email": "memory", "sms": "memory"},
            campaigns_dir=str(campaigns_dir),
            **overrides,
        )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def hourly(start: datetime, days: int) -> Iterator[datetime]:
    for hour in range(days * 24):
        yield start + timedelta(hours=hour)


def test_four_step_journey_respects_local_windows_across_dst(engine_factory, campaigns_dir: Path) -> None:
    """Three recipients in three time zones get all four steps, in order, inside their local
    09:00-17:00 weekday window, on both sides of New York's 2026-03-08 clock change."""
    write_campaign(campaigns_dir, "onboarding", FOUR_STEPS)
    # Fatigue off, so every deferral comes from the window and the exact instants are known.
    engine = engine_factory(attention={"holdout": 0.0, "kappa": 0.0, "kappa_u": 0.0})
    assert engine.upsert_recipients(PEOPLE).accepted == 3
    start = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)  # a Monday
    events = [
        {
            "id": f"signup-{p['id']}",
            "recipient_id": p["id"],
            "type": "signed_up",
            "at": "2026-03-02T00:30:00Z",
        }
        for p in PEOPLE
    ]
    assert engine.record_events(events).accepted == 3
    rows = []
    for at in hourly(start, 14):
        rows.extend(engine.tick(at=at).decisions)

    assert {r.reason for r in rows} <= {"value_ok", "send_window", "frequency_cap"}
    for person in PEOPLE:
        zone = ZoneInfo(person["timezone"])
        mine = [r for r in rows if r.recipient_id == person["id"]]
        sent = [r for r in mine if r.decision == "sent"]
        assert [r.step_id for r in sent] == ["welcome", "tip", "story", "ending"]
        for row in sent:
            local = row.at.astimezone(zone)
            assert local.weekday() < 5, (person["id"], row)
            assert 9 <= local.hour < 17, (person["id"], row)
        for row in mine:
            if row.decision == "deferred":
                assert row.reason in ("send_window", "frequency_cap")
                assert row.deferred_until is not None and row.deferred_until > row.at
        # every sent step is at least its `after` past the previous send
        gaps = [b.at - a.at for a, b in pairwise(sent)]
        assert all(g >= timedelta(days=2) for g in gaps)

    ny = [r for r in rows if r.recipient_id == "ny" and r.decision == "sent"]
    ny_local = [r.at.astimezone(ZoneInfo("America/New_York")) for r in ny]
    assert any(t.date() < datetime(2026, 3, 8).date() for t in ny_local)
    assert any(t.date() > datetime(2026, 3, 8).date() for t in ny_local)
    # the welcome waits for 09:00 New York time: 14:00 UTC before the change
    assert ny[0].at == datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
    ny_deferrals = [r for r in rows if r.recipient_id == "ny" and r.decision == "deferred"]
    openings = {r.deferred_until.astimezone(ZoneInfo("America/New_York")).time() for r in ny_deferrals}
    assert openings == {datetime(2026, 1, 1, 9, 0).time()}
    after_change = [r for r in ny_deferrals if r.deferred_until > datetime(2026, 3, 8, 7, 0, tzinfo=UTC)]
    # ... and 13:00 UTC after it
    assert after_change and all(r.deferred_until.hour == 13 for r in after_change)
    assert ny[-1].at == datetime(2026, 3, 10, 13, 0, tzinfo=UTC)

    stored = list(engine.store.send_log_rows({}))
    assert len(stored) == len(rows)
    assert [s["id"] for s in stored] == sorted(s["id"] for s in stored)
    assert len(engine.adapter("email").sent) == 12


COMPETING = """
id = "{id}"
kind = "marketing"
priority = {priority}
[trigger]
event = "signed_up"
[[steps]]
id = "only"
after = "0m"
channel = "email"
subject = "{id}"
text = "Hello from {id}"
max_defer = "3d"
"""


def test_higher_priority_wins_and_the_other_is_deferred_to_the_next_allowed_day(
    engine_factory, campaigns_dir: Path
) -> None:
    """Under a one-per-day cap, the higher-priority campaign's touch is sent and the other is
    deferred (not dropped) and sent exactly when the cap allows, a day later."""
    write_campaign(campaigns_dir, "low", COMPETING.format(id="low", priority=10))
    write_campaign(campaigns_dir, "high", COMPETING.format(id="high", priority=90))
    engine = engine_factory(
        caps={"window": "1d", "min_gap": "0s", "per_channel": {"email": 1}},
        quiet_hours={"enabled": False},
    )
    engine.upsert_recipients([{"id": "r1", "email": "r1@example.com", "first_name": "R"}])
    engine.record_events([{"id": "e1", "recipient_id": "r1", "type": "signed_up", "at": "2026-05-04T10:00:00Z"}])
    first = engine.tick(at=datetime(2026, 5, 4, 10, 0, tzinfo=UTC)).decisions
    by_campaign = {r.campaign_id: r for r in first}
    assert by_campaign["high"].decision == "sent"
    assert by_campaign["low"].decision == "deferred"
    assert by_campaign["low"].reason == "frequency_cap"
    assert by_campaign["low"].deferred_until == datetime(2026, 5, 5, 10, 0, tzinfo=UTC)
    assert engine.tick(at=datetime(2026, 5, 5, 9, 59, tzinfo=UTC)).decisions == []
    second = engine.tick(at=datetime(2026, 5, 5, 10, 0, tzinfo=UTC)).decisions
    assert [(r.campaign_id, r.decision) for r in second] == [("low", "sent")]
    assert [m.campaign_id for m in engine.adapter("email").sent] == ["high", "low"]


ONE_STEP = """
id = "{id}"
name = "{id}"
kind = "marketing"
[trigger]
event = "{event}"
reenroll = {reenroll}
[[steps]]
id = "only"
after = "0m"
channel = "email"
subject = "Hello"
text = "Hello"
"""


def test_a_trigger_event_respects_each_campaigns_reentry_rule(engine_factory, campaigns_dir: Path) -> None:
    """Journeys that ended still count: a campaign without `reenroll` takes a recipient once, one
    with it takes them again once the last journey is over, never twice at a time."""
    write_campaign(campaigns_dir, "once", ONE_STEP.format(id="once", event="signed_up", reenroll="false"))
    write_campaign(campaigns_dir, "again", ONE_STEP.format(id="again", event="lapsed", reenroll="true"))
    engine = engine_factory(caps={"enabled": False}, attention={"enabled": False, "holdout": 0.0})
    start = datetime(2026, 3, 2, 10, tzinfo=UTC)
    engine.upsert_recipients([{"id": "r1", "email": "r1@example.com", "timezone": "UTC"}])

    def trigger(kind: str, at: datetime) -> None:
        event = {"id": f"{kind}-{at.isoformat()}", "recipient_id": "r1", "type": kind, "at": at}
        report = engine.record_events([event])
        assert not report.rejected

    def journeys(campaign_id: str) -> list[str]:
        with engine.store.engine.connect() as connection:
            rows = engine.store.enrollments_of(connection, ["r1"], campaign_id=campaign_id)
        return sorted(row["state"] for row in rows)

    trigger("signed_up", start)
    trigger("lapsed", start)
    trigger("lapsed", start + timedelta(minutes=1))  # while the first journey is active
    engine.tick(at=start + timedelta(minutes=5))
    assert journeys("once") == ["completed"]
    assert journeys("again") == ["completed"]

    trigger("signed_up", start + timedelta(hours=1))
    trigger("lapsed", start + timedelta(hours=1))
    engine.tick(at=start + timedelta(hours=1, minutes=5))
    assert journeys("once") == ["completed"]
    assert journeys("again") == ["completed", "completed"]
    assert len(engine.adapter("email").sent) == 3


WEEKLY = """
id = "{id}"
name = "{id}"
kind = "marketing"
[trigger]
schedule = "0 9 * * MON"
segment = {{ plan = "pro" }}
reenroll = {reenroll}
[[steps]]
id = "only"
after = "0m"
channel = "email"
subject = "This week"
text = "News"
"""


def test_a_segment_run_enrolls_every_matching_recipient_once_per_instant(
    engine_factory, campaigns_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cron instant enrolls the segment's members (read a page at a time), each with its first
    touch; the same instant never runs twice; the next one re-enrolls only where `reenroll` says."""
    monkeypatch.setattr("scheduler.journey.SEGMENT_PAGE", 2)  # several pages from five people
    write_campaign(campaigns_dir, "weekly", WEEKLY.format(id="weekly", reenroll="true"))
    write_campaign(campaigns_dir, "once", WEEKLY.format(id="once", reenroll="false"))
    engine = engine_factory(caps={"enabled": False}, attention={"enabled": False, "holdout": 0.0})
    people = [
        {"id": f"p{n}", "email": f"p{n}@example.com", "timezone": "UTC", "attributes": {"plan": plan}}
        for n, plan in enumerate(["pro", "free", "pro", "pro", "free"])
    ]
    assert not engine.upsert_recipients(people).rejected
    monday = datetime(2026, 3, 2, 9, tzinfo=UTC)

    def enrollments() -> list[tuple[str, str, str, datetime, str]]:
        with engine.store.engine.connect() as connection:
            rows = engine.store.enrollments_of(connection, [p["id"] for p in people])
        return sorted((r["campaign_id"], r["recipient_id"], r["state"], r["enrolled_at"], r["trigger"]) for r in rows)

    first = engine.tick(at=monday)
    assert first.enrolled == 6
    trigger = f"schedule:{monday.isoformat()}"
    assert enrollments() == [
        (campaign, rid, "completed", monday, trigger) for campaign in ("once", "weekly") for rid in ("p0", "p2", "p3")
    ]
    assert sorted((m.campaign_id, m.recipient_id) for m in engine.adapter("email").sent) == [
        (campaign, rid) for campaign in ("once", "weekly") for rid in ("p0", "p2", "p3")
    ]
    assert engine.tick(at=monday + timedelta(minutes=1)).enrolled == 0
    with engine.store.engine.connect() as connection:
        links = connection.execute(
            sa.text(
                "SELECT t.campaign_id, t.recipient_id, e.campaign_id, e.recipient_id "
                "FROM touchpoint t JOIN enrollment e ON e.id = t.enrollment_id"
            )
        ).all()
    assert len(links) == 6 and all(tuple(link[:2]) == tuple(link[2:]) for link in links)  # each touch its own journey's

    next_monday = monday + timedelta(days=7)
    assert engine.tick(at=next_monday).enrolled == 3
    weekly = [row for row in enrollments() if row[0] == "weekly"]
    assert [(rid, at) for _, rid, _, at, _ in weekly] == [
        (rid, at) for rid in ("p0", "p2", "p3") for at in (monday, next_monday)
    ]
