"""The PostgreSQL claim runs each of its sub-selects once, whatever the planner knows.

A queue filled in bulk before the first ANALYZE leaves the planner guessing one row per
table; a claim written as nested ``IN (SELECT …)`` was then planned as loops that ran the
inner claim once per outer row, and a 5,000-recipient tick took minutes. The check reads the
executed plan: no node may have run more than once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from scheduler.store import _POSTGRES_CLAIM
from tests.integration.test_engine_gates import T0, make_engine

QUEUED = 600
LIMIT = 200


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of an EXPLAIN (FORMAT JSON) plan tree."""
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def test_a_claim_on_a_never_analysed_queue_runs_every_sub_select_once(postgres_url: str, tmp_path: Path) -> None:
    """On a bulk-filled, never-analysed queue the executed claim plan has no node looped more than once."""
    engine = make_engine(postgres_url, tmp_path / "campaigns", kind="transactional")
    try:
        ids = [f"r{i:04d}" for i in range(QUEUED)]
        engine.upsert_recipients([{"id": r, "email": f"{r}@example.com"} for r in ids])
        engine.enroll("journey", ids, at=T0)
        wall = datetime.now(UTC)
        until = wall + timedelta(minutes=1)
        params = {"b_now": T0, "b_wall": wall, "b_limit": LIMIT, "b_owner": "plan", "b_until": until}
        with engine.store.transaction() as connection:
            analysed = connection.execute(
                sa.text("SELECT coalesce(max(last_analyze), max(last_autoanalyze)) FROM pg_stat_user_tables "
                        "WHERE relname = 'touchpoint'")
            ).scalar()  # fmt: skip
            explained = connection.execute(
                sa.text("EXPLAIN (ANALYZE, FORMAT JSON) " + _POSTGRES_CLAIM.text), params
            ).scalar()
        assert explained is not None
        plan: dict[str, Any] = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
    finally:
        engine.close()
    assert analysed is None, "the queue was analysed before the claim: the test proves nothing"
    looped = [(node["Node Type"], node["Actual Loops"]) for node in plan_nodes(plan) if node["Actual Loops"] > 1]
    assert looped == []
    assert plan["Actual Rows"] == LIMIT
