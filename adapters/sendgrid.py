"""The ``sendgrid`` adapter: email through SendGrid's v3 Mail Send API.

Each message is one ``POST /v3/mail/send`` with a JSON body: a single personalization
addressed to the recipient, ``from``, ``subject``, ``content`` (``text/plain`` first, then
``text/html`` when the message has one), the message's ``headers`` and ``custom_args``.
``custom_args`` carries ``touchpoint_id``, ``idempotency_key``, ``campaign_id`` and
``step_id`` (after any ``Message.metadata``), and SendGrid returns them on every event
webhook, so events can be attributed without knowing the provider's id. SendGrid has no
idempotency key of its own: a message sent twice is delivered twice, recognisable by
``custom_args.idempotency_key``. The request authenticates with ``Authorization: Bearer``.

Settings (``api_key`` or ``api_key_file``, not both; ``from`` is required)::

    [channels.email]
    adapter = "sendgrid"
    api_key_file = "/run/secrets/sendgrid"
    from = "Acme <hello@example.com>"
    base_url = "https://api.sendgrid.com"   # EU subusers: "https://api.eu.sendgrid.com"
    timeout = 10

Outcomes (beside the common table in :mod:`adapters.http`):

========================================  ==========================================
SendGrid answers                          Result
========================================  ==========================================
202 Accepted                              sent, id from the ``X-Message-Id`` header
400 naming a ``personalizations.N.to``    rejected, ``address_invalid``: the
field                                     recipient's address does not validate
other 400, 401, 403, 413                  rejected with ``errors[].message``
429, 5xx                                  retryable, ``Retry-After`` kept
========================================  ==========================================

The event webhook's ``sg_message_id`` begins with the ``X-Message-Id`` recorded here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from email.utils import parseaddr
from typing import Any, ClassVar, Self

import httpx

from adapters.base import Message, validate_settings
from adapters.http import ApiKeyEmailSettings, HttpAdapter, response_object

__all__ = ["DEFAULT_BASE_URL", "SendgridAdapter", "SendgridSettings"]

DEFAULT_BASE_URL = "https://api.sendgrid.com"
MAIL_SEND_PATH = "/v3/mail/send"
RECIPIENT_FIELD = re.compile(r"^personalizations\.\d+\.to(\.|$)")


class SendgridSettings(ApiKeyEmailSettings):
    """Settings of the ``sendgrid`` adapter."""

    adapter: str = "sendgrid"
    base_url: str = DEFAULT_BASE_URL


class SendgridAdapter(HttpAdapter):
    """Sends email through SendGrid's Mail Send API (see the module docs)."""

    name: ClassVar[str] = "sendgrid"
    reads_accepted_body: ClassVar[bool] = False
    settings: SendgridSettings

    def __init__(self, settings: SendgridSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(settings, transport=transport)
        assert settings.api_key is not None  # the settings validator resolved it
        self._authorization = f"Bearer {settings.api_key.get_secret_value()}"
        name, address = parseaddr(settings.from_)
        self._sender = {"email": address, "name": name} if name else {"email": address}

    @classmethod
    def from_settings(cls, table: Mapping[str, Any]) -> Self:
        """Build from a channel table (see :class:`SendgridSettings`)."""
        return cls(validate_settings(SendgridSettings, table, adapter=cls.name))

    def default_headers(self) -> Mapping[str, str]:
        """The API key as a bearer token; JSON answers."""
        return {"Authorization": self._authorization, "Accept": "application/json"}

    def request(self, message: Message) -> httpx.Request:
        """``POST /v3/mail/send`` with the message as SendGrid's JSON body."""
        return self.build_request("POST", MAIL_SEND_PATH, json=self.payload(message))

    def payload(self, message: Message) -> dict[str, Any]:
        """The JSON body SendGrid receives for ``message``."""
        sender = self._sender
        content = []
        if message.text or not message.html:
            content.append({"type": "text/plain", "value": message.text})
        if message.html:
            content.append({"type": "text/html", "value": message.html})
        body: dict[str, Any] = {
            "personalizations": [{"to": [{"email": message.to}]}],
            "from": sender,
            "content": content,
            "custom_args": {
                **message.metadata,
                "touchpoint_id": message.touchpoint_id,
                "idempotency_key": message.idempotency_key,
                "campaign_id": message.campaign_id,
                "step_id": message.step_id,
            },
        }
        if message.subject is not None:
            body["subject"] = message.subject
        if message.headers:
            body["headers"] = dict(message.headers)
        return body

    def provider_message_id(self, response: httpx.Response, message: Message) -> str | None:
        """SendGrid's ``X-Message-Id`` response header."""
        message_id = response.headers.get("X-Message-Id")
        return str(message_id) if message_id else None

    def error_detail(self, response: httpx.Response) -> str:
        """Every ``errors[].message``, each with the field it names."""
        errors = _errors(response)
        if not errors:
            return response.text
        parts = []
        for error in errors:
            text = str(error.get("message") or "unspecified error")
            if error.get("field"):
                text += f" (field {error['field']})"
            parts.append(text)
        return "; ".join(parts)

    def address_rejected(self, response: httpx.Response) -> bool:
        """A 400 whose errors name the recipient's ``to`` field."""
        if response.status_code != 400:
            return False
        return any(RECIPIENT_FIELD.match(str(error.get("field") or "")) for error in _errors(response))


def _errors(response: httpx.Response) -> list[dict[str, Any]]:
    errors = response_object(response).get("errors")
    if not isinstance(errors, list):
        return []
    return [error for error in errors if isinstance(error, dict)]
