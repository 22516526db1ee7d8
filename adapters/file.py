"""The ``file`` adapter: an outbox of JSON lines, one object per message.

Each line holds every :class:`~adapters.base.Message` field (headers, text and HTML bodies
included), the configured ``from`` and ``sent_at``, the UTC time of writing in ISO 8601::

    {"touchpoint_id": "tp-1", "idempotency_key": "enr-1:welcome", "channel": "email",
     "to": "ada@example.com", ..., "headers": {"List-Unsubscribe": "<...>"}, "attempt": 1,
     "metadata": {}, "from": "Acme <hello@example.com>",
     "sent_at": "2026-01-05T10:00:00.123456+00:00"}
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self, TextIO

from adapters.base import AdapterSettings, Message, SendResult, validate_settings

__all__ = ["FileAdapter", "FileSettings", "message_record"]


class FileSettings(AdapterSettings):
    """Settings of the ``file`` adapter."""

    adapter: str = "file"
    path: Path
    """The outbox; appended to, created with its parent directories when missing."""


def message_record(message: Message, *, sender: str | None, sent_at: datetime) -> dict[str, Any]:
    """The JSON object written for ``message``."""
    record = {field.name: getattr(message, field.name) for field in dataclasses.fields(Message)}
    record["headers"] = dict(message.headers)
    record["metadata"] = dict(message.metadata)
    record["from"] = sender
    record["sent_at"] = sent_at.astimezone(UTC).isoformat()
    return record


class FileAdapter:
    """Appends each message to the outbox file; the file opens on the first send."""

    name: ClassVar[str] = "file"

    def __init__(self, settings: FileSettings) -> None:
        self.settings = settings
        self._outbox: TextIO | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_settings(cls, table: Mapping[str, Any]) -> Self:
        """Build from a channel table (see :class:`FileSettings`)."""
        return cls(validate_settings(FileSettings, table, adapter=cls.name))

    @property
    def path(self) -> Path:
        """The outbox file."""
        return self.settings.path

    async def send(self, message: Message) -> SendResult:
        """Append the message as one JSON line and flush it."""
        record = message_record(message, sender=self.settings.from_, sent_at=datetime.now(UTC))
        line = json.dumps(record, ensure_ascii=False) + "\n"
        async with self._running_loop_lock():
            await asyncio.to_thread(self._append, line)
        return SendResult.sent(provider_message_id=f"file-{message.idempotency_key}")

    async def aclose(self) -> None:
        """Close the outbox if it is open; a later send opens it again."""
        async with self._running_loop_lock():
            outbox, self._outbox = self._outbox, None
            if outbox is not None:
                outbox.close()

    def _append(self, line: str) -> None:
        if self._outbox is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._outbox = self.path.open("a", encoding="utf-8", newline="\n")
        self._outbox.write(line)
        self._outbox.flush()

    def _running_loop_lock(self) -> asyncio.Lock:
        # An asyncio.Lock belongs to one event loop; the synchronous Python API may drive
        # this adapter from a new loop each time, so keep one lock per running loop.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock
