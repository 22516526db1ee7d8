"""An SMTP server on loopback for tests: aiosmtpd in a thread, recording what it receives.

:class:`SmtpTestServer` listens on 127.0.0.1 on a free port, in one of three modes: ``plain``,
``starttls`` (STARTTLS offered and required before any mail) or ``tls`` (implicit TLS from the
first byte). With ``credentials`` it offers AUTH LOGIN and PLAIN, checks the username and
password, and refuses mail from a client that has not authenticated. Every accepted message
is parsed into :attr:`SmtpTestServer.received`; :meth:`SmtpTestServer.reply_next` makes the
next transaction answer one command with a chosen reply instead, and
:meth:`SmtpTestServer.hold_next_data` keeps the next DATA waiting until the test lets it go::

    with SmtpTestServer(mode="starttls", certificate=cert, credentials=("tact", "s3cret")) as server:
        server.reply_next("451 4.3.0 try again later", at="MAIL")
        ...  # point the adapter at server.host and server.port
        assert server.received[0].message["Subject"] == "Welcome"

AUTH is only offered once the connection is encrypted, as aiosmtpd prefers, so it raises no
warning about credentials in clear text. In ``tls`` mode the encryption is the listening
socket's, which aiosmtpd cannot see, so it is told not to insist on STARTTLS before AUTH.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Literal, Self

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["DataHold", "ReceivedMessage", "ServerMode", "SmtpTestServer", "Stage"]

ServerMode = Literal["plain", "starttls", "tls"]
Stage = Literal["MAIL", "RCPT", "DATA"]
READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted message: its envelope, the parsed message and when it arrived."""

    mail_from: str
    recipients: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    received_at: float
    """``time.monotonic()`` when DATA was accepted."""
    authenticated: bool
    encrypted: bool


@dataclass(frozen=True)
class DataHold:
    """A DATA command kept waiting: ``reached`` is set when it arrives, ``release`` lets it finish."""

    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class SmtpTestServer:
    """An aiosmtpd server on 127.0.0.1 that records messages and can be scripted to fail."""

    host = "127.0.0.1"

    def __init__(
        self,
        *,
        mode: ServerMode = "plain",
        certificate: trustme.LeafCert | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        if mode != "plain" and certificate is None:
            raise ValueError(f"mode {mode!r} needs a certificate")
        if credentials is not None and mode == "plain":
            raise ValueError("AUTH is offered over TLS only; use mode 'starttls' or 'tls'")
        self.mode = mode
        self.credentials = credentials
        self.received: list[ReceivedMessage] = []
        self.quits = 0
        self._lock = threading.Lock()
        self._scripted: deque[tuple[Stage, str]] = deque()
        self._holds: deque[DataHold] = deque()
        self._controller = _LoopbackController(
            _Handler(self), mode=mode, tls_context=_server_context(certificate), authenticator=self._authenticate
        )

    @property
    def port(self) -> int:
        """The port the server listens on (known once started)."""
        return self._controller.port

    @property
    def connections(self) -> int:
        """Connections accepted since :meth:`start` returned."""
        return self._controller.accepted

    def start(self) -> None:
        """Start listening; returns once the server answers."""
        self._controller.start()
        self._controller.accepted = 0  # the controller's own readiness probe is not a client

    def stop(self) -> None:
        """Stop the server and drop any open connection."""
        self._controller.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def reply_next(self, reply: str, *, at: Stage = "RCPT") -> None:
        """Answer the next ``at`` command with ``reply`` (e.g. ``"550 5.1.1 no such user"``)."""
        with self._lock:
            self._scripted.append((at, reply))

    def scripted_reply(self, stage: Stage) -> str | None:
        """The scripted reply for ``stage`` if it is the next one queued, consuming it."""
        with self._lock:
            if self._scripted and self._scripted[0][0] == stage:
                return self._scripted.popleft()[1]
        return None

    def hold_next_data(self) -> DataHold:
        """Keep the next DATA command waiting until the returned hold's ``release`` is set."""
        hold = DataHold()
        with self._lock:
            self._holds.append(hold)
        return hold

    def take_hold(self) -> DataHold | None:
        """The next queued hold, if any, consuming it."""
        with self._lock:
            return self._holds.popleft() if self._holds else None

    def record(self, message: ReceivedMessage) -> None:
        """Keep an accepted message."""
        with self._lock:
            self.received.append(message)

    def count_quit(self) -> None:
        """Note a client's QUIT."""
        with self._lock:
            self.quits += 1

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if self.credentials is not None and isinstance(auth_data, LoginPassword):
            login, password = auth_data.login.decode(), auth_data.password.decode()
            if (login, password) == self.credentials:
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)


class _Handler:
    """aiosmtpd hooks: scripted replies first, then the ordinary answers."""

    def __init__(self, server: SmtpTestServer) -> None:
        self.server = server

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        if self.server.credentials is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        scripted = self.server.scripted_reply("MAIL")
        if scripted is not None:
            return scripted
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        scripted = self.server.scripted_reply("RCPT")
        if scripted is not None:
            return scripted
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        hold = self.server.take_hold()
        if hold is not None:
            hold.reached.set()
            await asyncio.to_thread(hold.release.wait, READY_TIMEOUT)
        scripted = self.server.scripted_reply("DATA")
        if scripted is not None:
            return scripted
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        assert envelope.mail_from is not None and server.transport is not None
        self.server.record(
            ReceivedMessage(
                mail_from=envelope.mail_from,
                recipients=tuple(envelope.rcpt_tos),
                message=message,
                raw=raw,
                received_at=time.monotonic(),
                authenticated=bool(session.authenticated),
                encrypted=server.transport.get_extra_info("sslcontext") is not None,
            )
        )
        return "250 2.0.0 Message accepted for delivery"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.server.count_quit()
        return "221 2.0.0 Bye"


class _LoopbackController(Controller):
    """A controller on 127.0.0.1 that binds a free port and counts accepted connections."""

    def __init__(self, handler: _Handler, *, mode: ServerMode, tls_context: ssl.SSLContext | None, **smtp: Any) -> None:
        if mode == "starttls":
            smtp.update(tls_context=tls_context, require_starttls=True)
        elif mode == "tls":
            smtp.update(auth_require_tls=False)
        super().__init__(
            handler,
            hostname=SmtpTestServer.host,
            port=0,
            ready_timeout=READY_TIMEOUT,
            ssl_context=tls_context if mode == "tls" else None,
            server_hostname="tact-test-smtp",
            **smtp,
        )
        self.accepted = 0

    def factory(self) -> SMTP:
        self.accepted += 1
        return SMTP(self.handler, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # Port 0 asks the system for a free port; learn which before the readiness probe uses it.
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


def _server_context(certificate: trustme.LeafCert | None) -> ssl.SSLContext | None:
    if certificate is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    return context
