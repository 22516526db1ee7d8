"""Database faults for chaos runs: dropped connections and a restarted PostgreSQL server.

- :func:`named_url` gives a replica a database URL whose connections carry its name as
  ``application_name``, so ``pg_stat_activity`` tells the replicas' backends apart.
- :class:`BackendTerminator` ends one random replica's backends with ``pg_terminate_backend``
  every so often, preferably while one is busy, and notes the backends that replace them.
- :class:`PrivateServer` is a PostgreSQL server of one test's own, run by
  ``scripts/pg-test-server.sh``, that the test may restart without disturbing other tests.
- :class:`ServerRestarts` restarts that server once the queue has drained to given fractions.
- :func:`drain_under_faults` polls the queue until it is empty, injecting faults meanwhile;
  unlike the kill test it never restarts a replica, it only notes the ones that exited.
- :func:`logged_events` counts a replica's JSON log events by name.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from tests.chaos.harness import Cluster, Replica, queue_state
from tests.pg import connect

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pg-test-server.sh"
POLL_SECONDS = 0.25


def named_url(database_url: str, name: str) -> str:
    """``database_url`` with ``application_name=name`` among its connection parameters."""
    url = make_url(database_url)
    return url.update_query_dict({"application_name": name}).render_as_string(hide_password=False)


def logged_events(replica: Replica) -> Counter[str]:
    """How many times each event appears in the replica's JSON log (other lines are skipped)."""
    events: Counter[str] = Counter()
    if not replica.log_path.exists():
        return events
    for line in replica.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("event"), str):
            events[entry["event"]] += 1
    return events


@dataclass(frozen=True)
class FaultRun:
    """How a run of :func:`drain_under_faults` went."""

    faults: int
    seconds: float
    drained: bool
    exits: list[str]
    """``name: status`` of every replica that exited during the run."""


def drain_under_faults(
    cluster: Cluster, database_url: str, inject: Callable[[int], bool], *, timeout: float
) -> FaultRun:
    """Every 0.25 s count the pending touchpoints and call ``inject(pending)``, which returns
    whether it caused a fault, until none is pending or ``timeout`` seconds have passed."""
    started = time.monotonic()
    faults = 0
    exits: dict[str, str] = {}
    while True:
        pending = queue_state(database_url).pending
        elapsed = time.monotonic() - started
        if pending == 0 or elapsed > timeout:
            return FaultRun(faults, elapsed, pending == 0, list(exits.values()))
        for replica in cluster.replicas:
            if not replica.running and replica.name not in exits:
                assert replica.process is not None
                exits[replica.name] = f"{replica.name}: {replica.process.returncode}"
        if inject(pending):
            faults += 1
        time.sleep(POLL_SECONDS)


@dataclass
class BackendTerminator:
    """Every ``uniform(*pause)`` seconds terminates every backend of one random replica.

    Replicas are told apart by ``application_name`` (see :func:`named_url`). A replica's
    connections sit idle in its pool while its sends are in flight, and the pool replaces an
    idle dead one unnoticed, so the terminator waits up to ``aim`` seconds for one of them to
    be busy (running a statement or inside a transaction): most terminations then land in
    the middle of a claim or a commit. A call that finds no backend of the chosen replica
    terminates nothing and is not counted; the next poll tries again.
    """

    database_url: str
    names: Sequence[str]
    rng: random.Random
    pause: tuple[float, float] = (1.0, 3.0)
    aim: float = 1.0
    terminated: Counter[str] = field(default_factory=Counter)
    """Backends terminated, by replica."""
    busy_hits: int = 0
    """Terminations that ended a backend while it was busy."""
    reconnects: Counter[str] = field(default_factory=Counter)
    """Backends first seen after one of the replica's backends was terminated, by replica."""
    _seen: set[int] = field(default_factory=set)
    _next_at: float = 0.0

    def __post_init__(self) -> None:
        self._next_at = time.monotonic() + self.rng.uniform(*self.pause)

    def __call__(self, pending: int) -> bool:
        """Note new backends; terminate one replica's backends when the pause is over."""
        with connect(self.database_url) as admin:
            self._note_backends(admin)
            if time.monotonic() < self._next_at:
                return False
            name = self.rng.choice(self.names)
            aim_until = time.monotonic() + self.aim
            while True:
                backends = admin.execute(
                    "SELECT pid, state FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = %s AND pid <> pg_backend_pid()",
                    (name,),
                ).fetchall()
                busy = any(state != "idle" for _, state in backends)
                if busy or time.monotonic() >= aim_until:
                    break
                time.sleep(0.01)
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", ([pid for pid, _ in backends],)
            ).fetchall()
        ended = sum(1 for (done,) in rows if done)
        if not ended:
            return False
        self.terminated[name] += ended
        if busy:
            self.busy_hits += 1
        self._next_at = time.monotonic() + self.rng.uniform(*self.pause)
        return True

    def _note_backends(self, admin: psycopg.Connection[tuple[object, ...]]) -> None:
        rows = admin.execute(
            "SELECT application_name, pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
        for name, pid in rows:
            backend = int(str(pid))
            if backend in self._seen:
                continue
            self._seen.add(backend)
            if name in self.terminated:
                self.reconnects[str(name)] += 1


class ServerUnavailableError(Exception):
    """``scripts/pg-test-server.sh`` failed; the message holds its exit status and output."""


class PrivateServer:
    """A PostgreSQL server run by ``scripts/pg-test-server.sh`` with its state and data
    directory under ``base_dir`` (which the server's user must be able to enter)."""

    def __init__(self, base_dir: Path, port: int) -> None:
        self.base_dir = base_dir
        self.port = port

    def start(self) -> str:
        """Start the server and return its DSN (a libpq URI)."""
        return self._run("start")

    def restart(self) -> None:
        """Restart it (fast shutdown, every connection dropped) and wait until it accepts
        connections again."""
        self._run("restart")

    def stop(self) -> None:
        """Stop it and delete its data directory."""
        self._run("stop")

    def _run(self, verb: str) -> str:
        environment = dict(os.environ)
        environment.update(
            TACT_PG_STATE=str(self.base_dir / "pg.state"),
            TACT_PG_PORT=str(self.port),
            TACT_PG_BASEDIR=str(self.base_dir),
        )
        done = subprocess.run(
            ["bash", str(SCRIPT), verb], env=environment, capture_output=True, text=True, timeout=180, check=False
        )
        if done.returncode != 0:
            raise ServerUnavailableError(f"pg-test-server.sh {verb} exited {done.returncode}\n{done.stderr}")
        return done.stdout.strip()


@dataclass
class ServerRestarts:
    """Restarts ``server`` once for each fraction of ``total`` touchpoints no longer pending."""

    server: PrivateServer
    total: int
    fractions: Sequence[float]
    at_pending: list[int] = field(default_factory=list)
    """The pending count each restart was made at."""

    def __call__(self, pending: int) -> bool:
        """Restart the server when the queue has drained past the next fraction."""
        if len(self.at_pending) == len(self.fractions):
            return False
        if self.total - pending < self.fractions[len(self.at_pending)] * self.total:
            return False
        self.server.restart()
        self.at_pending.append(pending)
        return True
