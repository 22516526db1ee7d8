"""Analytics: `tact log --format csv` and `tact report` on a large send log.

Builds a SQLite database in Tact's schema (the store migrates it and the engine records the
campaigns, as at any start), bulk-loads N send_log rows over D days in decision order with the
recipients, enrollments, touchpoints, attention state and events behind them, then runs the
analyst commands as child processes and prints each one's wall time, rows/s and peak RSS. It
exits non-zero when a goal is missed: `tact report` taking 30 s or more, or the full export's
peak RSS above 1.1 times the 300,000-row export's (by then SQLite's page cache is full).
Usage (see bench/README.md):

    .venv/bin/python bench/analytics.py --rows 1000000
    .venv/bin/python bench/analytics.py --database /tmp/analytics.db --reuse      # measure again
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import itertools
import json
import math
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from scheduler import Engine
from scheduler.config import LoggingSettings
from scheduler.logs import configure_logging
from scheduler.tables import sqlite_text

TACT = Path(sys.executable).parent / "tact"
START = datetime(2026, 8, 1, tzinfo=UTC).timestamp()
HOUR = 3600.0
LIMITS = (10_000, 100_000, 300_000)
BASELINE = 300_000  # rows: by then SQLite's page cache (64 MiB per connection) is full
REPORT_GOAL_SECONDS = 30.0
RSS_RATIO_GOAL = 1.1
TABLES = ("recipient", "consent", "enrollment", "touchpoint", "event", "send_log", "attention")
TIMEZONES = ("America/New_York", "America/Chicago", "America/Los_Angeles", "Europe/London", "Europe/Paris",
             "Europe/Berlin", "Asia/Tokyo", "Australia/Sydney", "UTC")  # fmt: skip
ADAPTERS = {"email": "smtp", "sms": "twilio"}
ERRORS = {"failed": "550 5.1.1 mailbox unavailable", "retrying": "421 4.7.0 try again later"}
Row = tuple[Any, ...]


class Step(NamedTuple):
    """A campaign step: its channel, declared value and wait after the previous step."""

    id: str
    channel: str
    value: float
    after_hours: int


class Shape(NamedTuple):
    """A synthetic campaign: kind, trigger event, share of the enrollments, steps, exit events."""

    kind: str
    trigger: str
    weight: float
    steps: tuple[Step, ...]
    exits: tuple[str, ...] = ()


CAMPAIGNS = {
    "onboarding": Shape("marketing", "signed_up", 3, (
        Step("welcome", "email", 0.9, 0), Step("first-project", "email", 0.7, 24), Step("tip", "sms", 0.4, 48),
        Step("story", "email", 0.5, 72), Step("trial-ending", "email", 0.8, 96)), ("converted", "unsubscribed")),
    "newsletter": Shape("marketing", "issue_ready", 4, (Step("issue", "email", 0.4, 0),), ("unsubscribed",)),
    "win-back": Shape("marketing", "went_quiet", 1.5, (
        Step("miss-you", "email", 0.6, 0), Step("offer", "email", 0.8, 72), Step("last-call", "sms", 0.5, 96)),
        ("converted", "unsubscribed")),
    "receipts": Shape("transactional", "order_placed", 2, (
        Step("confirmation", "email", 1.0, 0), Step("shipping", "email", 0.7, 48))),
}  # fmt: skip
CAMPAIGN_IDS = list(CAMPAIGNS)
CAMPAIGN_WEIGHTS = list(itertools.accumulate(c.weight for c in CAMPAIGNS.values()))
# Decision mix of each decision row; a deferred or retrying touch is decided again later.
MARKETING = {
    ("sent", "value_ok"): 70.0, ("deferred", "fatigue"): 7.0, ("deferred", "quiet_hours"): 4.0,
    ("deferred", "send_window"): 5.0, ("deferred", "frequency_cap"): 2.0, ("deferred", "open_request"): 1.0,
    ("dropped", "value_below_threshold"): 6.0, ("dropped", "fatigue"): 2.0, ("dropped", "no_consent"): 2.0,
    ("dropped", "suppressed"): 0.5, ("dropped", "unsubscribed"): 0.5, ("dropped", "expired"): 0.5,
    ("retrying", "provider_error"): 0.5, ("failed", "provider_error"): 0.2,
}  # fmt: skip
TRANSACTIONAL = {("sent", "transactional"): 99.0, ("retrying", "provider_error"): 0.7,
                 ("failed", "provider_error"): 0.3}  # fmt: skip
VALUE_REASONS = frozenset({"value_ok", "value_below_threshold", "fatigue"})  # the holdout skips the value rule
OUTCOMES = {kind: (list(mix), list(itertools.accumulate(mix.values())))
            for kind, mix in (("marketing", MARKETING), ("transactional", TRANSACTIONAL))}  # fmt: skip
ENGAGEMENT = {"opened": 0.25, "clicked": 0.06, "converted": 0.015, "unsubscribed": 0.003, "complained": 0.0005}
# Runs a command from a small process, so the peak RSS is the command's own: a child forked from
# this large process would report this process's peak.
PROBE = """import os, subprocess, sys, time
start = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(time.perf_counter() - start, usage.ru_maxrss, os.waitstatus_to_exitcode(status))"""


def stamp(epoch: float | None) -> str | None:
    """A POSIX time as the store writes it on SQLite: ``sqlite_text`` without its cache, which
    random instants would only churn (``build`` checks the two agree)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class Builder:
    """Generates a synthetic installation's rows (each tuple in its table's column order) and
    writes the send log in decision order, as the engine would have."""

    def __init__(self, db: sqlite3.Connection, rng: random.Random, recipients: int) -> None:
        self.db, self.rng, self.recipients = db, rng, recipients
        widths = {t: len(db.execute(f"PRAGMA table_info({t})").fetchall()) for t in TABLES}
        self.insert = {t: f"INSERT INTO {t} VALUES ({', '.join('?' * width)})" for t, width in widths.items()}
        self.buffers: dict[str, list[Row]] = {table: [] for table in TABLES}
        self.queue: list[tuple[float, int, Row, Row, Row, list[Row], bool, bool]] = []  # decisions not yet logged
        self.sequence = itertools.count()
        self.log_id = self.enrollment_id = self.touchpoint_id = self.event_id = self.tries = self.queued = 0
        self.lag = 0.0  # summed over queued decisions: how long after its enrollment each is taken
        self.base_asset = [rng.betavariate(5, 5) for _ in range(recipients)]
        self.holdout = [rng.random() < 0.05 for _ in range(recipients)]
        self.busy_until: dict[tuple[str, int], float] = {}
        self.last_decision: dict[str, Row] = {}  # per recipient: their attention state's last update

    def add_recipients(self) -> None:
        """Recipients with heavy-tailed values and their time zones, email consent for all."""
        rng = self.rng
        for index in range(self.recipients):
            rid, created = f"r{index:07d}", stamp(START - rng.uniform(0, 365 * 24 * HOUR))
            phone = f"+1555{index:07d}" if rng.random() < 0.4 else None
            suppressed = created if rng.random() < 0.005 else None
            attributes = json.dumps({"first_name": f"R{index}", "plan": rng.choice(("free", "trial", "pro", "team"))})
            value = round(rng.lognormvariate(0.0, 1.2), 3)
            self.buffers["recipient"].append((rid, f"{rid}@example.com", phone, rng.choice(TIMEZONES), "en-US", value,
                attributes, suppressed, "bounced" if suppressed else None, created, created))  # fmt: skip
            for channel in ("email", "sms") if phone and rng.random() < 0.6 else ("email",):
                self.buffers["consent"].append((rid, channel, "opted_in", "import", created))

    def event(self, rid: str, kind: str, at: float, channel: str | None = None, tp: int | None = None) -> Row:
        """An event row, applied at the tick after it arrived."""
        self.event_id += 1
        message_id = f"bench-{tp}" if tp else None
        at_text, applied = stamp(at), stamp(at + self.rng.uniform(0.1, 1.0))
        return (None, f"bench-{self.event_id}", rid, kind, at_text, channel, tp, message_id, "{}", at_text, applied)

    def decisions(
        self, recipient: int, tp: Row, step: Step, kind: str, due: float
    ) -> tuple[list[tuple[float, Row]], float]:
        """A touch's decisions up to the final one, as (instant, send_log row without its id), and
        when it was last due."""
        rng, attempts, deferrals = self.rng, 0, 0
        rows: list[tuple[float, Row]] = []
        at = due + rng.random()
        choices, weights = OUTCOMES[kind]
        while True:
            decision, reason = choices[bisect.bisect(weights, rng.random() * weights[-1])]
            if self.holdout[recipient] and kind == "marketing" and reason in VALUE_REASONS:
                decision, reason = "sent", "holdout"
            if decision == "deferred" and deferrals == 3:
                decision, reason = "dropped", "expired"
            messaged = decision in ("sent", "failed", "retrying")
            attempts += messaged
            # Plain uniform draws keep the model's numbers cheap: 1M rows need about 10M of them.
            until = (at // HOUR + 1 + int(12 * rng.random())) * HOUR if decision == "deferred" else None
            asset = min(1.0, max(0.0, self.base_asset[recipient] + 0.1 * (rng.random() - 0.5)))
            fatigue = -math.log(1.0 - rng.random()) / 1.5
            size = 0.012 * rng.random()
            net_value = size if reason == "value_ok" else -size if reason in VALUE_REASONS else size - 0.005
            rows.append((at, (stamp(at), tp[0], tp[1], tp[3], tp[2], step.id, step.channel,
                ADAPTERS[step.channel] if messaged else None, kind, decision, reason, stamp(until), asset,
                0.05 + 0.1 * rng.random(), fatigue, 0.05 * (0.5 + asset) * math.exp(-0.3 * fatigue),
                0.2 + 0.4 * rng.random(), step.value, net_value, 0.0, 1.0,
                f"bench-{tp[0]}" if decision == "sent" else None, ERRORS.get(decision),
                5 + 80 * rng.random() ** 3 if messaged else None, attempts if messaged else None)))  # fmt: skip
            if decision not in ("deferred", "retrying"):
                return rows, due
            due = until if until is not None else at + 30 * 2**attempts
            at = due + rng.random()  # the first tick after it is due again

    def enroll(self, at: float) -> None:
        """Enroll a random recipient in a random campaign at ``at`` and queue the journey's decisions."""
        rng, self.tries = self.rng, self.tries + 1
        campaign_id = CAMPAIGN_IDS[bisect.bisect(CAMPAIGN_WEIGHTS, rng.random() * CAMPAIGN_WEIGHTS[-1])]
        campaign, recipient = CAMPAIGNS[campaign_id], rng.randrange(self.recipients)
        if self.busy_until.get((campaign_id, recipient), 0.0) > at:
            return  # one active enrollment per campaign and recipient
        rid, self.enrollment_id = f"r{recipient:07d}", self.enrollment_id + 1
        eid, trigger = self.enrollment_id, self.event(rid, campaign.trigger, at)
        journey: list[tuple[float, Row, Row, list[Row], bool]] = []
        state, ended, exit_reason, converted, previous, previous_text = "completed", at, None, None, at, trigger[4]
        for step in campaign.steps:
            self.touchpoint_id += 1
            tp: Row = (self.touchpoint_id, eid, campaign_id, rid)
            scheduled = previous + step.after_hours * HOUR
            timed, last_due = self.decisions(recipient, tp, step, campaign.kind, scheduled)
            decided, final = timed[-1]
            sent, attempts = final[9] == "sent", max(row[24] or 0 for _, row in timed)
            scheduled_text = stamp(scheduled)
            due_text = scheduled_text if last_due == scheduled else stamp(last_due)
            done = (*tp, step.id, step.channel, f"{eid}:{step.id}", "done", scheduled_text, due_text, attempts,
                    None, None, previous_text, final[0], final[9], final[10], final[21],
                    final[0] if sent else None)  # fmt: skip
            events = []
            for kind, chance in ENGAGEMENT.items() if sent else ():
                if (kind != "opened" or step.channel == "email") and rng.random() < chance:
                    event_at = decided + rng.expovariate(1 / (4 * HOUR))
                    events.append(self.event(rid, kind, event_at, step.channel, tp[0]))
                    if kind in campaign.exits and state == "completed":
                        state, ended, exit_reason = "exited", event_at, kind
                        converted = event_at if kind == "converted" else None
            journey += [(when, row, done, events if row is final else [], row is final) for when, row in timed]
            previous, previous_text = decided, final[0]
            if state == "exited":
                break
            ended = decided
        enrollment = (eid, campaign_id, rid, state, trigger[4], f"event:{trigger[1]}", "[]", stamp(ended),
                      exit_reason, stamp(converted))  # fmt: skip
        self.buffers["event"].append(trigger)
        for index, (when, row, done, events, last_of_touch) in enumerate(journey):
            last_of_journey = index == len(journey) - 1
            item = (when, next(self.sequence), row, done, enrollment, events, last_of_touch, last_of_journey)
            heapq.heappush(self.queue, item)
        self.queued += len(journey)
        self.lag += sum(when for when, *_ in journey) - at * len(journey)
        self.busy_until[(campaign_id, recipient)] = ended

    def log_until(self, until: float, limit: int) -> None:
        """Number and buffer the queued decisions taken up to ``until`` (``limit`` rows in all)."""
        while self.queue and self.queue[0][0] <= until and self.log_id < limit:
            _, _, row, touchpoint, enrollment, events, last_of_touch, last_of_journey = heapq.heappop(self.queue)
            self.log_id += 1
            self.buffers["send_log"].append((self.log_id, *row))
            self.last_decision[row[3]] = row
            if last_of_touch:
                self.buffers["touchpoint"].append(touchpoint)
                self.buffers["event"] += events
            if last_of_journey:
                self.buffers["enrollment"].append(enrollment)
            if len(self.buffers["send_log"]) >= 50_000:
                self.write()

    def finish(self) -> None:
        """Journeys still under way stay active with their next touchpoint pending; attention rows."""
        seen: set[int] = set()
        for at, _, _, done, enrollment, _, _, _ in sorted(self.queue):
            if enrollment[0] not in seen:
                seen.add(enrollment[0])
                self.buffers["enrollment"].append((*enrollment[:3], "active", *enrollment[4:6], "[]", None, None, None))
                self.buffers["touchpoint"].append((*done[:7], "pending", done[8], stamp(at), 0, None, None, done[13],
                                                   None, None, None, None, None))  # fmt: skip
        for rid, row in self.last_decision.items():
            engagement = json.dumps({"email": [round(1 + 2 * row[12], 3), 19.0]})
            self.buffers["attention"].append((rid, row[0], *row[12:15], engagement, "{}", "{}", "[]",
                int(self.rng.random() < 0.01), None, None, None, "[]", None))  # fmt: skip
        self.write()

    def write(self) -> None:
        """Insert every buffered row and commit."""
        for table, rows in self.buffers.items():
            self.db.executemany(self.insert[table], rows)
            rows.clear()
        self.db.commit()


def write_config(workdir: Path, database: Path) -> Path:
    """The campaign files and a configuration pointing at ``database`` (``null`` adapters)."""
    campaigns = workdir / "campaigns"
    campaigns.mkdir(exist_ok=True)
    for campaign_id, shape in CAMPAIGNS.items():
        lines = [f'id = "{campaign_id}"', f'kind = "{shape.kind}"', f'trigger = {{ event = "{shape.trigger}" }}']
        if shape.exits:
            goal = ', goal = "converted"' if "converted" in shape.exits else ""
            lines.append(f"exit = {{ on_events = {json.dumps(list(shape.exits))}{goal} }}")
        for step in shape.steps:
            subject = 'subject = "Hello"\n' if step.channel == "email" else ""
            lines.append(f'[[steps]]\nid = "{step.id}"\nafter = "{step.after_hours}h"\nchannel = "{step.channel}"\n'
                         f'value = {step.value}\n{subject}text = "A {step.id} touch."')  # fmt: skip
        (campaigns / f"{campaign_id}.toml").write_text("\n".join(lines) + "\n")
    config = workdir / "tact.toml"
    config.write_text(f'campaigns_dir = "{campaigns}"\n[database]\nurl = "sqlite:///{database}"\n'
                      '[channels.email]\nadapter = "null"\n[channels.sms]\nadapter = "null"\n'
                      '[logging]\nlevel = "warning"\n')  # fmt: skip
    return config


def build(database: Path, config: Path, rows: int, recipients: int, days: int, seed: int) -> None:
    """Create the schema as Tact does, then bulk-load ``rows`` send_log rows over about ``days``."""
    began = time.perf_counter()
    assert stamp(START + 0.1234567) == sqlite_text(datetime.fromtimestamp(START + 0.1234567, UTC))
    configure_logging(LoggingSettings(level="warning"))
    Engine.from_config(config).close()  # migrations, and the campaign table as loaded
    db = sqlite3.connect(database)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = OFF")
    # The schema's own index statements, run again after the load: one sort beats upkeep per insert.
    listed = ", ".join(f"'{t}'" for t in TABLES)
    indexes = db.execute(f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                         f"AND tbl_name IN ({listed})").fetchall()  # fmt: skip
    for name, _ in indexes:
        db.execute(f"DROP INDEX {name}")
    builder = Builder(db, random.Random(seed), recipients)
    builder.add_recipients()
    at = START
    while builder.log_id < rows:
        # Enroll at the pace that logs the last row at START + days, the mix's shares as seen so far.
        rows_per_try, lag = (builder.queued / builder.tries, builder.lag / builder.queued) if builder.queued else (3, 0)
        at += builder.rng.expovariate(rows / (days * 24 * HOUR - lag) / rows_per_try)
        builder.log_until(at, rows)
        builder.enroll(at)
    builder.finish()
    for _, sql in indexes:
        db.execute(sql)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    counts = ", ".join(f"{t}={db.execute(f'SELECT count(*) FROM {t}').fetchone()[0]:,}" for t in TABLES)
    first, last = db.execute("SELECT min(at), max(at) FROM send_log").fetchone()
    db.close()
    print(f"built {database} in {time.perf_counter() - began:.0f}s, send_log {first} to {last}\n  {counts}")


class Run(NamedTuple):
    """One measured command."""

    seconds: float
    peak_rss_mib: float
    status: int


def measure(label: str, command: list[str], rows: int | None) -> Run:
    """Run ``command`` with stdout to /dev/null from a small probe process; print a result line."""
    probe = subprocess.run([sys.executable, "-c", PROBE, *command], capture_output=True, text=True, check=True)
    wall, rss_kib, status = probe.stdout.split()
    run = Run(float(wall), int(rss_kib) / 1024, int(status))
    if run.status != 0:
        print(f"{label}: exit status {run.status}\n{probe.stderr[-2000:]}", file=sys.stderr)
    rate = f"{rows / run.seconds:,.0f}" if rows else "-"
    print(f"{label:<42} {f'{rows:,}' if rows else '-':>10} {run.seconds:>8.1f} {rate:>10} {run.peak_rss_mib:>6.0f} MiB")
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", type=Path, default=None, help="SQLite file (default: in a temporary dir)")
    parser.add_argument("--rows", "-n", type=int, default=1_000_000, help="send_log rows")
    parser.add_argument("--recipients", type=int, default=50_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="measure an existing --database as it is")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tact-analytics-"))
    database = (args.database or workdir / "analytics.db").resolve()
    config = write_config(workdir, database)
    if not (args.reuse and database.exists()):
        if database.exists():
            print(f"error: {database} exists; pass --reuse to measure it, or remove it", file=sys.stderr)
            return 2
        build(database, config, args.rows, args.recipients, args.days, args.seed)
    with sqlite3.connect(database) as db:
        total = int(db.execute("SELECT count(*) FROM send_log").fetchone()[0])

    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; config {config}")
    print(f"{'command':<42} {'rows':>10} {'seconds':>8} {'rows/s':>10} {'peak RSS':>10}")
    log = [str(TACT), "log", "--format", "csv", "--config", str(config)]
    runs = {n: measure(f"tact log --format csv --limit {n}", [*log, "--limit", str(n)], n) for n in LIMITS if n < total}
    runs[total] = measure("tact log --format csv", log, total)
    report = html = None
    if subprocess.run([str(TACT), "report", "--help"], capture_output=True).returncode == 0:
        summary = [str(TACT), "report", "--config", str(config)]
        report = measure("tact report", summary, None)
        html = measure("tact report --html", [*summary, "--html", str(workdir / "report.html")], None)
    print(f"load average {os.getloadavg()[0]:.2f}")

    missed = any(run.status != 0 for run in [*runs.values(), report, html] if run is not None)
    if BASELINE in runs and total > BASELINE:
        ratio = runs[total].peak_rss_mib / runs[BASELINE].peak_rss_mib
        missed |= ratio > RSS_RATIO_GOAL
        verdict = "MISSED" if ratio > RSS_RATIO_GOAL else "ok"
        print(f"flat memory: peak RSS full / {BASELINE:,} rows = {ratio:.2f} (goal <= {RSS_RATIO_GOAL}): {verdict}")
    else:
        print(f"flat memory: not judged (needs more than {BASELINE:,} rows)")
    if report is None:
        print("tact report: not available")
    else:
        missed |= report.seconds >= REPORT_GOAL_SECONDS
        verdict = "MISSED" if report.seconds >= REPORT_GOAL_SECONDS else "ok"
        print(f"tact report: {report.seconds:.1f} s (goal < {REPORT_GOAL_SECONDS:.0f} s): {verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
