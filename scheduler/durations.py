"""Durations as marketers write them: ``30s``, ``15m``, ``4h``, ``2d``, ``1w``, ``1d12h``."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([wdhms])")
_WHOLE = re.compile(r"^(?:\d+[wdhms])+$")


def parse_duration(text: str) -> timedelta:
    """Parse a duration such as ``1d12h``; raise ``ValueError`` with a readable message."""
    cleaned = text.strip().lower()
    if not cleaned or not _WHOLE.match(cleaned):
        raise ValueError(f"invalid duration {text!r}: use a number and a unit (s, m, h, d, w), e.g. '2d' or '1d12h'")
    seconds = 0
    seen: set[str] = set()
    for number, unit in _PART.findall(cleaned):
        if unit in seen:
            raise ValueError(f"invalid duration {text!r}: unit {unit!r} appears twice")
        seen.add(unit)
        seconds += int(number) * _UNITS[unit]
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Format a duration in the same notation (``0s`` for zero)."""
    remaining = int(value.total_seconds())
    if remaining == 0:
        return "0s"
    sign = "-" if remaining < 0 else ""
    remaining = abs(remaining)
    parts = []
    for unit, size in _UNITS.items():
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return sign + "".join(parts)
