"""All database work: connections, migrations, claims, and the per-batch write.

One module owns every statement so the engine stays free of SQL. The hot path (claim, load a
batch's context, commit a batch) uses SQLAlchemy Core with executemany; the cold paths (events,
enrollment, upserts) read more plainly.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import StaticPool

from scheduler.attention import AttentionState, from_row, to_row
from scheduler.config import DatabaseSettings
from scheduler.durations import format_duration
from scheduler.errors import DatabaseUnavailable, SchemaOutOfDate, StoreError
from scheduler.tables import (
    Attention,
    Campaign,
    Consent,
    Enrollment,
    Event,
    Meta,
    Recipient,
    SegmentRun,
    SendLog,
    Touchpoint,
    sqlite_text,
    utc_from_db,
)

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

recipient_t = Recipient.__table__  # type: ignore[attr-defined]
consent_t = Consent.__table__  # type: ignore[attr-defined]
attention_t = Attention.__table__  # type: ignore[attr-defined]
enrollment_t = Enrollment.__table__  # type: ignore[attr-defined]
touchpoint_t = Touchpoint.__table__  # type: ignore[attr-defined]
event_t = Event.__table__  # type: ignore[attr-defined]
send_log_t = SendLog.__table__  # type: ignore[attr-defined]
campaign_t = Campaign.__table__  # type: ignore[attr-defined]
segment_run_t = SegmentRun.__table__  # type: ignore[attr-defined]
meta_t = Meta.__table__  # type: ignore[attr-defined]

Row = dict[str, Any]

SEND_LOG_COLUMNS = (
    "at", "touchpoint_id", "enrollment_id", "recipient_id", "campaign_id", "step_id", "channel",
    "adapter", "kind", "decision", "reason", "deferred_until", "asset", "expectation", "fatigue",
    "engagement_p", "relevance", "value", "net_value", "threshold", "propensity",
    "provider_message_id", "error", "latency_ms", "attempt",
)  # fmt: skip
CLAIMED_COLUMNS = (
    "id", "enrollment_id", "campaign_id", "recipient_id", "step_id", "channel",
    "idempotency_key", "scheduled_at", "due_at", "attempts",
)  # fmt: skip
_NEW_TOUCHPOINT_COLUMNS = (
    "enrollment_id", "campaign_id", "recipient_id", "step_id", "channel", "idempotency_key",
    "state", "scheduled_at", "due_at", "attempts", "created_at",
)  # fmt: skip
_TOUCHPOINT_TIMES = frozenset({"scheduled_at", "due_at", "created_at"})
_NEW_ENROLLMENT_COLUMNS = ("campaign_id", "recipient_id", "state", "enrolled_at", "trigger", "seen_events")
ENROLL_CHUNK = 1000  # rows per multi-row insert: 6,000 parameters, within every driver's limit
_ATTENTION_COLUMNS = (
    "recipient_id", "updated_at", "asset", "expectation", "fatigue", "engagement", "interests",
    "topic_last_sent", "recent_sends", "open_request", "last_inbound_at", "request_resolved_at",
    "complained_at", "outcomes", "resolve_at",
)  # fmt: skip
_RECIPIENT_COLUMNS = (
    "id", "email", "phone", "timezone", "locale", "value", "attributes", "suppressed_at",
    "suppressed_reason", "created_at", "updated_at",
)  # fmt: skip
_RECIPIENT_TIMES = frozenset({"suppressed_at", "created_at", "updated_at"})
_ATTENTION_TIMES = frozenset({"updated_at", "last_inbound_at", "request_resolved_at", "complained_at", "resolve_at"})
_ATTENTION_JSON = frozenset({"engagement", "interests", "topic_last_sent", "recent_sends", "outcomes"})
_PRIVATE_MEMORY_URLS = ("sqlite://", "sqlite:///:memory:")


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use psycopg 3 for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_db_engine(settings: DatabaseSettings) -> sa.Engine:
    """A SQLAlchemy engine tuned for Tact: WAL and BEGIN IMMEDIATE on SQLite, a pool on PG."""
    url = normalise_url(settings.url)
    if url.startswith("sqlite"):
        memory = url in _PRIVATE_MEMORY_URLS or "mode=memory" in url
        kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
        if memory:
            kwargs["poolclass"] = StaticPool
        engine = sa.create_engine(url, **kwargs)
        busy_ms = int(settings.busy_timeout.total_seconds() * 1000)

        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cursor = dbapi_conn.cursor()
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            if not memory:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
                # A 64 MiB page cache keeps the queue's indexes in memory as tables grow.
                cursor.execute("PRAGMA cache_size = -65536")
            cursor.execute("PRAGMA foreign_keys = OFF")
            cursor.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: sa.Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return sa.create_engine(url, pool_size=settings.pool_size, max_overflow=settings.pool_size, pool_pre_ping=True)


SCHEMA_HEAD = "0005"
"""The newest schema revision (``scheduler/migrations/versions``); a test keeps the two in step.
A start on a database already there skips Alembic, whose import alone takes about 0.4 s."""


def _alembic_config(connection: sa.Connection | None = None) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(resources.files("scheduler") / "migrations"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest schema revision among the migration scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: sa.Engine) -> str | None:
    """The schema revision the database is at (None when it has no schema yet)."""
    with engine.connect() as connection:
        if not sa.inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: sa.Engine) -> None:
    """Create or upgrade the schema to the newest revision."""
    from alembic import command

    with engine.begin() as connection:
        command.upgrade(_alembic_config(connection), "head")


def migrate_database(url: str) -> None:
    """Create or upgrade the schema of the database at ``url`` (used by `tact db upgrade`)."""
    engine = create_db_engine(DatabaseSettings(url=url))
    try:
        upgrade(engine)
    finally:
        engine.dispose()


CLAIM_LOCK_KEY = 0x7461637401
"""The advisory lock claims take turns on (PostgreSQL; held for one claim's transaction)."""
_CLAIM_TURN = sa.text("SELECT pg_advisory_xact_lock(:key)")


_DUE_AND_FREE = "state = 'pending' AND due_at <= :b_now AND (lease_expires_at IS NULL OR lease_expires_at < :b_wall)"
_POSTGRES_CLAIM = sa.text(
    f"""
    UPDATE touchpoint
    SET lease_owner = :b_owner, lease_expires_at = :b_until,
        attempts = attempts + CASE WHEN lease_owner IS NOT NULL THEN 1 ELSE 0 END
    WHERE id = ANY(ARRAY(
        SELECT id FROM touchpoint
        WHERE {_DUE_AND_FREE} AND recipient_id = ANY(ARRAY(
            SELECT recipient_id FROM touchpoint
            WHERE {_DUE_AND_FREE} AND recipient_id <> ALL(ARRAY(
                SELECT recipient_id FROM touchpoint
                WHERE lease_owner IS NOT NULL AND state = 'pending' AND lease_expires_at >= :b_wall
            ))
            ORDER BY due_at LIMIT :b_limit
            FOR UPDATE SKIP LOCKED
        ))
        FOR UPDATE SKIP LOCKED
    ))
    RETURNING {", ".join(CLAIMED_COLUMNS)}
    """
)
"""The claim on PostgreSQL. Every sub-select is an ``ARRAY(...)`` the executor computes once,
so no plan can run one again per row, however wrong the planner's row estimates (a queue
filled in bulk before its first ANALYZE used to take minutes per claim). Each array then
meets an index: leased rows (partial index), due rows by due time, a recipient's rows, ids."""


@dataclass
class BatchWrite:
    """Everything one batch changes, written in one transaction."""

    send_log: list[Any] = field(default_factory=list)  # objects with the SEND_LOG_COLUMNS attributes
    done: list[Row] = field(default_factory=list)
    rescheduled: list[Row] = field(default_factory=list)
    new_touchpoints: list[Row] = field(default_factory=list)
    attention: dict[str, AttentionState] = field(default_factory=dict)  # by recipient id
    enrollments_ended: list[Row] = field(default_factory=list)
    suppressed: list[tuple[str, datetime, str]] = field(default_factory=list)  # recipient, at, reason


class AnsweredSend(NamedTuple):
    """One sent marketing touch whose outcome window has closed, as the learning reads it."""

    recipient: str
    channel: str
    at: datetime
    fatigue: float  # F when it was decided
    predicted: float  # p̂ when it was decided
    asset: float  # A when it was decided
    relevance: float  # ρ when it was decided
    engaged: float  # 1 for a click, reply or conversion, the open credit for an open alone, else 0
    rebuffed: bool  # it drew an unsubscribe or a complaint


@dataclass(frozen=True, slots=True)
class BatchContext:
    """The rows a batch of touchpoints needs to be decided."""

    recipients: dict[str, Row]
    consents: dict[str, dict[str, str]]
    attention: dict[str, AttentionState]
    enrollments: dict[int, Row]


class Store:
    """The database behind one engine."""

    def __init__(self, settings: DatabaseSettings) -> None:
        self.settings = settings
        self.engine = create_db_engine(settings)
        self.dialect = self.engine.dialect.name
        self._claim_statement: sa.Executable | None = None
        # A private in-memory database (one connection, gone with this process) has no other
        # writer, so the attention states this store wrote are kept decoded: no read of the
        # attention table on the hot path. Every write still goes to the table.
        self._states: dict[str, AttentionState] | None = (
            {} if normalise_url(settings.url) in _PRIVATE_MEMORY_URLS else None
        )
        # States written in each open ``transaction()``, by connection: kept only once it commits.
        self._staged: dict[int, dict[str, AttentionState]] = {}
        dbapi = self.engine.dialect.loaded_dbapi
        self._unavailable_errors: tuple[type[Exception], ...] = (
            sa.exc.OperationalError, sa.exc.InterfaceError, dbapi.OperationalError, dbapi.InterfaceError,
        )  # fmt: skip

    # -- lifecycle ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Apply the configured migration mode: upgrade (auto) or refuse an old schema (check).

        Raises DatabaseUnavailable when the database does not answer.
        """
        try:
            current = current_revision(self.engine)
            if current == SCHEMA_HEAD:
                return
            if self.settings.migrate_mode == "auto":
                upgrade(self.engine)
                return
        except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
            where = sa.engine.make_url(self.settings.url).render_as_string(hide_password=True)
            raise DatabaseUnavailable(f"cannot use the database {where}: {str(exc.orig).strip()}") from exc
        raise SchemaOutOfDate(current, SCHEMA_HEAD)

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self.engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            return True
        except sa.exc.SQLAlchemyError:
            return False

    def close(self) -> None:
        """Release every connection."""
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite)."""
        staged: dict[str, AttentionState] = {}
        key = 0
        try:
            with self.engine.begin() as connection:
                # Nothing here may touch the connection after a failure: a broken one raises
                # a different error than the one that broke it.
                key = id(connection)
                if self._states is not None:
                    self._staged[key] = staged
                yield connection
            if staged and self._states is not None:  # committed: the kept states follow
                self._states.update(staged)
        except self._unavailable_errors as exc:
            cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc  # statements sent straight to the driver
            if self.dialect == "sqlite" and "locked" in str(cause):
                raise StoreError(
                    f"the SQLite database {self.settings.url} stayed busy longer than database.busy_timeout "
                    f"({format_duration(self.settings.busy_timeout)}): another process holds it. Run one Tact "
                    "process per SQLite file, raise busy_timeout, or use PostgreSQL for several replicas"
                ) from exc
            if self.dialect == "sqlite":  # a file's errors (no table, disk full) do not pass by themselves
                raise StoreError(f"database error: {cause}") from exc
            raise DatabaseUnavailable(f"database error: {cause}") from exc
        finally:
            self._staged.pop(key, None)

    def _insert(self, table: sa.Table) -> Any:
        if self.dialect == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    # -- meta ----------------------------------------------------------------------------------

    def get_or_set_meta(self, key: str, make: Any) -> str:
        """Read a meta value, creating it with ``make()`` on first use."""
        with self.transaction() as connection:
            value = connection.execute(sa.select(meta_t.c.value).where(meta_t.c.key == key)).scalar()
            if value is None:
                value = make()
                connection.execute(self._insert(meta_t).values(key=key, value=value).on_conflict_do_nothing())
                value = connection.execute(sa.select(meta_t.c.value).where(meta_t.c.key == key)).scalar_one()
            return str(value)

    def get_meta(self, key: str) -> str | None:
        """A meta value, or None when it was never set."""
        with self.engine.connect() as connection:
            value = connection.execute(sa.select(meta_t.c.value).where(meta_t.c.key == key)).scalar()
        return None if value is None else str(value)

    def set_meta(self, values: Mapping[str, str]) -> None:
        """Write meta values, replacing what was there."""
        with self.transaction() as connection:
            for key, value in values.items():
                stmt = self._insert(meta_t).values(key=key, value=value)
                connection.execute(stmt.on_conflict_do_update(index_elements=[meta_t.c.key], set_={"value": value}))

    # -- campaigns -----------------------------------------------------------------------------

    def sync_campaigns(self, rows: Sequence[Row]) -> None:
        """Record the loaded campaigns for analysts' joins."""
        if not rows:
            return
        stmt = self._insert(campaign_t)
        stmt = stmt.on_conflict_do_update(
            index_elements=[campaign_t.c.id],
            set_={
                c: stmt.excluded[c]
                for c in ("name", "kind", "priority", "goal", "steps", "removed_steps", "source", "loaded_at")
            },
        )
        with self.transaction() as connection:
            connection.execute(stmt, list(rows))

    def campaign_steps(self) -> dict[str, tuple[list[str], dict[str, str | None]]]:
        """For each campaign last synced: its step ids, and the successors of removed steps."""
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(campaign_t.c.id, campaign_t.c.steps, campaign_t.c.removed_steps))
            return {row[0]: (list(row[1] or []), dict(row[2] or {})) for row in rows}

    # -- recipients ----------------------------------------------------------------------------

    def recipients_by_id(self, connection: sa.Connection, ids: Iterable[str]) -> dict[str, Row]:
        """Recipient rows keyed by id."""
        rows = self._select_in(connection, "recipient", _RECIPIENT_COLUMNS, "id", list(set(ids)),
                               times=_RECIPIENT_TIMES, json_columns=("attributes",))  # fmt: skip
        for row in rows:
            row["attributes"] = row["attributes"] or {}
        return {row["id"]: row for row in rows}

    def upsert_recipients(self, rows: Sequence[Row], consents: Sequence[Row]) -> None:
        """Insert or replace recipient rows (already merged by the caller) and consent rows."""
        stmt = self._insert(recipient_t)
        columns = [c.name for c in recipient_t.columns if c.name not in ("id", "created_at")]
        stmt = stmt.on_conflict_do_update(
            index_elements=[recipient_t.c.id], set_={c: stmt.excluded[c] for c in columns}
        )
        with self.transaction() as connection:
            if rows:
                connection.execute(stmt, list(rows))
            self.write_consents(connection, consents)

    def write_consents(self, connection: sa.Connection, consents: Sequence[Row]) -> None:
        """Set consent statuses (the latest write wins)."""
        if not consents:
            return
        stmt = self._insert(consent_t)
        stmt = stmt.on_conflict_do_update(
            index_elements=[consent_t.c.recipient_id, consent_t.c.channel],
            set_={
                "status": stmt.excluded.status,
                "source": stmt.excluded.source,
                "at": stmt.excluded.at,
            },
        )
        connection.execute(stmt, list(consents))

    def recipient_profile(self, recipient_id: str) -> Row | None:
        """A recipient with consent, attention state, enrollments and pending touchpoints."""
        with self.engine.connect() as connection:
            recipient = (
                connection.execute(sa.select(recipient_t).where(recipient_t.c.id == recipient_id)).mappings().first()
            )
            if recipient is None:
                return None
            profile = dict(recipient)
            profile["consent"] = {
                r["channel"]: dict(r)
                for r in connection.execute(
                    sa.select(consent_t).where(consent_t.c.recipient_id == recipient_id)
                ).mappings()
            }
            attention = (
                connection.execute(sa.select(attention_t).where(attention_t.c.recipient_id == recipient_id))
                .mappings()
                .first()
            )
            profile["attention"] = dict(attention) if attention else None
            profile["enrollments"] = [
                dict(r)
                for r in connection.execute(
                    sa.select(enrollment_t)
                    .where(enrollment_t.c.recipient_id == recipient_id)
                    .order_by(enrollment_t.c.id)
                ).mappings()
            ]
            profile["pending"] = [
                dict(r)
                for r in connection.execute(
                    sa.select(touchpoint_t)
                    .where(
                        touchpoint_t.c.recipient_id == recipient_id,
                        touchpoint_t.c.state == "pending",
                    )
                    .order_by(touchpoint_t.c.due_at)
                ).mappings()
            ]
            return profile

    def segment_members(self, connection: sa.Connection, after: str | None, limit: int) -> list[Row]:
        """Recipients in id order, a page at a time (segments filter them in Python); straight
        through the driver, as a segment run reads every recipient."""
        mark = self._placeholders(1)
        where = f" WHERE id > {mark}" if after is not None else ""
        sql = f"SELECT {', '.join(_RECIPIENT_COLUMNS)} FROM recipient{where} ORDER BY id LIMIT {mark}"
        cursor = connection.connection.cursor()
        try:
            cursor.execute(sql, (after, limit) if after is not None else (limit,))
            records = cursor.fetchall()
        finally:
            cursor.close()
        rows = _decoded(records, _RECIPIENT_COLUMNS, _RECIPIENT_TIMES, ("attributes",))
        for row in rows:
            row["attributes"] = row["attributes"] or {}
        return rows

    # -- events --------------------------------------------------------------------------------

    def insert_events(self, rows: Sequence[Row]) -> int:
        """Store new events; return how many rows were replays (an id stored before or repeated)."""
        ids = [r["event_id"] for r in rows]
        with self.transaction() as connection:
            existing: set[str] = set()
            for chunk in _chunks(ids, 5000):
                existing.update(
                    connection.execute(sa.select(event_t.c.event_id).where(event_t.c.event_id.in_(chunk))).scalars()
                )
            fresh: list[Row] = []
            seen: set[str] = set()
            for row in rows:
                if row["event_id"] in existing or row["event_id"] in seen:
                    continue
                seen.add(row["event_id"])
                fresh.append(row)
            if fresh:
                stmt = self._insert(event_t).on_conflict_do_nothing(index_elements=[event_t.c.event_id])
                connection.execute(stmt, fresh)
        return len(rows) - len(fresh)

    def queued_events(self, connection: sa.Connection, now: datetime, limit: int) -> list[Row]:
        """Events not yet applied whose time has come, oldest first."""
        query = (
            sa.select(event_t)
            .where(event_t.c.applied_at.is_(None), event_t.c.at <= now)
            .order_by(event_t.c.at, event_t.c.id)
            .limit(limit)
        )
        return [dict(r) for r in connection.execute(query).mappings()]

    def mark_applied(self, connection: sa.Connection, event_ids: Sequence[int], now: datetime) -> None:
        """Mark queued events as applied."""
        connection.execute(event_t.update().where(event_t.c.id.in_(list(event_ids))).values(applied_at=now))

    def attribute_event(self, connection: sa.Connection, event_id: int, touchpoint_id: int) -> None:
        """Record which touch an event answers."""
        connection.execute(event_t.update().where(event_t.c.id == event_id).values(touchpoint_id=touchpoint_id))

    def suppress(self, connection: sa.Connection, recipient_id: str, at: datetime, reason: str) -> None:
        """Suppress a recipient's address (the first suppression is kept)."""
        connection.execute(
            recipient_t.update()
            .where(recipient_t.c.id == recipient_id, recipient_t.c.suppressed_at.is_(None))
            .values(suppressed_at=at, suppressed_reason=reason)
        )

    def touchpoint_for_message(self, connection: sa.Connection, message_id: str) -> int | None:
        """The touchpoint a provider message id belongs to."""
        return connection.execute(
            sa.select(touchpoint_t.c.id).where(touchpoint_t.c.provider_message_id == message_id)
        ).scalar()

    # -- enrollment ----------------------------------------------------------------------------

    def enrollments_of(
        self,
        connection: sa.Connection,
        recipient_ids: Iterable[str],
        *,
        campaign_id: str | None = None,
        active_only: bool = False,
        active_or_in: Collection[str] | None = None,
    ) -> list[Row]:
        """The enrollments of these recipients (in one campaign, or only active ones, or the
        active ones plus every one in the campaigns ``active_or_in``, if asked)."""
        rows: list[Row] = []
        for chunk in _chunks(list(set(recipient_ids)), 5000):
            query = sa.select(enrollment_t).where(enrollment_t.c.recipient_id.in_(chunk))
            if campaign_id is not None:
                query = query.where(enrollment_t.c.campaign_id == campaign_id)
            if active_only:
                query = query.where(enrollment_t.c.state == "active")
            elif active_or_in is not None:
                wanted = enrollment_t.c.state == "active"
                if active_or_in:
                    wanted = sa.or_(wanted, enrollment_t.c.campaign_id.in_(active_or_in))
                query = query.where(wanted)
            rows.extend(dict(r) for r in connection.execute(query).mappings())
        return rows

    def enroll(self, connection: sa.Connection, enrollments: Sequence[Row], first_steps: Sequence[Row]) -> list[int]:
        """Insert enrollments and, for each, its first touchpoint (``first_steps`` aligned).

        Multi-row inserts straight through the driver (a segment run enrolls everyone); the
        new ids come back matched by (campaign, recipient), which is unique among active
        enrollments (``uq_enrollment_active``)."""
        if not enrollments:
            return []
        columns = _NEW_ENROLLMENT_COLUMNS
        one = f"({self._placeholders(len(columns))})"
        new_ids: dict[tuple[str, str], int] = {}
        cursor = connection.connection.cursor()
        try:
            for chunk in _chunks(list(enrollments), ENROLL_CHUNK):
                cursor.execute(
                    f"INSERT INTO enrollment ({', '.join(columns)}) VALUES {', '.join([one] * len(chunk))} "
                    "RETURNING id, campaign_id, recipient_id",
                    [self._enrollment_value(row, column) for row in chunk for column in columns],
                )
                new_ids.update({(campaign, recipient): id_ for id_, campaign, recipient in cursor.fetchall()})
        finally:
            cursor.close()
        ids = [new_ids[(row["campaign_id"], row["recipient_id"])] for row in enrollments]
        touchpoints = []
        for enrollment_id, step in zip(ids, first_steps, strict=True):
            touchpoints.append(
                {
                    **step,
                    "enrollment_id": enrollment_id,
                    "idempotency_key": f"{enrollment_id}:{step['step_id']}",
                }
            )
        self.insert_touchpoints(connection, touchpoints)
        return ids

    def insert_touchpoints(self, connection: sa.Connection, rows: Sequence[Row]) -> None:
        """Queue touchpoints; an existing idempotency key is left alone."""
        if not rows:
            return
        ts = self._timestamp
        sql = (
            f"INSERT INTO touchpoint ({', '.join(_NEW_TOUCHPOINT_COLUMNS)}) "
            f"VALUES ({self._placeholders(len(_NEW_TOUCHPOINT_COLUMNS))}) ON CONFLICT (idempotency_key) DO NOTHING"
        )
        params = [tuple(ts(r[c]) if c in _TOUCHPOINT_TIMES else r[c] for c in _NEW_TOUCHPOINT_COLUMNS) for r in rows]
        connection.exec_driver_sql(sql, params)

    def _enrollment_value(self, row: Row, column: str) -> Any:
        if column == "enrolled_at":
            return self._timestamp(row[column])
        if column == "seen_events":
            return _json_text(row.get(column) or [])
        return row[column]

    def update_enrollments(self, connection: sa.Connection, rows: Sequence[Row]) -> None:
        """Write back changed enrollments (``id`` plus the columns to set)."""
        for row in rows:
            values = {k: v for k, v in row.items() if k != "id"}
            connection.execute(enrollment_t.update().where(enrollment_t.c.id == row["id"]).values(**values))

    def hasten_pending(self, connection: sa.Connection, enrollment_ids: Sequence[int], now: datetime) -> None:
        """Make the pending touchpoints of these enrollments due now (so they are decided)."""
        for chunk in _chunks(list(enrollment_ids), 5000):
            connection.execute(
                touchpoint_t.update()
                .where(
                    touchpoint_t.c.enrollment_id.in_(chunk),
                    touchpoint_t.c.state == "pending",
                    touchpoint_t.c.due_at > now,
                )
                .values(due_at=now)
            )

    def recall_deferred(self, connection: sa.Connection, recipient_id: str, due: datetime) -> None:
        """Bring a recipient's pending touchpoints due later than ``due`` forward to ``due``."""
        connection.execute(
            touchpoint_t.update()
            .where(
                touchpoint_t.c.recipient_id == recipient_id,
                touchpoint_t.c.state == "pending",
                touchpoint_t.c.due_at > due,
            )
            .values(due_at=due)
        )

    def record_segment_run(
        self, connection: sa.Connection, campaign_id: str, scheduled_at: datetime, now: datetime
    ) -> bool:
        """Claim one cron instant of a segment campaign; False when it already ran."""
        stmt = (
            self._insert(segment_run_t)
            .values(campaign_id=campaign_id, scheduled_at=scheduled_at, ran_at=now, enrolled=0)
            .on_conflict_do_nothing(index_elements=[segment_run_t.c.campaign_id, segment_run_t.c.scheduled_at])
        )
        return bool(connection.execute(stmt).rowcount)

    def last_segment_run(self, connection: sa.Connection, campaign_id: str) -> datetime | None:
        """The latest cron instant a segment campaign ran at."""
        return connection.execute(
            sa.select(sa.func.max(segment_run_t.c.scheduled_at)).where(segment_run_t.c.campaign_id == campaign_id)
        ).scalar()

    # -- attention -----------------------------------------------------------------------------

    def attention_states(self, connection: sa.Connection, recipient_ids: Iterable[str]) -> dict[str, AttentionState]:
        """Attention states keyed by recipient id (absent when never touched)."""
        ids = set(recipient_ids)
        if self._states is not None:
            staged = self._staged.get(id(connection)) or {}
            kept = self._states
            found = {rid: staged.get(rid) or kept.get(rid) for rid in ids}
            return {rid: state for rid, state in found.items() if state is not None}
        rows = self._select_in(connection, "attention", _ATTENTION_COLUMNS, "recipient_id", list(ids),
                               times=_ATTENTION_TIMES, json_columns=_ATTENTION_JSON)  # fmt: skip
        return {row["recipient_id"]: from_row(row) for row in rows}

    def _select_in(
        self,
        connection: sa.Connection,
        table: str,
        columns: Sequence[str],
        key: str,
        values: Sequence[Any],
        *,
        times: Collection[str] = (),
        json_columns: Collection[str] = (),
    ) -> list[Row]:
        """``SELECT columns FROM table WHERE key IN values``, straight through the driver."""
        cursor = connection.connection.cursor()  # the DBAPI cursor: no per-row wrapping
        try:
            records: list[Any] = []
            for chunk in _chunks(values, 5000):
                sql = f"SELECT {', '.join(columns)} FROM {table} WHERE {key} IN ({self._placeholders(len(chunk))})"
                cursor.execute(sql, tuple(chunk))
                records.extend(cursor.fetchall())
        finally:
            cursor.close()
        return _decoded(records, columns, times, json_columns)

    def answered_touches(self, since: datetime, until: datetime, open_credit: float, limit: int) -> list[AnsweredSend]:
        """The latest ``limit`` marketing touches sent in [since, until) with the numbers they
        were decided at, and how they were answered (``AnsweredSend``)."""
        mark = self._placeholders(1)
        # One look-up per send through the event index, not a join grouped by send; straight
        # through the driver, as this reads tens of thousands of rows a day.
        answers = "FROM event e WHERE e.touchpoint_id = s.touchpoint_id"
        sql = (
            "SELECT s.recipient_id, s.channel, s.at, s.fatigue, s.engagement_p, s.asset, s.relevance, "
            "(SELECT MAX(CASE WHEN e.type IN ('clicked', 'replied', 'converted') THEN 1.0 "
            f"WHEN e.type = 'opened' THEN {mark} ELSE 0.0 END) {answers}), "
            f"(SELECT MAX(CASE WHEN e.type IN ('unsubscribed', 'complained') THEN 1 ELSE 0 END) {answers}) "
            f"FROM send_log s WHERE s.decision = 'sent' AND s.at >= {mark} AND s.at < {mark} "
            "AND s.kind = 'marketing' AND s.fatigue IS NOT NULL AND s.engagement_p IS NOT NULL "
            f"ORDER BY s.at DESC LIMIT {mark}"
        )
        params = (open_credit, self._timestamp(since), self._timestamp(until), limit)
        with self.engine.connect() as connection:
            cursor = connection.connection.cursor()
            try:
                cursor.execute(sql, params)
                rows = cursor.fetchall()
            finally:
                cursor.close()
        sends = []
        for recipient, channel, at, fatigue, predicted, asset, relevance, engaged, rebuffed in rows:
            numbers = (float(fatigue), float(predicted), float(asset or 0.0), float(relevance or 0.0))
            sends.append(AnsweredSend(recipient, channel, _utc(at), *numbers, float(engaged or 0.0), bool(rebuffed)))
        return sends

    def attention_due(self, connection: sa.Connection, now: datetime, limit: int) -> dict[str, AttentionState]:
        """Attention states with an outcome window closed by ``now``."""
        ids = [
            row[0]
            for row in connection.execute(
                sa.select(attention_t.c.recipient_id)
                .where(attention_t.c.resolve_at <= now)
                .order_by(attention_t.c.resolve_at)
                .limit(limit)
            )
        ]
        return self.attention_states(connection, ids) if ids else {}

    def write_attention(self, connection: sa.Connection, states: Mapping[str, AttentionState]) -> None:
        """Insert or replace the attention states of these recipients."""
        if not states:
            return
        if self._states is not None:
            staged = self._staged.get(id(connection))
            if staged is None:  # written outside ``transaction()``: its fate is unknown, read the table
                self._states = None
            else:
                staged.update(states)
        rows = [{"recipient_id": rid, **to_row(state)} for rid, state in states.items()]
        ts = self._timestamp
        updates = ", ".join(f"{c} = excluded.{c}" for c in _ATTENTION_COLUMNS[1:])
        sql = (
            f"INSERT INTO attention ({', '.join(_ATTENTION_COLUMNS)}) "
            f"VALUES ({self._placeholders(len(_ATTENTION_COLUMNS))}) "
            f"ON CONFLICT (recipient_id) DO UPDATE SET {updates}"
        )
        params = [
            tuple(
                ts(r[c]) if c in _ATTENTION_TIMES else _json_text(r[c]) if c in _ATTENTION_JSON else r[c]
                for c in _ATTENTION_COLUMNS
            )
            for r in rows
        ]
        connection.exec_driver_sql(sql, params)

    # -- the hot path --------------------------------------------------------------------------

    def claim(self, now: datetime, owner: str, lease_seconds: float, limit: int) -> list[Row]:
        """Lease up to ``limit`` due touchpoints, with every other due one of their recipients.

        Claiming by recipient lets competing touches be decided together, and a recipient with
        a touch leased elsewhere is skipped: two replicas never decide touches of the same
        recipient at once (caps and fatigue would be computed on stale state). On PostgreSQL
        claims take turns on a transaction-scoped advisory lock, so each claim sees every
        lease committed before it; the lock ends with the claim's transaction, and the leases
        in the rows are what protect the sends. A row whose previous lease expired without a
        commit gets its attempt counter raised. The lease runs from when the claim got its
        turn, not from when it began waiting for it.
        """
        if self._claim_statement is None:
            self._claim_statement = self._build_claim()
        with self.transaction() as connection:
            if self.dialect == "postgresql":
                connection.execute(_CLAIM_TURN, {"key": CLAIM_LOCK_KEY})
            wall = time.time()
            params = {
                "b_now": now, "b_limit": limit, "b_owner": owner,
                "b_wall": datetime.fromtimestamp(wall, UTC),
                "b_until": datetime.fromtimestamp(wall + lease_seconds, UTC),
            }  # fmt: skip
            rows = connection.execute(self._claim_statement, params)
            return [dict(zip(CLAIMED_COLUMNS, r, strict=True)) for r in rows]

    def _build_claim(self) -> sa.Executable:
        """The claim statement, built once with bound parameters (it runs every tick)."""
        if self.dialect == "postgresql":
            return _POSTGRES_CLAIM
        t = touchpoint_t
        other = touchpoint_t.alias("leased")
        free = sa.or_(t.c.lease_expires_at.is_(None), t.c.lease_expires_at < sa.bindparam("b_wall"))
        due = sa.and_(t.c.state == "pending", t.c.due_at <= sa.bindparam("b_now"), free)
        busy = sa.exists().where(
            other.c.recipient_id == t.c.recipient_id,
            other.c.lease_owner.is_not(None),
            other.c.state == "pending",
            other.c.lease_expires_at >= sa.bindparam("b_wall"),
        )
        first = sa.select(t.c.recipient_id).where(due, ~busy).order_by(t.c.due_at).limit(sa.bindparam("b_limit"))
        candidates = sa.select(t.c.id).where(due, t.c.recipient_id.in_(first.scalar_subquery()))
        statement: sa.Executable = (
            t.update()
            .where(t.c.id.in_(candidates.scalar_subquery()))
            .values(
                lease_owner=sa.bindparam("b_owner"),
                lease_expires_at=sa.bindparam("b_until"),
                attempts=t.c.attempts + sa.case((t.c.lease_owner.is_not(None), 1), else_=0),
            )
            .returning(*(t.c[name] for name in CLAIMED_COLUMNS))
        )
        return statement

    def load_context(self, touchpoints: Sequence[Row]) -> BatchContext:
        """Recipients, consent, attention and enrollments for a claimed batch."""
        recipient_ids = {t["recipient_id"] for t in touchpoints}
        enrollment_ids = list({t["enrollment_id"] for t in touchpoints})
        with self.engine.connect() as connection:
            recipients = self.recipients_by_id(connection, recipient_ids)
            consents: dict[str, dict[str, str]] = {}
            for row in self._select_in(connection, "consent", ("recipient_id", "channel", "status"),
                                       "recipient_id", list(recipient_ids)):  # fmt: skip
                consents.setdefault(row["recipient_id"], {})[row["channel"]] = row["status"]
            attention = self.attention_states(connection, recipient_ids)
            enrollments = {
                row["id"]: row
                for row in self._select_in(
                    connection,
                    "enrollment",
                    ("id", "state", "seen_events"),
                    "id",
                    enrollment_ids,
                    json_columns=("seen_events",),
                )
            }
            connection.rollback()
        return BatchContext(recipients, consents, attention, enrollments)

    def release_leases(self, owner: str) -> int:
        """Give up every lease ``owner`` holds (a shutdown that could not wait for its batch).

        The attempt counter rises: the touches may have been sent without being recorded.
        """
        t = touchpoint_t
        statement = (
            t.update()
            .where(t.c.lease_owner == owner, t.c.state == "pending")
            .values(lease_owner=None, lease_expires_at=None, attempts=t.c.attempts + 1)
        )
        with self.transaction() as connection:
            return connection.execute(statement).rowcount

    def renew_leases(self, ids: Sequence[int], owner: str, lease_seconds: float) -> set[int]:
        """Extend this owner's leases on ``ids``; return the ids it still holds.

        A lease that ran out but was not reclaimed is still held (nobody else can have sent
        those touches); one another replica reclaimed is gone, and its touch must not be sent.
        """
        if not ids:
            return set()
        t = touchpoint_t
        until = datetime.fromtimestamp(time.time() + lease_seconds, UTC)
        statement = (
            t.update()
            .where(t.c.id.in_(ids), t.c.lease_owner == owner, t.c.state == "pending")
            .values(lease_expires_at=until)
            .returning(t.c.id)
        )
        with self.transaction() as connection:
            return set(connection.execute(statement).scalars())

    def commit_batch(self, write: BatchWrite, owner: str) -> int:
        """Write one batch: send_log rows, touchpoint states, attention, next touchpoints.

        Only touchpoints this owner still holds are written: the decisions of one whose lease
        another replica reclaimed are that replica's to record. Returns how many were lost.
        The statements go to the driver directly: this is the hot path of every tick.
        """
        ph, ts = self._placeholders, self._timestamp
        with self.transaction() as connection:
            ids = list({r["b_id"] for r in write.done} | {r["b_id"] for r in write.rescheduled})
            held = self._held(connection, ids, owner)
            lost = len(ids) - len(held)
            if lost:
                write = replace(
                    write,
                    done=[r for r in write.done if r["b_id"] in held],
                    rescheduled=[r for r in write.rescheduled if r["b_id"] in held],
                    send_log=[e for e in write.send_log if e.touchpoint_id is None or e.touchpoint_id in held],
                )
            if write.done:
                sql = (
                    "UPDATE touchpoint SET state = 'done', outcome = {0}, reason = {0}, decided_at = {0}, "
                    "sent_at = {0}, provider_message_id = {0}, attempts = {0}, lease_owner = NULL, "
                    "lease_expires_at = NULL WHERE id = {0} AND lease_owner = {0}"
                ).format(ph(1))
                params = [
                    (r["b_outcome"], r["b_reason"], ts(r["b_decided_at"]), ts(r["b_sent_at"]),
                     r["b_provider_message_id"], r["b_attempts"], r["b_id"], owner)
                    for r in write.done
                ]  # fmt: skip
                connection.exec_driver_sql(sql, params)
            if write.rescheduled:
                sql = (
                    "UPDATE touchpoint SET due_at = {0}, attempts = {0}, lease_owner = NULL, "
                    "lease_expires_at = NULL WHERE id = {0} AND lease_owner = {0}"
                ).format(ph(1))
                moves = [(ts(r["b_due_at"]), r["b_attempts"], r["b_id"], owner) for r in write.rescheduled]
                connection.exec_driver_sql(sql, moves)
            if write.send_log:
                sql = f"INSERT INTO send_log ({', '.join(SEND_LOG_COLUMNS)}) VALUES ({ph(len(SEND_LOG_COLUMNS))})"
                fields = operator.attrgetter(*SEND_LOG_COLUMNS)
                at_index, until_index = SEND_LOG_COLUMNS.index("at"), SEND_LOG_COLUMNS.index("deferred_until")
                entries = []
                for entry in write.send_log:
                    values = list(fields(entry))
                    values[at_index] = ts(values[at_index])
                    values[until_index] = ts(values[until_index])
                    entries.append(tuple(values))
                connection.exec_driver_sql(sql, entries)
            self.insert_touchpoints(connection, write.new_touchpoints)
            self.write_attention(connection, write.attention)
            if write.enrollments_ended:
                sql = "UPDATE enrollment SET state = {0}, ended_at = {0} WHERE id = {0} AND state = 'active'".format(
                    ph(1)
                )
                ended = [(r["b_state"], ts(r["b_ended_at"]), r["b_id"]) for r in write.enrollments_ended]
                connection.exec_driver_sql(sql, ended)
            for recipient_id, at, reason in write.suppressed:
                self.suppress(connection, recipient_id, at, reason)
            return lost

    def _held(self, connection: sa.Connection, ids: Sequence[int], owner: str) -> set[int]:
        """The ids among ``ids`` this owner holds, locked until the transaction ends (on
        PostgreSQL; SQLite's write transaction is exclusive already)."""
        held: set[int] = set()
        lock = " FOR UPDATE" if self.dialect == "postgresql" else ""
        cursor = connection.connection.cursor()  # the DBAPI cursor: this runs on every batch
        try:
            for chunk in _chunks(ids, 1000):
                cursor.execute(
                    f"SELECT id FROM touchpoint WHERE lease_owner = {self._placeholders(1)} "
                    f"AND id IN ({self._placeholders(len(chunk))}){lock}",
                    (owner, *chunk),
                )
                held.update(row[0] for row in cursor.fetchall())
        finally:
            cursor.close()
        return held

    def _placeholders(self, count: int) -> str:
        mark = "?" if self.dialect == "sqlite" else "%s"
        return ", ".join([mark] * count)

    def _timestamp(self, value: datetime | None) -> Any:
        """A timestamp as the driver stores it (the same text SQLAlchemy writes on SQLite)."""
        if value is None or self.dialect != "sqlite":
            return value
        return sqlite_text(value)

    # -- reading the log -----------------------------------------------------------------------

    def send_log_rows(
        self, filters: Mapping[str, Any], *, limit: int | None = None, descending: bool = False
    ) -> Iterator[Row]:
        """Stream send_log rows matching ``campaign``, ``recipient``, ``decision``, ``reason``,
        ``since`` and ``until``, in id order."""
        s = send_log_t
        query = sa.select(s)
        mapping = {
            "campaign": s.c.campaign_id,
            "recipient": s.c.recipient_id,
            "decision": s.c.decision,
            "reason": s.c.reason,
        }
        for key, column in mapping.items():
            if filters.get(key):
                query = query.where(column == filters[key])
        if filters.get("since"):
            query = query.where(s.c.at >= filters["since"])
        if filters.get("until"):
            query = query.where(s.c.at < filters["until"])
        query = query.order_by(s.c.id.desc() if descending else s.c.id)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as connection:
            result = connection.execution_options(stream_results=True, yield_per=1000).execute(query)
            for row in result.mappings():
                yield dict(row)

    def count(self, table: str, **where: Any) -> int:
        """Row count of a table, for status output and tests."""
        tbl = {t.name: t for t in (touchpoint_t, send_log_t, event_t, recipient_t, enrollment_t)}[table]
        query = sa.select(sa.func.count()).select_from(tbl)
        for key, value in where.items():
            query = query.where(tbl.c[key] == value)
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def queue_stats(self, now: datetime) -> tuple[int, float | None]:
        """Pending touchpoints due at ``now`` (leased or not), and the age in seconds of the
        oldest of them (None when none is due), for the metrics."""
        t = touchpoint_t
        query = sa.select(sa.func.count(), sa.func.min(t.c.due_at)).where(t.c.state == "pending", t.c.due_at <= now)
        with self.engine.connect() as connection:
            depth, oldest = connection.execute(query).one()
        oldest_at = utc_from_db(oldest)
        return int(depth), (now - oldest_at).total_seconds() if oldest_at is not None else None


def _decoded(
    records: Iterable[Sequence[Any]], columns: Sequence[str], times: Collection[str], json_columns: Collection[str]
) -> list[Row]:
    """Driver rows as dicts, with JSON columns parsed and timestamps as aware UTC datetimes."""
    found: list[Row] = []
    for record in records:
        row = dict(zip(columns, record, strict=True))
        for name in json_columns:
            row[name] = _json_value(row[name])
        for name in times:
            if row[name] is not None:
                row[name] = utc_from_db(row[name])
        found.append(row)
    return found


def _json_text(value: Any) -> str:
    """JSON text for a JSON column (empty containers without a trip through the encoder)."""
    if not value:
        return "[]" if isinstance(value, list | tuple) else "{}"
    return orjson.dumps(value).decode()


def _json_value(value: Any) -> Any:
    """A JSON column's value as the driver returned it (text on SQLite, parsed on PostgreSQL)."""
    if not isinstance(value, str):
        return value
    if value == "{}":
        return {}
    if value == "[]":
        return []
    return orjson.loads(value)


def _utc(value: Any) -> datetime:
    moment = utc_from_db(value)
    assert moment is not None  # a NOT NULL column
    return moment


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
