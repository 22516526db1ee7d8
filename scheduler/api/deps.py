"""What every route of the API shares: the engine, the daemon's state, the blocking-call bridge.

The app keeps an :class:`ApiState` in ``app.state.tact``. Routes reach it with the
:func:`api_state` dependency and the engine with :func:`engine`. Engine and store calls are
blocking (database I/O): routes run them with :func:`blocking` so the event loop, which
the scheduler's ticks share, never waits on the database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request

if TYPE_CHECKING:
    from scheduler.engine import Engine

__all__ = ["ApiState", "api_state", "blocking", "engine"]

T = TypeVar("T")


@dataclass
class ApiState:
    """The running daemon as the API sees it."""

    engine: Engine
    draining: bool = False
    """Set when SIGTERM arrives: ``/readyz`` turns false so load balancers stop sending."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Per-process caches routes may keep (e.g. replay caches for webhook tokens)."""


def api_state(request: Request) -> ApiState:
    """The daemon state of the app serving ``request``."""
    state: ApiState = request.app.state.tact
    return state


def engine(request: Request) -> Engine:
    """The engine of the app serving ``request``."""
    return api_state(request).engine


async def blocking(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking engine or store call in a worker thread."""
    return await asyncio.to_thread(function, *args, **kwargs)
