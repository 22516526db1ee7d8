"""Tact: a drip-campaign scheduler that decides, for every touch, whether it is worth the
recipient's attention. The Python API is :class:`Engine` (see SPEC section 11)."""

from __future__ import annotations

from scheduler.engine import DecisionRow, Engine, IngestReport, TickResult
from scheduler.errors import TactError

__all__ = ["DecisionRow", "Engine", "IngestReport", "TactError", "TickResult"]
