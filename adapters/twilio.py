"""The ``twilio`` adapter: SMS through Twilio's Programmable Messaging API.

Each message is one ``POST /2010-04-01/Accounts/{account_sid}/Messages.json``, form-encoded:
``To`` (the recipient's E.164 number), ``From`` or, when ``messaging_service_sid`` is set,
``MessagingServiceSid``, and ``Body``, the message's text (an SMS has no subject and no
headers). It authenticates with HTTP basic auth, the account SID and its auth token.

When ``status_callback_url`` is set, it is sent as ``StatusCallback`` with the query
parameters ``touchpoint_id`` and ``idempotency_key`` added, so Twilio's delivery callbacks
name the touchpoint without a lookup by message SID. Twilio has no idempotency key for
messages: a message sent twice is sent twice, recognisable by those parameters.

Settings (``auth_token`` or ``auth_token_file``, not both; ``from`` or
``messaging_service_sid``, not both)::

    [channels.sms]
    adapter = "twilio"
    account_sid = "AC0123456789abcdef0123456789abcdef"
    auth_token_file = "/run/secrets/twilio"
    from = "+15550100"                    # or messaging_service_sid = "MG..."
    status_callback_url = "https://tact.example.com/events/twilio"
    base_url = "https://api.twilio.com"

Outcomes (beside the common table in :mod:`adapters.http`):

======================================  ==============================================
Twilio answers                          Result
======================================  ==============================================
201 with the message resource           sent, id from ``sid``
400 with code 21211 (invalid ``To``),   rejected, ``address_invalid``
21614 (not a mobile number) or 21610
(the recipient replied STOP)
other 400, 401 (code 20003), 404        rejected with ``message`` and ``code``
429 (code 20429), 5xx                   retryable, ``Retry-After`` kept
======================================  ==============================================
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
from pydantic import Field, SecretStr, ValidationInfo, field_validator

from adapters.base import Message, validate_settings
from adapters.http import HttpAdapter, HttpSettings, basic_authorization, response_object
from adapters.secrets import resolve_secret

__all__ = ["ADDRESS_INVALID_CODES", "DEFAULT_BASE_URL", "TwilioAdapter", "TwilioSettings", "status_callback"]

DEFAULT_BASE_URL = "https://api.twilio.com"
ADDRESS_INVALID_CODES = frozenset({21211, 21610, 21614})
"""Twilio error codes that condemn the recipient's number itself."""
ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
MESSAGING_SERVICE_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
SENDER = re.compile(r"^(\+[1-9]\d{1,14}|\d{3,8}|(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11})$")
"""An E.164 number, a short code, or an alphanumeric sender id."""


class TwilioSettings(HttpSettings):
    """Settings of the ``twilio`` adapter."""

    adapter: str = "twilio"
    base_url: str = DEFAULT_BASE_URL
    account_sid: str
    """The account SID, ``AC`` and 32 hexadecimal digits."""
    auth_token_file: Path | None = None
    """A file holding the auth token (instead of ``auth_token``)."""
    auth_token: SecretStr | None = Field(default=None, validate_default=True)
    """The account's auth token."""
    messaging_service_sid: str | None = Field(default=None, validate_default=True)
    """Send through a Messaging Service (``MG...``) instead of from one number."""
    status_callback_url: str | None = None
    """Where Twilio posts delivery status callbacks."""

    @field_validator("from_")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is not None and not SENDER.match(value):
            raise ValueError(f"not an E.164 number, short code or alphanumeric sender id: {value!r}")
        return value

    @field_validator("account_sid")
    @classmethod
    def _account_sid(cls, value: str) -> str:
        if not ACCOUNT_SID.match(value):
            raise ValueError(f"not an account SID (AC and 32 hex digits): {value!r}")
        return value

    @field_validator("auth_token")
    @classmethod
    def _resolve_auth_token(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        return resolve_secret("auth_token", value, info.data.get("auth_token_file"), required=True)

    @field_validator("messaging_service_sid")
    @classmethod
    def _one_sender(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not MESSAGING_SERVICE_SID.match(value):
            raise ValueError(f"not a messaging service SID (MG and 32 hex digits): {value!r}")
        if "from_" not in info.data:  # ``from`` itself is invalid and already reported
            return value
        if value is None and info.data["from_"] is None:
            raise ValueError("give from or messaging_service_sid")
        if value is not None and info.data["from_"] is not None:
            raise ValueError("give from or messaging_service_sid, not both")
        return value

    @field_validator("status_callback_url")
    @classmethod
    def _callback_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value


class TwilioAdapter(HttpAdapter):
    """Sends SMS through Twilio's Messages resource (see the module docs)."""

    name: ClassVar[str] = "twilio"
    settings: TwilioSettings

    def __init__(self, settings: TwilioSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(settings, transport=transport)
        assert settings.auth_token is not None  # the settings validator resolved it
        self._authorization = basic_authorization(settings.account_sid, settings.auth_token.get_secret_value())

    @classmethod
    def from_settings(cls, table: Mapping[str, Any]) -> Self:
        """Build from a channel table (see :class:`TwilioSettings`)."""
        return cls(validate_settings(TwilioSettings, table, adapter=cls.name))

    def default_headers(self) -> Mapping[str, str]:
        """Basic auth with the account SID and auth token; JSON answers."""
        return {"Authorization": self._authorization, "Accept": "application/json"}

    def request(self, message: Message) -> httpx.Request:
        """``POST .../Messages.json`` with the message as form fields."""
        path = f"/2010-04-01/Accounts/{self.settings.account_sid}/Messages.json"
        return self.build_request("POST", path, data=self.fields(message))

    def fields(self, message: Message) -> dict[str, str]:
        """The form fields Twilio receives for ``message``."""
        fields = {"To": message.to, "Body": message.text}
        if self.settings.messaging_service_sid is not None:
            fields["MessagingServiceSid"] = self.settings.messaging_service_sid
        elif self.settings.from_ is not None:
            fields["From"] = self.settings.from_
        if self.settings.status_callback_url is not None:
            fields["StatusCallback"] = status_callback(self.settings.status_callback_url, message)
        return fields

    def provider_message_id(self, response: httpx.Response, message: Message) -> str | None:
        """The message resource's ``sid``."""
        sid = response_object(response).get("sid")
        return sid if isinstance(sid, str) else None

    def error_detail(self, response: httpx.Response) -> str:
        """Twilio's ``message`` with its ``code``."""
        document = response_object(response)
        text = document.get("message")
        if not isinstance(text, str):
            return response.text
        code = document.get("code")
        return f"{text} (code {code})" if code is not None else text

    def address_rejected(self, response: httpx.Response) -> bool:
        """Codes 21211, 21614 and 21610: an invalid, non-mobile or opted-out number."""
        return response_object(response).get("code") in ADDRESS_INVALID_CODES


def status_callback(url: str, message: Message) -> str:
    """``url`` with the message's ``touchpoint_id`` and ``idempotency_key`` as query parameters."""
    parts = urlsplit(url)
    ours = {"touchpoint_id": message.touchpoint_id, "idempotency_key": message.idempotency_key}
    query = [(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True) if key not in ours]
    query.extend(ours.items())
    return urlunsplit(parts._replace(query=urlencode(query)))
