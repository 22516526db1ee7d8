"""``/v1``: what a CRM or a backend calls, with a bearer token (SPEC §9).

- ``POST /v1/recipients`` and ``POST /v1/events`` take a batch (a JSON array, or an object with
  ``recipients`` / ``events``) and validate each item on its own: good items are stored, bad
  ones come back with their index, a reason code and a message. Events are idempotent by id.
- ``POST /v1/enrollments`` enrolls recipients in a campaign by hand.
- ``GET /v1/recipients/{id}`` shows a recipient: profile, consent, attention state, pending
  touches and recent decisions.
- ``GET /v1/send-log`` pages through the send log, filtered, with an opaque cursor.

Records take the same shapes as the CSV/JSON-lines imports and the Python API (SPEC §5); the
item schemas below document them, and the engine validates each item.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import APIRouter, Body, Depends, HTTPException, Query, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, WithJsonSchema

from scheduler.api import queries
from scheduler.api.auth import Caller, require_token
from scheduler.api.deps import blocking
from scheduler.api.deps import engine as engine_dependency
from scheduler.engine import Engine, IngestReport
from scheduler.errors import TactError

__all__ = ["MAX_BATCH", "MAX_PAGE", "RECENT_DECISIONS", "router"]

log = structlog.get_logger("tact.api")

MAX_BATCH = 1000
"""Most items one ingest or enrollment call may carry (413 beyond)."""
MAX_PAGE = 1000
"""Most send-log rows one page may hold."""
RECENT_DECISIONS = 20
"""How many of a recipient's newest decisions ``GET /v1/recipients/{id}`` shows."""

ConsentStatus = Literal["opted_in", "opted_out", "unknown"]
DecisionName = Literal["sent", "deferred", "dropped", "failed", "retrying"]

# -- request bodies --------------------------------------------------------------------------


class RecipientFields(BaseModel):
    """A recipient as callers send it; fields not named here are kept in ``attributes``."""

    model_config = ConfigDict(extra="allow", title="Recipient")

    id: str = Field(description="The caller's id for the recipient.")
    email: str | None = None
    phone: str | None = Field(None, description="International form; stored in E.164.")
    timezone: str | None = Field(None, description="IANA time zone name, e.g. Europe/Paris.")
    locale: str | None = None
    value: float = Field(1.0, ge=0, description="Relationship value.")
    consent: dict[str, ConsentStatus] = Field(default_factory=dict, description="Per channel.")
    attributes: dict[str, Any] = Field(default_factory=dict)


class EventFields(BaseModel):
    """An event as callers send it; fields not named here are kept in ``properties``."""

    model_config = ConfigDict(extra="allow", title="Event")

    id: str = Field(description="Unique: an event sent again with the same id is ignored.")
    recipient_id: str
    type: str = Field(description="e.g. signed_up, clicked, support_opened, consent_withdrawn.")
    at: datetime | None = Field(None, description="ISO 8601 with offset; the arrival time when absent.")
    channel: str | None = None
    touchpoint_id: str | None = None
    message_id: str | None = Field(None, description="The provider's message id of the touch it answers.")
    properties: dict[str, Any] = Field(default_factory=dict)


# Items are documented with the record schemas but accepted as any JSON value: the engine
# validates each one, so a bad item is reported by index instead of failing the whole batch.
RecipientItem = Annotated[Any, WithJsonSchema(RecipientFields.model_json_schema())]
EventItem = Annotated[Any, WithJsonSchema(EventFields.model_json_schema())]


class RecipientBatch(BaseModel):
    """Recipients wrapped in an object."""

    model_config = ConfigDict(extra="forbid")
    recipients: list[RecipientItem]


class EventBatch(BaseModel):
    """Events wrapped in an object."""

    model_config = ConfigDict(extra="forbid")
    events: list[EventItem]


class EnrollmentRequest(BaseModel):
    """Recipients to enroll in a campaign by hand (its audience is not checked)."""

    model_config = ConfigDict(extra="forbid")

    campaign_id: str = Field(min_length=1)
    recipient_ids: list[str]
    at: AwareDatetime | None = Field(None, description="Enrollment time (ISO 8601 with offset); now when absent.")


# -- responses -------------------------------------------------------------------------------


class Rejection(BaseModel):
    """One item of a batch that was not stored."""

    index: int = Field(description="Position of the item in the batch, from 0.")
    reason: str = Field(description="A code: missing_field, invalid_email, unknown_recipient, ...")
    message: str


class RecipientsResult(BaseModel):
    """What a recipients batch did."""

    accepted: int
    rejected: list[Rejection]


class EventsResult(BaseModel):
    """What an events batch did; replays (an id already stored) count as duplicates."""

    accepted: int
    duplicates: int
    rejected: list[Rejection]


class EnrollmentResult(BaseModel):
    """What an enrollment call did."""

    campaign_id: str
    enrolled: int
    already_enrolled: int = Field(description="Known recipients left as they were: already in the campaign.")
    unknown_recipient_ids: list[str]


class SendLogEntry(BaseModel):
    """One decision, as the ``send_log`` table holds it (docs/send-log.md)."""

    id: int
    at: datetime
    touchpoint_id: int | None
    enrollment_id: int | None
    recipient_id: str
    campaign_id: str
    step_id: str
    channel: str | None
    adapter: str | None
    kind: str | None
    decision: str
    reason: str
    deferred_until: datetime | None
    asset: float | None
    expectation: float | None
    fatigue: float | None
    engagement_p: float | None
    relevance: float | None
    value: float | None
    net_value: float | None
    threshold: float | None
    propensity: float | None
    provider_message_id: str | None
    error: str | None
    latency_ms: float | None
    attempt: int | None


class SendLogPage(BaseModel):
    """A page of the send log in id order; pass ``next_cursor`` as ``cursor`` for the next."""

    items: list[SendLogEntry]
    next_cursor: str | None


class Consent(BaseModel):
    """A recipient's consent on one channel."""

    status: ConsentStatus
    source: str | None
    at: datetime | None
    default: bool = Field(description="True when no record set it and the configured default applies.")


class Attention(BaseModel):
    """The attention model's state of a recipient, decayed to ``as_of``."""

    as_of: datetime
    updated_at: datetime | None
    asset: float = Field(description="Trust built so far, 0-1.")
    expectation: float
    fatigue: float
    engagement_rate: dict[str, float] = Field(description="Per channel, prior included.")
    interests: dict[str, float]
    open_request: bool
    last_inbound_at: datetime | None
    complained_at: datetime | None
    awaiting_outcome: int = Field(description="Touches whose outcome window is still open.")
    holdout: bool = Field(description="In the fixed-cadence holdout group.")


class Outlook(BaseModel):
    """What would become of a pending touch were it due now, with the model's numbers."""

    decision: Literal["send", "defer", "drop"]
    reason: str
    deferred_until: datetime | None
    asset: float | None = None
    expectation: float | None = None
    fatigue: float | None = None
    engagement_p: float | None = None
    relevance: float | None = None
    value: float | None = None
    net_value: float | None = None
    threshold: float | None = None


class PendingTouchpoint(BaseModel):
    """A scheduled touch not yet decided for good."""

    id: int
    campaign_id: str
    step_id: str
    channel: str | None
    scheduled_at: datetime | None
    due_at: datetime | None
    attempts: int
    if_due_now: Outlook


class EnrollmentView(BaseModel):
    """One journey of the recipient through a campaign."""

    id: int
    campaign_id: str
    state: str
    enrolled_at: datetime | None
    ended_at: datetime | None
    exit_reason: str | None
    converted_at: datetime | None


class RecipientProfile(BaseModel):
    """A recipient, its state and its recent decisions (newest first)."""

    id: str
    email: str | None
    phone: str | None
    timezone: str | None
    locale: str | None
    value: float
    attributes: dict[str, Any]
    suppressed_at: datetime | None
    suppressed_reason: str | None
    created_at: datetime | None
    updated_at: datetime | None
    consent: dict[str, Consent]
    attention: Attention
    enrollments: list[EnrollmentView]
    pending: list[PendingTouchpoint]
    recent_decisions: list[SendLogEntry]


# -- routes ----------------------------------------------------------------------------------

router = APIRouter(prefix="/v1", tags=["v1"], dependencies=[Depends(require_token)])
EngineDep = Annotated[Engine, Depends(engine_dependency)]


def _checked_size(items: Sequence[Any], what: str, engine: Engine) -> None:
    limit = engine.settings.api.max_batch
    if len(items) > limit:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"{len(items)} {what} in one call; send at most {limit} per call ([api] max_batch)",
        )


def _rejections(report: IngestReport) -> list[Rejection]:
    return [Rejection(index=index, reason=reason, message=message) for index, reason, message in report.rejected]


@router.post("/recipients", summary="Insert or update recipients")
async def upsert_recipients(
    payload: Annotated[list[RecipientItem] | RecipientBatch, Body()], caller: Caller, engine: EngineDep
) -> RecipientsResult:
    """Upsert a batch of recipients; fields an item does not give keep their stored values."""
    items = payload.recipients if isinstance(payload, RecipientBatch) else payload
    _checked_size(items, "recipients", engine)
    report = await blocking(engine.upsert_recipients, items, source="api")
    log.info("api_recipients_upserted", caller=caller, accepted=report.accepted, rejected=len(report.rejected))
    return RecipientsResult(accepted=report.accepted, rejected=_rejections(report))


@router.post("/events", summary="Record events")
async def record_events(
    payload: Annotated[list[EventItem] | EventBatch, Body()], caller: Caller, engine: EngineDep
) -> EventsResult:
    """Record a batch of events for the next tick; an event id seen before is a duplicate, not an
    error. Events of unknown recipients are rejected (``unknown_recipient``)."""
    items = payload.events if isinstance(payload, EventBatch) else payload
    _checked_size(items, "events", engine)
    report = await blocking(engine.record_events, items)
    log.info(
        "api_events_recorded",
        caller=caller,
        accepted=report.accepted,
        duplicates=report.duplicates,
        rejected=len(report.rejected),
    )
    return EventsResult(accepted=report.accepted, duplicates=report.duplicates, rejected=_rejections(report))


@router.post(
    "/enrollments",
    summary="Enroll recipients in a campaign",
    responses={status.HTTP_404_NOT_FOUND: {"description": "No campaign with this id is loaded."}},
)
async def enroll(request: EnrollmentRequest, caller: Caller, engine: EngineDep) -> EnrollmentResult:
    """Enroll recipients in a campaign; recipients already in it are left alone."""
    _checked_size(request.recipient_ids, "recipient ids", engine)
    missing = HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no campaign {request.campaign_id!r} is loaded")
    if engine.catalog.get(request.campaign_id) is None:
        raise missing
    try:
        enrolled, unknown = await blocking(engine.enroll, request.campaign_id, request.recipient_ids, request.at)
    except TactError:
        if engine.catalog.get(request.campaign_id) is None:  # removed by a reload meanwhile
            raise missing from None
        raise
    known = len(set(request.recipient_ids)) - len(set(unknown))
    log.info("api_enrolled", caller=caller, campaign_id=request.campaign_id, enrolled=enrolled, unknown=len(unknown))
    return EnrollmentResult(
        campaign_id=request.campaign_id,
        enrolled=enrolled,
        already_enrolled=known - enrolled,
        unknown_recipient_ids=unknown,
    )


@router.get(
    "/recipients/{recipient_id:path}",
    summary="A recipient's state and recent decisions",
    responses={status.HTTP_404_NOT_FOUND: {"description": "No recipient with this id."}},
)
async def get_recipient(recipient_id: str, caller: Caller, engine: EngineDep) -> RecipientProfile:
    """The recipient's profile, consent per channel, attention state (decayed to now), pending
    touches with what would become of each were it due now, and the newest decisions."""
    outlook = await blocking(queries.recipient_outlook, engine, recipient_id, recent=RECENT_DECISIONS)
    if outlook is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no recipient {recipient_id!r}")
    log.debug("api_recipient_read", caller=caller, recipient_id=recipient_id)
    return RecipientProfile.model_validate(outlook)


@router.get("/send-log", summary="The send log, filtered and paginated")
async def send_log(
    caller: Caller,
    engine: EngineDep,
    campaign: Annotated[str | None, Query(description="Campaign id.")] = None,
    recipient: Annotated[str | None, Query(description="Recipient id.")] = None,
    decision: DecisionName | None = None,
    reason: Annotated[str | None, Query(description="Reason code.")] = None,
    since: Annotated[AwareDatetime | None, Query(description="From this instant (ISO 8601 with offset).")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Before this instant (ISO 8601 with offset).")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Rows per page.")] = 100,
    cursor: Annotated[str | None, Query(description="The next_cursor of the previous page.")] = None,
) -> SendLogPage:
    """Send-log rows matching every filter given, in id order, a page at a time."""
    try:
        after_id = queries.decode_cursor(cursor) if cursor else None
    except queries.InvalidCursor:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail="invalid cursor: pass a next_cursor as given") from None
    filters = {"campaign": campaign, "recipient": recipient, "decision": decision, "reason": reason,
               "since": since, "until": until}  # fmt: skip
    rows = await blocking(queries.send_log_page, engine.store, filters, after_id=after_id, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    log.debug("api_send_log_read", caller=caller, rows=len(rows))
    return SendLogPage(
        items=[SendLogEntry.model_validate(row) for row in rows],
        next_cursor=queries.encode_cursor(rows[-1]["id"]) if more else None,
    )
