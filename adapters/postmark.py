"""The ``postmark`` adapter: email through Postmark's ``POST /email`` API.

The JSON body carries ``From``, ``To``, ``Subject``, ``TextBody``, ``HtmlBody`` (when the
message has one), ``Headers`` as ``[{"Name": ..., "Value": ...}]``, ``MessageStream`` and
``Metadata``. Transactional messages go to ``message_stream``; marketing messages go to
``broadcast_stream``, since Postmark expects bulk mail on a broadcast stream. ``Metadata``
holds ``touchpoint_id``, ``idempotency_key``, ``campaign_id`` and ``step_id`` (after any
``Message.metadata``); Postmark echoes it in every webhook, so events can be attributed
without the provider's id. Postmark limits metadata to 10 keys, names to 20 characters and
values to 80, so keep idempotency keys short. The request authenticates with the server
token in ``X-Postmark-Server-Token``.

Settings (``server_token`` or ``server_token_file``, not both; ``from`` is required)::

    [channels.email]
    adapter = "postmark"
    server_token_file = "/run/secrets/postmark"
    from = "Acme <hello@example.com>"
    message_stream = "outbound"       # transactional messages
    broadcast_stream = "broadcast"    # marketing messages
    base_url = "https://api.postmarkapp.com"

Outcomes (beside the common table in :mod:`adapters.http`). Postmark answers every request
error with 422 and an ``ErrorCode``:

===========================================  =============================================
Postmark answers                             Result
===========================================  =============================================
200, ``ErrorCode`` 0                         sent, id from ``MessageID``
200 with a non-zero ``ErrorCode``            rejected (not expected for one message)
422, ``ErrorCode`` 406 (inactive recipient)  rejected, ``address_invalid``: the address
                                             bounced, complained or was suppressed
422, ``ErrorCode`` 300 about ``'To'``        rejected, ``address_invalid``: the
                                             recipient's address does not parse
422, any other code (300 about ``From``,     rejected: a setup problem, the address is
400 sender signature, 1235 stream, ...)      not to blame
401 (``ErrorCode`` 10, bad token)            rejected
429, 5xx                                     retryable, ``Retry-After`` kept
===========================================  =============================================
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import httpx
from pydantic import Field, SecretStr, ValidationInfo, field_validator

from adapters.base import Message, SendResult, validate_settings
from adapters.http import HttpAdapter, HttpEmailSettings, response_object
from adapters.secrets import resolve_secret

__all__ = ["DEFAULT_BASE_URL", "PostmarkAdapter", "PostmarkSettings"]

DEFAULT_BASE_URL = "https://api.postmarkapp.com"
INACTIVE_RECIPIENT = 406
INVALID_EMAIL_REQUEST = 300


class PostmarkSettings(HttpEmailSettings):
    """Settings of the ``postmark`` adapter."""

    adapter: str = "postmark"
    base_url: str = DEFAULT_BASE_URL
    message_stream: str = Field(default="outbound", min_length=1)
    """The stream for transactional messages."""
    broadcast_stream: str = Field(default="broadcast", min_length=1)
    """The stream for marketing messages."""
    server_token_file: Path | None = None
    """A file holding the server API token (instead of ``server_token``)."""
    server_token: SecretStr | None = Field(default=None, validate_default=True)
    """The server's API token."""

    @field_validator("server_token")
    @classmethod
    def _resolve_server_token(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        return resolve_secret("server_token", value, info.data.get("server_token_file"), required=True)


class PostmarkAdapter(HttpAdapter):
    """Sends email through Postmark's email API (see the module docs)."""

    name: ClassVar[str] = "postmark"
    settings: PostmarkSettings

    def __init__(self, settings: PostmarkSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(settings, transport=transport)
        assert settings.server_token is not None  # the settings validator resolved it
        self._server_token = settings.server_token.get_secret_value()

    @classmethod
    def from_settings(cls, table: Mapping[str, Any]) -> Self:
        """Build from a channel table (see :class:`PostmarkSettings`)."""
        return cls(validate_settings(PostmarkSettings, table, adapter=cls.name))

    def default_headers(self) -> Mapping[str, str]:
        """The server token; JSON answers."""
        return {"X-Postmark-Server-Token": self._server_token, "Accept": "application/json"}

    def request(self, message: Message) -> httpx.Request:
        """``POST /email`` with the message as Postmark's JSON body."""
        return self.build_request("POST", "/email", json=self.payload(message))

    def payload(self, message: Message) -> dict[str, Any]:
        """The JSON body Postmark receives for ``message``."""
        marketing = message.kind == "marketing"
        body: dict[str, Any] = {
            "From": self.settings.from_,
            "To": message.to,
            "TextBody": message.text,
            "MessageStream": self.settings.broadcast_stream if marketing else self.settings.message_stream,
            "Metadata": {
                **message.metadata,
                "touchpoint_id": message.touchpoint_id,
                "idempotency_key": message.idempotency_key,
                "campaign_id": message.campaign_id,
                "step_id": message.step_id,
            },
        }
        if message.subject is not None:
            body["Subject"] = message.subject
        if message.html:
            body["HtmlBody"] = message.html
        if message.headers:
            body["Headers"] = [{"Name": name, "Value": value} for name, value in message.headers.items()]
        return body

    def classify(self, response: httpx.Response, message: Message) -> SendResult:
        """As for any HTTP adapter, except that a 2xx with a non-zero ``ErrorCode`` is a rejection."""
        code = _error_code(response)
        if 200 <= response.status_code < 300 and code not in (None, 0):
            detail = f"HTTP {response.status_code}: {self.error_detail(response)}"
            return SendResult.rejected(detail, address_invalid=self.address_rejected(response))
        return super().classify(response, message)

    def provider_message_id(self, response: httpx.Response, message: Message) -> str | None:
        """Postmark's ``MessageID``."""
        message_id = response_object(response).get("MessageID")
        return message_id if isinstance(message_id, str) else None

    def error_detail(self, response: httpx.Response) -> str:
        """Postmark's ``Message`` with its ``ErrorCode``."""
        document = response_object(response)
        text = document.get("Message")
        if not isinstance(text, str):
            return response.text
        code = _error_code(response)
        return f"{text} (ErrorCode {code})" if code is not None else text

    def address_rejected(self, response: httpx.Response) -> bool:
        """An inactive recipient (406), or an invalid email request (300) about ``To``."""
        code = _error_code(response)
        if code == INACTIVE_RECIPIENT:
            return True
        # ErrorCode 300 also covers a bad From or a missing body; only a bad To condemns the address.
        text = response_object(response).get("Message")
        return code == INVALID_EMAIL_REQUEST and isinstance(text, str) and "'To'" in text


def _error_code(response: httpx.Response) -> int | None:
    code = response_object(response).get("ErrorCode")
    return code if isinstance(code, int) and not isinstance(code, bool) else None
