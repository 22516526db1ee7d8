"""Prometheus metrics: a real tick's decisions, sends and applied events appear in the exposition
with the counts the tick reports, and the queue gauges read the database through the probe."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from adapters import SendResult
from adapters.memory import MemoryAdapter
from scheduler import Engine, metrics
from scheduler.store import touchpoint_t
from scheduler.tables import utc_from_db

SATURDAY = datetime(2026, 6, 6, 12, 0, tzinfo=UTC)
MONDAY_MORNING = datetime(2026, 6, 8, 10, 0, tzinfo=UTC)

WELCOME = """
id = "welcome"
kind = "marketing"
[trigger]
event = "signed_up"
[[steps]]
id = "hello"
after = "0m"
channel = "email"
subject = "Hello"
text = "Hello"
value = 0.9
[[steps]]
id = "later"
after = "1d"
channel = "email"
subject = "Later"
text = "Later"
value = 0.6
"""

WEEKDAYS_ONLY = """
id = "weekdays"
kind = "marketing"
[trigger]
event = "signed_up"
[send_window]
timezone = "UTC"
days = ["mon", "tue", "wed", "thu", "fri"]
start = "09:00"
end = "17:00"
[[steps]]
id = "news"
after = "0m"
channel = "email"
subject = "News"
text = "News"
value = 0.8
max_defer = "5d"
"""

Snapshot = dict[str, dict[tuple[tuple[str, str], ...], float]]


def snapshot() -> Snapshot:
    """Every sample of the exposition: sample name -> sorted labels -> value."""
    body, _ = metrics.exposition()
    found: Snapshot = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def by_labels(taken: Snapshot, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """The samples of ``name`` keyed by the values of ``labels``."""
    return {tuple(dict(key)[label] for label in labels): value for key, value in taken.get(name, {}).items()}


def increase(before: Snapshot, after: Snapshot, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """How much each sample of ``name`` grew between two snapshots (unchanged ones left out)."""
    old, new = by_labels(before, name, *labels), by_labels(after, name, *labels)
    return {key: value - old.get(key, 0.0) for key, value in new.items() if value != old.get(key, 0.0)}


@pytest.fixture(autouse=True)
def no_queue_probe() -> Iterator[None]:
    """Each test starts and ends without a queue probe (the registry is process-wide)."""
    metrics.set_queue_probe(None)
    yield
    metrics.set_queue_probe(None)


@pytest.fixture
def engine(sqlite_url: str, tmp_path: Path) -> Iterator[Engine]:
    """An engine with two campaigns and four opted-in recipients in UTC."""
    directory = tmp_path / "campaigns"
    directory.mkdir()
    (directory / "welcome.toml").write_text(WELCOME)
    (directory / "weekdays.toml").write_text(WEEKDAYS_ONLY)
    engine = Engine.from_config(
        None,
        database_url=sqlite_url,
        channels={"email": "memory", "sms": "memory"},
        campaigns_dir=str(directory),
        attention={"holdout": 0.0},
        quiet_hours={"enabled": False},
        caps={"enabled": False},
    )
    people = [
        {"id": f"r{n}", "email": f"r{n}@example.com", "timezone": "UTC", "consent": {"email": "opted_in"}}
        for n in range(1, 5)
    ]
    assert engine.upsert_recipients(people).rejected == []
    yield engine
    engine.close()


def queue_from_rows(engine: Engine, at: datetime) -> tuple[int, float | None]:
    """Due pending touchpoints and the oldest one's age, computed in Python from every row."""
    with engine.store.engine.connect() as connection:
        rows = connection.execute(sa.select(touchpoint_t.c.state, touchpoint_t.c.due_at)).all()
    due = [utc_from_db(due_at) for state, due_at in rows if state == "pending"]
    due_now = [d for d in due if d is not None and d <= at]
    return len(due_now), (at - min(due_now)).total_seconds() if due_now else None


def test_a_tick_counts_its_decisions_sends_and_applied_events(engine: Engine) -> None:
    """A tick's decisions, adapter calls, latencies and applied events are counted by label."""
    signups = [
        {"id": f"signup-r{n}", "recipient_id": f"r{n}", "type": "signed_up", "at": SATURDAY.isoformat()}
        for n in range(1, 5)
    ]
    assert engine.record_events(signups).accepted == 4
    extra = [
        {"id": "activated-r1", "recipient_id": "r1", "type": "activated", "at": SATURDAY.isoformat()},
        {"id": "opened-r3", "recipient_id": "r3", "type": "opened", "at": (SATURDAY + timedelta(days=1)).isoformat()},
    ]
    assert engine.record_events(extra).accepted == 2
    assert engine.record_events(signups[1:2]).duplicates == 1  # a replay is stored, and applied, once
    email = engine.adapter("email")
    assert isinstance(email, MemoryAdapter)
    email.queue_results(SendResult.retryable("busy"), SendResult.rejected("mailbox full"))

    before = snapshot()
    result = engine.tick(at=SATURDAY)
    after = snapshot()

    decided = Counter((row.decision, row.reason) for row in result.decisions)
    assert decided[("deferred", "send_window")] == 4 and decided[("sent", "value_ok")] == 2
    assert increase(before, after, "tact_decisions_total", "decision", "reason") == {
        tuple(key.split(":", 1)): float(count) for key, count in result.counts.items()
    }
    calls = Counter(("memory", outcome.status.value) for _, outcome in email.attempts)
    assert calls == {("memory", "sent"): 2, ("memory", "retryable"): 1, ("memory", "rejected"): 1}
    assert increase(before, after, "tact_sends_total", "adapter", "status") == {k: float(v) for k, v in calls.items()}
    assert increase(before, after, "tact_send_latency_seconds_count", "adapter") == {("memory",): 4.0}
    assert increase(before, after, "tact_send_latency_seconds_bucket", "adapter", "le").get(("memory", "+Inf")) == 4.0
    assert result.events_applied == 5
    assert increase(before, after, "tact_events_ingested_total", "type") == {("signed_up",): 4.0, ("activated",): 1.0}
    assert increase(before, after, "tact_ticks_total") == {(): 1.0}
    assert increase(before, after, "tact_tick_duration_seconds_count") == {(): 1.0}


def test_queue_gauges_report_what_the_probe_reads_from_the_database(engine: Engine) -> None:
    """The queue gauges equal the due pending touchpoints and the oldest one's age in the database."""
    signups = [
        {"id": f"signup-r{n}", "recipient_id": f"r{n}", "type": "signed_up", "at": SATURDAY.isoformat()}
        for n in range(1, 5)
    ]
    engine.record_events(signups)
    engine.tick(at=SATURDAY)
    metrics.set_queue_probe(lambda: engine.store.queue_stats(MONDAY_MORNING))

    depth, oldest_age = queue_from_rows(engine, MONDAY_MORNING)
    taken = snapshot()

    assert depth == 8 and oldest_age is not None  # four deferred to Monday, four next steps on Sunday
    assert by_labels(taken, "tact_queue_depth") == {(): float(depth)}
    assert by_labels(taken, "tact_oldest_due_age_seconds") == {(): pytest.approx(oldest_age)}


def test_an_empty_queue_reports_zero_depth_and_zero_age(engine: Engine) -> None:
    """With nothing due, the queue gauges read 0 (the store says no oldest touchpoint)."""
    assert engine.store.queue_stats(SATURDAY) == (0, None)
    metrics.set_queue_probe(lambda: engine.store.queue_stats(SATURDAY))
    taken = snapshot()
    assert by_labels(taken, "tact_queue_depth") == {(): 0.0}
    assert by_labels(taken, "tact_oldest_due_age_seconds") == {(): 0.0}


def test_a_failing_probe_leaves_the_queue_gauges_out_and_logs() -> None:
    """A probe that raises drops only the queue gauges from the scrape, with a warning logged."""

    def broken() -> tuple[int, float | None]:
        raise RuntimeError("database is down")

    metrics.set_queue_probe(broken)
    with capture_logs() as logs:
        taken = snapshot()
    assert "tact_queue_depth" not in taken and "tact_oldest_due_age_seconds" not in taken
    assert "tact_ticks_total" in taken
    assert [entry["event"] for entry in logs] == ["metrics_queue_probe_failed"]


def test_without_a_probe_the_queue_gauges_are_absent() -> None:
    """No probe set: the scrape has no queue gauges."""
    taken = snapshot()
    assert "tact_queue_depth" not in taken and "tact_oldest_due_age_seconds" not in taken


def test_info_carries_the_installed_version() -> None:
    """``tact_info`` is 1 with the installed package's version as its label."""
    assert by_labels(snapshot(), "tact_info", "version") == {(version("tact"),): 1.0}


def test_batch_histogram_buckets_are_cumulative_and_include_their_bound() -> None:
    """A batch histogram counts a value equal to a bound in that bucket and sums every value."""
    histogram = metrics.BatchHistogram("test_latency_seconds", "Test.", "adapter", (0.001, 0.005))
    histogram.observe_many("smtp", [0.0005, 0.001, 0.003])
    histogram.observe_many("smtp", [7.0])
    (family,) = histogram.collect()
    values = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert values[("test_latency_seconds_bucket", "0.001")] == 2.0
    assert values[("test_latency_seconds_bucket", "0.005")] == 3.0
    assert values[("test_latency_seconds_bucket", "+Inf")] == 4.0
    assert values[("test_latency_seconds_count", None)] == 4.0
    assert values[("test_latency_seconds_sum", None)] == pytest.approx(7.0045)
