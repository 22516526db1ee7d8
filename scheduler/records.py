"""Inbound recipient and event records: validation and normalisation.

Every way a record enters Tact (CSV and JSON-lines imports, the Python API, the HTTP API)
goes through `parse_recipient` or `parse_event`. Two shapes are accepted, and may be mixed:

- nested, as JSON sends it: ``{"id": "r1", "consent": {"sms": "opted_in"}, "plan": "trial"}``;
- flat, as CSV sends it: every cell a string, dotted columns ``consent.sms``,
  ``attributes.plan`` or ``properties.total``.

Top-level keys that name no field land in ``attributes`` (recipients) or ``properties``
(events). A top-level value that is ``None`` or blank counts as not given, so empty CSV cells
disappear; ``model_fields_set`` on the returned record names the fields that were given, which
lets an upsert leave the others alone. Invalid input raises `RecordError` with a code from
`REASONS`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache
from typing import Any, Literal
from zoneinfo import available_timezones

import phonenumbers
from pydantic import BaseModel, ConfigDict

from scheduler.errors import RecordError

ConsentStatus = Literal["opted_in", "opted_out", "unknown"]

REASONS = (
    "missing_field",
    "invalid_email",
    "invalid_phone",
    "invalid_timezone",
    "invalid_value",
    "invalid_consent",
    "invalid_timestamp",
    "invalid_record",
)
MAX_ID_LENGTH = 255
MAX_EMAIL_LENGTH = 254
_SHOWN_CHARS = 60

_CONSENT_WORDS: dict[str, ConsentStatus] = {
    "opted_in": "opted_in",
    "optedin": "opted_in",
    "true": "opted_in",
    "yes": "opted_in",
    "1": "opted_in",
    "opted_out": "opted_out",
    "optedout": "opted_out",
    "false": "opted_out",
    "no": "opted_out",
    "0": "opted_out",
    "unknown": "unknown",
}
_NAME = re.compile(r"[a-z][a-z0-9_]*")
_LOCALE = re.compile(r"[A-Za-z]{2,8}(?:[_-][A-Za-z0-9]{1,8})*")
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[\s\-_]+")


class RecipientRecord(BaseModel):
    """A recipient as a caller described it, validated and normalised."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    email: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None
    value: float = 1.0
    consent: dict[str, ConsentStatus] = {}
    attributes: dict[str, Any] = {}


class EventRecord(BaseModel):
    """An event as a caller described it, validated and normalised (``at`` in UTC; ``None``
    when the caller gave no time: the receiver stamps it with the arrival time)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    recipient_id: str
    type: str
    at: datetime | None = None
    channel: str | None = None
    touchpoint_id: str | None = None
    message_id: str | None = None
    properties: dict[str, Any] = {}


_RECIPIENT_FIELDS = frozenset(RecipientRecord.model_fields)
_EVENT_FIELDS = frozenset(EventRecord.model_fields)


def parse_recipient(raw: Mapping[str, Any], *, default_region: str | None = None) -> RecipientRecord:
    """Validate and normalise one recipient; raise `RecordError` when it is invalid.

    ``default_region`` (e.g. ``"US"``) is how phone numbers written without ``+`` are read;
    without it such numbers are invalid.
    """
    fields, flat = _sort_keys(raw, _RECIPIENT_FIELDS, ("consent", "attributes"), "attributes")
    values: dict[str, Any] = {"id": _identifier(_required(fields, "id"), "id")}
    if "email" in fields:
        values["email"] = _email(fields["email"])
    if "phone" in fields:
        values["phone"] = _phone(fields["phone"], default_region)
    if "timezone" in fields:
        values["timezone"] = _timezone(fields["timezone"])
    if "locale" in fields:
        values["locale"] = _locale(fields["locale"])
    if "value" in fields:
        values["value"] = _value(fields["value"])
    consent = _consent(_merged(fields.get("consent"), flat["consent"], "consent"))
    if consent:
        values["consent"] = consent
    attributes = _merged(fields.get("attributes"), flat["attributes"], "attributes")
    if attributes:
        values["attributes"] = _json_value(attributes, "attributes")
    return RecipientRecord(**values)


def parse_event(raw: Mapping[str, Any]) -> EventRecord:
    """Validate and normalise one event; raise `RecordError` when it is invalid."""
    fields, flat = _sort_keys(raw, _EVENT_FIELDS, ("properties",), "properties")
    values: dict[str, Any] = {
        "id": _identifier(_required(fields, "id"), "id"),
        "recipient_id": _identifier(_required(fields, "recipient_id"), "recipient_id"),
        "type": _event_type(_required(fields, "type")),
    }
    if "at" in fields:
        values["at"] = _timestamp(fields["at"])
    if "channel" in fields:
        values["channel"] = _channel(fields["channel"], "channel", "invalid_record")
    for name in ("touchpoint_id", "message_id"):
        if name in fields:
            values[name] = _identifier(fields[name], name)
    properties = _merged(fields.get("properties"), flat["properties"], "properties")
    if properties:
        values["properties"] = _json_value(properties, "properties")
    return EventRecord(**values)


def _show(value: object) -> str:
    """Quote a caller's value for a message, cut short so a huge cell cannot flood a report."""
    text = repr(value)
    if len(text) > _SHOWN_CHARS:
        return text[: _SHOWN_CHARS - 1] + "…"
    return text


def _not_given(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _sort_keys(
    raw: Mapping[str, Any], known: frozenset[str], prefixes: tuple[str, ...], rest: str
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Split a raw record into known fields and flat (dotted or unknown) section entries."""
    if not isinstance(raw, Mapping):
        raise RecordError("invalid_record", f"a record must be an object, got {type(raw).__name__}")
    fields: dict[str, Any] = {}
    flat: dict[str, dict[str, Any]] = {prefix: {} for prefix in prefixes}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise RecordError("invalid_record", f"field names must be text, got {_show(key)}")
        name = key.strip()
        if _not_given(value):
            continue
        if not name:
            raise RecordError("invalid_record", f"a field with no name holds {_show(value)}")
        lowered = name.lower()
        if lowered in known:
            if lowered in fields:
                raise RecordError("invalid_record", f"field {lowered!r} is given twice")
            fields[lowered] = value
            continue
        prefix, dot, inner = name.partition(".")
        if dot and prefix.lower() in flat and inner.strip():
            flat[prefix.lower()][inner.strip()] = value
        else:
            flat[rest][name] = value
    return fields, flat


def _required(fields: Mapping[str, Any], name: str) -> Any:
    if name not in fields:
        raise RecordError("missing_field", f"{name} is required")
    return fields[name]


def _merged(nested: object, flat: dict[str, Any], field: str) -> dict[str, Any]:
    """Join a nested object with its flat entries; flat entries win on the same key."""
    if nested is None:
        return dict(flat)
    if not isinstance(nested, Mapping):
        reason = "invalid_consent" if field == "consent" else "invalid_record"
        raise RecordError(reason, f"{field} must be an object, got {_show(nested)}")
    return {**nested, **flat}


def _identifier(value: object, field: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RecordError("invalid_record", f"{field} must be text, got {_show(value)}")
    text = str(value).strip()
    if len(text) > MAX_ID_LENGTH:
        raise RecordError("invalid_record", f"{field} is longer than {MAX_ID_LENGTH} characters: {_show(text)}")
    return text


def _email(value: object) -> str:
    problem = f"email {_show(value)} is not an email address"
    if not isinstance(value, str):
        raise RecordError("invalid_email", problem)
    text = value.strip()
    local, at, domain = text.partition("@")
    labels = domain.split(".")
    if (
        not at
        or not local
        or "@" in domain
        or any(character.isspace() for character in text)
        or len(labels) < 2
        or not all(labels)
        or len(text) > MAX_EMAIL_LENGTH
    ):
        raise RecordError("invalid_email", problem)
    return f"{local}@{domain.lower()}"


def _phone(value: object, default_region: str | None) -> str:
    if not isinstance(value, str):
        raise RecordError("invalid_phone", f"phone must be text, got {_show(value)}")
    hint = "" if default_region else "; write it in international form, e.g. +14155550100"
    try:
        number = phonenumbers.parse(value, default_region)
    except phonenumbers.NumberParseException:
        raise RecordError("invalid_phone", f"phone {_show(value)} is not a phone number{hint}") from None
    if not phonenumbers.is_valid_number(number):
        raise RecordError("invalid_phone", f"phone {_show(value)} is not a valid number{hint}")
    formatted: str = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return formatted


@cache
def _known_time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def _timezone(value: object) -> str:
    name = value.strip() if isinstance(value, str) else ""
    if name not in _known_time_zones():
        raise RecordError(
            "invalid_timezone",
            f"timezone {_show(value)} is not an IANA time zone name such as 'Europe/Paris'",
        )
    return name


def _locale(value: object) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not _LOCALE.fullmatch(text):
        raise RecordError("invalid_record", f"locale {_show(value)} is not a language tag such as 'en-US'")
    return text


def _value(value: object) -> float:
    problem = f"value {_show(value)} is not a number of zero or more"
    number: float
    if isinstance(value, bool):
        raise RecordError("invalid_value", problem)
    try:
        if isinstance(value, str):
            number = float(value.strip())
        elif isinstance(value, int | float):
            number = float(value)
        else:
            raise RecordError("invalid_value", problem)
    except (ValueError, OverflowError):
        raise RecordError("invalid_value", problem) from None
    if not math.isfinite(number) or number < 0:
        raise RecordError("invalid_value", problem)
    return number


def _channel(value: object, field: str, reason: str) -> str:
    text = value.strip().lower() if isinstance(value, str) else ""
    if not _NAME.fullmatch(text):
        raise RecordError(reason, f"{field} {_show(value)} is not a channel name such as 'email' or 'sms'")
    return text


def _consent(entries: Mapping[str, Any]) -> dict[str, ConsentStatus]:
    consent: dict[str, ConsentStatus] = {}
    for channel, status in entries.items():
        if _not_given(status):
            continue
        name = _channel(channel, "consent channel", "invalid_consent")
        consent[name] = _consent_status(status, name)
    return consent


def _consent_status(value: object, channel: str) -> ConsentStatus:
    if isinstance(value, bool):
        return "opted_in" if value else "opted_out"
    if isinstance(value, str):
        word = _SEPARATORS.sub("_", value.strip().lower())
        if word in _CONSENT_WORDS:
            return _CONSENT_WORDS[word]
    raise RecordError(
        "invalid_consent",
        f"consent.{channel} {_show(value)} is not one of opted_in, opted_out, unknown",
    )


def _event_type(value: object) -> str:
    text = ""
    if isinstance(value, str):
        text = _SEPARATORS.sub("_", _CAMEL_BOUNDARY.sub("_", value.strip())).lower()
    if not _NAME.fullmatch(text) or len(text) > MAX_ID_LENGTH:
        raise RecordError("invalid_record", f"type {_show(value)} is not an event type such as 'signed_up'")
    return text


def _timestamp(value: object) -> datetime:
    example = "e.g. 2026-01-05T10:00:00Z or 2026-01-05T11:00:00+01:00"
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise RecordError(
                "invalid_timestamp", f"at {_show(value)} is not an ISO 8601 timestamp ({example})"
            ) from None
    else:
        raise RecordError("invalid_timestamp", f"at must be a timestamp, got {_show(value)}")
    if moment.utcoffset() is None:
        raise RecordError("invalid_timestamp", f"at {_show(value)} has no UTC offset ({example})")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise RecordError("invalid_timestamp", f"at {_show(value)} is out of range") from None


def _json_value(value: object, where: str) -> Any:
    """Copy a value as plain JSON data (dicts, lists, text, numbers), or raise."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RecordError("invalid_record", f"{where} holds {value}, which JSON cannot store")
        return value
    if isinstance(value, Mapping):
        copied: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise RecordError("invalid_record", f"{where} has a non-text key {_show(key)}")
            copied[key] = _json_value(item, f"{where}.{key}")
        return copied
    if isinstance(value, list | tuple):
        return [_json_value(item, f"{where}[{index}]") for index, item in enumerate(value)]
    raise RecordError("invalid_record", f"{where} holds a {type(value).__name__}, which JSON cannot store")
