"""Tests for the validation and normalisation of inbound records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from scheduler.errors import RecordError
from scheduler.readers import read_rows
from scheduler.records import REASONS, EventRecord, parse_event, parse_recipient

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def reason_of(raw: dict[str, Any], *, event: bool = False) -> str:
    """Parse a record that must fail and return the reason code."""
    with pytest.raises(RecordError) as caught:
        if event:
            parse_event(raw)
        else:
            parse_recipient(raw)
    return caught.value.reason


def event(**fields: Any) -> dict[str, Any]:
    """A valid raw event with some fields replaced."""
    raw: dict[str, Any] = {
        "id": "e1",
        "recipient_id": "r1",
        "type": "signed_up",
        "at": "2026-01-05T10:00:00Z",
    }
    raw.update(fields)
    return raw


def test_minimal_recipient_takes_defaults() -> None:
    """A recipient with only an id gets value 1 and empty consent and attributes."""
    record = parse_recipient({"id": " r1 "})
    assert record.id == "r1"
    assert record.email is None
    assert record.value == 1.0
    assert record.consent == {}
    assert record.attributes == {}
    assert record.model_fields_set == {"id"}


def test_given_fields_are_reported() -> None:
    """model_fields_set names exactly the fields the caller gave."""
    record = parse_recipient({"id": "r1", "email": "a@example.com", "phone": "", "plan": "pro"})
    assert record.model_fields_set == {"id", "email", "attributes"}


RECIPIENT_CASES: list[tuple[dict[str, Any], str]] = [
    ({"email": "a@example.com"}, "missing_field"),
    ({"id": ""}, "missing_field"),
    ({"id": "r1", "email": "not-an-address"}, "invalid_email"),
    ({"id": "r1", "phone": "12"}, "invalid_phone"),
    ({"id": "r1", "timezone": "Mars/Olympus_Mons"}, "invalid_timezone"),
    ({"id": "r1", "value": "-1"}, "invalid_value"),
    ({"id": "r1", "consent": {"email": "maybe"}}, "invalid_consent"),
    ({"id": "r1", "locale": "english please"}, "invalid_record"),
]
EVENT_CASES: list[tuple[dict[str, Any], str]] = [
    ({"id": "e1", "type": "signed_up", "at": "2026-01-05T10:00:00Z"}, "missing_field"),
    (event(at="2026-01-05T10:00:00"), "invalid_timestamp"),
    (event(at="yesterday"), "invalid_timestamp"),
    (event(type="signed up!"), "invalid_record"),
]


@pytest.mark.parametrize(("raw", "reason"), RECIPIENT_CASES)
def test_recipient_reason_codes(raw: dict[str, Any], reason: str) -> None:
    """Each kind of invalid recipient raises RecordError with its reason code."""
    assert reason_of(raw) == reason


@pytest.mark.parametrize(("raw", "reason"), EVENT_CASES)
def test_event_reason_codes(raw: dict[str, Any], reason: str) -> None:
    """Each kind of invalid event raises RecordError with its reason code."""
    assert reason_of(raw, event=True) == reason


def test_every_reason_code_is_exercised() -> None:
    """The reason-code cases above cover every code the module declares."""
    covered = {reason for _, reason in RECIPIENT_CASES + EVENT_CASES}
    assert covered == set(REASONS)


def test_message_names_field_and_cuts_long_values() -> None:
    """An error message names the field and quotes at most about 60 characters of the value."""
    with pytest.raises(RecordError) as caught:
        parse_recipient({"id": "r1", "email": "x" * 500})
    assert "email" in caught.value.message
    assert len(caught.value.message) < 120


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("Ana.Diaz@Example.COM", "Ana.Diaz@example.com"),
        ("  bo@mail.example.org ", "bo@mail.example.org"),
    ],
)
def test_email_domain_is_lower_cased(given: str, stored: str) -> None:
    """Emails are stripped and their domain lower-cased; the local part is kept."""
    assert parse_recipient({"id": "r1", "email": given}).email == stored


@pytest.mark.parametrize("bad", ["a@@example.com", "a b@example.com", "a@localhost", "@example.com", "a@example..com"])
def test_malformed_emails_are_rejected(bad: str) -> None:
    """Emails with two @, spaces, no dot in the domain or empty parts are invalid."""
    assert reason_of({"id": "r1", "email": bad}) == "invalid_email"


def test_phone_is_normalised_to_e164() -> None:
    """A formatted international number is stored in E.164."""
    record = parse_recipient({"id": "r1", "phone": "+1 (415) 555-0100"})
    assert record.phone == "+14155550100"


def test_phone_without_plus_needs_a_default_region() -> None:
    """A national number is invalid without a default region and accepted with one."""
    assert reason_of({"id": "r1", "phone": "(415) 555-0100"}) == "invalid_phone"
    record = parse_recipient({"id": "r1", "phone": "(415) 555-0100"}, default_region="US")
    assert record.phone == "+14155550100"


def test_phone_that_is_not_text_is_rejected() -> None:
    """A phone given as a JSON number is invalid, since its + is lost."""
    assert reason_of({"id": "r1", "phone": 14155550100}) == "invalid_phone"


def test_timezone_must_be_an_iana_name() -> None:
    """IANA names pass; wrong case and file-system tricks are invalid."""
    assert parse_recipient({"id": "r1", "timezone": "Asia/Tokyo"}).timezone == "Asia/Tokyo"
    for bad in ("europe/paris", "../etc/passwd", "Europe", 3):
        assert reason_of({"id": "r1", "timezone": bad}) == "invalid_timezone"


@pytest.mark.parametrize(("given", "stored"), [("2.5", 2.5), (3, 3.0), ("0", 0.0), (0.25, 0.25)])
def test_value_is_parsed_as_a_number(given: object, stored: float) -> None:
    """Value accepts numbers and numeric text and stores a float."""
    assert parse_recipient({"id": "r1", "value": given}).value == stored


@pytest.mark.parametrize("bad", ["abc", "1,5", True, "nan", "inf", -0.5, [1]])
def test_bad_values_are_rejected(bad: object) -> None:
    """Value rejects text that is no number, booleans, non-finite and negative numbers."""
    assert reason_of({"id": "r1", "value": bad}) == "invalid_value"


def test_consent_accepts_booleans_and_case_insensitive_words() -> None:
    """Consent maps booleans and words in any case to the three statuses."""
    record = parse_recipient(
        {
            "id": "r1",
            "consent": {"email": True, "sms": False, "push": "UNKNOWN", "Voice": "Opted-In"},
        }
    )
    assert record.consent == {
        "email": "opted_in",
        "sms": "opted_out",
        "push": "unknown",
        "voice": "opted_in",
    }


def test_consent_from_csv_columns() -> None:
    """Dotted consent columns fill consent; their text booleans and blank cells work."""
    record = parse_recipient({"id": "r1", "consent.email": "true", "consent.sms": "", "x": "1"})
    assert record.consent == {"email": "opted_in"}
    assert record.attributes == {"x": "1"}


def test_consent_that_is_not_an_object_is_rejected() -> None:
    """A consent field holding a plain string is invalid_consent."""
    assert reason_of({"id": "r1", "consent": "opted_in"}) == "invalid_consent"


def test_consent_channel_must_be_a_name() -> None:
    """A consent channel with spaces or punctuation is invalid_consent."""
    assert reason_of({"id": "r1", "consent": {"e mail": "opted_in"}}) == "invalid_consent"


def test_unknown_recipient_fields_land_in_attributes() -> None:
    """Unknown keys, attributes.<name> columns and an attributes object are all merged."""
    record = parse_recipient(
        {
            "id": "r1",
            "first_name": "Ada",
            "attributes.plan": "trial",
            "attributes": {"tags": ["beta"], "plan": "pro"},
            "seats": 12,
        }
    )
    assert record.attributes == {
        "first_name": "Ada",
        "plan": "trial",
        "tags": ["beta"],
        "seats": 12,
    }


def test_csv_attribute_text_stays_text() -> None:
    """Numeric-looking CSV attributes stay strings while value becomes a float."""
    record = parse_recipient({"id": "r1", "value": "7", "zip": "02134"})
    assert record.value == 7.0
    assert record.attributes == {"zip": "02134"}


def test_known_field_names_match_case_insensitively() -> None:
    """Headers such as Email and ' Phone ' fill the known fields."""
    record = parse_recipient({"ID": "r1", "Email": "a@example.com", " Phone ": "+14155550100"})
    assert (record.id, record.email, record.phone) == ("r1", "a@example.com", "+14155550100")


def test_a_field_given_twice_is_rejected() -> None:
    """Two keys naming the same field are invalid_record."""
    assert reason_of({"id": "r1", "email": "a@example.com", "EMAIL": "b@example.com"}) == ("invalid_record")


def test_attributes_must_be_json_data() -> None:
    """An attribute that JSON cannot store is invalid_record."""
    assert reason_of({"id": "r1", "born": datetime(2000, 1, 1)}) == "invalid_record"
    assert reason_of({"id": "r1", "score": float("nan")}) == "invalid_record"


def test_non_mapping_record_is_rejected() -> None:
    """A record that is not an object is invalid_record."""
    with pytest.raises(RecordError) as caught:
        parse_recipient(["id", "r1"])  # type: ignore[arg-type]
    assert caught.value.reason == "invalid_record"


def test_numeric_ids_become_text_and_long_ids_fail() -> None:
    """An integer id is stored as text; an id over 255 characters is invalid_record."""
    assert parse_recipient({"id": 42}).id == "42"
    assert reason_of({"id": "x" * 256}) == "invalid_record"
    assert reason_of({"id": True}) == "invalid_record"


def test_event_parses_and_keeps_optional_fields() -> None:
    """A complete event keeps its channel, touchpoint and message ids."""
    record = parse_event(event(channel=" SMS ", touchpoint_id="tp-9", message_id="SM123", type="replied"))
    assert record == EventRecord(
        id="e1",
        recipient_id="r1",
        type="replied",
        at=datetime(2026, 1, 5, 10, tzinfo=UTC),
        channel="sms",
        touchpoint_id="tp-9",
        message_id="SM123",
    )


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2026-01-05T10:00:00Z", datetime(2026, 1, 5, 10, tzinfo=UTC)),
        ("2026-01-05T12:00:00+02:00", datetime(2026, 1, 5, 10, tzinfo=UTC)),
        ("2026-01-05T05:30:00-04:30", datetime(2026, 1, 5, 10, tzinfo=UTC)),
    ],
)
def test_event_time_is_converted_to_utc(given: str, expected: datetime) -> None:
    """Timestamps with Z or an offset are stored in UTC."""
    moment = parse_event(event(at=given)).at
    assert moment == expected
    assert moment.utcoffset() == timedelta(0)


def test_event_time_accepts_aware_datetimes() -> None:
    """A timezone-aware datetime from the Python API is converted to UTC."""
    paris_winter = timezone(timedelta(hours=1))
    moment = parse_event(event(at=datetime(2026, 1, 5, 11, tzinfo=paris_winter))).at
    assert moment == datetime(2026, 1, 5, 10, tzinfo=UTC)
    assert moment.tzinfo == UTC


@pytest.mark.parametrize("naive", ["2026-01-05T10:00:00", "2026-01-05", datetime(2026, 1, 5)])
def test_naive_event_time_is_rejected(naive: object) -> None:
    """A timestamp without an offset is invalid_timestamp."""
    assert reason_of(event(at=naive), event=True) == "invalid_timestamp"


@pytest.mark.parametrize(
    ("given", "stored"),
    [("Signed Up", "signed_up"), ("ORDER-PLACED", "order_placed"), ("orderPlaced", "order_placed")],
)
def test_event_type_is_normalised_to_snake_case(given: str, stored: str) -> None:
    """Event types are lower-cased with spaces, hyphens and camel case turned into _."""
    assert parse_event(event(type=given)).type == stored


def test_unknown_event_fields_land_in_properties() -> None:
    """Unknown keys, properties.<name> columns and a properties object are merged."""
    record = parse_event(event(total=12.5, **{"properties.currency": "EUR", "properties": {"items": 2}}))
    assert record.properties == {"total": 12.5, "currency": "EUR", "items": 2}


def test_properties_that_are_not_an_object_are_rejected() -> None:
    """A properties field holding a list is invalid_record."""
    assert reason_of(event(properties=[1, 2]), event=True) == "invalid_record"


def test_event_channel_must_be_a_name() -> None:
    """An event channel that is not a simple name is invalid_record."""
    assert reason_of(event(channel="e-mail!"), event=True) == "invalid_record"


def test_shipped_example_recipients_parse() -> None:
    """Every row of examples/recipients.csv is a valid recipient with a first name."""
    rows = list(read_rows(EXAMPLES / "recipients.csv"))
    assert rows
    records = [parse_recipient(row.data or {}) for row in rows if row.error is None]
    assert len(records) == len(rows)
    assert all(record.attributes.get("first_name") for record in records)
    assert {record.attributes["plan"] for record in records} >= {"trial", "pro", "team"}
    assert any(record.consent.get("sms") == "opted_in" for record in records)


def test_shipped_example_events_parse() -> None:
    """Every line of examples/events.jsonl is a valid event for an example recipient."""
    recipients = {
        parse_recipient(row.data or {}).id: parse_recipient(row.data or {})
        for row in read_rows(EXAMPLES / "recipients.csv")
    }
    rows = list(read_rows(EXAMPLES / "events.jsonl"))
    assert all(row.error is None for row in rows)
    events = [parse_event(row.data or {}) for row in rows]
    assert all(item.recipient_id in recipients for item in events)
    trial_ids = {rid for rid, rec in recipients.items() if rec.attributes["plan"] == "trial"}
    signed_up = {item.recipient_id for item in events if item.type == "signed_up"}
    assert signed_up == trial_ids
    assert any(item.type == "order_placed" for item in events)


def test_event_without_a_time_is_stamped_by_the_receiver() -> None:
    """An event with no `at` parses with at=None (the engine stamps it with its arrival time)."""
    event = parse_event({"id": "e1", "recipient_id": "r1", "type": "signed_up"})
    assert event.at is None
