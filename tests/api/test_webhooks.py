"""Provider webhooks over HTTP against a real uvicorn server, on SQLite and PostgreSQL: real
signatures made here by each provider's documented algorithm, attribution, idempotent retries,
immediate bounces and complaints, and SMS keywords with their replies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from adapters.memory import MemoryAdapter
from scheduler import Engine
from scheduler.store import event_t, touchpoint_t
from tests.api.conftest import served

PUBLIC_URL = "https://tact.example.com"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
TWILIO_TOKEN = "twilio-auth-token"
MAILGUN_KEY = "mailgun-signing-key"
OUR_NUMBER = "+15550100"
ANA_PHONE = "+14155550100"

MAIL = """
id = "mail"
kind = "marketing"
[trigger]
event = "signed_up"
[[steps]]
id = "hello"
after = "0m"
channel = "email"
subject = "Hello"
text = "Hello"
"""
TEXTS = """
id = "texts"
kind = "marketing"
[trigger]
event = "joined"
[[steps]]
id = "ping"
after = "0m"
channel = "sms"
text = "Ping"
"""


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    """The ECDSA P-256 key pair standing in for SendGrid's signing key."""
    return ec.generate_private_key(ec.SECP256R1())


def public_key_b64(private_key: ec.EllipticCurvePrivateKey) -> str:
    """The public key as SendGrid shows it: base64 DER SubjectPublicKeyInfo."""
    der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def channel_tables(sendgrid_key: ec.EllipticCurvePrivateKey) -> dict[str, dict[str, Any]]:
    return {
        "sendgrid": {
            "adapter": "sendgrid",
            "api_key": "SG.test",
            "from": "hello@example.com",
            "webhook_public_key": public_key_b64(sendgrid_key),
        },
        "mailgun": {
            "adapter": "mailgun",
            "api_key": "key-test",
            "domain": "mg.example.com",
            "from": "hello@mg.example.com",
            "webhook_signing_key": MAILGUN_KEY,
        },
        "postmark": {
            "adapter": "postmark",
            "server_token": "server-token",
            "from": "hello@example.com",
            "webhook_username": "hooks",
            "webhook_password": "s3cret",
        },
        "twilio": {
            "adapter": "twilio",
            "account_sid": ACCOUNT_SID,
            "auth_token": TWILIO_TOKEN,
            "from": OUR_NUMBER,
            "help_text": "Acme alerts. Reply STOP to stop.",
        },
    }


@pytest.fixture
def build(
    database_url: str, tmp_path: Path, sendgrid_key: ec.EllipticCurvePrivateKey
) -> Iterator[Callable[..., Engine]]:
    """Build an engine whose email channel uses the named provider (SMS: Twilio, its sends
    recorded by a memory adapter); ana and bea are recipients."""
    campaigns = tmp_path / "campaigns"
    campaigns.mkdir()
    (campaigns / "mail.toml").write_text(MAIL)
    (campaigns / "texts.toml").write_text(TEXTS)
    engines: list[Engine] = []

    def make(email: str = "sendgrid", **email_overrides: Any) -> Engine:
        tables = channel_tables(sendgrid_key)
        engine = Engine.from_config(
            None,
            database_url=database_url,
            channels={"email": {**tables[email], **email_overrides}, "sms": tables["twilio"]},
            campaigns_dir=str(campaigns),
            api={"public_url": PUBLIC_URL},
            attention={"holdout": 0.0},
            quiet_hours={"enabled": False},
            caps={"enabled": False},
        )
        engines.append(engine)
        engine.adapters["sms"] = MemoryAdapter()  # replies are recorded instead of sent to Twilio
        engine.upsert_recipients(
            [
                {"id": "ana", "email": "Ana@Example.com", "phone": ANA_PHONE, "consent": {"sms": "opted_in"}},
                {"id": "bea", "email": "bea@example.com"},
            ]
        )
        return engine

    yield make
    for engine in engines:
        engine.close()


def touch(engine: Engine, campaign: str, recipient: str, message_id: str | None = None) -> int:
    """Enroll ``recipient`` and return the first touchpoint's id, marked sent with ``message_id``."""
    engine.enroll(campaign, [recipient])
    with engine.store.transaction() as connection:
        touchpoint_id = connection.execute(
            sa.select(touchpoint_t.c.id).where(
                touchpoint_t.c.recipient_id == recipient, touchpoint_t.c.campaign_id == campaign
            )
        ).scalar_one()
        if message_id is not None:
            connection.execute(
                touchpoint_t.update()
                .where(touchpoint_t.c.id == touchpoint_id)
                .values(state="done", outcome="sent", provider_message_id=message_id)
            )
    return int(touchpoint_id)


def stored_events(engine: Engine) -> list[dict[str, Any]]:
    with engine.store.engine.connect() as connection:
        rows = connection.execute(sa.select(event_t).order_by(event_t.c.id)).mappings()
        return [dict(row) for row in rows]


def profile(engine: Engine, recipient: str = "ana") -> dict[str, Any]:
    found = engine.store.recipient_profile(recipient)
    assert found is not None
    return found


def consent(engine: Engine, channel: str, recipient: str = "ana") -> str | None:
    entry = profile(engine, recipient)["consent"].get(channel)
    return None if entry is None else str(entry["status"])


# -- signing as each provider documents it -----------------------------------------------------


def sendgrid_request(
    key: ec.EllipticCurvePrivateKey, events: list[dict[str, Any]], *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(events).encode()
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "Content-Type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }
    return body, headers


def mailgun_body(
    event_data: dict[str, Any], *, key: str = MAILGUN_KEY, token: str = "t" * 50, timestamp: int | None = None
) -> dict[str, Any]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = hmac.new(key.encode(), (stamp + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": stamp, "token": token, "signature": signature}, "event-data": event_data}


def twilio_headers(url: str, params: dict[str, str], token: str = TWILIO_TOKEN) -> dict[str, str]:
    data = url + "".join(name + params[name] for name in sorted(params))
    signature = base64.b64encode(hmac.digest(token.encode(), data.encode(), hashlib.sha1)).decode()
    return {"X-Twilio-Signature": signature}


def sendgrid_event(kind: str, event_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "email": "ana@example.com",
        "timestamp": int(time.time()) - 30,
        "event": kind,
        "sg_event_id": event_id,
        "sg_message_id": "msg-ana.filter0001.16648.5515E0B88.0",
        **fields,
    }


def inbound(client: httpx.Client, body: str, sid: str = "SM" + "1" * 32, sender: str = ANA_PHONE) -> httpx.Response:
    params = {
        "MessageSid": sid,
        "SmsMessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "To": OUR_NUMBER,
        "Body": body,
        "NumMedia": "0",
        "SmsStatus": "received",
    }
    headers = twilio_headers(f"{PUBLIC_URL}/webhooks/twilio", params)
    return client.post("/webhooks/twilio", data=params, headers=headers)


# -- SendGrid ----------------------------------------------------------------------------------


def test_sendgrid_events_are_verified_attributed_and_counted(
    build: Callable[..., Engine], sendgrid_key: ec.EllipticCurvePrivateKey
) -> None:
    """Signed SendGrid events land on the touch their custom args or message id name; the rest are counted."""
    engine = build()
    by_args = touch(engine, "mail", "ana")
    by_message = touch(engine, "mail", "bea", message_id="msg-bea")
    events = [
        sendgrid_event("delivered", "ev-delivered", touchpoint_id=str(by_args)),
        sendgrid_event("open", "ev-open", sg_message_id="msg-bea.filter0002.1.2.0", email="bea@example.com"),
        sendgrid_event("processed", "ev-processed"),
        sendgrid_event("click", "ev-stranger", sg_message_id="unknown.filter", email="nobody@example.com"),
    ]
    body, headers = sendgrid_request(sendgrid_key, events)
    with served(engine) as client:
        response = client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"received": 4, "recorded": 2, "duplicates": 0, "ignored": 1, "unattributed": 1}
    stored = {
        (e["event_id"], e["recipient_id"], e["type"], e["touchpoint_id"], e["channel"]) for e in stored_events(engine)
    }
    assert stored == {
        ("sendgrid:ev-delivered", "ana", "delivered", by_args, "email"),
        ("sendgrid:ev-open", "bea", "opened", by_message, "email"),
    }


def test_a_retried_sendgrid_delivery_is_stored_once(
    build: Callable[..., Engine], sendgrid_key: ec.EllipticCurvePrivateKey
) -> None:
    """The same provider event posted twice is one stored event; the retry counts as a duplicate."""
    engine = build()
    events = [sendgrid_event("delivered", "ev-1")]
    with served(engine) as client:
        body, headers = sendgrid_request(sendgrid_key, events)
        first = client.post("/webhooks/sendgrid", content=body, headers=headers)
        body, headers = sendgrid_request(sendgrid_key, events)  # a retry is signed afresh
        second = client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert first.json()["recorded"] == 1
    assert second.json()["recorded"] == 0
    assert second.json()["duplicates"] == 1
    assert [e["event_id"] for e in stored_events(engine)] == ["sendgrid:ev-1:ana"]


@pytest.mark.parametrize(
    ("tamper", "status"),
    [
        pytest.param("body", 403, id="tampered-body"),
        pytest.param("timestamp-header", 403, id="timestamp-swapped"),
        pytest.param("stale", 403, id="stale-timestamp"),
        pytest.param("future", 403, id="future-timestamp"),
        pytest.param("other-key", 403, id="signed-by-another-key"),
        pytest.param("missing", 401, id="no-signature"),
    ],
)
def test_an_unverifiable_sendgrid_request_is_rejected_and_nothing_stored(
    build: Callable[..., Engine], sendgrid_key: ec.EllipticCurvePrivateKey, tamper: str, status: int
) -> None:
    """A SendGrid request whose signature does not hold, is stale or absent is refused, storing nothing."""
    engine = build()
    events = [sendgrid_event("bounce", "ev-bounce", type="bounce")]
    now = int(time.time())
    stamp = {"stale": now - 600, "future": now + 600}.get(tamper)
    key = ec.generate_private_key(ec.SECP256R1()) if tamper == "other-key" else sendgrid_key
    body, headers = sendgrid_request(key, events, timestamp=stamp)
    if tamper == "body":
        body = body.replace(b"bounce", b"bounced", 1)
    elif tamper == "timestamp-header":
        headers["X-Twilio-Email-Event-Webhook-Timestamp"] = str(now + 1)
    elif tamper == "missing":
        del headers["X-Twilio-Email-Event-Webhook-Signature"]
    with served(engine) as client:
        response = client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert response.status_code == status
    assert stored_events(engine) == []
    assert profile(engine)["suppressed_at"] is None


@pytest.mark.parametrize(
    ("fields", "suppressed"),
    [
        pytest.param({"event": "bounce", "type": "bounce"}, True, id="hard-bounce"),
        pytest.param({"event": "dropped", "reason": "Bounced Address"}, True, id="dropped-for-bounce"),
        pytest.param({"event": "bounce", "type": "blocked"}, False, id="blocked-is-soft"),
    ],
)
def test_a_hard_bounce_suppresses_the_recipient_before_the_answer(
    build: Callable[..., Engine], sendgrid_key: ec.EllipticCurvePrivateKey, fields: dict[str, str], suppressed: bool
) -> None:
    """A hard bounce (or a drop for a bounced address) suppresses at once; a block does not."""
    engine = build()
    events = [sendgrid_event("bounce", "ev-b", **fields)]
    with served(engine) as client:
        body, headers = sendgrid_request(sendgrid_key, events)
        assert client.post("/webhooks/sendgrid", content=body, headers=headers).status_code == 200
        state = profile(engine)
    assert [e["type"] for e in stored_events(engine)] == ["bounced"]
    assert (state["suppressed_at"] is not None) is suppressed
    assert state["suppressed_reason"] == ("bounced" if suppressed else None)


def test_a_spam_report_marks_a_complaint_before_the_answer(
    build: Callable[..., Engine], sendgrid_key: ec.EllipticCurvePrivateKey
) -> None:
    """A spam report becomes a complaint that the attention state holds as soon as the webhook answers."""
    engine = build()
    with served(engine) as client:
        body, headers = sendgrid_request(sendgrid_key, [sendgrid_event("spamreport", "ev-spam")])
        assert client.post("/webhooks/sendgrid", content=body, headers=headers).status_code == 200
        state = profile(engine)
    assert state["attention"] is not None
    assert state["attention"]["complained_at"] is not None


@pytest.mark.parametrize("kind", ["unsubscribe", "group_unsubscribe"])
def test_a_sendgrid_unsubscribe_opts_the_recipient_out_of_email_at_once(
    build: Callable[..., Engine], sendgrid_key: ec.EllipticCurvePrivateKey, kind: str
) -> None:
    """An unsubscribe withdraws email consent before the answer and leaves SMS consent alone."""
    engine = build()
    with served(engine) as client:
        body, headers = sendgrid_request(sendgrid_key, [sendgrid_event(kind, "ev-unsub")])
        assert client.post("/webhooks/sendgrid", content=body, headers=headers).status_code == 200
        assert consent(engine, "email") == "opted_out"
    assert consent(engine, "sms") == "opted_in"


def test_a_provider_without_a_configured_secret_answers_not_found(build: Callable[..., Engine]) -> None:
    """Webhooks of a provider no channel holds a secret for answer 404, whatever is sent."""
    engine = build(webhook_public_key=None)
    with served(engine) as client:
        assert client.post("/webhooks/sendgrid", json=[]).status_code == 404
        assert client.post("/webhooks/mailgun", json={}).status_code == 404
        assert client.post("/webhooks/postmark", json={}).status_code == 404
    assert stored_events(engine) == []


# -- Mailgun -----------------------------------------------------------------------------------


def mailgun_event(kind: str, event_id: str, touchpoint_id: int | None = None, **fields: Any) -> dict[str, Any]:
    variables = {"touchpoint_id": str(touchpoint_id)} if touchpoint_id is not None else {}
    return {
        "event": kind,
        "id": event_id,
        "timestamp": time.time() - 30,
        "recipient": "ana@example.com",
        "message": {"headers": {"message-id": "20260301.abc@mg.example.com"}},
        "user-variables": variables,
        **fields,
    }


def test_a_signed_mailgun_event_is_stored_against_its_touch(build: Callable[..., Engine]) -> None:
    """A Mailgun event signed with the signing key is stored against the touch in its user variables."""
    engine = build("mailgun")
    touchpoint_id = touch(engine, "mail", "ana")
    with served(engine) as client:
        response = client.post("/webhooks/mailgun", json=mailgun_body(mailgun_event("clicked", "mg-1", touchpoint_id)))
    assert response.status_code == 200
    assert response.json()["recorded"] == 1
    [event] = stored_events(engine)
    assert (event["event_id"], event["type"], event["touchpoint_id"]) == ("mailgun:mg-1", "clicked", touchpoint_id)


def test_a_replayed_mailgun_token_is_rejected(build: Callable[..., Engine]) -> None:
    """A second request carrying a token already used is refused, even with other event data."""
    engine = build("mailgun")
    with served(engine) as client:
        first = client.post("/webhooks/mailgun", json=mailgun_body(mailgun_event("delivered", "mg-1")))
        replay = client.post(
            "/webhooks/mailgun",
            json=mailgun_body(mailgun_event("failed", "mg-2", severity="permanent")),
        )
    assert first.status_code == 200
    assert replay.status_code == 403
    assert [e["event_id"] for e in stored_events(engine)] == ["mailgun:mg-1:ana"]
    assert profile(engine)["suppressed_at"] is None


@pytest.mark.parametrize(
    ("signing", "status"),
    [
        pytest.param({"key": "another-key"}, 403, id="wrong-key"),
        pytest.param({"timestamp": int(time.time()) - 3600}, 403, id="stale-timestamp"),
    ],
)
def test_an_unverifiable_mailgun_request_is_rejected_and_nothing_stored(
    build: Callable[..., Engine], signing: dict[str, Any], status: int
) -> None:
    """A Mailgun request signed with another key, or long ago, is refused and stores nothing."""
    engine = build("mailgun")
    with served(engine) as client:
        response = client.post("/webhooks/mailgun", json=mailgun_body(mailgun_event("delivered", "mg-1"), **signing))
        unsigned = client.post("/webhooks/mailgun", json={"event-data": mailgun_event("delivered", "mg-2")})
    assert response.status_code == status
    assert unsigned.status_code == 401
    assert stored_events(engine) == []


@pytest.mark.parametrize(("severity", "suppressed"), [("permanent", True), ("temporary", False)])
def test_a_permanent_mailgun_failure_suppresses_and_a_temporary_one_does_not(
    build: Callable[..., Engine], severity: str, suppressed: bool
) -> None:
    """Mailgun's permanent failures are hard bounces; temporary ones are soft."""
    engine = build("mailgun")
    with served(engine) as client:
        event = mailgun_event("failed", "mg-f", severity=severity)
        assert client.post("/webhooks/mailgun", json=mailgun_body(event)).status_code == 200
        assert (profile(engine)["suppressed_at"] is not None) is suppressed
    [stored] = stored_events(engine)
    assert stored["properties"]["type"] == ("hard" if suppressed else "soft")


# -- Postmark ----------------------------------------------------------------------------------


def postmark_bounce(**fields: Any) -> dict[str, Any]:
    return {
        "RecordType": "Bounce",
        "ID": 4323372036854775807,
        "Type": "HardBounce",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Email": "ana@example.com",
        "BouncedAt": "2026-03-01T16:33:54.9070259Z",
        "Inactive": True,
        "Metadata": {},
        **fields,
    }


@pytest.mark.parametrize(
    "auth",
    [None, ("hooks", "wrong"), ("someone", "s3cret")],
    ids=["no-credentials", "wrong-password", "wrong-user"],
)
def test_postmark_without_the_right_basic_auth_is_refused(
    build: Callable[..., Engine], auth: tuple[str, str] | None
) -> None:
    """Postmark webhooks need the configured basic auth credentials; others get 401 and store nothing."""
    engine = build("postmark")
    with served(engine) as client:
        if auth is None:
            response = client.post("/webhooks/postmark", json=postmark_bounce())
        else:
            response = client.post("/webhooks/postmark", json=postmark_bounce(), auth=auth)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert stored_events(engine) == []
    assert profile(engine)["suppressed_at"] is None


def test_postmark_hard_bounce_suppresses_and_a_complaint_is_held(build: Callable[..., Engine]) -> None:
    """A Postmark hard bounce suppresses ana; a spam complaint marks bea's attention state."""
    engine = build("postmark")
    complaint = postmark_bounce(RecordType="SpamComplaint", Type="SpamComplaint", Email="bea@example.com")
    with served(engine) as client:
        for payload in (postmark_bounce(), complaint, postmark_bounce()):
            assert client.post("/webhooks/postmark", json=payload, auth=("hooks", "s3cret")).status_code == 200
    assert profile(engine, "ana")["suppressed_reason"] == "bounced"
    assert profile(engine, "bea")["attention"]["complained_at"] is not None
    assert sorted(e["type"] for e in stored_events(engine)) == ["bounced", "complained"]


def test_a_postmark_soft_bounce_does_not_suppress(build: Callable[..., Engine]) -> None:
    """A soft bounce is recorded as soft and leaves the recipient sendable."""
    engine = build("postmark")
    with served(engine) as client:
        payload = postmark_bounce(Type="SoftBounce", Inactive=False)
        assert client.post("/webhooks/postmark", json=payload, auth=("hooks", "s3cret")).status_code == 200
    assert profile(engine)["suppressed_at"] is None
    assert [e["properties"]["type"] for e in stored_events(engine)] == ["soft"]


# -- Twilio status callbacks -------------------------------------------------------------------


def status_callback(
    client: httpx.Client,
    touchpoint_id: int | str,
    status: str,
    *,
    signed_url: str | None = None,
    key: str = "k",
    **fields: str,
) -> httpx.Response:
    path = "/webhooks/twilio?" + urlencode({"touchpoint_id": touchpoint_id, "idempotency_key": key})
    params = {"MessageSid": "SM" + "2" * 32, "MessageStatus": status, "SmsStatus": status, "To": ANA_PHONE,
              "From": OUR_NUMBER, "AccountSid": ACCOUNT_SID, **fields}  # fmt: skip
    headers = twilio_headers(signed_url or PUBLIC_URL + path, params)
    return client.post(path, data=params, headers=headers)


def test_a_twilio_status_callback_is_attributed_by_its_query(build: Callable[..., Engine]) -> None:
    """A signed delivered callback is stored against the touch its query names; other ones are ignored."""
    engine = build()
    touchpoint_id = touch(engine, "texts", "ana")
    with served(engine) as client:
        response = status_callback(client, touchpoint_id, "delivered")
        ignored = status_callback(client, touchpoint_id, "sent")
        reply = status_callback(client, "", "delivered", key="keyword-reply:SM" + "3" * 32)
    assert response.status_code == 200
    assert response.json()["recorded"] == 1
    assert ignored.json()["ignored"] == 1
    assert reply.json()["ignored"] == 1  # the delivery of a keyword reply is no touch's outcome
    [event] = stored_events(engine)
    assert (event["type"], event["touchpoint_id"], event["channel"]) == ("delivered", touchpoint_id, "sms")


def test_a_twilio_signature_over_another_url_is_rejected(build: Callable[..., Engine]) -> None:
    """A signature over the loopback URL instead of the public one is refused and stores nothing."""
    engine = build()
    touchpoint_id = touch(engine, "texts", "ana")
    with served(engine) as client:
        loopback = f"{client.base_url}webhooks/twilio?touchpoint_id={touchpoint_id}&idempotency_key=k"
        wrong_url = status_callback(client, touchpoint_id, "delivered", signed_url=loopback)
        unsigned = client.post("/webhooks/twilio", data={"MessageSid": "SMx", "MessageStatus": "delivered"})
    assert wrong_url.status_code == 403
    assert unsigned.status_code == 401
    assert stored_events(engine) == []


@pytest.mark.parametrize(("code", "suppressed"), [("30006", True), ("30003", False)])
def test_an_undelivered_sms_bounces_hard_only_for_codes_that_condemn_the_number(
    build: Callable[..., Engine], code: str, suppressed: bool
) -> None:
    """An undelivered SMS to a landline suppresses; one to a handset that is off does not."""
    engine = build()
    touchpoint_id = touch(engine, "texts", "ana")
    with served(engine) as client:
        assert status_callback(client, touchpoint_id, "undelivered", ErrorCode=code).status_code == 200
        assert (profile(engine)["suppressed_at"] is not None) is suppressed
    assert [e["type"] for e in stored_events(engine)] == ["bounced"]


# -- Twilio inbound SMS and keywords -----------------------------------------------------------


def replies(engine: Engine) -> list[str]:
    adapter = engine.adapter("sms")
    assert isinstance(adapter, MemoryAdapter)
    return [message.text for message in adapter.sent]


@pytest.mark.parametrize(
    "body", ["Stop", " STOP.", "stopall", "STOP", "  Stop. ", "StopAll!", "unsubscribe", "Cancel", "end", "QUIT?"]
)
def test_a_stop_keyword_withdraws_sms_consent_at_once(build: Callable[..., Engine], body: str) -> None:
    """Every STOP word, in any case and with punctuation, opts the sender out of SMS before the answer."""
    engine = build()
    with served(engine) as client:
        response = inbound(client, body)
        assert response.status_code == 200
        assert consent(engine, "sms") == "opted_out"
    assert response.headers["content-type"].startswith("text/xml")
    assert consent(engine, "email") is None  # untouched: still the configured default
    assert [e["type"] for e in stored_events(engine)] == ["consent_withdrawn"]
    assert len(replies(engine)) == 1
    assert "START" in replies(engine)[0]


@pytest.mark.parametrize("body", ["Unstop", "START", "unstop", "Yes!"])
def test_a_start_keyword_restores_sms_consent(build: Callable[..., Engine], body: str) -> None:
    """After STOP, a START word opts the sender back in to SMS."""
    engine = build()
    with served(engine) as client:
        inbound(client, "STOP", sid="SM" + "a" * 32)
        assert consent(engine, "sms") == "opted_out"
        assert inbound(client, body, sid="SM" + "b" * 32).status_code == 200
        assert consent(engine, "sms") == "opted_in"
    assert len(replies(engine)) == 2


@pytest.mark.parametrize("body", ["help", "HELP", " info? "])
def test_help_is_answered_once_even_when_twilio_retries(build: Callable[..., Engine], body: str) -> None:
    """HELP gets the configured help text once per inbound message, however often it is delivered."""
    engine = build()
    with served(engine) as client:
        for _ in range(3):
            assert inbound(client, body).status_code == 200
    assert replies(engine) == ["Acme alerts. Reply STOP to stop."]
    adapter = engine.adapter("sms")
    assert isinstance(adapter, MemoryAdapter)
    [message] = adapter.sent
    assert (message.to, message.kind) == (ANA_PHONE, "transactional")
    assert consent(engine, "sms") == "opted_in"
    assert [e["type"] for e in stored_events(engine)] == ["help_requested"]


def test_yes_from_a_sender_who_never_stopped_is_an_ordinary_message(build: Callable[..., Engine]) -> None:
    """START words only undo a STOP: "yes" from an opted-in sender changes nothing and gets no reply."""
    engine = build()
    engine.upsert_recipients([{"id": "ana", "consent": {"sms": "unknown"}}])
    with served(engine) as client:
        assert inbound(client, "Yes").status_code == 200
    assert consent(engine, "sms") == "unknown"
    assert replies(engine) == []
    assert [e["type"] for e in stored_events(engine)] == ["inbound_message"]


def test_an_ordinary_text_is_an_inbound_message_without_a_reply(build: Callable[..., Engine]) -> None:
    """A text that only mentions a keyword is an inbound message: consent stays, nothing is sent."""
    engine = build()
    with served(engine) as client:
        assert inbound(client, "please stop calling me at work").status_code == 200
    assert consent(engine, "sms") == "opted_in"
    assert replies(engine) == []
    [event] = stored_events(engine)
    assert (event["type"], event["recipient_id"], event["channel"]) == ("inbound_message", "ana", "sms")


def test_a_text_from_an_unknown_number_is_ignored(build: Callable[..., Engine]) -> None:
    """STOP from a number no recipient has stores nothing and sends nothing."""
    engine = build()
    with served(engine) as client:
        assert inbound(client, "STOP", sender="+14155550199").status_code == 200
    assert stored_events(engine) == []
    assert replies(engine) == []
