"""Journey and permission gates through Engine.tick: exit, skip_if, consent, open requests,
removed steps, unknown recipients, replayed events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler import Engine

JOURNEY = """
id = "journey"
kind = "{kind}"
[trigger]
event = "signed_up"
[exit]
on_events = ["purchased"]
goal = "purchased"
[[steps]]
id = "first"
after = "0m"
channel = "{channel}"
subject = "First"
text = "First {{{{ recipient.first_name }}}}"
max_defer = "5d"
[[steps]]
id = "second"
after = "1d"
channel = "{channel}"
subject = "Second"
text = "Second"
skip_if = ["activated"]
max_defer = "5d"
[[steps]]
id = "third"
after = "1d"
channel = "{channel}"
subject = "Third"
text = "Third"
max_defer = "5d"
"""

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # a Monday, noon UTC


def make_engine(database_url: str, directory: Path, *, kind: str = "marketing", channel: str = "email") -> Engine:
    directory.mkdir(exist_ok=True)
    (directory / "journey.toml").write_text(JOURNEY.format(kind=kind, channel=channel))
    engine = Engine.from_config(
        None,
        database_url=database_url,
        channels={"email": "memory", "sms": "memory"},
        campaigns_dir=str(directory),
        attention={"holdout": 0.0},
        quiet_hours={"enabled": False},
        caps={"enabled": False},
    )
    engine.upsert_recipients([{"id": "r1", "email": "r1@example.com", "phone": "+14155550100", "first_name": "Ri"}])
    return engine


def event(kind: str, at: datetime, event_id: str | None = None, **extra: object) -> dict[str, object]:
    return {
        "id": event_id or f"{kind}-{at.isoformat()}",
        "recipient_id": "r1",
        "type": kind,
        "at": at.isoformat(),
        **extra,
    }


def run(engine: Engine, hours: int, start: datetime = T0) -> list[tuple[str, str, str]]:
    rows = []
    for hour in range(hours):
        for row in engine.tick(at=start + timedelta(hours=hour)).decisions:
            rows.append((row.step_id, row.decision, row.reason))
    return rows


def test_exit_event_drops_pending_touch_with_a_log_row(database_url: str, tmp_path: Path) -> None:
    """A `purchased` exit event ends the journey: the pending step is dropped `exited` at once."""
    engine = make_engine(database_url, tmp_path / "c")
    engine.record_events([event("signed_up", T0)])
    assert run(engine, 1) == [("first", "sent", "value_ok")]
    engine.record_events([event("purchased", T0 + timedelta(hours=3))])
    assert run(engine, 1, T0 + timedelta(hours=3)) == [("second", "dropped", "exited")]
    assert run(engine, 72, T0 + timedelta(hours=4)) == []
    profile = engine.store.recipient_profile("r1")
    assert profile is not None
    assert profile["enrollments"][0]["state"] == "exited"
    assert profile["enrollments"][0]["converted_at"] is not None
    engine.close()


def test_skip_if_drops_one_step_and_the_journey_goes_on(database_url: str, tmp_path: Path) -> None:
    """An `activated` event skips the step that names it; the following step is still sent."""
    engine = make_engine(database_url, tmp_path / "c")
    engine.record_events([event("signed_up", T0), event("activated", T0 + timedelta(hours=2))])
    rows = run(engine, 60)
    assert rows == [
        ("first", "sent", "value_ok"),
        ("second", "dropped", "skipped"),
        ("third", "sent", "value_ok"),
    ]
    engine.close()


def test_sms_marketing_needs_explicit_opt_in(database_url: str, tmp_path: Path) -> None:
    """Without an SMS opt-in (the default is unknown), a marketing SMS is dropped `no_consent`."""
    sms = make_engine(database_url, tmp_path / "sms", channel="sms")
    sms.record_events([event("signed_up", T0)])
    assert run(sms, 1)[0] == ("first", "dropped", "no_consent")
    sms.close()


def test_unsubscribe_event_drops_the_rest_as_unsubscribed(database_url: str, tmp_path: Path) -> None:
    """After an `unsubscribed` event, the next marketing touch is dropped `unsubscribed`."""
    engine = make_engine(database_url, tmp_path / "c")
    engine.record_events([event("signed_up", T0), event("unsubscribed", T0 + timedelta(hours=1), channel="email")])
    rows = run(engine, 60)
    assert rows[0] == ("first", "sent", "value_ok")
    assert rows[1:] == [("second", "dropped", "unsubscribed"), ("third", "dropped", "unsubscribed")]
    engine.close()


def test_transactional_ignores_marketing_consent(database_url: str, tmp_path: Path) -> None:
    """A transactional journey is sent even to someone who opted out of marketing email."""
    engine = make_engine(database_url, tmp_path / "c", kind="transactional")
    engine.upsert_recipients([{"id": "r1", "consent": {"email": "opted_out"}}])
    engine.record_events([event("signed_up", T0)])
    assert run(engine, 1) == [("first", "sent", "transactional")]
    engine.close()


def test_open_request_defers_marketing_until_resolved_plus_cooldown(database_url: str, tmp_path: Path) -> None:
    """While a support request is open, marketing waits; it goes out after support_resolved
    plus the 48 h cooldown, not before."""
    engine = make_engine(database_url, tmp_path / "c")
    engine.record_events([event("support_opened", T0 - timedelta(hours=1)), event("signed_up", T0)])
    first = engine.tick(at=T0).decisions
    assert [(r.step_id, r.decision, r.reason) for r in first] == [("first", "deferred", "open_request")]
    resolved = T0 + timedelta(hours=10)
    engine.record_events([event("support_resolved", resolved)])
    assert engine.tick(at=resolved).decisions == []
    assert engine.tick(at=resolved + timedelta(hours=47)).decisions == []
    sent = engine.tick(at=resolved + timedelta(hours=48)).decisions
    assert [(r.step_id, r.decision) for r in sent] == [("first", "sent")]
    engine.close()


def test_removed_step_drops_its_pending_touchpoints(database_url: str, tmp_path: Path) -> None:
    """Removing a step from a live campaign drops its pending touchpoint `step_removed`, and the
    journey continues with the step that followed it."""
    directory = tmp_path / "c"
    engine = make_engine(database_url, directory)
    engine.record_events([event("signed_up", T0)])
    assert run(engine, 1) == [("first", "sent", "value_ok")]
    text = (directory / "journey.toml").read_text()
    head, _, rest = text.partition('[[steps]]\nid = "second"')
    _, _, tail = rest.partition("[[steps]]")
    (directory / "journey.toml").write_text(head + "[[steps]]" + tail)
    report = engine.reload_campaigns()
    assert report.loaded == ["journey"] and report.errors == []
    rows = run(engine, 60, T0 + timedelta(hours=1))
    assert rows == [("second", "dropped", "step_removed"), ("third", "sent", "value_ok")]
    engine.close()


def test_broken_reload_keeps_the_last_good_version(database_url: str, tmp_path: Path) -> None:
    """A campaign file saved with a typo is reported with file:line:col and the last good
    version keeps running."""
    directory = tmp_path / "c"
    engine = make_engine(database_url, directory)
    path = directory / "journey.toml"
    path.write_text(path.read_text().replace('channel = "email"', 'chanel = "email"', 1))
    report = engine.reload_campaigns()
    assert report.errors and str(path) in str(report.errors[0])
    assert ":" in str(report.errors[0].diagnostics[0])
    assert engine.catalog.get("journey") is not None
    engine.record_events([event("signed_up", T0)])
    assert run(engine, 1) == [("first", "sent", "value_ok")]
    engine.close()


def test_events_are_idempotent_and_unknown_recipients_rejected(database_url: str, tmp_path: Path) -> None:
    """Replaying an event id changes nothing; an unknown recipient is rejected, not stored."""
    engine = make_engine(database_url, tmp_path / "c")
    first = engine.record_events([event("signed_up", T0, "e1")])
    again = engine.record_events(
        [event("signed_up", T0, "e1"), {**event("signed_up", T0, "e2"), "recipient_id": "ghost"}]
    )
    assert (first.accepted, again.accepted, again.duplicates) == (1, 0, 1)
    assert again.rejected == [(1, "unknown_recipient", "no recipient with id 'ghost'")]
    assert run(engine, 1) == [("first", "sent", "value_ok")]
    assert engine.store.count("event") == 1
    engine.close()


def test_hard_bounce_suppresses_every_touch(database_url: str, tmp_path: Path) -> None:
    """A hard bounce suppresses the address: even transactional touches are dropped `suppressed`."""
    engine = make_engine(database_url, tmp_path / "c", kind="transactional")
    engine.record_events([event("bounced", T0 - timedelta(hours=1)), event("signed_up", T0)])
    assert run(engine, 1) == [("first", "dropped", "suppressed")]
    engine.close()
