"""The ``memory`` adapter: keeps what it sends in a list, for tests and simulation."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Self

from adapters.base import AdapterSettings, Message, SendResult, SendStatus, validate_settings

__all__ = ["MemoryAdapter", "MemorySettings"]


class MemorySettings(AdapterSettings):
    """Settings of the ``memory`` adapter: only the common keys."""

    adapter: str = "memory"


class MemoryAdapter:
    """Records messages instead of delivering them, and can be told how sends turn out.

    ``sent`` holds every message whose send succeeded, repeats of one idempotency key
    included. ``attempts`` holds every call, successful or not, with its result. Results
    queued with :meth:`queue_results` are returned by the next sends in order; once they
    are used up, every send succeeds.
    """

    name: ClassVar[str] = "memory"

    def __init__(self, settings: MemorySettings | None = None, *, script: Iterable[SendResult] = ()) -> None:
        self.settings = settings or MemorySettings()
        self.sent: list[Message] = []
        self.attempts: list[tuple[Message, SendResult]] = []
        self.closed = False
        self._script: deque[SendResult] = deque(script)
        self._sequence = 0

    @classmethod
    def from_settings(cls, table: Mapping[str, Any]) -> Self:
        """Build from a channel table (see :class:`MemorySettings`)."""
        return cls(validate_settings(MemorySettings, table, adapter=cls.name))

    def queue_results(self, *results: SendResult) -> None:
        """Make the next sends return ``results``, in order, before succeeding again."""
        self._script.extend(results)

    def clear(self) -> None:
        """Forget recorded messages and attempts; queued results stay queued."""
        self.sent.clear()
        self.attempts.clear()

    async def send(self, message: Message) -> SendResult:
        """Return the next queued result, or record the message as sent."""
        self._sequence += 1
        if self._script:
            result = self._script.popleft()
        else:
            result = SendResult.sent(provider_message_id=f"memory-{self._sequence}")
        if result.status is SendStatus.SENT:
            self.sent.append(message)
        self.attempts.append((message, result))
        return result

    async def aclose(self) -> None:
        """Mark the adapter closed; what it recorded stays readable."""
        self.closed = True
