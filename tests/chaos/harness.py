"""Replicas of ``tact run`` on one PostgreSQL database, and a census of what they did.

- :func:`seed` writes a one-step transactional campaign and enrolls ``count`` recipients in
  it, each with one touchpoint due at once (no consent, cap or value gate applies).
- :class:`ReplicaSettings` renders a daemon configuration that sends email over the ``smtp``
  adapter to a local test server.
- :class:`Replica` is one ``tact run`` process that can be started, killed (SIGKILL), stopped
  (SIGTERM), frozen (SIGSTOP) and resumed (SIGCONT); :class:`Cluster` is several of them.
- :func:`take_census` reads ``touchpoint``, ``send_log`` and the messages the SMTP server
  received, and counts what the chaos tests assert on.

Each seeded recipient has exactly one touchpoint, so a received message is traced back to its
touchpoint by its envelope recipient, independently of its Message-ID.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler import Engine
from tests.contract.smtp_server import ReceivedMessage
from tests.pg import connect

TACT = Path(sys.executable).parent / "tact"
CAMPAIGN_ID = "chaos"
SENDER = "Tact <tact@chaos.example.com>"
TERMINAL_DECISIONS = ("sent", "dropped", "failed")
CAMPAIGN = f"""\
id = "{CAMPAIGN_ID}"
name = "Chaos"
kind = "transactional"
[trigger]
event = "chaos_seeded"
[[steps]]
id = "only"
after = "0m"
channel = "email"
subject = "Your receipt"
text = "Thank you."
"""


def seed(database_url: str, campaigns_dir: Path, count: int) -> None:
    """Write the chaos campaign into ``campaigns_dir`` and enroll ``count`` new recipients."""
    campaigns_dir.mkdir(parents=True, exist_ok=True)
    (campaigns_dir / f"{CAMPAIGN_ID}.toml").write_text(CAMPAIGN, encoding="utf-8")
    ids = [f"r{number:05d}" for number in range(count)]
    engine = Engine.from_config(
        None, database_url=database_url, campaigns_dir=str(campaigns_dir), channels={"email": "null"}
    )
    try:
        report = engine.upsert_recipients({"id": rid, "email": f"{rid}@example.com"} for rid in ids)
        assert report.accepted == count and not report.rejected, report
        enrolled, unknown = engine.enroll(CAMPAIGN_ID, ids, at=datetime.now(UTC) - timedelta(seconds=5))
        assert enrolled == count and not unknown, (enrolled, unknown[:5])
    finally:
        engine.close()


@dataclass(frozen=True)
class ReplicaSettings:
    """What a replica's configuration file says; every daemon of a cluster shares one."""

    database_url: str
    campaigns_dir: Path
    smtp_port: int
    smtp_host: str = "127.0.0.1"
    tick_interval: float = 0.2
    batch_size: int = 25
    max_batches_per_tick: int = 2
    lease: float = 4.0
    concurrency: int = 25
    channel_concurrency: int = 10
    pool_size: int = 4
    rate_limit: float | None = None
    smtp_timeout: float = 60.0
    shutdown_grace: float | None = None
    """``[engine] shutdown_grace`` in seconds; None leaves the daemon's default."""

    def toml(self) -> str:
        """The configuration file's text."""
        rate_limit = f"rate_limit = {self.rate_limit}\n" if self.rate_limit is not None else ""
        grace = f"shutdown_grace = {self.shutdown_grace}\n" if self.shutdown_grace is not None else ""
        return f"""\
campaigns_dir = "{self.campaigns_dir.as_posix()}"

[database]
url = "{self.database_url}"
pool_size = 2

[engine]
tick_interval = {self.tick_interval}
batch_size = {self.batch_size}
max_batches_per_tick = {self.max_batches_per_tick}
lease = {self.lease}
concurrency = {self.concurrency}
retry_base = "1s"
retry_max = "4s"
{grace}
[api]
enabled = false

[quiet_hours]
enabled = false

[caps]
enabled = false

[attention]
enabled = false
holdout = 0.0

[logging]
format = "json"

[channels.email]
adapter = "smtp"
host = "{self.smtp_host}"
port = {self.smtp_port}
from = "{SENDER}"
pool_size = {self.pool_size}
concurrency = {self.channel_concurrency}
timeout = {self.smtp_timeout}
{rate_limit}"""


class Replica:
    """One ``tact run`` process at a time, started again and again from one configuration file."""

    def __init__(self, name: str, settings: ReplicaSettings, directory: Path) -> None:
        self.name = name
        self.config_path = directory / f"{name}.toml"
        self.log_path = directory / f"{name}.log"
        self.config_path.write_text(settings.toml(), encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        """Whether the current process has not exited (a frozen one counts as running)."""
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        """The current process id."""
        assert self.process is not None, f"{self.name} was never started"
        return self.process.pid

    @property
    def readies(self) -> int:
        """How many of its processes got as far as logging ``daemon_started``."""
        if not self.log_path.exists():
            return 0
        return self.log_path.read_text(encoding="utf-8", errors="replace").count('"daemon_started"')

    def start(self) -> None:
        """Start a new ``tact run`` process; its stdout and stderr are appended to the log file."""
        assert not self.running, f"{self.name} is already running"
        self.starts += 1
        environment = {key: value for key, value in os.environ.items() if not key.startswith("TACT_")}
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts} of {self.name}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [str(TACT), "run", "--config", str(self.config_path)],
                cwd=self.config_path.parent,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.running:
            assert self.process is not None
            self.process.kill()
            self.process.wait(timeout=30)

    def terminate(self) -> None:
        """Send SIGTERM (the daemon drains and exits)."""
        self._signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        """The exit status, waiting at most ``timeout`` seconds (``subprocess.TimeoutExpired``)."""
        assert self.process is not None, f"{self.name} was never started"
        return self.process.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit status within ``timeout`` seconds."""
        self.terminate()
        return self.wait(timeout)

    def freeze(self) -> None:
        """SIGSTOP: the process stops running until :meth:`resume`."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT: a frozen process runs on."""
        self._signal(signal.SIGCONT)

    def ensure_gone(self) -> None:
        """Resume and kill the process if it still runs (teardown)."""
        if self.running:
            self.resume()
            self.kill()

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of everything this replica's processes wrote."""
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def _signal(self, signum: signal.Signals) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signum)


@dataclass
class Cluster:
    """Replicas sharing one configuration and one database."""

    replicas: list[Replica]
    kills: int = 0

    @classmethod
    def create(cls, size: int, settings: ReplicaSettings, directory: Path) -> Cluster:
        """``size`` replicas named ``replica-1`` ... (not started)."""
        return cls([Replica(f"replica-{number}", settings, directory) for number in range(1, size + 1)])

    def start(self) -> None:
        """Start every replica that is not running."""
        for replica in self.replicas:
            if not replica.running:
                replica.start()

    def kill_and_restart(self, rng: random.Random) -> Replica:
        """SIGKILL a randomly chosen replica and start it again at once."""
        replica = rng.choice(self.replicas)
        replica.kill()
        self.kills += 1
        replica.start()
        return replica

    def stop(self, timeout: float = 30.0) -> dict[str, int | None]:
        """SIGTERM every replica, then each one's exit status (None: still running after
        ``timeout`` seconds, so killed)."""
        for replica in self.replicas:
            replica.terminate()
        statuses: dict[str, int | None] = {}
        for replica in self.replicas:
            try:
                statuses[replica.name] = replica.wait(timeout)
            except subprocess.TimeoutExpired:
                replica.kill()
                statuses[replica.name] = None
        return statuses

    def ensure_gone(self) -> None:
        """Kill whatever still runs."""
        for replica in self.replicas:
            replica.ensure_gone()

    @property
    def starts(self) -> int:
        """Processes started, over all replicas."""
        return sum(replica.starts for replica in self.replicas)

    @property
    def readies(self) -> int:
        """Processes that got as far as ``daemon_started``, over all replicas."""
        return sum(replica.readies for replica in self.replicas)

    def describe(self) -> str:
        """Every replica's state and the tail of its log, for failure messages."""
        return "\n".join(
            f"== {r.name}: starts={r.starts} exit={r.process.poll() if r.process else None}\n{r.log_tail()}"
            for r in self.replicas
        )


@dataclass(frozen=True)
class ChaosRun:
    """How a run of :func:`kill_until_drained` went."""

    kills: int
    seconds: float
    drained: bool
    unexpected_exits: list[str]
    """``name: status`` of every replica process that exited without being killed."""


def kill_until_drained(
    cluster: Cluster,
    database_url: str,
    rng: random.Random,
    *,
    timeout: float,
    pause: tuple[float, float] = (2.0, 5.0),
) -> ChaosRun:
    """Every ``uniform(*pause)`` seconds SIGKILL a random replica and restart it, until no
    touchpoint is pending or ``timeout`` seconds have passed. A replica that exits by itself
    is noted and started again."""
    started = time.monotonic()
    next_kill = started + rng.uniform(*pause)
    unexpected: list[str] = []
    while True:
        drained = queue_state(database_url).pending == 0
        now = time.monotonic()
        if drained or now - started > timeout:
            return ChaosRun(cluster.kills, now - started, drained, unexpected)
        for replica in cluster.replicas:
            if not replica.running:
                assert replica.process is not None
                unexpected.append(f"{replica.name}: {replica.process.returncode}")
                replica.start()
        if now >= next_kill:
            cluster.kill_and_restart(rng)
            next_kill = now + rng.uniform(*pause)
        time.sleep(0.25)


class Launcher:
    """Makes replicas and clusters in one directory, and kills them all at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.made: list[Replica] = []

    def replica(self, name: str, settings: ReplicaSettings) -> Replica:
        """A replica (not started) with its own configuration and log file."""
        replica = Replica(name, settings, self.directory)
        self.made.append(replica)
        return replica

    def cluster(self, size: int, settings: ReplicaSettings) -> Cluster:
        """A cluster of ``size`` replicas (not started)."""
        cluster = Cluster.create(size, settings, self.directory)
        self.made.extend(cluster.replicas)
        return cluster

    def ensure_gone(self) -> None:
        """Resume and kill every process still running."""
        for replica in self.made:
            replica.ensure_gone()


@dataclass(frozen=True)
class QueueState:
    """Touchpoints still pending, and touchpoints whose row names a lease owner."""

    pending: int
    leased: int


def queue_state(database_url: str) -> QueueState:
    """Count pending and leased touchpoints now."""
    with connect(database_url) as connection:
        row = connection.execute(
            "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE lease_owner IS NOT NULL) "
            "FROM touchpoint"
        ).fetchone()
    assert row is not None
    return QueueState(pending=int(str(row[0])), leased=int(str(row[1])))


def send_log_rows(database_url: str) -> int:
    """How many send_log rows there are."""
    with connect(database_url) as connection:
        row = connection.execute("SELECT count(*) FROM send_log").fetchone()
    assert row is not None
    return int(str(row[0]))


def latest_lease_expiry(database_url: str) -> datetime | None:
    """The latest ``lease_expires_at`` of any leased touchpoint (None when none is leased)."""
    with connect(database_url) as connection:
        query = "SELECT max(lease_expires_at) FROM touchpoint WHERE lease_owner IS NOT NULL"
        row = connection.execute(query).fetchone()
    value = row[0] if row is not None else None
    assert value is None or isinstance(value, datetime)
    return value


@dataclass(frozen=True, repr=False)
class Census:
    """What happened to every touchpoint, from the database and from the SMTP server."""

    touchpoints: int
    pending: int
    leased: int
    decisions: dict[str, int]
    """Terminal send_log rows by decision."""
    without_terminal_row: list[int]
    with_several_terminal_rows: list[int]
    received: int
    never_received: list[int]
    duplicates: int
    """Copies received beyond the first, over all touchpoints."""
    duplicated_touchpoints: int
    message_id_changed: list[int]
    """Touchpoints with a copy whose Message-ID differs from the first copy's."""
    duplicated_at_first_attempt: list[int]
    """Touchpoints received more than once whose highest recorded attempt is 1."""
    received_but_unrecorded: list[int]
    """Touchpoints whose message arrived but that have no terminal send_log row."""
    strangers: int
    """Messages to an address that belongs to no touchpoint."""
    copies: dict[int, list[ReceivedMessage]] = field(repr=False)

    def __repr__(self) -> str:
        return f"Census({self.line()})"

    def line(self) -> str:
        """The counts in one readable line."""
        decisions = " ".join(f"{name}={self.decisions.get(name, 0)}" for name in TERMINAL_DECISIONS)
        return (
            f"touchpoints={self.touchpoints} pending={self.pending} leased={self.leased} | terminal rows: "
            f"{decisions} missing={len(self.without_terminal_row)} several={len(self.with_several_terminal_rows)} | "
            f"smtp: received={self.received} never_received={len(self.never_received)} "
            f"duplicates={self.duplicates} (touchpoints={self.duplicated_touchpoints}, "
            f"at_attempt_1={len(self.duplicated_at_first_attempt)}, "
            f"message_id_changed={len(self.message_id_changed)}) "
            f"unrecorded={len(self.received_but_unrecorded)} strangers={self.strangers}"
        )


def take_census(database_url: str, received: Sequence[ReceivedMessage]) -> Census:
    """Count touchpoints, their terminal send_log rows and the copies of their messages."""
    with connect(database_url) as connection:
        touchpoints = connection.execute(
            "SELECT t.id, t.state, t.lease_owner IS NOT NULL, t.attempts, lower(r.email) "
            "FROM touchpoint t JOIN recipient r ON r.id = t.recipient_id"
        ).fetchall()
        log_rows = connection.execute("SELECT touchpoint_id, decision, attempt FROM send_log").fetchall()
    by_address = {str(address): int(str(tid)) for tid, _, _, _, address in touchpoints}
    highest_attempt = {int(str(tid)): int(str(attempts)) for tid, _, _, attempts, _ in touchpoints}
    terminal: Counter[int] = Counter()
    decisions: Counter[str] = Counter()
    for tid, decision, attempt in log_rows:
        if tid is None:
            continue
        touchpoint_id = int(str(tid))
        if attempt is not None:
            highest_attempt[touchpoint_id] = max(highest_attempt.get(touchpoint_id, 0), int(str(attempt)))
        if decision in TERMINAL_DECISIONS:
            terminal[touchpoint_id] += 1
            decisions[str(decision)] += 1
    copies: dict[int, list[ReceivedMessage]] = {}
    strangers = 0
    for message in received:
        owners = {by_address.get(address.lower()) for address in message.recipients}
        owner = owners.pop() if len(owners) == 1 else None
        if owner is None:
            strangers += 1
        else:
            copies.setdefault(owner, []).append(message)
    ids = sorted(by_address.values())
    duplicated = {tid: found for tid, found in copies.items() if len(found) > 1}
    return Census(
        touchpoints=len(ids),
        pending=sum(1 for _, state, _, _, _ in touchpoints if state == "pending"),
        leased=sum(1 for _, _, leased, _, _ in touchpoints if leased),
        decisions=dict(decisions),
        without_terminal_row=[tid for tid in ids if terminal[tid] == 0],
        with_several_terminal_rows=[tid for tid in ids if terminal[tid] > 1],
        received=len(received),
        never_received=[tid for tid in ids if tid not in copies],
        duplicates=sum(len(found) - 1 for found in duplicated.values()),
        duplicated_touchpoints=len(duplicated),
        message_id_changed=sorted(
            tid
            for tid, found in duplicated.items()
            if any(copy.message["Message-ID"] != found[0].message["Message-ID"] for copy in found[1:])
        ),
        duplicated_at_first_attempt=sorted(tid for tid in duplicated if highest_attempt.get(tid, 0) <= 1),
        received_but_unrecorded=sorted(tid for tid in copies if terminal[tid] == 0),
        strangers=strangers,
        copies=copies,
    )


def wait_until(probe: Callable[[], bool], *, timeout: float, what: str, detail: Callable[[], str] = str) -> None:
    """Poll ``probe`` every 0.2 s until it is true; after ``timeout`` seconds raise AssertionError."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}\n{detail()}")
        time.sleep(0.2)
