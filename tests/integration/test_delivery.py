"""Delivery through ``Engine.tick`` to real servers on loopback: SMTP MIME, outages, rejections."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from adapters.smtp import message_id
from scheduler import Engine
from tests.contract.provider_server import ProviderServer, Reply
from tests.contract.smtp_server import SmtpTestServer

NEWSLETTER = """
id = "news"
name = "News"
kind = "marketing"
[trigger]
event = "signed_up"
[[steps]]
id = "hello"
after = "0m"
channel = "email"
subject = "News for {{ recipient.first_name }}"
template = "news.md.j2"
value = 0.9
"""

RECEIPT = """
id = "receipt"
name = "Receipt"
kind = "transactional"
[trigger]
event = "ordered"
[[steps]]
id = "receipt"
after = "0m"
channel = "email"
subject = "Your receipt"
text = "Thank you for your order, {{ recipient.first_name }}."
"""

START = datetime(2026, 3, 3, 10, 0, tzinfo=UTC)
SENDER = "Acme <hello@acme.example>"


@pytest.fixture
def campaigns_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "campaigns"
    directory.mkdir()
    (directory / "news.toml").write_text(NEWSLETTER)
    (directory / "news.md.j2").write_text("Hello **{{ recipient.first_name }}**, here is the news.\n")
    (directory / "receipt.toml").write_text(RECEIPT)
    return directory


@pytest.fixture
def engines(database_url: str, campaigns_dir: Path) -> Iterator[Any]:
    made: list[Engine] = []

    def make(email: dict[str, Any], **overrides: Any) -> Engine:
        engine = Engine.from_config(
            None,
            database_url=database_url,
            channels={"email": email, "sms": "memory"},
            campaigns_dir=str(campaigns_dir),
            attention={"holdout": 0.0},
            api={"public_url": "https://tact.acme.example"},
            **overrides,
        )
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def people(count: int) -> list[dict[str, Any]]:
    return [
        {"id": f"r{n}", "email": f"person{n}@example.com", "first_name": f"Person{n}", "consent": {"email": "opted_in"}}
        for n in range(count)
    ]


def touchpoint_row(engine: Engine, touchpoint_id: int) -> dict[str, Any]:
    with engine.store.engine.connect() as connection:
        row = connection.execute(
            sa.text("SELECT state, outcome, attempts, idempotency_key FROM touchpoint WHERE id = :id"),
            {"id": touchpoint_id},
        ).one()
    return dict(row._mapping)


def enroll(engine: Engine, campaign: str, count: int) -> None:
    assert engine.upsert_recipients(people(count)).accepted == count
    enrolled, _ = engine.enroll(campaign, [f"r{n}" for n in range(count)], at=START)
    assert enrolled == count


def test_smtp_delivery_carries_both_parts_unsubscribe_headers_and_a_stable_message_id(engines: Any) -> None:
    """A marketing touch reaches aiosmtpd as text and HTML with List-Unsubscribe and the key's Message-ID."""
    with SmtpTestServer() as server:
        table = {
            "adapter": "smtp", "host": server.host, "port": server.port, "from": SENDER,
            "unsubscribe_mailto": "unsubscribe@acme.example",
        }  # fmt: skip
        engine = engines(table)
        enroll(engine, "news", 1)
        rows = engine.tick(at=START).decisions

    assert [(r.decision, r.reason, r.adapter) for r in rows] == [("sent", "value_ok", "smtp")]
    assert len(server.received) == 1
    received = server.received[0]
    mime: EmailMessage = received.message
    assert received.recipients == ("person0@example.com",)
    assert mime["Subject"] == "News for Person0"
    assert mime.get_content_type() == "multipart/alternative"
    plain = mime.get_body(("plain",))
    html = mime.get_body(("html",))
    assert plain is not None and html is not None
    assert "Hello **Person0**, here is the news." in plain.get_content()
    assert "<strong>Person0</strong>" in html.get_content()

    touchpoint = touchpoint_row(engine, rows[0].touchpoint_id)
    assert mime["Message-ID"] == message_id(touchpoint["idempotency_key"], "acme.example")
    assert rows[0].provider_message_id == mime["Message-ID"]
    targets = [part.strip() for part in str(mime["List-Unsubscribe"]).split(",")]
    assert targets[0].startswith("<https://tact.acme.example/u/") and targets[0].endswith(">")
    token = targets[0][len("<https://tact.acme.example/u/") : -1]
    assert engine.signer.verify(token) is not None
    assert targets[1] == f"<mailto:unsubscribe@acme.example?subject=unsubscribe%20{token}>"
    assert mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_provider_outage_ends_with_one_send_per_touch_and_the_retries_logged(engines: Any) -> None:
    """Three 503s and a 429 with Retry-After: 2 end in one accepted send, after four retry rows."""
    with ProviderServer() as server:
        table = {
            "adapter": "sendgrid", "base_url": server.base_url,
            "api_key": server.credentials.sendgrid_api_key, "from": SENDER, "max_attempts": 6,
        }  # fmt: skip
        engine = engines(table, engine={"retry_base": "1s", "retry_max": "1s"})
        enroll(engine, "news", 1)
        outage = [Reply(503, {"errors": [{"message": "service unavailable"}]})] * 3
        server.script(*outage, Reply(429, {"errors": [{"message": "too many requests"}]}, {"Retry-After": "2"}))
        rows = []
        at = START
        for _ in range(20):
            rows.extend(engine.tick(at=at).decisions)
            if rows and rows[-1].decision == "sent":
                break
            at += timedelta(milliseconds=500)
        accepted = server.accepted("sendgrid")

    assert [r.decision for r in rows] == ["retrying"] * 4 + ["sent"]
    assert [r.attempt for r in rows] == [1, 2, 3, 4, 5]
    assert all(r.reason == "provider_error" for r in rows[:4])
    assert [r.error.split(":")[0] for r in rows[:4]] == ["HTTP 503"] * 3 + ["HTTP 429"]
    assert "too many requests" in rows[3].error
    assert rows[4].at - rows[3].at >= timedelta(seconds=2), "the retry came before Retry-After"
    assert len(accepted) == 1
    assert accepted[0].json["custom_args"]["touchpoint_id"] == str(rows[0].touchpoint_id)
    touchpoint = touchpoint_row(engine, rows[0].touchpoint_id)
    assert (touchpoint["state"], touchpoint["outcome"], touchpoint["attempts"]) == ("done", "sent", 5)


def test_a_permanent_rejection_fails_one_touch_without_holding_back_the_others(engines: Any) -> None:
    """A 400 fails its touch with the provider's message; the other recipients are sent in the same tick."""
    with ProviderServer() as server:
        table = {
            "adapter": "sendgrid", "base_url": server.base_url,
            "api_key": server.credentials.sendgrid_api_key, "from": SENDER, "concurrency": 1,
        }  # fmt: skip
        engine = engines(table)
        enroll(engine, "receipt", 5)
        server.script(Reply(400, {"errors": [{"message": "The to email does not contain a valid address."}]}))
        rows = engine.tick(at=START).decisions
        accepted = server.accepted("sendgrid")

    assert sorted(r.decision for r in rows) == ["failed"] + ["sent"] * 4
    failed = next(r for r in rows if r.decision == "failed")
    assert failed.reason == "provider_error"
    assert failed.error is not None and "does not contain a valid address" in failed.error
    assert len(accepted) == 4
    touchpoint = touchpoint_row(engine, failed.touchpoint_id)
    assert (touchpoint["state"], touchpoint["outcome"]) == ("done", "failed")


def test_a_hard_bounce_suppresses_the_address(engines: Any) -> None:
    """An SMTP 550 5.1.1 fails the touch and suppresses the recipient, so the next touch is dropped."""
    with SmtpTestServer() as server:
        engine = engines({"adapter": "smtp", "host": server.host, "port": server.port, "from": SENDER})
        enroll(engine, "receipt", 1)
        server.reply_next("550 5.1.1 no such user", at="RCPT")
        first = engine.tick(at=START).decisions
        engine.enroll("news", ["r0"], at=START + timedelta(hours=1))
        second = engine.tick(at=START + timedelta(hours=1)).decisions

    assert [(r.decision, r.reason) for r in first] == [("failed", "provider_error")]
    assert first[0].error is not None and "5.1.1" in first[0].error
    profile = engine.store.recipient_profile("r0")
    assert profile is not None and profile["suppressed_reason"] == "bounced"
    assert [(r.decision, r.reason) for r in second] == [("dropped", "suppressed")]
