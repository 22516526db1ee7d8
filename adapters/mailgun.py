"""The ``mailgun`` adapter: email through Mailgun's ``POST /v3/{domain}/messages`` API.

The request is form-encoded (``application/x-www-form-urlencoded``; Mailgun takes the same
fields as ``multipart/form-data``, which only attachments need): ``from``, ``to``,
``subject``, ``text``, ``html`` (when the message has one), each message header as
``h:<Header-Name>`` and the variables ``v:touchpoint_id``, ``v:idempotency_key``,
``v:campaign_id`` and ``v:step_id`` (after any ``Message.metadata``, as ``v:<key>``).
Mailgun returns the variables in every webhook's ``user-variables``, so events can be
attributed without the provider's id. It authenticates with HTTP basic auth, user ``api``
and the API key as the password.

Settings (``api_key`` or ``api_key_file``, not both; ``from`` and ``domain`` are
required)::

    [channels.email]
    adapter = "mailgun"
    domain = "mg.example.com"
    api_key_file = "/run/secrets/mailgun"
    from = "Acme <hello@mg.example.com>"
    base_url = "https://api.mailgun.net"   # EU domains: "https://api.eu.mailgun.net"

Outcomes (beside the common table in :mod:`adapters.http`):

=========================================  ==============================================
Mailgun answers                            Result
=========================================  ==============================================
200 with ``id`` and ``message``            sent; the id without its angle brackets, as
                                           Mailgun's webhooks spell it
400 "to parameter is not a valid address"  rejected, ``address_invalid``
other 400, 401 (``Forbidden``), 403,       rejected with Mailgun's ``message``
404 (unknown domain)
429, 5xx                                   retryable, ``Retry-After`` kept
=========================================  ==============================================

Addresses on Mailgun's bounce or unsubscribe lists are accepted and then dropped; their
webhooks report that, not the send.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import httpx
from pydantic import field_validator

from adapters.base import Message, validate_settings
from adapters.http import ApiKeyEmailSettings, HttpAdapter, basic_authorization, response_object

__all__ = ["DEFAULT_BASE_URL", "MailgunAdapter", "MailgunSettings"]

DEFAULT_BASE_URL = "https://api.mailgun.net"
DOMAIN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$")
INVALID_RECIPIENT = re.compile(r"\bto\b.*not a valid address", re.IGNORECASE)


class MailgunSettings(ApiKeyEmailSettings):
    """Settings of the ``mailgun`` adapter."""

    adapter: str = "mailgun"
    base_url: str = DEFAULT_BASE_URL
    domain: str
    """The Mailgun sending domain, e.g. ``mg.example.com``."""

    @field_validator("domain")
    @classmethod
    def _domain_name(cls, value: str) -> str:
        if not DOMAIN.match(value):
            raise ValueError(f"not a domain name: {value!r}")
        return value


class MailgunAdapter(HttpAdapter):
    """Sends email through Mailgun's messages API (see the module docs)."""

    name: ClassVar[str] = "mailgun"
    settings: MailgunSettings

    def __init__(self, settings: MailgunSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(settings, transport=transport)
        assert settings.api_key is not None  # the settings validator resolved it
        self._authorization = basic_authorization("api", settings.api_key.get_secret_value())

    @classmethod
    def from_settings(cls, table: Mapping[str, Any]) -> Self:
        """Build from a channel table (see :class:`MailgunSettings`)."""
        return cls(validate_settings(MailgunSettings, table, adapter=cls.name))

    def default_headers(self) -> Mapping[str, str]:
        """Basic auth with the API key; JSON answers."""
        return {"Authorization": self._authorization, "Accept": "application/json"}

    def request(self, message: Message) -> httpx.Request:
        """``POST /v3/{domain}/messages`` with the message as form fields."""
        return self.build_request("POST", f"/v3/{self.settings.domain}/messages", data=self.fields(message))

    def fields(self, message: Message) -> dict[str, str]:
        """The form fields Mailgun receives for ``message``."""
        fields = {"from": self.settings.from_, "to": message.to, "text": message.text}
        if message.subject is not None:
            fields["subject"] = message.subject
        if message.html:
            fields["html"] = message.html
        for name, value in message.headers.items():
            fields[f"h:{name}"] = value
        variables = {
            **message.metadata,
            "touchpoint_id": message.touchpoint_id,
            "idempotency_key": message.idempotency_key,
            "campaign_id": message.campaign_id,
            "step_id": message.step_id,
        }
        for name, value in variables.items():
            fields[f"v:{name}"] = value
        return fields

    def provider_message_id(self, response: httpx.Response, message: Message) -> str | None:
        """Mailgun's ``id``, without the angle brackets of a Message-ID header."""
        message_id = response_object(response).get("id")
        return message_id.strip().strip("<>") if isinstance(message_id, str) else None

    def error_detail(self, response: httpx.Response) -> str:
        """Mailgun's ``message``, or the plain-text body (a 401 answers ``Forbidden``)."""
        text = response_object(response).get("message")
        return text if isinstance(text, str) else response.text

    def address_rejected(self, response: httpx.Response) -> bool:
        """A 400 saying the ``to`` address is not valid."""
        return response.status_code == 400 and bool(INVALID_RECIPIENT.search(self.error_detail(response)))
