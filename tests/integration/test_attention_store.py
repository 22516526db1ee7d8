"""Attention states in the store: what is written reads back exactly, on a file, on PostgreSQL
and on a private in-memory database (where the store keeps the states it wrote instead of
reading the table back), and a write that did not commit is never read."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.attention import AttentionState, Outcome, SendRecord
from scheduler.config import DatabaseSettings
from scheduler.errors import DatabaseUnavailable
from scheduler.store import Store

T0 = datetime(2026, 3, 2, 9, 15, 30, 123456, tzinfo=UTC)


def rich_state(asset: float) -> AttentionState:
    """A state with every field set, instants with microseconds included."""
    return AttentionState(
        updated_at=T0,
        asset=asset,
        expectation=0.37,
        fatigue=1.0 / 3.0,
        engagement={"email": (2.5, 7.25), "sms": (0.1, 1.9)},
        interests={"shoes": 0.8, "news": 0.15},
        topic_last_sent={"shoes": T0 - timedelta(days=2, microseconds=7)},
        recent_sends=(SendRecord(T0 - timedelta(hours=5, microseconds=999999), "email", "marketing"),),
        open_request=True,
        last_inbound_at=T0 - timedelta(minutes=3),
        request_resolved_at=None,
        complained_at=T0 - timedelta(days=40),
        outcomes=(
            Outcome(41, "email", T0 - timedelta(days=1), T0 + timedelta(days=2), ("shoes",)),
            Outcome(40, "sms", T0 - timedelta(days=3), T0 - timedelta(hours=1), (), "clicked", T0 - timedelta(days=2)),
        ),
    )


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgresql", marks=pytest.mark.postgres),
        pytest.param("memory", id="sqlite-memory"),
    ]
)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A migrated store with three recipients: on a SQLite file, on PostgreSQL, or on a private
    in-memory SQLite database."""
    url = "sqlite://" if request.param == "memory" else request.getfixturevalue(f"{request.param}_url")
    store = Store(DatabaseSettings(url=url))
    store.prepare()
    store.upsert_recipients([{"id": rid, "value": 1.0, "attributes": {}} for rid in ("r1", "r2", "r3")], [])
    try:
        yield store
    finally:
        store.close()


def read(store: Store, *recipient_ids: str) -> dict[str, AttentionState]:
    with store.engine.connect() as connection:
        return store.attention_states(connection, recipient_ids)


def stored_assets(store: Store) -> dict[str, float]:
    """The ``attention`` table itself, whatever the store keeps."""
    with store.engine.connect() as connection:
        return dict(connection.exec_driver_sql("SELECT recipient_id, asset FROM attention").all())


def test_a_written_state_reads_back_exactly(store: Store) -> None:
    with store.transaction() as connection:
        store.write_attention(connection, {"r1": rich_state(0.61)})
    assert read(store, "r1", "never-touched") == {"r1": rich_state(0.61)}
    assert stored_assets(store) == {"r1": 0.61}


def test_a_write_reads_back_inside_its_own_transaction(store: Store) -> None:
    with store.transaction() as connection:
        store.write_attention(connection, {"r1": rich_state(0.61)})
        assert store.attention_states(connection, ["r1"]) == {"r1": rich_state(0.61)}


def test_a_rolled_back_write_is_never_read(store: Store) -> None:
    with store.transaction() as connection:
        store.write_attention(connection, {"r1": rich_state(0.61)})
    with pytest.raises(RuntimeError), store.transaction() as connection:
        store.write_attention(connection, {"r1": rich_state(0.05), "r2": rich_state(0.9)})
        raise RuntimeError("the batch failed after writing")
    assert read(store, "r1", "r2") == {"r1": rich_state(0.61)}
    assert stored_assets(store) == {"r1": 0.61}
    with store.transaction() as connection:  # the next transaction starts clean
        store.write_attention(connection, {"r3": rich_state(0.2)})
    assert read(store, "r1", "r2", "r3") == {"r1": rich_state(0.61), "r3": rich_state(0.2)}


def test_a_write_outside_the_stores_transactions_is_read_from_the_table(store: Store) -> None:
    with store.transaction() as connection:
        store.write_attention(connection, {"r1": rich_state(0.61)})
    with store.engine.begin() as connection:
        store.write_attention(connection, {"r1": rich_state(0.3)})
    assert read(store, "r1") == {"r1": rich_state(0.3)}
    with pytest.raises(RuntimeError), store.engine.begin() as connection:
        store.write_attention(connection, {"r1": rich_state(0.05)})
        raise RuntimeError("rolled back")
    assert read(store, "r1") == {"r1": rich_state(0.3)}


@pytest.mark.postgres
def test_a_transaction_whose_backend_is_terminated_says_the_database_is_unavailable(postgres_url: str) -> None:
    """The error that broke the connection is the one reported, not one from touching it after."""
    store = Store(DatabaseSettings(url=postgres_url))
    store.prepare()
    store.upsert_recipients([{"id": "r1", "value": 1.0, "attributes": {}}], [])
    try:
        with pytest.raises(DatabaseUnavailable, match="terminat"), store.transaction() as connection:
            store.write_attention(connection, {"r1": rich_state(0.61)})
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with store.engine.connect() as other:
                other.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)})")
                other.commit()
            connection.exec_driver_sql("SELECT 1")
        assert stored_assets(store) == {}  # the pool reconnects; the write never committed
    finally:
        store.close()
