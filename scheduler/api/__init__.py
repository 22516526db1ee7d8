"""The HTTP API served by ``tact run`` (SPEC §9): ingest, provider webhooks, unsubscribe, operations."""

from __future__ import annotations

from scheduler.api.app import create_app
from scheduler.api.deps import ApiState
from scheduler.api.server import EmbeddedServer

__all__ = ["ApiState", "EmbeddedServer", "create_app"]
