"""The database tables (SQLModel). Timestamps are stored in UTC.

The schema itself is created and upgraded by the Alembic migrations in
``scheduler/migrations``; these classes describe it for queries. ``send_log`` is the analysts'
contract (docs/send-log.md): append-only, one row per decision.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel


@functools.lru_cache(maxsize=4096)
def sqlite_text(value: datetime) -> str:
    """An aware datetime as SQLite stores it: naive UTC text, the format SQLAlchemy writes.

    Cached: most timestamps of a tick's batch are the tick's own instant.
    """
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def utc_from_db(value: Any) -> datetime | None:
    """A stored timestamp as an aware UTC datetime (SQLite text or a driver's datetime)."""
    if value is None:
        return None
    if isinstance(value, str):  # naive UTC text: the suffix makes fromisoformat parse it aware
        return datetime.fromisoformat(value + "+00:00")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
    return value.astimezone(UTC)  # type: ignore[no-any-return]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        return utc_from_db(value)


def _ts(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_column=sa.Column(UTCDateTime(), nullable=nullable, index=index))


def _json() -> Any:
    return Field(default_factory=dict, sa_column=sa.Column(sa.JSON(), nullable=False))


class Recipient(SQLModel, table=True):
    """A person Tact may touch; ``id`` is the caller's id."""

    id: str = Field(primary_key=True, max_length=255)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=32)
    timezone: str | None = Field(default=None, max_length=64)
    locale: str | None = Field(default=None, max_length=35)
    value: float = 1.0
    attributes: dict[str, Any] = _json()
    suppressed_at: datetime | None = _ts()
    suppressed_reason: str | None = Field(default=None, max_length=64)
    created_at: datetime | None = _ts()
    updated_at: datetime | None = _ts()


class Consent(SQLModel, table=True):
    """Consent per recipient and channel: opted_in, opted_out or unknown."""

    recipient_id: str = Field(primary_key=True, foreign_key="recipient.id", max_length=255)
    channel: str = Field(primary_key=True, max_length=32)
    status: str = Field(max_length=16)
    source: str | None = Field(default=None, max_length=64)
    at: datetime | None = _ts()


class Attention(SQLModel, table=True):
    """The attention model's state for one recipient (decay applied on read)."""

    recipient_id: str = Field(primary_key=True, foreign_key="recipient.id", max_length=255)
    updated_at: datetime | None = _ts()
    asset: float = 0.5
    expectation: float = 0.1
    fatigue: float = 0.0
    engagement: dict[str, Any] = _json()
    interests: dict[str, Any] = _json()
    topic_last_sent: dict[str, Any] = _json()
    recent_sends: list[Any] = Field(default_factory=list, sa_column=sa.Column(sa.JSON(), nullable=False))
    open_request: bool = False
    last_inbound_at: datetime | None = _ts()
    request_resolved_at: datetime | None = _ts()
    complained_at: datetime | None = _ts()
    outcomes: list[Any] = Field(
        default_factory=list, sa_column=sa.Column(sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
    )
    resolve_at: datetime | None = _ts(index=True)


class Enrollment(SQLModel, table=True):
    """One recipient's journey through one campaign."""

    __table_args__ = (
        sa.Index(
            "uq_enrollment_active",
            "campaign_id",
            "recipient_id",
            unique=True,
            sqlite_where=sa.text("state = 'active'"),
            postgresql_where=sa.text("state = 'active'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: str = Field(max_length=255, index=True)
    recipient_id: str = Field(foreign_key="recipient.id", max_length=255, index=True)
    state: str = Field(default="active", max_length=16)
    enrolled_at: datetime | None = _ts()
    trigger: str | None = Field(default=None, max_length=255)
    seen_events: list[Any] = Field(default_factory=list, sa_column=sa.Column(sa.JSON(), nullable=False))
    ended_at: datetime | None = _ts()
    exit_reason: str | None = Field(default=None, max_length=255)
    converted_at: datetime | None = _ts()


_LEASED = sa.text("lease_owner IS NOT NULL")


class Touchpoint(SQLModel, table=True):
    """The queue: one row per scheduled step of an enrollment."""

    __table_args__ = (
        sa.Index("ix_touchpoint_due", "state", "due_at"),
        sa.Index("ix_touchpoint_recipient_due", "recipient_id", "state", "due_at"),
        sa.Index(
            "ix_touchpoint_leased", "lease_expires_at", "recipient_id", postgresql_where=_LEASED, sqlite_where=_LEASED
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    enrollment_id: int = Field(foreign_key="enrollment.id", index=True)
    campaign_id: str = Field(max_length=255)
    recipient_id: str = Field(max_length=255)
    step_id: str = Field(max_length=255)
    channel: str | None = Field(default=None, max_length=32)
    idempotency_key: str = Field(max_length=255, unique=True)
    state: str = Field(default="pending", max_length=16)
    scheduled_at: datetime | None = _ts()
    due_at: datetime | None = _ts()
    attempts: int = 0
    lease_owner: str | None = Field(default=None, max_length=255)
    lease_expires_at: datetime | None = _ts()
    created_at: datetime | None = _ts()
    decided_at: datetime | None = _ts()
    outcome: str | None = Field(default=None, max_length=16)
    reason: str | None = Field(default=None, max_length=64)
    provider_message_id: str | None = Field(default=None, max_length=255, index=True)
    sent_at: datetime | None = _ts()


class Event(SQLModel, table=True):
    """Every inbound event; ``event_id`` is the caller's id, the dedupe key."""

    __table_args__ = (
        sa.Index("ix_event_queue", "applied_at", "at"),
        sa.Index("ix_event_touchpoint", "touchpoint_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=255, unique=True)
    recipient_id: str = Field(max_length=255, index=True)
    type: str = Field(max_length=64)
    at: datetime | None = _ts()
    channel: str | None = Field(default=None, max_length=32)
    touchpoint_id: int | None = Field(default=None)
    message_id: str | None = Field(default=None, max_length=255)
    properties: dict[str, Any] = _json()
    received_at: datetime | None = _ts()
    applied_at: datetime | None = _ts()


class SendLog(SQLModel, table=True):
    """One row per decision: the analysts' contract (docs/send-log.md)."""

    __tablename__ = "send_log"
    __table_args__ = (
        sa.Index("ix_send_log_campaign_at", "campaign_id", "at"),
        sa.Index("ix_send_log_recipient_at", "recipient_id", "at"),
        sa.Index("ix_send_log_touchpoint", "touchpoint_id"),
        sa.Index(
            "ix_send_log_sent_at",
            "at",
            postgresql_where=sa.text("decision = 'sent'"),
            sqlite_where=sa.text("decision = 'sent'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime | None = _ts(nullable=False)
    touchpoint_id: int | None = None
    enrollment_id: int | None = None
    recipient_id: str = Field(max_length=255)
    campaign_id: str = Field(max_length=255)
    step_id: str = Field(max_length=255)
    channel: str | None = Field(default=None, max_length=32)
    adapter: str | None = Field(default=None, max_length=64)
    kind: str | None = Field(default=None, max_length=16)
    decision: str = Field(max_length=16)
    reason: str = Field(max_length=64)
    deferred_until: datetime | None = _ts()
    asset: float | None = None
    expectation: float | None = None
    fatigue: float | None = None
    engagement_p: float | None = None
    relevance: float | None = None
    value: float | None = None
    net_value: float | None = None
    threshold: float | None = None
    propensity: float | None = None
    provider_message_id: str | None = Field(default=None, max_length=255)
    error: str | None = None
    latency_ms: float | None = None
    attempt: int | None = None


class Campaign(SQLModel, table=True):
    """The campaigns as last loaded, for analysts' joins (the TOML files are the source)."""

    id: str = Field(primary_key=True, max_length=255)
    name: str = Field(max_length=255)
    kind: str = Field(max_length=16)
    priority: int = 50
    goal: str | None = Field(default=None, max_length=64)
    steps: list[Any] = Field(default_factory=list, sa_column=sa.Column(sa.JSON(), nullable=False))
    removed_steps: dict[str, Any] = _json()  # removed step id -> the surviving step after it
    source: str | None = None
    loaded_at: datetime | None = _ts()


class SegmentRun(SQLModel, table=True):
    """One row per cron instant a segment campaign enrolled at (unique: runs once)."""

    __tablename__ = "segment_run"
    __table_args__ = (sa.UniqueConstraint("campaign_id", "scheduled_at", name="uq_segment_run"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign_id: str = Field(max_length=255)
    scheduled_at: datetime | None = _ts(nullable=False)
    ran_at: datetime | None = _ts()
    enrolled: int = 0


class Meta(SQLModel, table=True):
    """Small key/value facts about this installation (e.g. the generated signing key)."""

    key: str = Field(primary_key=True, max_length=64)
    value: str


metadata = SQLModel.metadata
