"""The ``null`` adapter: accepts every message and does nothing, as cheaply as possible."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

from adapters.base import AdapterSettings, Message, SendResult, validate_settings

__all__ = ["NullAdapter", "NullSettings"]


class NullSettings(AdapterSettings):
    """Settings of the ``null`` adapter: only the common keys."""

    adapter: str = "null"


_SENT = SendResult.sent()


class NullAdapter:
    """Returns the same ``sent`` result for every message, without a provider id."""

    name: ClassVar[str] = "null"
    __slots__ = ("settings",)

    def __init__(self, settings: NullSettings | None = None) -> None:
        self.settings = settings or NullSettings()

    @classmethod
    def from_settings(cls, table: Mapping[str, Any]) -> Self:
        """Build from a channel table (see :class:`NullSettings`)."""
        return cls(validate_settings(NullSettings, table, adapter=cls.name))

    async def send(self, message: Message) -> SendResult:
        """Succeed without doing anything."""
        return _SENT

    async def aclose(self) -> None:
        """Nothing to release."""
