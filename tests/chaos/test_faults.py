"""Replicas of ``tact run`` whose database connections are dropped under them, by
``pg_terminate_backend`` and by a PostgreSQL restart, end with the kill test's invariants.

Three replicas, as in the kill test, each started once: they must ride the faults out in
the same process. A dropped connection fails the tick, the daemon backs off
(``database_unavailable``) and its pool reconnects. Faults begin once every replica has
logged ``daemon_started``: they are aimed at replicas at work, not at the schema check of a
daemon starting up (a connection dropped there ends ``tact run`` with status 1). The census is
the kill test's: one terminal send_log row per touchpoint, every message received, and
repeats only of in-flight sends, with the first copy's Message-ID and a final attempt > 1.

The duplicate bounds. A replica works on one claimed batch at a time, and a send repeats only
when the provider accepted it but the batch's commit never happened: then the batch's leases
run out and another claim (attempt + 1) sends it again. Dropping a replica's connections
fails at most the one batch it has in flight: its next statement runs on a new connection
(``pool_pre_ping``). Other replicas are untouched, since a claim's advisory lock ends with
the dropped transaction. So:

- terminating one replica's backends repeats at most ``batch_size`` sends, and the run at
  most ``terminations × batch_size``; replicas are told apart by ``application_name``;
- a restart drops every replica's connections at once: at most ``replicas × batch_size``
  repeats each, ``restarts × replicas × batch_size`` in all.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scheduler.store import migrate_database
from tests.chaos.faults import (
    BackendTerminator,
    FaultRun,
    PrivateServer,
    ServerRestarts,
    ServerUnavailableError,
    drain_under_faults,
    logged_events,
    named_url,
)
from tests.chaos.harness import Census, Cluster, Launcher, ReplicaSettings, seed, take_census, wait_until
from tests.contract.smtp_server import SmtpTestServer
from tests.pg import connect, sqlalchemy_url

TERMINATED_TOUCHPOINTS = 8_000
"""Enough for a run far longer than the pause between terminations (about 30 s here)."""
RESTARTED_TOUCHPOINTS = 3_000
FAULT_REPLICAS = 3
FAULT_BATCH_SIZE = 25
FAULT_DEADLINE_SECONDS = 600.0
TERMINATION_PAUSE = (1.0, 3.0)
RESTART_FRACTIONS = (0.3, 0.65)
"""Restart the server once 30 % and again once 65 % of the touchpoints are decided."""
PRIVATE_PORT = 55433
SHUTDOWN_GRACE_SECONDS = 30.0
STARTUP_SECONDS = 120.0
UNAVAILABLE = "database_unavailable"


@pytest.fixture
def private_server() -> Iterator[tuple[PrivateServer, str]]:
    """A PostgreSQL server of the test's own and its DSN; stopped and deleted afterwards."""
    base_dir = Path(tempfile.mkdtemp(prefix="tact-pg-restart-"))
    base_dir.chmod(0o755)  # as root the server runs as the postgres user, who must get in
    server = PrivateServer(base_dir, PRIVATE_PORT)
    try:
        try:
            dsn = server.start()
        except ServerUnavailableError as error:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"cannot start a private PostgreSQL server under CI: {error}", pytrace=False)
            pytest.skip(f"cannot start a private PostgreSQL server: {error}")
        yield server, dsn
    finally:
        with contextlib.suppress(ServerUnavailableError):
            server.stop()
        shutil.rmtree(base_dir, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_replicas_whose_backends_are_terminated_deliver_every_touchpoint_with_bounded_repeats(
    postgres_url: str, smtp_server: SmtpTestServer, launcher: Launcher, tmp_path: Path, show: Callable[[str], None]
) -> None:
    """Three replicas, one's backends terminated every 1-3 s, drain 8,000 touchpoints in their first processes."""
    campaigns = tmp_path / "campaigns"
    seed(postgres_url, campaigns, TERMINATED_TOUCHPOINTS)
    cluster = _cluster(launcher, postgres_url, campaigns, smtp_server)
    seed_value = int.from_bytes(os.urandom(4), "big")
    terminator = BackendTerminator(
        postgres_url, [r.name for r in cluster.replicas], random.Random(seed_value), TERMINATION_PAUSE
    )
    _start(cluster)
    run = drain_under_faults(cluster, postgres_url, terminator, timeout=FAULT_DEADLINE_SECONDS)
    exits = cluster.stop(timeout=SHUTDOWN_GRACE_SECONDS)
    census = take_census(postgres_url, list(smtp_server.received))
    events = {r.name: logged_events(r) for r in cluster.replicas}
    bound = run.faults * FAULT_BATCH_SIZE
    show(
        f"terminate: seed={seed_value} terminations={run.faults} busy_hits={terminator.busy_hits} "
        f"backends={dict(terminator.terminated)} "
        f"reconnects={dict(terminator.reconnects)} seconds={run.seconds:.0f} drained={run.drained} "
        f"{_event_line(events)} duplicate_bound={bound} exits={run.exits} final_exits={exits}\n"
        f"terminate census: {census.line()}"
    )
    detail = f"{census.line()}\n{cluster.describe()}"

    assert run.faults > 0, f"no backend was ever terminated\n{detail}"
    unavailable = sum(counts[UNAVAILABLE] for counts in events.values())
    reconnects = sum(terminator.reconnects.values())
    assert unavailable + reconnects > 0, f"no replica noticed a terminated backend\n{detail}"
    _assert_survived(cluster, run, exits, events, detail)
    _assert_census(census, TERMINATED_TOUCHPOINTS, run, bound, detail)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(900)
def test_replicas_ride_out_postgresql_restarts_and_deliver_every_touchpoint_with_bounded_repeats(
    private_server: tuple[PrivateServer, str],
    smtp_server: SmtpTestServer,
    launcher: Launcher,
    tmp_path: Path,
    show: Callable[[str], None],
) -> None:
    """Three replicas drain 3,000 touchpoints across two PostgreSQL restarts in their first processes."""
    server, dsn = private_server
    database_url = sqlalchemy_url(dsn, _create_database(dsn))
    campaigns = tmp_path / "campaigns"
    seed(database_url, campaigns, RESTARTED_TOUCHPOINTS)
    cluster = _cluster(launcher, database_url, campaigns, smtp_server)
    restarts = ServerRestarts(server, RESTARTED_TOUCHPOINTS, RESTART_FRACTIONS)
    _start(cluster)
    run = drain_under_faults(cluster, database_url, restarts, timeout=FAULT_DEADLINE_SECONDS)
    connected = _connected_replicas(database_url)
    exits = cluster.stop(timeout=SHUTDOWN_GRACE_SECONDS)
    census = take_census(database_url, list(smtp_server.received))
    events = {r.name: logged_events(r) for r in cluster.replicas}
    bound = run.faults * FAULT_REPLICAS * FAULT_BATCH_SIZE
    show(
        f"restart: restarts={run.faults} at_pending={restarts.at_pending} seconds={run.seconds:.0f} "
        f"drained={run.drained} connected_after={sorted(connected)} {_event_line(events)} "
        f"duplicate_bound={bound} exits={run.exits} final_exits={exits}\n"
        f"restart census: {census.line()}"
    )
    detail = f"{census.line()}\n{cluster.describe()}"

    assert run.faults == len(RESTART_FRACTIONS), f"restarts made: {restarts.at_pending}\n{detail}"
    # No backend outlives a restart: a replica connected now has reconnected since the last one.
    assert connected == {r.name for r in cluster.replicas}, f"replicas not reconnected: {connected}\n{detail}"
    _assert_survived(cluster, run, exits, events, detail)
    _assert_census(census, RESTARTED_TOUCHPOINTS, run, bound, detail)


def _create_database(dsn: str) -> str:
    """Create and migrate a database for the run on the server ``dsn`` names; return its name."""
    name = "tact_restart"
    with connect(sqlalchemy_url(dsn, "postgres")) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    migrate_database(sqlalchemy_url(dsn, name))
    return name


def _cluster(launcher: Launcher, database_url: str, campaigns: Path, smtp_server: SmtpTestServer) -> Cluster:
    """Replicas that differ only in the ``application_name`` their connections carry."""
    replicas = []
    for number in range(1, FAULT_REPLICAS + 1):
        name = f"replica-{number}"
        settings = ReplicaSettings(
            database_url=named_url(database_url, name),
            campaigns_dir=campaigns,
            smtp_port=smtp_server.port,
            batch_size=FAULT_BATCH_SIZE,
            max_batches_per_tick=4,
            lease=5.0,
        )
        replicas.append(launcher.replica(name, settings))
    return Cluster(replicas)


def _start(cluster: Cluster) -> None:
    """Start the replicas and wait until each is running ticks: the faults are meant for
    replicas at work, not for the schema check a starting daemon makes."""
    cluster.start()
    wait_until(
        lambda: cluster.readies == FAULT_REPLICAS,
        timeout=STARTUP_SECONDS,
        what="the replicas to start",
        detail=cluster.describe,
    )


def _connected_replicas(database_url: str) -> set[str]:
    """The application names of the database's backends other than this one."""
    with connect(database_url) as admin:
        rows = admin.execute(
            "SELECT DISTINCT application_name FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    return {str(name) for (name,) in rows if name}


def _event_line(events: dict[str, Counter[str]]) -> str:
    watched = (UNAVAILABLE, "ticks_resumed", "tick_failed", "lease_lost")
    return " ".join(f"{event}={[counts[event] for counts in events.values()]}" for event in watched)


def _assert_survived(
    cluster: Cluster, run: FaultRun, exits: dict[str, int | None], events: dict[str, Counter[str]], detail: str
) -> None:
    assert not run.exits, f"replicas exited during the run: {run.exits}\n{detail}"
    failed = {name: counts["tick_failed"] for name, counts in events.items() if counts["tick_failed"]}
    assert not failed, f"database faults taken for other failures: {failed}\n{detail}"
    assert all(r.starts == 1 for r in cluster.replicas), detail
    assert exits == {r.name: 0 for r in cluster.replicas}, f"exit statuses after SIGTERM: {exits}\n{detail}"


def _assert_census(census: Census, touchpoints: int, run: FaultRun, bound: int, detail: str) -> None:
    assert run.drained, f"the queue did not drain in {FAULT_DEADLINE_SECONDS:g}s\n{detail}"
    assert census.touchpoints == touchpoints, detail
    assert not census.without_terminal_row, f"touchpoints without a terminal row: {census.without_terminal_row[:10]}"
    assert not census.with_several_terminal_rows, (
        f"touchpoints with several terminal rows: {census.with_several_terminal_rows[:10]}\n{detail}"
    )
    assert not census.never_received, f"messages never received: {census.never_received[:10]}\n{detail}"
    assert not census.message_id_changed, f"repeats with another Message-ID: {census.message_id_changed[:10]}"
    assert not census.duplicated_at_first_attempt, (
        f"repeats of touchpoints whose final attempt is 1: {census.duplicated_at_first_attempt[:10]}\n{detail}"
    )
    assert census.duplicates <= bound, f"{census.duplicates} duplicates > bound {bound}\n{detail}"
    assert census.strangers == 0, detail
