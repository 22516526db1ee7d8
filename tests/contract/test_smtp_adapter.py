"""The ``smtp`` adapter against a real aiosmtpd server on loopback: the contract, then its own rules.

The contract runs once per transport: plain, STARTTLS with AUTH (inline password) and implicit
TLS with AUTH (password read from a file). The server's certificate comes from a throwaway
``trustme`` CA that the adapter trusts through ``ca_file``.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trustme

from adapters.base import Adapter, AdapterSettingsError, Message, SendResult, SendStatus
from adapters.contract import AdapterContract, AdapterHarness, Delivery, FailureKind
from adapters.registry import build_adapter
from adapters.smtp import SmtpAdapter, SmtpSettings, message_id
from tests.contract.smtp_server import ReceivedMessage, ServerMode, SmtpTestServer, Stage

USERNAME = "tact"
PASSWORD = "correct horse battery"
SENDER = "Acme <hello@example.com>"
WAIT = 60.0
"""Seconds a test waits for the server before giving up; generous for a loaded machine."""

T = TypeVar("T")


class SmtpHarness(AdapterHarness):
    """Builds adapters pointed at a test server and reads deliveries from what it received."""

    def __init__(self, server: SmtpTestServer, table: dict[str, Any]) -> None:
        self.server = server
        self.table = table

    async def make(self) -> Adapter:
        adapter = build_adapter(self.table)
        assert isinstance(adapter, SmtpAdapter)
        return adapter

    def delivered(self) -> Sequence[Delivery]:
        return [as_delivery(received) for received in self.server.received]

    async def fail_next(self, kind: FailureKind) -> bool:
        if kind == "retryable":
            self.server.reply_next("451 4.3.0 try again later", at="MAIL")
        elif kind == "rejected":
            self.server.reply_next("550 5.1.1 no such user", at="RCPT")
        else:
            return False  # SMTP has no way to ask for a specific delay
        return True


def as_delivery(received: ReceivedMessage) -> Delivery:
    """What the contract sees of one received message."""
    message = received.message
    body = message.get_body(preferencelist=("plain",))
    assert body is not None, "no text/plain part"
    subject = message["Subject"]
    return Delivery(
        to=received.recipients[0],
        subject=None if subject is None else str(subject),
        text=body.get_content(),
        headers={name: str(value) for name, value in message.items()},
        idempotency_key=str(message["Message-ID"]),
        received_at=received.received_at,
    )


def settings_table(server: SmtpTestServer, ca_file: Path | None, **changes: Any) -> dict[str, Any]:
    """The channel table for ``server``: TLS and AUTH as its mode needs, then ``changes``."""
    table: dict[str, Any] = {"adapter": "smtp", "host": server.host, "port": server.port, "from": SENDER}
    if server.mode != "plain":
        table.update({"starttls": server.mode == "starttls", "tls": server.mode == "tls"})
    if ca_file is not None:
        table["ca_file"] = str(ca_file)
    if server.credentials is not None:
        table.update({"username": server.credentials[0], "password": server.credentials[1]})
    table.update(changes)
    return table


def run(coroutine: Awaitable[T]) -> T:
    """Run ``coroutine`` in a fresh event loop, as the contract checks do."""

    async def main() -> T:
        return await coroutine

    return asyncio.run(main())


async def send_and_close(table: dict[str, Any], *messages: Message) -> list[SendResult]:
    """Send each message in turn through one new adapter, then close it."""
    adapter = SmtpAdapter.from_settings(table)
    try:
        return [await adapter.send(message) for message in messages]
    finally:
        await adapter.aclose()


def message(index: int = 1, **changes: Any) -> Message:
    """A transactional test email for recipient ``index``; ``changes`` override fields."""
    base = Message(
        touchpoint_id=f"tp-{index}",
        idempotency_key=f"enrollment-{index}:welcome",
        channel="email",
        to=f"recipient{index}@example.com",
        recipient_id=f"r{index}",
        campaign_id="smtp-tests",
        step_id="welcome",
        kind="transactional",
        subject=f"Welcome, recipient {index}",
        text=f"Hello recipient {index}.\nThis is the SMTP adapter test message.",
    )
    return replace(base, **changes)


@pytest.fixture(scope="session")
def certificate_authority() -> trustme.CA:
    """A throwaway CA for the session's test servers."""
    return trustme.CA()


@pytest.fixture(scope="session")
def server_certificate(certificate_authority: trustme.CA) -> trustme.LeafCert:
    """The test servers' certificate, valid for 127.0.0.1 and localhost."""
    return certificate_authority.issue_cert("127.0.0.1", "localhost")


@pytest.fixture(scope="session")
def ca_file(certificate_authority: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The CA's certificate as a PEM file, for the adapter's ``ca_file``."""
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    certificate_authority.cert_pem.write_to_path(str(path))
    return path


@pytest.fixture
def start_server(server_certificate: trustme.LeafCert) -> Iterator[Callable[..., SmtpTestServer]]:
    """Starts test servers on demand and stops them after the test."""
    servers: list[SmtpTestServer] = []

    def start(mode: ServerMode = "plain", *, auth: bool | None = None) -> SmtpTestServer:
        with_auth = mode != "plain" if auth is None else auth
        server = SmtpTestServer(
            mode=mode,
            certificate=None if mode == "plain" else server_certificate,
            credentials=(USERNAME, PASSWORD) if with_auth else None,
        )
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def plain_server(start_server: Callable[..., SmtpTestServer]) -> SmtpTestServer:
    """A plain SMTP server without AUTH."""
    return start_server("plain")


@pytest.fixture
def plain_table(plain_server: SmtpTestServer) -> dict[str, Any]:
    """Adapter settings for the plain server."""
    return settings_table(plain_server, None)


@pytest.fixture(params=["plain", "starttls", "tls"])
def harness(
    request: pytest.FixtureRequest, start_server: Callable[..., SmtpTestServer], ca_file: Path, tmp_path: Path
) -> SmtpHarness:
    """A harness per transport: plain, STARTTLS with AUTH, implicit TLS with AUTH from a file."""
    server = start_server(request.param)
    table = settings_table(server, ca_file)
    if request.param == "tls":
        password_file = tmp_path / "smtp-password"
        password_file.write_text(PASSWORD + "\n", encoding="utf-8")
        table["password_file"] = str(password_file)
        del table["password"]
    return SmtpHarness(server, table)


class TestSmtpContract(AdapterContract):
    """Every contract check against the smtp adapter, over each transport."""


# -- the message -------------------------------------------------------------------------------


def test_text_only_message_is_one_text_plain_part(plain_server: SmtpTestServer, plain_table: dict[str, Any]) -> None:
    """A message without HTML arrives as a single text/plain part with the standard headers."""
    [result] = run(send_and_close(plain_table, message()))
    assert result.status is SendStatus.SENT
    [received] = plain_server.received
    mail = received.message
    assert mail.get_content_type() == "text/plain"
    assert not mail.is_multipart()
    assert mail.get_content().replace("\r\n", "\n").rstrip("\n") == message().text
    assert str(mail["From"]) == SENDER
    assert str(mail["To"]) == message().to
    assert str(mail["Subject"]) == message().subject
    assert mail["Date"] is not None and mail["Date"].datetime is not None
    assert received.mail_from == "hello@example.com"


def test_html_message_is_alternative_text_then_html(plain_server: SmtpTestServer, plain_table: dict[str, Any]) -> None:
    """A message with HTML arrives as multipart/alternative: text/plain first, then text/html."""
    html = "<p>Hello recipient 1 — welcome.</p>"
    run(send_and_close(plain_table, message(html=html)))
    mail = plain_server.received[0].message
    assert mail.get_content_type() == "multipart/alternative"
    parts = list(mail.iter_parts())
    assert [part.get_content_type() for part in parts] == ["text/plain", "text/html"]
    assert parts[1].get_content().strip() == html


def test_every_message_header_arrives_verbatim(plain_server: SmtpTestServer, plain_table: dict[str, Any]) -> None:
    """Every header of the message arrives, and a long List-Unsubscribe stays plain text."""
    headers = {
        "List-Unsubscribe": "<https://tact.example.com/u/" + "t0ken" * 30 + ">, <mailto:unsubscribe@example.com>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "X-Tact-Campaign": "welcome-series",
    }
    run(send_and_close(plain_table, message(kind="marketing", headers=headers)))
    [received] = plain_server.received
    for name, value in headers.items():
        assert str(received.message[name]) == value
    assert b"=?" not in received.raw.split(b"\r\n\r\n", 1)[0], "a header was turned into an encoded-word"


def test_message_id_is_derived_from_the_idempotency_key(
    plain_server: SmtpTestServer, plain_table: dict[str, Any]
) -> None:
    """The Message-ID hashes the idempotency key alone, so two attempts of one key share it."""
    first, again = message(attempt=1), message(attempt=2)
    results = run(send_and_close(plain_table, first, again))
    digest = hashlib.sha256(first.idempotency_key.encode()).hexdigest()[:32]
    expected = f"<{digest}@example.com>"
    assert message_id(first.idempotency_key, "example.com") == expected
    assert [str(received.message["Message-ID"]) for received in plain_server.received] == [expected, expected]
    assert [result.provider_message_id for result in results] == [expected, expected]


def test_message_id_domain_can_be_set(plain_server: SmtpTestServer) -> None:
    """``message_id_domain`` replaces the sender's domain in the Message-ID."""
    table = settings_table(plain_server, None, message_id_domain="mail.example.net")
    [result] = run(send_and_close(table, message()))
    assert result.provider_message_id is not None
    assert re.fullmatch(r"<[0-9a-f]{32}@mail\.example\.net>", result.provider_message_id)


# -- outcomes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["MAIL", "RCPT", "DATA"])
def test_temporary_reply_is_retryable_with_server_text(
    plain_server: SmtpTestServer, plain_table: dict[str, Any], stage: Stage
) -> None:
    """A 4xx reply at any stage of the transaction is retryable and its detail quotes the server."""
    plain_server.reply_next("451 4.3.0 try again later", at=stage)
    [result] = run(send_and_close(plain_table, message()))
    assert result.status is SendStatus.RETRYABLE
    assert result.detail is not None
    assert stage in result.detail and "451 4.3.0 try again later" in result.detail
    assert plain_server.received == []


@pytest.mark.parametrize(
    ("stage", "reply", "address_invalid"),
    [
        ("RCPT", "550 5.1.1 no such user", True),
        ("RCPT", "553 mailbox name not allowed", True),
        ("RCPT", "551 user not local", True),
        ("RCPT", "550 5.7.1 relaying denied", False),
        ("RCPT", "552 5.2.2 mailbox full", False),
        ("MAIL", "550 5.1.8 sender domain does not exist", False),
        ("DATA", "550 5.1.1 user unknown", True),
        ("DATA", "554 5.7.1 message refused", False),
    ],
)
def test_permanent_reply_is_rejected(
    plain_server: SmtpTestServer, plain_table: dict[str, Any], stage: Stage, reply: str, address_invalid: bool
) -> None:
    """A 5xx reply is rejected with its text; only one about the recipient's address condemns it."""
    plain_server.reply_next(reply, at=stage)
    [result] = run(send_and_close(plain_table, message()))
    assert result.status is SendStatus.REJECTED
    assert result.detail is not None and reply in result.detail
    assert result.address_invalid is address_invalid


def test_greeting_421_is_retryable() -> None:
    """A server that answers the connection with 421 gives a retryable result with its text."""

    async def scenario() -> SendResult:
        async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"421 4.3.2 too busy, come back later\r\n")
            await writer.drain()
            writer.close()

        listener = await asyncio.start_server(refuse, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        async with listener:
            [result] = await send_and_close({"host": "127.0.0.1", "port": port, "from": SENDER}, message())
        return result

    result = run(scenario())
    assert result.status is SendStatus.RETRYABLE
    assert result.detail is not None and "421 4.3.2 too busy" in result.detail


def test_refused_connection_is_retryable() -> None:
    """Nothing listening on the port gives a retryable result naming the connection failure."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    [result] = run(send_and_close({"host": "127.0.0.1", "port": port, "from": SENDER}, message()))
    assert result.status is SendStatus.RETRYABLE
    assert result.detail is not None and str(port) in result.detail


def test_server_that_stops_answering_gives_a_retryable_timeout(plain_server: SmtpTestServer) -> None:
    """A reply that does not come within ``timeout`` gives a retryable result saying so."""
    hold = plain_server.hold_next_data()
    table = settings_table(plain_server, None, timeout=1.0)
    try:
        [result] = run(send_and_close(table, message()))
    finally:
        hold.release.set()
    assert result.status is SendStatus.RETRYABLE
    assert result.detail is not None and "timed out" in result.detail.lower()


def test_wrong_password_is_rejected_but_not_address_invalid(
    start_server: Callable[..., SmtpTestServer], ca_file: Path
) -> None:
    """A 535 to AUTH is a rejection of the send, not of the recipient's address."""
    server = start_server("starttls")
    [result] = run(send_and_close(settings_table(server, ca_file, password="wrong"), message()))
    assert result.status is SendStatus.REJECTED
    assert result.detail is not None and "AUTH 535" in result.detail
    assert result.address_invalid is False
    assert server.received == []


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_untrusted_certificate_is_retryable(start_server: Callable[..., SmtpTestServer], mode: ServerMode) -> None:
    """A certificate from a CA the client does not trust fails the send as retryable, saying TLS."""
    server = start_server(mode)
    [result] = run(send_and_close(settings_table(server, None), message()))
    assert result.status is SendStatus.RETRYABLE
    assert result.detail is not None and result.detail.startswith("TLS failed")
    assert "certificate verify failed" in result.detail.lower()
    assert server.received == []


def test_untrusted_certificate_is_accepted_without_validation(start_server: Callable[..., SmtpTestServer]) -> None:
    """With ``validate_certs = false`` an untrusted certificate still carries the message."""
    server = start_server("starttls")
    [result] = run(send_and_close(settings_table(server, None, validate_certs=False), message()))
    assert result.status is SendStatus.SENT
    assert server.received[0].encrypted and server.received[0].authenticated


@pytest.mark.parametrize("address", ["bob smith@example.com", "no-domain"])
def test_address_that_cannot_go_on_the_rcpt_line_is_invalid(
    plain_server: SmtpTestServer, plain_table: dict[str, Any], address: str
) -> None:
    """An address that is not a usable mailbox is rejected as invalid before anything is sent."""
    [result] = run(send_and_close(plain_table, message(to=address)))
    assert result.status is SendStatus.REJECTED and result.address_invalid
    assert plain_server.connections == 0


def test_header_set_by_the_adapter_cannot_be_overridden(plain_table: dict[str, Any]) -> None:
    """A message header that would replace the Message-ID is a rejection, not a second Message-ID."""
    [result] = run(send_and_close(plain_table, message(headers={"Message-ID": "<other@example.com>"})))
    assert result.status is SendStatus.REJECTED
    assert result.detail is not None and "Message-ID" in result.detail


# -- the pool ------------------------------------------------------------------------------------


def test_pool_opens_at_most_pool_size_connections(plain_server: SmtpTestServer) -> None:
    """Thirty concurrent sends through a pool of three open no more than three connections."""
    table = settings_table(plain_server, None, pool_size=3)

    async def scenario() -> list[SendResult]:
        adapter = SmtpAdapter.from_settings(table)
        try:
            return await asyncio.gather(*(adapter.send(message(index)) for index in range(1, 31)))
        finally:
            await adapter.aclose()

    results = run(scenario())
    assert all(result.status is SendStatus.SENT for result in results), results
    assert len(plain_server.received) == 30
    assert 1 <= plain_server.connections <= 3


def test_sequential_sends_reuse_one_connection(plain_server: SmtpTestServer, plain_table: dict[str, Any]) -> None:
    """Sends one after another share one connection, even across a refused transaction."""
    plain_server.reply_next("550 5.1.1 no such user", at="RCPT")
    results = run(send_and_close(plain_table, message(1), message(2), message(3)))
    assert [result.status for result in results] == [SendStatus.REJECTED, SendStatus.SENT, SendStatus.SENT]
    assert plain_server.connections == 1
    assert plain_server.quits == 1


def test_connection_closed_by_the_server_is_replaced_once(
    plain_server: SmtpTestServer, plain_table: dict[str, Any]
) -> None:
    """A reused connection the server gives up on (421) is replaced once; a fresh one is not."""

    async def scenario() -> list[SendResult]:
        adapter = SmtpAdapter.from_settings(plain_table)
        try:
            results = [await adapter.send(message(1))]
            plain_server.reply_next("421 4.4.2 idle too long, closing", at="MAIL")
            results.append(await adapter.send(message(2)))
            plain_server.reply_next("421 4.3.2 shutting down", at="MAIL")
            await adapter.aclose()
            results.append(await adapter.send(message(3)))
            return results
        finally:
            await adapter.aclose()

    reused, replaced, fresh = run(scenario())
    assert reused.status is SendStatus.SENT and replaced.status is SendStatus.SENT
    assert fresh.status is SendStatus.RETRYABLE
    assert fresh.detail is not None and "421 4.3.2 shutting down" in fresh.detail
    assert [received.recipients[0] for received in plain_server.received] == [message(1).to, message(2).to]
    assert plain_server.connections == 3


def test_aclose_quits_idle_connections_and_a_later_send_reopens(
    plain_server: SmtpTestServer, plain_table: dict[str, Any]
) -> None:
    """Closing says QUIT on the idle connection; a send afterwards opens a new one; closing is idempotent."""

    async def scenario() -> list[SendResult]:
        adapter = SmtpAdapter.from_settings(plain_table)
        first = await adapter.send(message(1))
        await adapter.aclose()
        assert plain_server.quits == 1
        second = await adapter.send(message(2))
        await adapter.aclose()
        await adapter.aclose()
        return [first, second]

    results = run(scenario())
    assert all(result.status is SendStatus.SENT for result in results)
    assert plain_server.connections == 2
    assert plain_server.quits == 2


def test_connection_in_use_closes_when_its_send_finishes(
    plain_server: SmtpTestServer, plain_table: dict[str, Any]
) -> None:
    """Closing while a send is in DATA lets that send finish, then says QUIT on its connection."""
    hold = plain_server.hold_next_data()

    async def scenario() -> SendResult:
        adapter = SmtpAdapter.from_settings(plain_table)
        sending = asyncio.ensure_future(adapter.send(message()))
        assert await asyncio.to_thread(hold.reached.wait, WAIT), "DATA never arrived"
        await adapter.aclose()
        assert plain_server.quits == 0
        hold.release.set()
        return await sending

    try:
        result = run(scenario())
    finally:
        hold.release.set()
    assert result.status is SendStatus.SENT
    assert len(plain_server.received) == 1
    assert plain_server.quits == 1


def test_send_from_another_event_loop_uses_a_new_pool(
    plain_server: SmtpTestServer, plain_table: dict[str, Any]
) -> None:
    """A send from a second event loop opens its own connection and drops the first loop's."""
    adapter = SmtpAdapter.from_settings(plain_table)
    other_loop = asyncio.new_event_loop()
    runner = threading.Thread(target=other_loop.run_forever, daemon=True)
    runner.start()
    try:
        first = asyncio.run_coroutine_threadsafe(adapter.send(message(1)), other_loop).result(WAIT)
        [second] = run(_send_then_close(adapter, message(2)))
    finally:
        other_loop.call_soon_threadsafe(other_loop.stop)
        runner.join(WAIT)
        other_loop.close()
    assert first.status is SendStatus.SENT and second.status is SendStatus.SENT
    assert plain_server.connections == 2
    assert plain_server.quits == 1


async def _send_then_close(adapter: SmtpAdapter, *messages: Message) -> list[SendResult]:
    try:
        return [await adapter.send(item) for item in messages]
    finally:
        await adapter.aclose()


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ({"from": SENDER, "tls": True, "starttls": True}, "starttls"),
        ({}, "'from'"),
        ({"from": "no address here"}, "from"),
        ({"from": SENDER, "username": USERNAME, "password": PASSWORD, "password_file": "/run/secret"}, "not both"),
        ({"from": SENDER, "username": USERNAME, "password_file": "/nonexistent/smtp-password"}, "cannot be read"),
        ({"from": SENDER, "password": PASSWORD}, "needs a username"),
        ({"from": SENDER, "username": USERNAME}, "missing password"),
        ({"from": SENDER, "pool_size": 0}, "pool_size"),
        ({"from": SENDER, "ca_file": "/nonexistent/ca.pem"}, "ca_file"),
        ({"from": SENDER, "hostname": "smtp.example.com"}, "did you mean 'host'"),
    ],
)
def test_invalid_settings_are_reported(table: dict[str, Any], named: str) -> None:
    """A table that does not validate raises AdapterSettingsError naming the problem."""
    with pytest.raises(AdapterSettingsError, match=re.escape(named)) as raised:
        SmtpAdapter.from_settings(table)
    assert raised.value.adapter == "smtp"


@pytest.mark.parametrize(
    ("table", "port"),
    [({}, 25), ({"starttls": True}, 587), ({"tls": True}, 465), ({"tls": True, "port": 2465}, 2465)],
)
def test_port_defaults_follow_the_transport(table: dict[str, Any], port: int) -> None:
    """Without a port, implicit TLS uses 465, STARTTLS 587 and plain SMTP 25."""
    settings = SmtpAdapter.from_settings({"from": SENDER, **table}).settings
    assert isinstance(settings, SmtpSettings)
    assert settings.port == port


def test_password_file_is_read_and_message_id_domain_defaults_to_the_sender(tmp_path: Path) -> None:
    """``password_file`` supplies the password, and Message-IDs default to the sender's domain."""
    secret = tmp_path / "smtp"
    secret.write_text("  from-a-file\n", encoding="utf-8")
    settings = SmtpAdapter.from_settings({"from": SENDER, "username": USERNAME, "password_file": str(secret)}).settings
    assert settings.password is not None and settings.password.get_secret_value() == "from-a-file"
    assert "from-a-file" not in repr(settings)
    assert settings.message_id_domain == "example.com"


def test_registry_builds_the_smtp_adapter() -> None:
    """The registry name ``smtp`` builds an SmtpAdapter from its table."""
    adapter = build_adapter({"adapter": "smtp", "from": SENDER})
    assert isinstance(adapter, SmtpAdapter)
    assert adapter.settings.from_ == SENDER
