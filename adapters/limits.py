"""Per-channel rate limit and concurrency, around any adapter.

:class:`Throttled` wraps an adapter so that at most ``concurrency`` sends are in flight and
sends start no faster than ``rate_limit`` per second, evenly spaced (no burst at the start of
each second: a provider that allows one message per second gets one message per second).
The engine wraps every channel's adapter with the channel's ``rate_limit`` and
``concurrency`` settings; the contract suite checks the pair holds for every adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import ClassVar

from aiolimiter import AsyncLimiter

from adapters.base import Adapter, Message, SendResult, SendStatus

__all__ = ["Throttled"]


class Throttled:
    """An adapter that forwards to ``inner`` within a rate limit and a concurrency limit."""

    name: ClassVar[str] = "throttled"

    def __init__(self, inner: Adapter, *, rate_limit: float | None, concurrency: int) -> None:
        if rate_limit is not None and rate_limit <= 0:
            raise ValueError(f"rate_limit must be positive, got {rate_limit}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.inner = inner
        self.rate_limit = rate_limit
        self.concurrency = concurrency
        # A bucket of one that refills every 1/rate seconds spaces sends evenly.
        self._limiter = AsyncLimiter(1, 1 / rate_limit) if rate_limit is not None else None
        self._slots: asyncio.Semaphore | None = None
        self._slots_loop: asyncio.AbstractEventLoop | None = None

    async def send(self, message: Message, *, go_ahead: Callable[[], Awaitable[bool]] | None = None) -> SendResult:
        """Wait for a slot and for the rate limit, then send through the wrapped adapter.

        ``go_ahead``, when given, is asked once the wait is over: a send that waited may no
        longer be wanted (its lease was lost meanwhile). A refusal sends nothing and answers
        ``retryable``.
        """
        async with self._running_loop_slots():
            if self._limiter is not None:
                await self._limiter.acquire()
            if go_ahead is not None and not await go_ahead():
                return SendResult(SendStatus.RETRYABLE, detail="withdrawn before sending")
            return await self.inner.send(message)

    async def aclose(self) -> None:
        """Close the wrapped adapter."""
        await self.inner.aclose()

    def _running_loop_slots(self) -> asyncio.Semaphore:
        # A semaphore belongs to one event loop; keep one per running loop.
        loop = asyncio.get_running_loop()
        if self._slots is None or self._slots_loop is not loop:
            self._slots = asyncio.Semaphore(self.concurrency)
            self._slots_loop = loop
        return self._slots
