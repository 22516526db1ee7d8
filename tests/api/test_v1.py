"""The /v1 API over HTTP against a real uvicorn server: auth, batches, events, enrollment,
recipient profiles and the paginated send log, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from scheduler import Engine
from scheduler.api.v1 import MAX_BATCH, MAX_PAGE
from tests.api.conftest import LiveServer

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

ROUTES: list[tuple[str, str, Any]] = [
    ("POST", "/v1/recipients", [{"id": "r1"}]),
    ("POST", "/v1/events", [{"id": "e1", "recipient_id": "r1", "type": "signed_up"}]),
    ("POST", "/v1/enrollments", {"campaign_id": "welcome", "recipient_ids": ["r1"]}),
    ("GET", "/v1/recipients/r1", None),
    ("GET", "/v1/send-log", None),
]


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def populate(client: httpx.Client, engine: Engine) -> None:
    """ana (SMS opt-in) and ben (email only) sign up and ana orders, just before T0; ticks at T0
    and a day later give five decisions: three sends at T0, then ana's SMS sent and ben's dropped."""
    recipients = [
        {"id": "ana", "email": "ana@example.com", "phone": "+33612345678", "consent": {"sms": "opted_in"}},
        {"id": "ben", "email": "ben@example.com"},
    ]
    assert client.post("/v1/recipients", json=recipients).json()["accepted"] == 2
    before = iso(T0 - timedelta(minutes=1))
    events = [
        {"id": "signup-ana", "recipient_id": "ana", "type": "signed_up", "at": before},
        {"id": "signup-ben", "recipient_id": "ben", "type": "signed_up", "at": before},
        {"id": "order-ana", "recipient_id": "ana", "type": "order_placed", "at": before},
    ]
    assert client.post("/v1/events", json=events).json()["accepted"] == 3
    engine.tick(at=T0)
    engine.tick(at=T0 + timedelta(days=1))


def log_page(client: httpx.Client, **params: Any) -> dict[str, Any]:
    response = client.get("/v1/send-log", params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def summary(page: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return [(i["recipient_id"], i["step_id"], i["decision"], i["reason"]) for i in page["items"]]


# -- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES])
def test_a_call_without_a_token_is_refused_with_a_bearer_challenge(
    anonymous: httpx.Client, method: str, path: str, body: Any
) -> None:
    """Every /v1 route answers 401 with WWW-Authenticate: Bearer when no token is presented."""
    response = anonymous.request(method, path, json=body)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("header", ["Bearer wrong-token", "Bearer secret-token-and-more", "Basic secret-token"])
def test_a_wrong_token_is_refused(anonymous: httpx.Client, header: str) -> None:
    """An unknown token, or the right one under another scheme, is refused with 401."""
    response = anonymous.get("/v1/send-log", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_the_right_token_is_accepted_and_its_name_logged(client: httpx.Client) -> None:
    """A configured token is accepted, and the log line names the token, never its value."""
    with capture_logs() as logs:
        response = client.post("/v1/recipients", json=[{"id": "r1"}])
    assert response.status_code == 200
    entries = [entry for entry in logs if entry["event"] == "api_recipients_upserted"]
    assert [entry["caller"] for entry in entries] == ["crm"]
    assert "secret-token" not in repr(logs)


def test_without_configured_tokens_every_call_is_refused(
    make_engine: Callable[..., Engine], serve: Callable[..., LiveServer]
) -> None:
    """With no [api.tokens], /v1 refuses every call, whatever token is sent, and says what to configure."""
    server = serve(make_engine(api={"tokens": {}}))
    with httpx.Client(base_url=server.base_url) as http:
        for headers in ({}, {"Authorization": "Bearer secret-token"}, {"Authorization": "Bearer"}):
            response = http.get("/v1/send-log", headers=headers)
            assert response.status_code == 401
            assert "[api.tokens]" in response.json()["detail"]


# -- ingest ----------------------------------------------------------------------------------


def test_a_recipient_batch_keeps_good_items_and_reports_bad_ones_by_index(client: httpx.Client, engine: Engine) -> None:
    """Good recipients are stored while bad ones come back with their index, reason and message."""
    batch = [
        {"id": "good-1", "email": "one@example.com", "plan": "trial"},
        {"id": "bad-email", "email": "not-an-address"},
        {"id": "good-2", "timezone": "Europe/Paris"},
        "not an object",
        {"email": "nobody@example.com"},
        {"id": "bad-zone", "timezone": "Mars/Olympus"},
    ]
    response = client.post("/v1/recipients", json=batch)
    assert response.status_code == 200
    body = response.json()
    assert body["accepted"] == 2
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [
        (1, "invalid_email"),
        (3, "invalid_record"),
        (4, "missing_field"),
        (5, "invalid_timezone"),
    ]
    assert all(r["message"] for r in body["rejected"])
    assert engine.store.count("recipient") == 2
    stored = client.get("/v1/recipients/good-1").json()
    assert stored["attributes"] == {"plan": "trial"}
    assert client.get("/v1/recipients/bad-email").status_code == 404


def test_a_recipient_batch_may_come_wrapped_in_an_object(client: httpx.Client, engine: Engine) -> None:
    """{"recipients": [...]} is accepted like a bare array; unknown envelope keys are refused."""
    response = client.post("/v1/recipients", json={"recipients": [{"id": "r1"}, {"id": "r2"}]})
    assert response.json() == {"accepted": 2, "rejected": []}
    assert engine.store.count("recipient") == 2
    assert client.post("/v1/recipients", json={"people": [{"id": "r3"}]}).status_code == 422


def test_a_batch_over_the_limit_is_refused_whole(client: httpx.Client, engine: Engine) -> None:
    """More than MAX_BATCH items is answered 413 and nothing of the batch is stored."""
    batch = [{"id": f"r{n}"} for n in range(MAX_BATCH + 1)]
    assert client.post("/v1/recipients", json=batch).status_code == 413
    assert client.post("/v1/events", json={"events": batch}).status_code == 413
    assert engine.store.count("recipient") == 0


def test_an_event_sent_twice_is_stored_once(client: httpx.Client, engine: Engine) -> None:
    """Replaying an event id in a later call is reported as a duplicate and stores nothing more."""
    client.post("/v1/recipients", json=[{"id": "r1"}])
    event = {"id": "e1", "recipient_id": "r1", "type": "clicked", "at": "2026-03-02T10:00:00+01:00"}
    first = client.post("/v1/events", json=[event]).json()
    again = client.post("/v1/events", json={"events": [event, {**event, "id": "e2"}]}).json()
    assert first == {"accepted": 1, "duplicates": 0, "rejected": []}
    assert again == {"accepted": 1, "duplicates": 1, "rejected": []}
    assert engine.store.count("event") == 2


def test_an_event_repeated_within_one_batch_is_stored_once(client: httpx.Client, engine: Engine) -> None:
    """An id given twice in one batch is stored once; the repeat counts as a duplicate."""
    client.post("/v1/recipients", json=[{"id": "r1"}])
    event = {"id": "e1", "recipient_id": "r1", "type": "clicked", "at": "2026-03-02T10:00:00Z"}
    body = client.post("/v1/events", json=[event, event]).json()
    assert body == {"accepted": 1, "duplicates": 1, "rejected": []}
    assert engine.store.count("event") == 1


def test_events_of_unknown_recipients_and_bad_events_are_rejected_by_index(
    client: httpx.Client, engine: Engine
) -> None:
    """An event for an unknown recipient, or without a usable time, is reported, not stored."""
    client.post("/v1/recipients", json=[{"id": "r1"}])
    events = [
        {"id": "e1", "recipient_id": "ghost", "type": "clicked"},
        {"id": "e2", "recipient_id": "r1", "type": "signed_up", "at": "2026-03-02T10:00:00"},
        {"id": "e3", "recipient_id": "r1", "type": "signed_up", "at": "2026-03-02T10:00:00Z"},
    ]
    body = client.post("/v1/events", json=events).json()
    assert body["accepted"] == 1
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [(0, "unknown_recipient"), (1, "invalid_timestamp")]
    assert engine.store.count("event") == 1


# -- enrollment ------------------------------------------------------------------------------


def test_enrollment_enrolls_known_recipients_and_names_unknown_ones(client: httpx.Client) -> None:
    """Known recipients are enrolled once, with the first step due at the given time; unknown ids are listed."""
    client.post("/v1/recipients", json=[{"id": "ana", "email": "ana@example.com"}])
    request = {"campaign_id": "welcome", "recipient_ids": ["ana", "ghost", "ana"], "at": iso(T0)}
    first = client.post("/v1/enrollments", json=request)
    assert first.status_code == 200
    assert first.json() == {
        "campaign_id": "welcome",
        "enrolled": 1,
        "already_enrolled": 0,
        "unknown_recipient_ids": ["ghost"],
    }
    again = client.post("/v1/enrollments", json={"campaign_id": "welcome", "recipient_ids": ["ana"]}).json()
    assert (again["enrolled"], again["already_enrolled"]) == (0, 1)
    profile = client.get("/v1/recipients/ana").json()
    assert [(e["campaign_id"], e["state"]) for e in profile["enrollments"]] == [("welcome", "active")]
    assert [(p["step_id"], p["due_at"]) for p in profile["pending"]] == [("hello", iso(T0))]


def test_enrollment_in_an_unknown_campaign_is_404(client: httpx.Client, engine: Engine) -> None:
    """Enrolling in a campaign that is not loaded answers 404 and enrolls nobody."""
    client.post("/v1/recipients", json=[{"id": "ana"}])
    response = client.post("/v1/enrollments", json={"campaign_id": "nope", "recipient_ids": ["ana"]})
    assert response.status_code == 404
    assert "nope" in response.json()["detail"]
    assert engine.store.count("enrollment") == 0


def test_enrollment_time_needs_an_offset(client: httpx.Client) -> None:
    """An enrollment time without a UTC offset is refused with 422."""
    request = {"campaign_id": "welcome", "recipient_ids": ["ana"], "at": "2026-03-02T10:00:00"}
    assert client.post("/v1/enrollments", json=request).status_code == 422


# -- recipient profile -----------------------------------------------------------------------


def test_an_unknown_recipient_is_404(client: httpx.Client) -> None:
    """GET of a recipient nobody created answers 404."""
    response = client.get("/v1/recipients/nobody")
    assert response.status_code == 404
    assert "nobody" in response.json()["detail"]


def test_a_recipient_shows_consent_attention_pending_touches_and_decisions(
    client: httpx.Client, engine: Engine
) -> None:
    """After one marketing email the profile shows consent per channel, the attention state with
    an open outcome window, the next touch with its would-be decision, and the decision taken."""
    engine.clock = lambda: T0 + timedelta(hours=1)
    client.post(
        "/v1/recipients",
        json=[{"id": "cy", "email": "cy@example.com", "phone": "+33612345678", "consent": {"sms": "opted_in"}}],
    )
    signup = {"id": "signup-cy", "recipient_id": "cy", "type": "signed_up", "at": iso(T0 - timedelta(minutes=1))}
    client.post("/v1/events", json=[signup])
    engine.tick(at=T0)

    profile = client.get("/v1/recipients/cy").json()
    assert (profile["id"], profile["email"], profile["phone"], profile["value"]) == (
        "cy", "cy@example.com", "+33612345678", 1.0,
    )  # fmt: skip
    assert profile["consent"]["email"] == {"status": "opted_in", "source": None, "at": None, "default": True}
    assert profile["consent"]["sms"]["status"] == "opted_in"
    assert profile["consent"]["sms"]["source"] == "api"
    assert profile["consent"]["sms"]["default"] is False
    attention = profile["attention"]
    assert attention["as_of"] == iso(T0 + timedelta(hours=1))
    assert attention["awaiting_outcome"] == 1
    assert attention["asset"] == pytest.approx(0.5)
    assert 0.9 < attention["fatigue"] < 1.0
    assert attention["engagement_rate"]["email"] == pytest.approx(1 / 20)
    assert attention["holdout"] is False
    [pending] = profile["pending"]
    assert (pending["campaign_id"], pending["step_id"], pending["channel"]) == ("welcome", "nudge", "sms")
    assert pending["due_at"] == iso(T0 + timedelta(days=1))
    assert (pending["if_due_now"]["decision"], pending["if_due_now"]["reason"]) == ("send", "always")
    [decision] = profile["recent_decisions"]
    assert (decision["step_id"], decision["decision"], decision["reason"]) == ("hello", "sent", "always")
    assert decision["at"] == iso(T0)
    assert isinstance(decision["asset"], float) and isinstance(decision["net_value"], float)


def test_recent_decisions_are_the_newest_first(client: httpx.Client, engine: Engine) -> None:
    """A recipient's recent decisions come newest first."""
    populate(client, engine)
    decisions = client.get("/v1/recipients/ana").json()["recent_decisions"]
    assert decisions[0]["step_id"] == "nudge"
    assert sorted(d["step_id"] for d in decisions) == ["confirmation", "hello", "nudge"]
    ids = [d["id"] for d in decisions]
    assert ids == sorted(ids, reverse=True)


# -- send log --------------------------------------------------------------------------------


def test_the_send_log_is_filtered_by_every_filter(client: httpx.Client, engine: Engine) -> None:
    """campaign, recipient, decision, reason, since and until each narrow the send log, and combine."""
    populate(client, engine)
    day_two = iso(T0 + timedelta(hours=12))
    everything = log_page(client)
    assert len(everything["items"]) == 5
    assert everything["next_cursor"] is None
    assert summary(log_page(client, campaign="receipt")) == [("ana", "confirmation", "sent", "transactional")]
    assert summary(log_page(client, decision="dropped")) == [("ben", "nudge", "dropped", "no_consent")]
    assert sorted(summary(log_page(client, recipient="ben"))) == [
        ("ben", "hello", "sent", "always"),
        ("ben", "nudge", "dropped", "no_consent"),
    ]
    assert len(log_page(client, reason="always")["items"]) == 3
    assert {i["step_id"] for i in log_page(client, since=day_two)["items"]} == {"nudge"}
    assert {i["step_id"] for i in log_page(client, until=day_two)["items"]} == {"hello", "confirmation"}
    assert summary(log_page(client, campaign="welcome", recipient="ana", since=day_two)) == [
        ("ana", "nudge", "sent", "always")
    ]


def test_send_log_pages_cover_every_row_once_even_as_rows_are_added(client: httpx.Client, engine: Engine) -> None:
    """Walking the cursor visits every row exactly once in id order, including rows appended mid-walk."""
    populate(client, engine)
    first = log_page(client, limit=2)
    assert len(first["items"]) == 2 and first["next_cursor"]
    client.post("/v1/recipients", json=[{"id": "dee", "email": "dee@example.com"}])
    late = {"id": "signup-dee", "recipient_id": "dee", "type": "signed_up", "at": iso(T0 + timedelta(days=2))}
    client.post("/v1/events", json=[late])
    engine.tick(at=T0 + timedelta(days=2))
    seen = [item["id"] for item in first["items"]]
    cursor = first["next_cursor"]
    pages = 1
    while cursor is not None:
        page = log_page(client, limit=2, cursor=cursor)
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        pages += 1
    stored = [row["id"] for row in engine.store.send_log_rows({})]
    assert len(stored) == 6
    assert seen == stored
    assert pages == 3


def test_send_log_pages_respect_filters(client: httpx.Client, engine: Engine) -> None:
    """A filtered walk a row at a time returns exactly the filtered rows."""
    populate(client, engine)
    seen: list[int] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"decision": "sent", "limit": 1}
        if cursor:
            params["cursor"] = cursor
        page = log_page(client, **params)
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [row["id"] for row in engine.store.send_log_rows({"decision": "sent"})]
    assert len(seen) == 4


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"cursor": "not-a-cursor"}, 400),
        ({"cursor": "MTIz"}, 400),
        ({"limit": MAX_PAGE + 1}, 422),
        ({"limit": 0}, 422),
        ({"since": "2026-03-02T10:00:00"}, 422),
        ({"decision": "maybe"}, 422),
    ],
)
def test_bad_send_log_parameters_are_refused(client: httpx.Client, params: dict[str, Any], expected: int) -> None:
    """A cursor the API did not issue, a limit out of range, a time without offset or an unknown
    decision are refused."""
    assert client.get("/v1/send-log", params=params).status_code == expected


# -- OpenAPI ---------------------------------------------------------------------------------


def test_the_openapi_document_lists_the_v1_paths(anonymous: httpx.Client) -> None:
    """/openapi.json documents every /v1 path, the bearer scheme and the batch item shapes."""
    document = anonymous.get("/openapi.json").json()
    paths = document["paths"]
    assert {"/v1/recipients", "/v1/events", "/v1/enrollments", "/v1/recipients/{recipient_id}", "/v1/send-log"} <= set(
        paths
    )
    assert set(paths["/v1/recipients"]) == {"post"}
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A token configured under [api.tokens] in Tact's configuration.",
    }
    assert paths["/v1/send-log"]["get"]["security"] == [{"bearer": []}]
    assert "SendLogPage" in document["components"]["schemas"]
    assert "consent" in repr(paths["/v1/recipients"]["post"]["requestBody"])


def test_a_recipient_whose_id_holds_a_slash_can_be_read_back(client: httpx.Client) -> None:
    """An id accepted by POST /v1/recipients is readable by GET, slashes included."""
    assert client.post("/v1/recipients", json=[{"id": "crm/42"}]).json()["accepted"] == 1
    response = client.get("/v1/recipients/crm/42")
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "crm/42"
