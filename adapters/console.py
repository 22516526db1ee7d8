"""The ``console`` adapter: prints each message as a readable block, for development.

A block looks like this (the ``From``, ``Subject``, ``HTML`` and ``Headers`` lines appear
only when there is something to show)::

    === email to ada@example.com ===
    From: Acme <hello@example.com>
    Subject: Welcome to Acme
    Campaign: trial-onboarding / welcome (marketing, attempt 1)
    Touchpoint: tp-1
    Key: enr-1:welcome
    HTML: 1204 characters (not shown)
    Headers:
      List-Unsubscribe: <https://tact.example.com/u/abc>

    Hi Ada, ...
    ------------------------------------------------------------------------
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any, ClassVar, Self, TextIO

from pydantic import Field

from adapters.base import AdapterSettings, Message, SendResult, validate_settings

__all__ = ["SEPARATOR", "ConsoleAdapter", "ConsoleSettings"]

SEPARATOR = "-" * 72
"""The line that ends every block."""


class ConsoleSettings(AdapterSettings):
    """Settings of the ``console`` adapter."""

    adapter: str = "console"
    max_body_chars: int = Field(default=2000, ge=1)
    """Longer text bodies are cut here, with a note of how much was left out."""


class ConsoleAdapter:
    """Writes one block per message to ``stream`` (standard output unless given)."""

    name: ClassVar[str] = "console"

    def __init__(self, settings: ConsoleSettings | None = None, *, stream: TextIO | None = None) -> None:
        self.settings = settings or ConsoleSettings()
        self._stream = stream

    @classmethod
    def from_settings(cls, table: Mapping[str, Any]) -> Self:
        """Build from a channel table (see :class:`ConsoleSettings`)."""
        return cls(validate_settings(ConsoleSettings, table, adapter=cls.name))

    async def send(self, message: Message) -> SendResult:
        """Print the message; always succeeds."""
        # Looked up at send time so that a redirected sys.stdout is honoured.
        stream = self._stream if self._stream is not None else sys.stdout
        stream.write(self.render(message))
        stream.flush()
        return SendResult.sent(provider_message_id=f"console-{message.idempotency_key}")

    async def aclose(self) -> None:
        """Nothing to release: the stream belongs to the caller."""

    def render(self, message: Message) -> str:
        """The block printed for ``message``, ending with the separator line."""
        lines = [f"=== {message.channel} to {message.to} ==="]
        if self.settings.from_:
            lines.append(f"From: {self.settings.from_}")
        if message.subject is not None:
            lines.append(f"Subject: {message.subject}")
        lines.append(f"Campaign: {message.campaign_id} / {message.step_id} ({message.kind}, attempt {message.attempt})")
        lines.append(f"Touchpoint: {message.touchpoint_id}")
        lines.append(f"Key: {message.idempotency_key}")
        if message.html is not None:
            lines.append(f"HTML: {len(message.html)} characters (not shown)")
        if message.headers:
            lines.append("Headers:")
            lines.extend(f"  {key}: {value}" for key, value in message.headers.items())
        lines.append("")
        lines.append(self._body(message.text))
        lines.append(SEPARATOR)
        return "\n".join(lines) + "\n"

    def _body(self, text: str) -> str:
        limit = self.settings.max_body_chars
        body = text.rstrip("\n")
        if len(body) <= limit:
            return body
        return f"{body[:limit]}\n[... {len(body) - limit} more characters]"
