"""Provider webhooks: delivery, engagement, bounce, complaint and unsubscribe events from
SendGrid, Mailgun and Postmark, and Twilio's status callbacks and inbound SMS.

Every request is verified before anything in it is used, with the secrets of the channels whose
adapter is that provider (``webhook_public_key``, ``webhook_signing_key``, ``webhook_username``
and ``webhook_password``, ``auth_token``; see :mod:`scheduler.api.signatures`). A provider no
channel holds a secret for answers 404; missing or wrong credentials answer 401; a signature
that does not hold, a stale timestamp or a replayed token answer 403. Nothing is stored then.

=====================================================  ==================================
Provider event                                         Tact event
=====================================================  ==================================
SendGrid ``delivered``, Mailgun ``delivered``,         ``delivered``
Postmark ``Delivery``, Twilio ``delivered``
SendGrid ``open``, Mailgun ``opened``, Postmark        ``opened``
``Open``
SendGrid ``click``, Mailgun ``clicked``, Postmark      ``clicked``
``Click``
SendGrid ``bounce`` (``blocked``: soft), ``dropped``   ``bounced``, ``properties.type``
for a bounced address; Mailgun ``failed``              ``hard`` or ``soft``; a hard
(``temporary``: soft); Postmark ``Bounce`` (hard when  bounce suppresses the recipient
``HardBounce`` or the address turned inactive);
Twilio ``undelivered``/``failed`` (hard for codes
that condemn the number)
SendGrid ``spamreport``, Mailgun ``complained``,       ``complained``
Postmark ``SpamComplaint``
SendGrid ``unsubscribe``/``group_unsubscribe``,        ``unsubscribed`` on the channel
Mailgun ``unsubscribed``, Postmark
``SubscriptionChange`` (manual suppression)
Twilio inbound SMS                                     ``inbound_message``, or the keyword's
                                                       event (:mod:`scheduler.api.keywords`)
anything else (processed, deferred, sent, ...)         counted as ignored
=====================================================  ==================================

A Tact event's id derives from the provider's event id, so a retried delivery stores nothing
twice. The recipient is found through the touchpoint id Tact sent with the message (custom
args, user variables, metadata, the status callback's query), else the provider's message id,
else the address; events naming no known recipient are counted as unattributed and dropped.
Bounces, complaints, unsubscribes and consent keywords take effect before the answer: queued
events are applied at once.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qsl

import orjson
import sqlalchemy as sa
import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, SecretStr

from adapters.base import SendResult
from scheduler.api.deps import ApiState, api_state, blocking
from scheduler.api.keywords import (
    EVENT_TYPES,
    REPLY_KEY_PREFIX,
    Keyword,
    classify,
    from_opt_out_type,
    reply_message,
    reply_text,
)
from scheduler.api.signatures import (
    ReplayCache,
    WebhookRejected,
    load_public_key,
    verify_basic_auth,
    verify_mailgun,
    verify_sendgrid,
    verify_twilio,
)
from scheduler.store import Row, consent_t, recipient_t, touchpoint_t

if TYPE_CHECKING:
    from scheduler.engine import Engine, IngestReport

__all__ = ["ProviderEvent", "WebhookCounts", "record_and_apply", "record_provider_events", "router"]

log = structlog.get_logger("tact.webhooks")
router = APIRouter(tags=["webhooks"])
State = Annotated[ApiState, Depends(api_state)]

IMMEDIATE = frozenset({"bounced", "complained", "unsubscribed", "consent_withdrawn", "consent_granted"})
"""Event types applied before the webhook answers: they change what may be sent."""
HARD_SMS_ERRORS = frozenset({"21211", "21610", "21614", "30005", "30006"})
"""Twilio error codes of an undelivered SMS that condemn the number (invalid, unknown, landline,
opted out); other failures (handset off, carrier filtering) are soft."""
MAX_ADDRESS_MATCHES = 100
MAX_EVENT_ID = 255
TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


class WebhookCounts(BaseModel):
    """What one webhook request did."""

    received: int = 0
    """Provider events in the request."""
    recorded: int = 0
    """Tact events stored (a provider event for several recipients of one address counts once each)."""
    duplicates: int = 0
    """Tact events already stored: the provider retried."""
    ignored: int = 0
    """Provider events Tact has no use for (processed, deferred, queued, ...)."""
    unattributed: int = 0
    """Provider events that name no known recipient."""


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """One provider event, mapped to a Tact event type, before its recipient is known."""

    key: str
    """Stable across the provider's retries (the provider's event id, or what identifies it)."""
    type: str
    at: datetime | None = None
    touchpoint_id: int | None = None
    message_id: str | None = None
    address: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Target:
    recipient_id: str
    touchpoint_id: int | None
    channel: str | None
    by_address: bool


# -- routes ------------------------------------------------------------------------------------


@router.post("/webhooks/sendgrid", response_model=WebhookCounts)
async def sendgrid_webhook(request: Request, state: State) -> WebhookCounts:
    """SendGrid's signed event webhook (a JSON array of events)."""
    engine = state.engine
    candidates = _configured(engine, "sendgrid", "webhook_public_key")
    body = await request.body()
    now = engine.clock()
    signature = request.headers.get("X-Twilio-Email-Event-Webhook-Signature")
    timestamp = request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp")

    def check(secrets: Sequence[str]) -> None:
        key = _public_key(state, secrets[0])
        verify_sendgrid(key, signature=signature, timestamp=timestamp, body=body, now=now)

    channel = _verified("sendgrid", candidates, check)
    events, ignored = sendgrid_events(_json(body))
    return await _record(engine, channel, events, ignored, now)


@router.post("/webhooks/mailgun", response_model=WebhookCounts)
async def mailgun_webhook(request: Request, state: State) -> WebhookCounts:
    """Mailgun's webhooks (JSON with ``signature`` and ``event-data``)."""
    engine = state.engine
    candidates = _configured(engine, "mailgun", "webhook_signing_key")
    now = engine.clock()
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        payload = None
    signed = payload.get("signature") if isinstance(payload, dict) else None
    signed = signed if isinstance(signed, dict) else {}
    token = _text(signed.get("token"))
    seen: ReplayCache = state.extra.setdefault("mailgun_tokens", ReplayCache())

    def check(secrets: Sequence[str]) -> None:
        verify_mailgun(
            secrets[0],
            timestamp=_text(signed.get("timestamp")),
            token=token,
            signature=_text(signed.get("signature")),
            now=now,
            seen=seen,
        )

    channel = _verified("mailgun", candidates, check)
    try:
        events, ignored = mailgun_events(payload)
        return await _record(engine, channel, events, ignored, now)
    except BaseException:
        if token:
            seen.release(token)  # nothing was kept: the provider's retry must get through
        raise


@router.post("/webhooks/postmark", response_model=WebhookCounts)
async def postmark_webhook(request: Request, state: State) -> WebhookCounts:
    """Postmark's webhooks (one JSON event per request, basic auth)."""
    engine = state.engine
    candidates = _configured(engine, "postmark", "webhook_username", "webhook_password")
    authorization = request.headers.get("Authorization")

    def check(secrets: Sequence[str]) -> None:
        verify_basic_auth(authorization, username=secrets[0], password=secrets[1])

    channel = _verified("postmark", candidates, check)
    now = engine.clock()
    events, ignored = postmark_events(_json(await request.body()))
    return await _record(engine, channel, events, ignored, now)


@router.post("/webhooks/twilio", response_model=None)
async def twilio_webhook(request: Request, state: State) -> Response:
    """Twilio's message status callbacks and inbound SMS (form-encoded, ``X-Twilio-Signature``)."""
    engine = state.engine
    candidates = _configured(engine, "twilio", "auth_token")
    params = parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    query = request.url.query
    url = engine.settings.api.public_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")
    signature = request.headers.get("X-Twilio-Signature")

    def check(secrets: Sequence[str]) -> None:
        verify_twilio(secrets[0], signature=signature, url=url, params=params)

    channel = _verified("twilio", candidates, check)
    form = dict(params)
    now = engine.clock()
    status = form.get("MessageStatus") or form.get("SmsStatus") or ""
    if status in ("", "received") and "Body" in form:
        await _twilio_inbound(state, channel, form, now)
        return Response(TWIML_EMPTY, media_type="text/xml")
    event = twilio_status_event(form, request.query_params)
    if event is None:
        counts = WebhookCounts(received=1, ignored=1)
    else:
        counts = await _record(engine, channel, [event], 0, now)
    return Response(counts.model_dump_json(), media_type="application/json")


async def _twilio_inbound(state: ApiState, channel: str, form: Mapping[str, str], now: datetime) -> None:
    """Record an inbound SMS; a keyword changes consent at once and is answered once."""
    engine = state.engine
    inbound_id = form.get("MessageSid") or form.get("SmsMessageSid") or ""
    sender = form.get("From") or ""
    if not inbound_id or not sender:
        raise HTTPException(400, "an inbound message needs MessageSid and From")
    keyword = from_opt_out_type(form.get("OptOutType")) or classify(form.get("Body", ""))
    if keyword is Keyword.START and not await blocking(_opted_out_at, engine, sender, channel):
        keyword = None  # "yes" answering some question is not a resubscription: START only undoes a STOP
    properties: dict[str, Any] = {"provider": "twilio", "provider_event": "inbound"}
    if keyword is not None:
        properties["keyword"] = keyword.value
    event = ProviderEvent(
        key=f"twilio:{inbound_id}",
        type=EVENT_TYPES[keyword] if keyword else "inbound_message",
        address=sender,
        properties=properties,
    )
    # One request at a time per process decides whether an inbound message is new, so a retry
    # racing its original cannot both look new and answer twice.
    lock: asyncio.Lock = state.extra.setdefault("twilio_inbound_lock", asyncio.Lock())
    async with lock:
        counts, records = await blocking(_record_events, engine, channel, [event], now)
    log.info("sms_inbound", channel=channel, keyword=keyword, recorded=counts.recorded, inbound_id=inbound_id)
    if keyword is None or not counts.recorded:
        return
    text = reply_text(keyword, engine.channel_settings.get(channel, {}))
    adapter = engine.adapters.get(channel)
    if text is None or adapter is None:
        return
    message = reply_message(
        keyword, text=text, to=sender, channel=channel, inbound_id=inbound_id, recipient_id=records[0]["recipient_id"]
    )
    try:
        result = await adapter.send(message)
    except Exception as exc:  # a failed answer must not fail the webhook: the keyword took effect
        result = SendResult.from_exception(exc)
    log.info("sms_keyword_reply", channel=channel, keyword=keyword, status=result.status, detail=result.detail)


# -- provider payloads -------------------------------------------------------------------------


def sendgrid_events(payload: Any) -> tuple[list[ProviderEvent], int]:
    """Tact events from SendGrid's event array, and how many provider events were ignored."""
    if not isinstance(payload, list):
        raise HTTPException(400, "expected a JSON array of events")
    events: list[ProviderEvent] = []
    ignored = 0
    for item in payload:
        if not isinstance(item, dict):
            ignored += 1
            continue
        kind = str(item.get("event", ""))
        reason = _text(item.get("reason")) or ""
        properties: dict[str, Any] = {}
        if kind == "delivered":
            tact_type = "delivered"
        elif kind == "open":
            tact_type = "opened"
            if "sg_machine_open" in item:
                properties["machine_open"] = bool(item["sg_machine_open"])
        elif kind == "click":
            tact_type, properties["url"] = "clicked", _text(item.get("url"))
        elif kind == "bounce" or (kind == "dropped" and "bounce" in reason.lower()):
            tact_type = "bounced"
            properties.update(type="soft" if item.get("type") == "blocked" else "hard", reason=reason[:500])
        elif kind == "spamreport":
            tact_type = "complained"
        elif kind in ("unsubscribe", "group_unsubscribe"):
            tact_type = "unsubscribed"
        else:
            ignored += 1
            continue
        message_id = (_text(item.get("sg_message_id")) or "").split(".", 1)[0] or None
        key = _text(item.get("sg_event_id")) or f"{message_id}:{kind}:{item.get('timestamp')}"
        events.append(
            ProviderEvent(
                key=f"sendgrid:{key}",
                type=tact_type,
                at=_unix_time(item.get("timestamp")),
                touchpoint_id=_int(item.get("touchpoint_id")),
                message_id=message_id,
                address=_text(item.get("email")),
                properties={"provider": "sendgrid", "provider_event": kind, **properties},
            )
        )
    return events, ignored


_MAILGUN_TYPES = {
    "delivered": "delivered",
    "opened": "opened",
    "clicked": "clicked",
    "failed": "bounced",
    "complained": "complained",
    "unsubscribed": "unsubscribed",
}


def mailgun_events(payload: Any) -> tuple[list[ProviderEvent], int]:
    """The Tact event in a Mailgun webhook (at most one), and how many were ignored."""
    data = payload.get("event-data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise HTTPException(400, "expected an object with event-data")
    kind = str(data.get("event", ""))
    tact_type = _MAILGUN_TYPES.get(kind)
    event_id = _text(data.get("id"))
    if tact_type is None or event_id is None:
        return [], 1
    properties: dict[str, Any] = {"provider": "mailgun", "provider_event": kind}
    if tact_type == "bounced":
        properties["type"] = "soft" if data.get("severity") == "temporary" else "hard"
        properties["reason"] = (_text(data.get("reason")) or "")[:500]
    if tact_type == "clicked":
        properties["url"] = _text(data.get("url"))
    headers = _object(_object(data.get("message")).get("headers"))
    variables = _object(data.get("user-variables"))
    message_id = (_text(headers.get("message-id")) or "").strip("<>") or None
    event = ProviderEvent(
        key=f"mailgun:{event_id}",
        type=tact_type,
        at=_unix_time(data.get("timestamp")),
        touchpoint_id=_int(variables.get("touchpoint_id")),
        message_id=message_id,
        address=_text(data.get("recipient")),
        properties=properties,
    )
    return [event], 0


_POSTMARK_TIMES = {
    "Delivery": "DeliveredAt",
    "Bounce": "BouncedAt",
    "SpamComplaint": "BouncedAt",
    "Open": "ReceivedAt",
    "Click": "ReceivedAt",
    "SubscriptionChange": "ChangedAt",
}


def postmark_events(payload: Any) -> tuple[list[ProviderEvent], int]:
    """The Tact event in a Postmark webhook (at most one), and how many were ignored."""
    if not isinstance(payload, dict):
        raise HTTPException(400, "expected a JSON object")
    record_type = str(payload.get("RecordType", ""))
    properties: dict[str, Any] = {"provider": "postmark", "provider_event": record_type}
    if record_type == "Delivery":
        tact_type = "delivered"
    elif record_type == "Open":
        tact_type = "opened"
    elif record_type == "Click":
        tact_type, properties["url"] = "clicked", _text(payload.get("OriginalLink"))
    elif record_type == "Bounce":
        hard = payload.get("Type") == "HardBounce" or payload.get("Inactive") is True
        tact_type = "bounced"
        properties.update(type="hard" if hard else "soft", reason=_text(payload.get("Type")))
    elif record_type == "SpamComplaint":
        tact_type = "complained"
    elif (
        record_type == "SubscriptionChange"
        and payload.get("SuppressSending") is True
        and payload.get("SuppressionReason") == "ManualSuppression"
    ):
        tact_type = "unsubscribed"  # bounces and complaints arrive as their own record types
    else:
        return [], 1
    message_id = _text(payload.get("MessageID"))
    time_text = _text(payload.get(_POSTMARK_TIMES[record_type])) or ""
    metadata = _object(payload.get("Metadata"))
    event = ProviderEvent(
        key=f"postmark:{record_type}:{message_id}:{time_text}",
        type=tact_type,
        at=_iso_time(time_text),
        touchpoint_id=_int(metadata.get("touchpoint_id")),
        message_id=message_id,
        address=_text(payload.get("Recipient")) or _text(payload.get("Email")),
        properties=properties,
    )
    return [event], 0


def twilio_status_event(form: Mapping[str, str], query: Mapping[str, str]) -> ProviderEvent | None:
    """The Tact event a Twilio status callback stands for, if any (delivered or failed)."""
    status = form.get("MessageStatus") or form.get("SmsStatus") or ""
    message_id = form.get("MessageSid") or form.get("SmsSid")
    if status not in ("delivered", "undelivered", "failed") or not message_id:
        return None
    if query.get("idempotency_key", "").startswith(REPLY_KEY_PREFIX):
        return None  # our answer to a keyword: no touch to learn from
    properties: dict[str, Any] = {"provider": "twilio", "provider_event": status}
    if status != "delivered":
        error_code = form.get("ErrorCode") or ""
        properties.update(type="hard" if error_code in HARD_SMS_ERRORS else "soft", reason=error_code)
    return ProviderEvent(
        key=f"twilio:{message_id}:{status}",
        type="delivered" if status == "delivered" else "bounced",
        touchpoint_id=_int(query.get("touchpoint_id")),
        message_id=message_id,
        address=form.get("To"),
        properties=properties,
    )


# -- verification ------------------------------------------------------------------------------


def _configured(engine: Engine, provider: str, *keys: str) -> list[tuple[str, list[str]]]:
    """The channels with every secret in ``keys`` for ``provider``: (channel, secrets).

    Any channel whose table holds the provider's webhook keys qualifies, whatever its adapter
    (events can come from a provider that another adapter, or another Tact process, sends
    through); Twilio's secret is its adapter's own auth token, so only Twilio channels count.
    """
    found: list[tuple[str, list[str]]] = []
    for channel, adapter in engine.adapter_names.items():
        if provider == "twilio" and adapter != provider:
            continue
        settings = engine.channel_settings.get(channel, {})
        secrets = [_secret(settings, key) for key in keys]
        if all(secrets):
            found.append((channel, [s for s in secrets if s]))
    if not found:
        raise HTTPException(404, f"{provider} webhooks are not configured")
    return found


def _secret(settings: Mapping[str, Any], key: str) -> str | None:
    value = settings.get(key)
    if value is None and settings.get(f"{key}_file"):
        try:
            value = Path(settings[f"{key}_file"]).read_text(encoding="utf-8").strip()
        except OSError as exc:
            log.error("webhook_secret_unreadable", key=f"{key}_file", error=exc.strerror)
            return None
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return str(value) if value else None


def _verified(provider: str, candidates: Iterable[tuple[str, list[str]]], check: Callable[[list[str]], None]) -> str:
    """The channel whose secrets verify the request; else answer 401 or 403."""
    rejection: WebhookRejected | None = None
    for channel, secrets in candidates:
        try:
            check(secrets)
        except WebhookRejected as exc:
            rejection = exc
            continue
        return channel
    assert rejection is not None
    log.warning("webhook_rejected", provider=provider, status=rejection.status_code, reason=rejection.reason)
    headers = {"WWW-Authenticate": 'Basic realm="tact"'} if provider == "postmark" else None
    raise HTTPException(rejection.status_code, rejection.reason, headers=headers)


def _public_key(state: ApiState, text: str) -> ec.EllipticCurvePublicKey:
    keys: dict[str, ec.EllipticCurvePublicKey] = state.extra.setdefault("sendgrid_public_keys", {})
    if text not in keys:
        try:
            keys[text] = load_public_key(text)
        except ValueError as exc:
            log.error("webhook_key_unusable", provider="sendgrid", key="webhook_public_key", error=str(exc))
            raise HTTPException(500, "the configured webhook_public_key is not usable") from None
    return keys[text]


# -- recording ---------------------------------------------------------------------------------


async def _record(
    engine: Engine, channel: str, events: list[ProviderEvent], ignored: int, now: datetime
) -> WebhookCounts:
    counts = await blocking(record_provider_events, engine, channel, events, now)
    counts.received += ignored
    counts.ignored += ignored
    return counts


def record_provider_events(
    engine: Engine, channel: str, events: Sequence[ProviderEvent], now: datetime
) -> WebhookCounts:
    """Attribute provider events to recipients, store them, and apply those that change consent
    or suppression (blocking: run it with :func:`scheduler.api.deps.blocking`)."""
    return _record_events(engine, channel, events, now)[0]


def _record_events(
    engine: Engine, channel: str, events: Sequence[ProviderEvent], now: datetime
) -> tuple[WebhookCounts, list[Row]]:
    counts = WebhookCounts(received=len(events))
    with engine.store.engine.connect() as connection:
        targets = _targets(connection, events)
    records: list[Row] = []
    for event, found in zip(events, targets, strict=True):
        if not found:
            counts.unattributed += 1
        records.extend(_event_record(event, target, channel, now) for target in found)
    if records:
        report = record_and_apply(engine, records)
        counts.recorded, counts.duplicates = report.accepted, report.duplicates
        counts.unattributed += len(report.rejected)
    return counts, records


def record_and_apply(engine: Engine, records: Sequence[Row]) -> IngestReport:
    """Store events; when any of them changes consent or suppression, apply the queued events now
    so the change holds before the caller answers."""
    report = engine.record_events(records)
    for _index, reason, message in report.rejected:
        log.info("webhook_event_rejected", reason=reason, message=message)
    if any(record["type"] in IMMEDIATE for record in records):
        engine.journeys.apply_events(engine.clock())
    return report


def _event_record(event: ProviderEvent, target: _Target, channel: str, now: datetime) -> Row:
    event_id = f"{event.key}:{target.recipient_id}" if target.by_address else event.key
    if len(event_id) > MAX_EVENT_ID:
        event_id = "sha256:" + hashlib.sha256(event_id.encode()).hexdigest()
    record: Row = {
        "id": event_id,
        "recipient_id": target.recipient_id,
        "type": event.type,
        "at": min(event.at or now, now),  # a provider clock ahead of ours must not hold it back
        "channel": target.channel or channel,
        "properties": event.properties,
    }
    if target.touchpoint_id is not None:
        record["touchpoint_id"] = str(target.touchpoint_id)
    if event.message_id:
        record["message_id"] = event.message_id
    return record


def _targets(connection: sa.Connection, events: Sequence[ProviderEvent]) -> list[list[_Target]]:
    """Each event's recipients: by touchpoint id, else provider message id, else address."""
    by_id = {row.id: row for row in _touchpoints(connection, touchpoint_t.c.id, {e.touchpoint_id for e in events})}
    rest = [e for e in events if e.touchpoint_id not in by_id]
    by_message = {
        row.provider_message_id: row
        for row in _touchpoints(connection, touchpoint_t.c.provider_message_id, {e.message_id for e in rest})
    }
    addresses = {e.address for e in rest if e.address and e.message_id not in by_message}
    by_address = _recipients_at(connection, addresses)
    found: list[list[_Target]] = []
    for event in events:
        row = by_id.get(event.touchpoint_id) or by_message.get(event.message_id)
        if row is not None:
            found.append([_Target(row.recipient_id, row.id, row.channel, by_address=False)])
        else:
            recipients = by_address.get(_address_key(event.address or ""), [])
            found.append([_Target(rid, None, None, by_address=True) for rid in recipients])
    return found


def _opted_out_at(engine: Engine, phone: str, channel: str) -> bool:
    """Whether a recipient with this phone number has opted out of ``channel``."""
    query = (
        sa.select(consent_t.c.recipient_id)
        .join(recipient_t, recipient_t.c.id == consent_t.c.recipient_id)
        .where(recipient_t.c.phone == phone, consent_t.c.channel == channel, consent_t.c.status == "opted_out")
        .limit(1)
    )
    with engine.store.engine.connect() as connection:
        return connection.execute(query).first() is not None


def _touchpoints(connection: sa.Connection, column: Any, values: Iterable[Any]) -> list[Any]:
    wanted = [v for v in values if v is not None]
    rows: list[Any] = []
    for start in range(0, len(wanted), 1000):
        query = sa.select(
            touchpoint_t.c.id, touchpoint_t.c.recipient_id, touchpoint_t.c.channel, touchpoint_t.c.provider_message_id
        ).where(column.in_(wanted[start : start + 1000]))
        rows.extend(connection.execute(query))
    return rows


def _recipients_at(connection: sa.Connection, addresses: Iterable[str]) -> dict[str, list[str]]:
    """Recipient ids by address (emails compared without case, phones as E.164)."""
    keys = {_address_key(a) for a in addresses}
    emails = [k for k in keys if "@" in k]
    phones = [k for k in keys if "@" not in k]
    if not keys:
        return {}
    email = sa.func.lower(recipient_t.c.email)
    query = (
        sa.select(recipient_t.c.id, email, recipient_t.c.phone)
        .where(sa.or_(email.in_(emails), recipient_t.c.phone.in_(phones)))
        .order_by(recipient_t.c.id)
    )
    found: dict[str, list[str]] = {}
    for rid, mail, phone in connection.execute(query):
        for key in (mail, phone):
            if key in keys and len(found.setdefault(key, [])) < MAX_ADDRESS_MATCHES:
                found[key].append(rid)
    return found


# -- small parsers -----------------------------------------------------------------------------


def _address_key(address: str) -> str:
    text = address.strip()
    return text.lower() if "@" in text else text


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise HTTPException(400, "the body is not JSON") from None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text or None


def _int(value: Any) -> int | None:
    """A touchpoint id as the provider echoed it back; None unless a plausible row id."""
    try:
        number = int(str(value).strip()) if value is not None else 0
    except ValueError:
        return None
    return number if 0 < number < 2**63 else None


def _unix_time(value: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), UTC) if value is not None else None
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def _iso_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
