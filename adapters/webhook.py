"""The ``webhook`` adapter: POSTs each message as signed JSON to a URL of your own.

The body is the same JSON object the ``file`` adapter writes (see
:func:`adapters.file.message_record`): every :class:`~adapters.base.Message` field, the
configured ``from`` and ``sent_at``. The request carries these headers:

- ``Content-Type: application/json``
- ``X-Tact-Timestamp``: the Unix time of signing, in whole seconds
- ``X-Tact-Signature``: ``sha256=`` and the hex HMAC-SHA256, keyed with the secret, of the
  timestamp, a ``.`` and the raw body bytes
- ``Idempotency-Key``: the message's idempotency key; a receiver that has seen it answers
  2xx again without acting twice

A receiver checks the signature with :func:`verify_signature` before trusting the body,
and answers 2xx to accept (with an optional JSON ``{"id": "..."}`` kept as the provider
message id). To say the address itself is bad, it answers a 4xx with a JSON body holding
``"address_invalid": true``; ``error`` or ``message`` in a JSON error body becomes the
failure's detail.

Settings (``secret`` or ``secret_file``, not both; ``url`` is the full endpoint, and the
adapter's ``base_url`` is derived from it, so do not set ``base_url``)::

    [channels.push]
    adapter = "webhook"
    url = "https://hooks.example.com/tact/messages"
    secret_file = "/run/secrets/tact-webhook"
    timeout = 5

Outcomes (beside the common table in :mod:`adapters.http`):

=============================================  ===================================
The receiver answers                           Result
=============================================  ===================================
2xx                                            sent, id from a JSON ``id`` if any
4xx with JSON ``"address_invalid": true``      rejected, ``address_invalid``
other 4xx (except 408, 425, 429)               rejected with ``error`` / ``message``
408, 425, 429, 5xx                             retryable, ``Retry-After`` kept
=============================================  ===================================
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self
from urllib.parse import urlsplit

import httpx
from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from adapters.base import Message, validate_settings
from adapters.file import message_record
from adapters.http import HttpAdapter, HttpSettings, response_object
from adapters.secrets import resolve_secret

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookAdapter",
    "WebhookSettings",
    "sign",
    "verify_signature",
]

TIMESTAMP_HEADER = "X-Tact-Timestamp"
SIGNATURE_HEADER = "X-Tact-Signature"
SIGNATURE_PREFIX = "sha256="


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Tact-Signature`` value for ``body`` signed at ``timestamp``."""
    digest = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def verify_signature(
    secret: bytes, timestamp: str, body: bytes, signature: str, *, now: float, tolerance: float = 300
) -> bool:
    """Whether ``signature`` signs ``body`` at ``timestamp`` with ``secret``, within ``tolerance``.

    ``timestamp`` and ``signature`` are the ``X-Tact-Timestamp`` and ``X-Tact-Signature``
    headers as received, ``body`` the raw request body, ``now`` the receiver's Unix time.
    A timestamp more than ``tolerance`` seconds from ``now`` fails, so a captured request
    cannot be replayed later. The comparison takes the same time whatever the signature.
    """
    if not timestamp.isascii() or not timestamp.isdigit():
        return False
    if abs(now - int(timestamp)) > tolerance:
        return False
    expected = sign(secret, timestamp, body).encode("ascii")
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


class WebhookSettings(HttpSettings):
    """Settings of the ``webhook`` adapter."""

    adapter: str = "webhook"
    base_url: str = ""
    """Derived from ``url``; not set by hand."""
    url: str
    """The endpoint that receives each message, e.g. ``https://hooks.example.com/tact``."""
    secret_file: Path | None = None
    """A file holding the signing secret (instead of ``secret``)."""
    secret: SecretStr | None = Field(default=None, validate_default=True)
    """The shared secret the receiver verifies signatures with."""

    @field_validator("url")
    @classmethod
    def _endpoint(cls, value: str, info: ValidationInfo) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        if info.data.get("base_url"):
            raise ValueError("give the full endpoint as url; base_url is derived from it")
        return value

    @field_validator("secret")
    @classmethod
    def _resolve_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        return resolve_secret("secret", value, info.data.get("secret_file"), required=True)

    @model_validator(mode="after")
    def _derive_base_url(self) -> Self:
        parts = urlsplit(self.url)
        self.base_url = f"{parts.scheme}://{parts.netloc}"
        return self


class WebhookAdapter(HttpAdapter):
    """POSTs each message as signed JSON to the configured URL (see the module docs).

    ``clock`` gives the Unix time used for ``X-Tact-Timestamp`` and ``sent_at``.
    """

    name: ClassVar[str] = "webhook"
    settings: WebhookSettings

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(settings, transport=transport)
        assert settings.secret is not None  # the settings validator resolved it
        self._secret = settings.secret.get_secret_value().encode("utf-8")
        self._clock = clock

    @classmethod
    def from_settings(cls, table: Mapping[str, Any]) -> Self:
        """Build from a channel table (see :class:`WebhookSettings`)."""
        return cls(validate_settings(WebhookSettings, table, adapter=cls.name))

    def request(self, message: Message) -> httpx.Request:
        """A signed ``POST`` of the message's JSON record to ``url``."""
        now = self._clock()
        record = message_record(message, sender=self.settings.from_, sent_at=datetime.fromtimestamp(now, UTC))
        body = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        timestamp = str(int(now))
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret, timestamp, body),
            "Idempotency-Key": message.idempotency_key,
        }
        return self.build_request("POST", self.settings.url, content=body, headers=headers)

    def provider_message_id(self, response: httpx.Response, message: Message) -> str | None:
        """The receiver's JSON ``id``, if it answered one."""
        message_id = response_object(response).get("id")
        return message_id if isinstance(message_id, str) and message_id else None

    def error_detail(self, response: httpx.Response) -> str:
        """The receiver's JSON ``error`` or ``message``, or its body as text."""
        document = response_object(response)
        for key in ("error", "message"):
            if isinstance(document.get(key), str):
                return str(document[key])
        return response.text

    def address_rejected(self, response: httpx.Response) -> bool:
        """A 4xx whose JSON body holds ``"address_invalid": true``."""
        return 400 <= response.status_code < 500 and response_object(response).get("address_invalid") is True
