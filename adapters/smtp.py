"""The ``smtp`` adapter: email through an SMTP server over a small pool of connections.

Settings, beside the common ``rate_limit``, ``concurrency`` and ``max_attempts``::

    [channels.email]
    adapter = "smtp"
    host = "smtp.example.com"
    port = 587                           # default: 465 with tls, 587 with starttls, else 25
    starttls = true                      # upgrade a plain connection; never done unasked
    tls = false                          # implicit TLS from the first byte; not with starttls
    username = "tact"
    password_file = "/run/secrets/smtp"  # or password = "..."; a password needs a username
    from = "Acme <hello@example.com>"    # required
    pool_size = 4                        # the most connections open at once
    timeout = 30.0                       # seconds for the connection and for each reply
    validate_certs = true
    ca_file = "/etc/tact/relay-ca.pem"   # an extra CA bundle, for a private relay
    message_id_domain = "example.com"    # default: the domain of ``from``

Each message is MIME built with :class:`email.message.EmailMessage`: From, To, Subject,
Date, a Message-ID derived from the idempotency key alone (so a repeat after a crash carries
the same one, see :func:`message_id`), every header in ``Message.headers`` (List-Unsubscribe
among them), and a text/plain part, or multipart/alternative with text then HTML when the
message has HTML. Connections are opened on demand, reused while they stay healthy, and
carry one transaction at a time (:mod:`adapters.smtp_pool`).

==========================================================  ==========  ===================================
What happened                                               Result      Notes
==========================================================  ==========  ===================================
250 after DATA                                              sent        provider id: the Message-ID
4xx at greeting, EHLO, STARTTLS, AUTH, MAIL, RCPT or DATA   retryable   stage, code and text in the detail
5xx at any of those                                         rejected    stage, code and text in the detail
5xx about the recipient's address (below)                   rejected    ``address_invalid``
timeout, refused or reset connection, TLS failure           retryable   the exception's text
a recipient that is not a usable mailbox                    rejected    ``address_invalid``
an address needing SMTPUTF8 the server lacks                rejected
a message header the adapter owns (Message-ID, MIME ones)  rejected
==========================================================  ==========  ===================================

A 5xx condemns the recipient's address when its enhanced status is 5.1.x at RCPT or DATA
(5.1.7 and 5.1.8 excepted: they concern the sender) or, without an enhanced status, when RCPT
is answered 550, 551 or 553. A policy refusal such as ``550 5.7.1`` does not.
"""

from __future__ import annotations

import asyncio
import email.policy
import hashlib
import re
import ssl
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from email.headerregistry import BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import Policy
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Any, ClassVar, Self

from aiosmtplib import (
    SMTP,
    SMTPAuthenticationError,
    SMTPConnectResponseError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPRecipientRefused,
    SMTPRecipientsRefused,
    SMTPResponseException,
    SMTPSenderRefused,
)
from aiosmtplib.email import parse_address
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from adapters.base import AdapterSettings, Message, SendResult, validate_settings
from adapters.secrets import resolve_secret
from adapters.smtp_pool import ConnectionPool, drop_connection

__all__ = ["SmtpAdapter", "SmtpSettings", "build_email", "failure_result", "message_id"]

DETAIL_LIMIT = 500
ADAPTER_HEADERS = frozenset({"message-id", "mime-version", "content-type", "content-transfer-encoding"})
"""Headers the adapter owns; a message may not set them."""
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
_ENHANCED_STATUS = re.compile(r"^5\.(\d{1,3})\.(\d{1,3})\b")
_STAGES: tuple[tuple[type[SMTPResponseException], str], ...] = (
    (SMTPConnectResponseError, "greeting"),
    (SMTPHeloError, "EHLO"),
    (SMTPAuthenticationError, "AUTH"),
    (SMTPSenderRefused, "MAIL"),
    (SMTPRecipientRefused, "RCPT"),
    (SMTPDataError, "DATA"),
)


class SmtpSettings(AdapterSettings):
    """Settings of the ``smtp`` adapter (see the module docs for an example)."""

    adapter: str = "smtp"
    host: str = "localhost"
    port: int | None = Field(default=None, ge=1, le=65535)
    """Default: 465 with ``tls``, 587 with ``starttls``, 25 otherwise."""
    starttls: bool = False
    tls: bool = False
    """Implicit TLS (usually port 465); cannot be combined with ``starttls``."""
    username: str | None = None
    password_file: Path | None = None
    password: SecretStr | None = Field(default=None, validate_default=True)
    """Given inline or read from ``password_file``; after validation it holds the secret."""
    from_: str = Field(alias="from")
    pool_size: int = Field(default=4, ge=1)
    """The most connections open at once."""
    timeout: float = Field(default=30.0, gt=0)
    validate_certs: bool = True
    ca_file: Path | None = None
    """An extra CA bundle trusted beside the system's, for private relays and tests."""
    message_id_domain: str | None = None
    """The right-hand side of Message-IDs; default: the domain of ``from``."""

    @property
    def sender_address(self) -> str:
        """The bare address of ``from``, used in MAIL FROM."""
        return parseaddr(self.from_)[1]

    @field_validator("tls")
    @classmethod
    def _one_tls_mode(cls, tls: bool, info: ValidationInfo) -> bool:
        if tls and info.data.get("starttls"):
            raise ValueError("tls (implicit TLS) and starttls cannot both be true; choose one")
        return tls

    @field_validator("password")
    @classmethod
    def _resolve_password(cls, password: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        username = info.data.get("username")
        resolved = resolve_secret("password", password, info.data.get("password_file"), required=username is not None)
        if resolved is not None and username is None:
            raise ValueError("a password needs a username")
        return resolved

    @field_validator("from_")
    @classmethod
    def _sender_address(cls, sender: str) -> str:
        address = parseaddr(sender)[1]
        if "@" not in address:
            raise ValueError(f"needs an email address, got {sender!r}")
        parse_address(address)
        return sender

    @field_validator("ca_file")
    @classmethod
    def _loadable_bundle(cls, path: Path | None) -> Path | None:
        if path is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(path))
            except (OSError, ssl.SSLError) as error:
                raise ValueError(f"cannot load CA bundle {str(path)!r}: {error}") from None
        return path

    @field_validator("message_id_domain")
    @classmethod
    def _plain_domain(cls, domain: str | None) -> str | None:
        if domain is not None and not re.fullmatch(r"[^\s<>@]+", domain):
            raise ValueError(f"must be a bare domain, got {domain!r}")
        return domain

    @model_validator(mode="after")
    def _defaults(self) -> Self:
        if self.port is None:
            self.port = 465 if self.tls else 587 if self.starttls else 25
        if self.message_id_domain is None:
            self.message_id_domain = self.sender_address.rpartition("@")[2]
        return self


def message_id(idempotency_key: str, domain: str) -> str:
    """The Message-ID for a key: equal for every attempt, distinct between keys."""
    digest = hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:32]
    return f"<{digest}@{domain}>"


class _VerbatimHeader(UnstructuredHeader, BaseHeader):
    """A header folded only at spaces, so an ASCII URL never becomes an RFC 2047 encoded-word."""

    def fold(self, *, policy: Policy) -> str:
        value = str(self)
        if not value.isascii():
            return super().fold(policy=policy)
        limit = policy.max_line_length or sys.maxsize
        first = f"{self.name}:"
        lines = [first]
        for word in value.split():
            if lines[-1] != first and len(lines[-1]) + 1 + len(word) > limit:
                lines.append("")
            lines[-1] += " " + word
        return policy.linesep.join(lines) + policy.linesep


# Headers without a structure of their own (List-Unsubscribe, X-...) keep their text as given;
# seven-bit bodies (quoted-printable when needed) go through any server, 8BITMIME or not.
_POLICY = email.policy.SMTP.clone(cte_type="7bit", header_factory=HeaderRegistry(default_class=_VerbatimHeader))


def build_email(message: Message, settings: SmtpSettings) -> EmailMessage:
    """The MIME message for ``message``; raises ``ValueError`` for a header it cannot carry."""
    mail = EmailMessage(policy=_POLICY)
    mail["From"] = settings.from_
    mail["To"] = message.to
    if message.subject is not None:
        mail["Subject"] = message.subject
    mail["Date"] = format_datetime(datetime.now(UTC))
    mail["Message-ID"] = message_id(message.idempotency_key, settings.message_id_domain or "localhost")
    for name, value in message.headers.items():
        if name.lower() in ADAPTER_HEADERS or not _HEADER_NAME.match(name):
            raise ValueError(f"header {name!r} cannot be set by a message")
        del mail[name]
        mail[name] = value
    mail.set_content(message.text)
    if message.html is not None:
        mail.add_alternative(message.html, subtype="html")
    return mail


class SmtpAdapter:
    """Sends each message as one SMTP transaction on a pooled connection.

    The pool belongs to the event loop that made it; a send from another loop (the
    synchronous Python API may run one per call) starts a new pool and drops the old one.
    """

    name: ClassVar[str] = "smtp"

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._pool: ConnectionPool | None = None
        self._tls_context: ssl.SSLContext | None = None

    @classmethod
    def from_settings(cls, table: Mapping[str, Any]) -> Self:
        """Build from a channel table (see :class:`SmtpSettings`)."""
        return cls(validate_settings(SmtpSettings, table, adapter=cls.name))

    async def send(self, message: Message) -> SendResult:
        """Send ``message`` and classify the server's answer (see the module's table)."""
        try:
            recipient = parse_address(message.to)
        except ValueError as error:
            return SendResult.rejected(f"recipient {message.to!r} cannot be sent to: {error}", address_invalid=True)
        if "@" not in recipient:
            return SendResult.rejected(f"recipient {message.to!r} is not an email address", address_invalid=True)
        try:
            mail = build_email(message, self.settings)
        except ValueError as error:
            return SendResult.rejected(f"cannot build the message: {error}")
        try:
            reply = await self._running_loop_pool().transmit(mail, self.settings.sender_address, recipient)
        except (SMTPException, OSError) as error:
            return failure_result(error)
        return SendResult.sent(provider_message_id=str(mail["Message-ID"]), detail=_shorten(reply))

    async def aclose(self) -> None:
        """Close idle connections now and busy ones when their send ends; a later send reopens."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if pool.loop is asyncio.get_running_loop():
            await pool.aclose()
        else:
            pool.abandon()

    def _running_loop_pool(self) -> ConnectionPool:
        loop = asyncio.get_running_loop()
        if self._pool is None or self._pool.loop is not loop:
            if self._pool is not None:
                self._pool.abandon()
            self._pool = ConnectionPool(self.settings.pool_size, self._connect)
        return self._pool

    async def _connect(self) -> SMTP:
        settings = self.settings
        client = SMTP(
            hostname=settings.host,
            port=settings.port,
            use_tls=settings.tls,
            start_tls=False,
            tls_context=await self._tls() if settings.tls or settings.starttls else None,
            timeout=settings.timeout,
        )
        await client.connect()
        try:
            if settings.starttls:
                await client.starttls()
            if settings.username is not None:
                password = settings.password.get_secret_value() if settings.password is not None else ""
                await client.login(settings.username, password)
        except BaseException:
            drop_connection(client)
            raise
        return client

    async def _tls(self) -> ssl.SSLContext:
        if self._tls_context is None:
            # Loading the system's CA store reads files: keep it off the event loop, and do it once.
            self._tls_context = await asyncio.to_thread(_build_tls_context, self.settings)
        return self._tls_context


def failure_result(error: BaseException) -> SendResult:
    """The result for an exception from a connection or a transaction (see the module's table)."""
    if isinstance(error, SMTPRecipientsRefused) and error.recipients:
        error = error.recipients[0]
    if isinstance(error, SMTPResponseException):
        stage = next((name for kind, name in _STAGES if isinstance(error, kind)), "SMTP")
        text = " ".join(error.message.split())
        detail = _shorten(f"{stage} {error.code} {text}")
        if 500 <= error.code < 600:
            return SendResult.rejected(detail, address_invalid=_condemns_recipient(stage, error.code, text))
        return SendResult.retryable(detail)
    if isinstance(error, SMTPNotSupported):
        return SendResult.rejected(_shorten(error.message))
    tls_error = _tls_cause(error)
    if tls_error is not None:
        return SendResult.retryable(_shorten(f"TLS failed: {tls_error}"))
    return SendResult.retryable(_shorten(f"{type(error).__name__}: {error}"))


def _build_tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if settings.ca_file is not None:
        context.load_verify_locations(cafile=str(settings.ca_file))
    if not settings.validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _condemns_recipient(stage: str, code: int, text: str) -> bool:
    enhanced = _ENHANCED_STATUS.match(text)
    if enhanced is not None:
        subject, detail = enhanced.groups()
        return stage in ("RCPT", "DATA") and subject == "1" and detail not in ("7", "8")
    return stage == "RCPT" and code in (550, 551, 553)


def _tls_cause(error: BaseException) -> ssl.SSLError | None:
    current: BaseException | None = error
    for _ in range(10):
        if current is None:
            return None
        if isinstance(current, ssl.SSLError):
            return current
        current = current.__cause__ or current.__context__
    return None


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= DETAIL_LIMIT else text[: DETAIL_LIMIT - 1] + "…"
