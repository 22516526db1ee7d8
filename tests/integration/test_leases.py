"""Leases between replicas, on SQLite and PostgreSQL: one recipient is decided by one replica
at a time, a reclaimed lease is lost to its first owner, and a lost touch is neither sent nor
logged by the owner that lost it. Two processes on one SQLite file take turns or are told why
they cannot."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from scheduler import Engine
from scheduler.config import DatabaseSettings
from scheduler.errors import StoreError
from scheduler.store import BatchWrite, Store
from tests.integration.test_engine_gates import T0, make_engine


def enroll(engine: Engine, *recipients: str) -> None:
    engine.upsert_recipients([{"id": r, "email": f"{r}@example.com"} for r in recipients])
    engine.enroll("journey", list(recipients), at=T0)


def test_a_recipient_with_a_leased_touch_is_not_claimed_elsewhere(database_url: str, tmp_path: Path) -> None:
    """While replica A holds one of r1's touches, B claims other recipients' touches, not r1's."""
    engine = make_engine(database_url, tmp_path / "campaigns", kind="transactional")
    try:
        enroll(engine, "r1")
        first = engine.store.claim(T0, "replica-a", 60, 10)
        assert [t["recipient_id"] for t in first] == ["r1"]
        enroll(engine, "r2")
        with engine.store.transaction() as connection:
            connection.exec_driver_sql(
                "INSERT INTO touchpoint (enrollment_id, campaign_id, recipient_id, step_id, channel, "
                "idempotency_key, state, scheduled_at, due_at, attempts, created_at) "
                "SELECT enrollment_id, campaign_id, recipient_id, 'second', channel, 'extra-r1', 'pending', "
                "scheduled_at, due_at, 0, created_at FROM touchpoint WHERE recipient_id = 'r1'"
            )
        second = engine.store.claim(T0, "replica-b", 60, 10)
        assert [t["recipient_id"] for t in second] == ["r2"]
    finally:
        engine.close()


def test_an_expired_lease_is_reclaimed_with_a_higher_attempt(database_url: str, tmp_path: Path) -> None:
    """A lease that ran out is claimed by another replica, attempt counter raised; the first
    owner then holds nothing and its commit writes nothing."""
    engine = make_engine(database_url, tmp_path / "campaigns", kind="transactional")
    try:
        enroll(engine, "r1")
        (mine,) = engine.store.claim(T0, "replica-a", -1, 10)  # already expired: A froze
        assert engine.store.renew_leases([mine["id"]], "replica-a", 60) == {mine["id"]}  # not yet reclaimed
        with engine.store.transaction() as connection:
            connection.exec_driver_sql("UPDATE touchpoint SET lease_expires_at = created_at")
        (theirs,) = engine.store.claim(T0, "replica-b", 60, 10)
        assert theirs["id"] == mine["id"] and theirs["attempts"] == mine["attempts"] + 1
        assert engine.store.renew_leases([mine["id"]], "replica-a", 60) == set()
        done = {"b_id": mine["id"], "b_outcome": "sent", "b_reason": "transactional", "b_decided_at": T0,
                "b_sent_at": T0, "b_provider_message_id": "x", "b_attempts": 1}  # fmt: skip
        assert engine.store.commit_batch(BatchWrite(done=[done]), "replica-a") == 1
        assert engine.store.count("send_log") == 0
        assert engine.store.count("touchpoint", state="pending") == 1
    finally:
        engine.close()


def test_a_replica_that_lost_its_lease_before_sending_sends_nothing(database_url: str, tmp_path: Path) -> None:
    """An engine whose claimed batch was reclaimed while it was paused drops it: nothing sent,
    nothing logged; the replica that reclaimed it sends and logs it once."""
    paused = make_engine(database_url, tmp_path / "campaigns", kind="transactional")
    other = make_engine(database_url, tmp_path / "campaigns", kind="transactional")
    try:
        enroll(paused, "r1")
        original_claim = paused.store.claim

        def claim_then_lose(now, owner, lease, limit):  # type: ignore[no-untyped-def]
            rows = original_claim(now, owner, lease, limit)
            if rows:  # the other replica reclaims while this one is stopped past its lease
                with other.store.transaction() as connection:
                    connection.exec_driver_sql("UPDATE touchpoint SET lease_expires_at = created_at")
                other.tick(at=T0)
            return rows

        paused.store.claim = claim_then_lose  # type: ignore[method-assign]
        paused.settings.engine.lease = timedelta(0)  # any pause is past half the lease
        result = paused.tick(at=T0)
        assert result.counts == {}
        assert [m.recipient_id for m in paused.adapter("email").sent] == []  # type: ignore[attr-defined]
        assert [m.recipient_id for m in other.adapter("email").sent] == ["r1"]  # type: ignore[attr-defined]
        assert paused.store.count("send_log") == 1
    finally:
        paused.close()
        other.close()


def test_a_busy_sqlite_file_is_named_with_a_clear_message(tmp_path: Path) -> None:
    """A second process that waits past busy_timeout gets an explanation, not "database is locked"."""
    settings = DatabaseSettings(url=f"sqlite:///{tmp_path / 'tact.db'}", busy_timeout=timedelta(milliseconds=200))
    holder, waiter = Store(settings), Store(settings)
    try:
        with (
            holder.transaction(),
            pytest.raises(StoreError, match="another process holds it") as caught,
            waiter.transaction() as connection,
        ):
            connection.exec_driver_sql("SELECT 1")
        assert "database is locked" not in str(caught.value)
    finally:
        holder.close()
        waiter.close()


def test_two_processes_drain_one_sqlite_file_without_losing_or_doubling(tmp_path: Path) -> None:
    """Two `tact tick` processes on one SQLite file take turns (BEGIN IMMEDIATE, busy timeout):
    both exit 0 and every touchpoint is decided exactly once."""
    directory = tmp_path / "campaigns"
    engine = make_engine(f"sqlite:///{tmp_path / 'tact.db'}", directory, kind="transactional")
    try:
        recipients = [f"p{i}" for i in range(3000)]
        engine.upsert_recipients([{"id": r, "email": f"{r}@example.com"} for r in recipients])
        engine.enroll("journey", recipients, at=T0)
    finally:
        engine.close()
    config = tmp_path / "tact.toml"
    config.write_text(
        f'campaigns_dir = "{directory.as_posix()}"\n[database]\nurl = "sqlite:///{(tmp_path / "tact.db").as_posix()}"\n'
        '[engine]\nbatch_size = 100\n[channels.email]\nadapter = "null"\n[channels.sms]\nadapter = "null"\n'
    )
    tact = Path(sys.executable).parent / "tact"
    command = [str(tact), "tick", "--at", T0.isoformat(), "--config", str(config)]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    outputs = [process.communicate(timeout=300) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    check = make_engine(f"sqlite:///{tmp_path / 'tact.db'}", directory, kind="transactional")
    try:
        assert check.store.count("send_log") == 3000
        assert check.store.count("touchpoint", state="pending") == 3000  # the second steps, due a day later
        with check.store.engine.connect() as connection:
            doubled = connection.exec_driver_sql(
                "SELECT count(*) FROM (SELECT touchpoint_id FROM send_log GROUP BY touchpoint_id HAVING count(*) > 1) x"
            ).scalar()
        assert doubled == 0
    finally:
        check.close()
