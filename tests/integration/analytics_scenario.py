"""A small send-log scenario with answers known by hand, for the analysts' views, the cookbook
queries of docs/send-log.md and ``tact report``.

Ten recipients r0…r9 with values 10…1 (top tier r0–r1, middle r2–r4, rest r5–r9). Two marketing
campaigns: ``promo`` (goal ``purchased``, steps ``a`` and ``b``) and ``news`` (no goal, step
``n1``). Days are 2026-03-02 (day 1, a Monday) to 2026-03-06, decisions at 09:00 UTC.

| touch | decisions |
|---|---|
| promo a r0 | d1 sent value_ok; opened + clicked; enrollment converts d3 12:00 |
| promo a r1 | d1 sent holdout; opened; enrollment converts d2 12:00 |
| promo a r2 | d1 deferred open_request, d2 sent value_ok |
| promo a r3 | d1 dropped value_below_threshold |
| promo a r4 | d1 dropped no_consent |
| promo a r5 | d1 sent holdout |
| promo b r0 | d3 sent value_ok; complained |
| promo b r1 | d3 sent holdout |
| promo b r2 | d3 deferred fatigue, d4 dropped fatigue |
| news n1 r0 | d2 sent value_ok; opened |
| news n1 r1 | d2 deferred open_request, d5 dropped expired |
| news n1 r2 | d2 sent value_ok; unsubscribed |
| news n1 r3 | d2 sent value_ok |
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler import Engine
from scheduler.tables import Attention, Enrollment, Event, SendLog, Touchpoint

DAY1 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ASSETS = {"r0": 0.9, "r1": 0.7, "r2": 0.6, "r3": 0.4, "r4": 0.2, "r5": 0.5, "r6": 0.5, "r7": 0.5, "r8": 0.5}
CAMPAIGNS = {
    "promo.toml": """
id = "promo"
name = "Promotion"
[trigger]
event = "signed_up"
[exit]
goal = "purchased"
[[steps]]
id = "a"
channel = "email"
subject = "A"
text = "A"
[[steps]]
id = "b"
after = "2d"
channel = "email"
subject = "B"
text = "B"
""",
    "news.toml": """
id = "news"
name = "News"
[trigger]
event = "subscribed"
[[steps]]
id = "n1"
channel = "email"
subject = "N"
text = "N"
""",
}

# (campaign, step, recipient): [(day, decision, reason)], events [(day, type)], converted day
TOUCHES: dict[tuple[str, str, str], list[tuple[int, str, str]]] = {
    ("promo", "a", "r0"): [(1, "sent", "value_ok")],
    ("promo", "a", "r1"): [(1, "sent", "holdout")],
    ("promo", "a", "r2"): [(1, "deferred", "open_request"), (2, "sent", "value_ok")],
    ("promo", "a", "r3"): [(1, "dropped", "value_below_threshold")],
    ("promo", "a", "r4"): [(1, "dropped", "no_consent")],
    ("promo", "a", "r5"): [(1, "sent", "holdout")],
    ("promo", "b", "r0"): [(3, "sent", "value_ok")],
    ("promo", "b", "r1"): [(3, "sent", "holdout")],
    ("promo", "b", "r2"): [(3, "deferred", "fatigue"), (4, "dropped", "fatigue")],
    ("news", "n1", "r0"): [(2, "sent", "value_ok")],
    ("news", "n1", "r1"): [(2, "deferred", "open_request"), (5, "dropped", "expired")],
    ("news", "n1", "r2"): [(2, "sent", "value_ok")],
    ("news", "n1", "r3"): [(2, "sent", "value_ok")],
}
EVENTS = {
    ("promo", "a", "r0"): ["opened", "clicked"],
    ("promo", "a", "r1"): ["opened"],
    ("promo", "b", "r0"): ["complained"],
    ("news", "n1", "r0"): ["opened"],
    ("news", "n1", "r2"): ["unsubscribed"],
}
CONVERTED = {("promo", "r0"): DAY1 + timedelta(days=2, hours=3), ("promo", "r1"): DAY1 + timedelta(days=1, hours=3)}


def at(day: int) -> datetime:
    """09:00 UTC on scenario day ``day`` (1 = Monday 2026-03-02)."""
    return DAY1 + timedelta(days=day - 1)


def build_scenario(database_url: str, directory: Path, **settings: Any) -> Engine:
    """An engine whose database holds the scenario above (the caller closes it)."""
    directory.mkdir(exist_ok=True)
    for name, text in CAMPAIGNS.items():
        (directory / name).write_text(text)
    engine = Engine.from_config(
        None, database_url=database_url, channels={"email": "memory"}, campaigns_dir=str(directory), **settings
    )
    engine.upsert_recipients([{"id": f"r{i}", "email": f"r{i}@example.com", "value": 10 - i} for i in range(10)])
    with engine.store.engine.begin() as connection:
        connection.execute(
            Attention.__table__.insert(),  # type: ignore[attr-defined]
            [
                {"recipient_id": rid, "asset": asset, "expectation": 0.1, "fatigue": 0.0, "updated_at": at(5),
                 "engagement": {}, "interests": {}, "topic_last_sent": {}, "recent_sends": [], "outcomes": []}
                for rid, asset in ASSETS.items()
            ],
        )  # fmt: skip
        enrollments: dict[tuple[str, str], int] = {}
        members = {"promo": ["r0", "r1", "r2", "r3", "r4", "r5"], "news": ["r0", "r1", "r2", "r3"]}
        for campaign_id, recipients in members.items():
            for rid in recipients:
                result = connection.execute(
                    Enrollment.__table__.insert().values(  # type: ignore[attr-defined]
                        campaign_id=campaign_id, recipient_id=rid, state="active",
                        enrolled_at=at(1) - timedelta(hours=1), seen_events=[],
                        converted_at=CONVERTED.get((campaign_id, rid)),
                    )
                )  # fmt: skip
                enrollments[campaign_id, rid] = result.inserted_primary_key[0]
        for (campaign_id, step_id, rid), decisions in TOUCHES.items():
            last_day, outcome, reason = decisions[-1]
            touchpoint = connection.execute(
                Touchpoint.__table__.insert().values(  # type: ignore[attr-defined]
                    enrollment_id=enrollments[campaign_id, rid], campaign_id=campaign_id, recipient_id=rid,
                    step_id=step_id, channel="email", idempotency_key=f"{campaign_id}:{step_id}:{rid}", state="done",
                    scheduled_at=at(decisions[0][0]), due_at=at(last_day), outcome=outcome, reason=reason,
                    sent_at=at(last_day) if outcome == "sent" else None,
                )
            ).inserted_primary_key[0]  # fmt: skip
            for day, decision, why in decisions:
                connection.execute(
                    SendLog.__table__.insert().values(  # type: ignore[attr-defined]
                        at=at(day), touchpoint_id=touchpoint, enrollment_id=enrollments[campaign_id, rid],
                        recipient_id=rid, campaign_id=campaign_id, step_id=step_id, channel="email",
                        adapter="memory" if decision == "sent" else None, kind="marketing", decision=decision,
                        reason=why, asset=ASSETS[rid], propensity=1.0, attempt=1,
                        deferred_until=at(day + 1) if decision == "deferred" else None,
                    )
                )  # fmt: skip
            for index, kind in enumerate(EVENTS.get((campaign_id, step_id, rid), [])):
                connection.execute(
                    Event.__table__.insert().values(  # type: ignore[attr-defined]
                        event_id=f"{campaign_id}-{step_id}-{rid}-{index}", recipient_id=rid, type=kind,
                        at=at(last_day) + timedelta(hours=2), channel="email", touchpoint_id=touchpoint,
                        properties={}, applied_at=at(last_day) + timedelta(hours=2),
                    )
                )  # fmt: skip
    return engine
