"""Replicas of ``tact run`` on one PostgreSQL under SIGKILL, SIGSTOP and SIGTERM.

The daemons send over the ``smtp`` adapter to a local aiosmtpd server that records every
message, so "sent" is checked against what really arrived, not only against ``send_log``.

The duplicate bound of the kill test: a replica works on one claimed batch at a time, and the
only sends that may repeat are those the provider accepted before a crash and before the
batch's commit. So each SIGKILL can cause at most ``batch_size`` repeats, and the run at most
``kills × batch_size``.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.chaos.harness import (
    Launcher,
    ReplicaSettings,
    kill_until_drained,
    latest_lease_expiry,
    queue_state,
    seed,
    send_log_rows,
    take_census,
    wait_until,
)
from tests.contract.smtp_server import SmtpTestServer

CHAOS_TOUCHPOINTS = 10_000
CHAOS_REPLICAS = 3
CHAOS_BATCH_SIZE = 25
CHAOS_DEADLINE_SECONDS = 600.0

FROZEN_BATCH = 20
FROZEN_LEASE_SECONDS = 3.0
RESUMED_SETTLE_SECONDS = 4.0

BUSY_TOUCHPOINTS = 2_000
BUSY_BATCH_SIZE = 100
SHUTDOWN_GRACE_SECONDS = 30.0
"""The daemon's default ``[engine] shutdown_grace``."""
CLOSING_SECONDS = 5.0
"""Past the grace, time to close the adapters and the database pool and exit."""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_replicas_killed_at_random_deliver_every_touchpoint_with_bounded_repeats(
    postgres_url: str, smtp_server: SmtpTestServer, launcher: Launcher, tmp_path: Path, show: Callable[[str], None]
) -> None:
    """Three replicas SIGKILLed and restarted every 2-5 s drain 10,000 touchpoints; repeats are in-flight ones."""
    campaigns = tmp_path / "campaigns"
    seed(postgres_url, campaigns, CHAOS_TOUCHPOINTS)
    settings = ReplicaSettings(
        database_url=postgres_url,
        campaigns_dir=campaigns,
        smtp_port=smtp_server.port,
        batch_size=CHAOS_BATCH_SIZE,
        max_batches_per_tick=4,
        lease=5.0,
    )
    cluster = launcher.cluster(CHAOS_REPLICAS, settings)
    seed_value = int.from_bytes(os.urandom(4), "big")
    cluster.start()
    run = kill_until_drained(cluster, postgres_url, random.Random(seed_value), timeout=CHAOS_DEADLINE_SECONDS)
    exits = cluster.stop(timeout=SHUTDOWN_GRACE_SECONDS)
    census = take_census(postgres_url, list(smtp_server.received))
    bound = run.kills * CHAOS_BATCH_SIZE
    show(
        f"chaos: seed={seed_value} kills={run.kills} seconds={run.seconds:.0f} drained={run.drained} "
        f"starts={cluster.starts} ready={cluster.readies} duplicate_bound={bound} "
        f"unexpected_exits={run.unexpected_exits} final_exits={exits}\n"
        f"chaos census: {census.line()}"
    )
    detail = f"{census.line()}\n{cluster.describe()}"

    assert run.drained, f"the queue did not drain in {CHAOS_DEADLINE_SECONDS:g}s\n{detail}"
    assert census.touchpoints == CHAOS_TOUCHPOINTS, detail
    assert not census.without_terminal_row, f"touchpoints without a terminal row: {census.without_terminal_row[:10]}"
    assert not census.with_several_terminal_rows, (
        f"touchpoints with several terminal rows: {census.with_several_terminal_rows[:10]}\n{detail}"
    )
    assert not census.never_received, f"messages never received: {census.never_received[:10]}\n{detail}"
    assert not census.message_id_changed, f"repeats with another Message-ID: {census.message_id_changed[:10]}"
    assert not census.duplicated_at_first_attempt, (
        f"repeats of touchpoints whose final attempt is 1: {census.duplicated_at_first_attempt[:10]}\n{detail}"
    )
    assert census.duplicates <= bound, f"{census.duplicates} duplicates > {run.kills} kills × {CHAOS_BATCH_SIZE}"
    assert census.strangers == 0, detail
    assert not run.unexpected_exits, f"replicas exited without being killed: {run.unexpected_exits}\n{detail}"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_replica_frozen_past_its_lease_sends_and_records_nothing_after_it_resumes(
    postgres_url: str, smtp_server: SmtpTestServer, launcher: Launcher, tmp_path: Path, show: Callable[[str], None]
) -> None:
    """A replica SIGSTOPped mid-batch past its lease, resumed after another sent the batch, sends and logs nothing."""
    campaigns = tmp_path / "campaigns"
    seed(postgres_url, campaigns, FROZEN_BATCH)
    one_at_a_time = ReplicaSettings(
        database_url=postgres_url,
        campaigns_dir=campaigns,
        smtp_port=smtp_server.port,
        batch_size=FROZEN_BATCH,
        max_batches_per_tick=1,
        lease=FROZEN_LEASE_SECONDS,
        concurrency=1,
        channel_concurrency=1,
        pool_size=1,
        smtp_timeout=300.0,  # a reply read across the freeze must not time out on resuming
    )
    frozen = launcher.replica("frozen", one_at_a_time)
    successor = launcher.replica("successor", one_at_a_time)

    def detail() -> str:
        census = take_census(postgres_url, list(smtp_server.received))
        return f"{census.line()}\n{frozen.log_tail()}\n{successor.log_tail()}"

    hold = smtp_server.hold_next_data()
    frozen.start()
    assert hold.reached.wait(60), f"the first message's DATA never arrived\n{detail()}"
    assert queue_state(postgres_url).leased == FROZEN_BATCH, f"the whole batch is not claimed\n{detail()}"
    frozen.freeze()  # one send in flight, the other 19 not begun
    hold.release.set()  # the server accepts the first message while its sender is frozen
    wait_until(lambda: len(smtp_server.received) == 1, timeout=30, what="the held message", detail=detail)
    expiry = latest_lease_expiry(postgres_url)
    assert expiry is not None
    wait_until(lambda: datetime.now(UTC) > expiry + timedelta(seconds=0.5), timeout=60, what="the lease to expire")

    successor_started = time.monotonic()
    successor.start()
    wait_until(lambda: _settled(postgres_url), timeout=120, what="the successor to commit the batch", detail=detail)
    assert successor.stop(timeout=SHUTDOWN_GRACE_SECONDS) == 0, detail()
    rows_before_resume = send_log_rows(postgres_url)

    frozen.resume()
    resumed = time.monotonic()
    time.sleep(RESUMED_SETTLE_SECONDS)  # it finishes its batch now, and the SIGTERM drain would too
    assert frozen.stop(timeout=SHUTDOWN_GRACE_SECONDS) == 0, detail()

    received = list(smtp_server.received)
    census = take_census(postgres_url, received)
    late = [message.message["Message-ID"] for message in received if message.received_at >= resumed]
    rows_after_resume = send_log_rows(postgres_url) - rows_before_resume
    show(f"sigstop: sent_after_resume={len(late)} rows_after_resume={rows_after_resume} census: {census.line()}")
    assert not late, f"the resumed replica sent {len(late)} messages after its lease expired\n{detail()}"
    assert rows_after_resume == 0, f"the resumed replica wrote {rows_after_resume} send_log rows\n{detail()}"
    assert not census.with_several_terminal_rows, census.line()
    assert not census.without_terminal_row, census.line()
    assert census.decisions.get("sent") == FROZEN_BATCH, census.line()
    assert not census.never_received, census.line()
    repeated = [tid for tid, copies in census.copies.items() if len(copies) > 1]
    assert len(repeated) <= 1, f"only the send in flight at the freeze may repeat: {repeated}\n{census.line()}"
    assert all(census.copies[tid][0].received_at < successor_started for tid in repeated), census.line()
    assert census.leased == 0, census.line()


def _settled(database_url: str) -> bool:
    state = queue_state(database_url)
    return state.pending == 0 and state.leased == 0


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("rate_limit", "grace", "received_before_sigterm"),
    [
        pytest.param(200.0, 10.0, 300, id="batch-shorter-than-grace"),
        pytest.param(20.0, 1.0, 30, id="batch-longer-than-grace"),
    ],
)
def test_sigterm_during_a_busy_run_leaves_nothing_claimed_and_exits_0_within_the_grace(
    postgres_url: str,
    smtp_server: SmtpTestServer,
    launcher: Launcher,
    tmp_path: Path,
    show: Callable[[str], None],
    rate_limit: float,
    grace: float,
    received_before_sigterm: int,
) -> None:
    """SIGTERM mid-run stops claiming, leaves no row leased and exits 0 within ``shutdown_grace``."""
    campaigns = tmp_path / "campaigns"
    seed(postgres_url, campaigns, BUSY_TOUCHPOINTS)
    settings = ReplicaSettings(
        database_url=postgres_url,
        campaigns_dir=campaigns,
        smtp_port=smtp_server.port,
        batch_size=BUSY_BATCH_SIZE,
        max_batches_per_tick=5,
        lease=60.0,
        rate_limit=rate_limit,  # sends are spaced, so SIGTERM lands in the middle of a batch
        shutdown_grace=grace,
    )
    batch_seconds = BUSY_BATCH_SIZE / rate_limit
    replica = launcher.replica("busy", settings)
    replica.start()
    wait_until(
        lambda: len(smtp_server.received) >= received_before_sigterm,
        timeout=120,
        what=f"{received_before_sigterm} messages",
        detail=replica.log_tail,
    )
    replica.terminate()
    try:
        status = replica.wait(timeout=grace + CLOSING_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running {grace + CLOSING_SECONDS:g}s after SIGTERM\n{replica.log_tail()}")

    census = take_census(postgres_url, list(smtp_server.received))
    show(f"sigterm: grace={grace:g}s batch={batch_seconds:g}s exit={status} census: {census.line()}")
    assert status == 0, replica.log_tail()
    assert census.leased == 0, f"rows still claimed after the drain\n{census.line()}\n{replica.log_tail()}"
    assert census.pending > 0, f"the replica kept claiming after SIGTERM\n{census.line()}"
    assert not census.with_several_terminal_rows, census.line()
    assert census.duplicates == 0, census.line()
    if batch_seconds < grace:
        unrecorded = len(census.received_but_unrecorded)
        assert not unrecorded, f"{unrecorded} sent but not recorded\n{census.line()}\n{replica.log_tail()}"
