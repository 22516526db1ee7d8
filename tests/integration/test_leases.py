"""Leases between replicas, on SQLite and PostgreSQL: one recipient is decided by one replica
at a time, a reclaimed lease is lost to its first owner, and a lost touch is neither sent nor
logged by the owner that lost it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from scheduler import Engine
from scheduler.store import BatchWrite
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
