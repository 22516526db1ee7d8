"""Errors raised by Tact.

TactError
 ├── ConfigError            bad configuration file or environment value
 ├── CampaignError          a campaign file failed validation (carries diagnostics)
 ├── RecordError            an inbound recipient or event record is invalid
 ├── StoreError             the database is unusable
 │    └── SchemaOutOfDate   the schema is older than the code (run `tact db upgrade`)
 └── AdapterConfigError     a channel's adapter cannot be built from its settings
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class TactError(Exception):
    """Root of every error Tact raises on purpose."""


class ConfigError(TactError):
    """The configuration cannot be loaded."""


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a file, with its position (1-based line and column)."""

    path: Path
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


class CampaignError(TactError):
    """A campaign file failed validation; ``diagnostics`` lists every problem found."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        super().__init__("\n".join(str(d) for d in self.diagnostics))


class RecordError(TactError):
    """An inbound record is invalid; ``reason`` is a short code, ``message`` says why."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class StoreError(TactError):
    """The database cannot be used."""


class DatabaseUnavailable(StoreError):
    """The database does not answer: down, restarting or unreachable."""


class SchemaOutOfDate(StoreError):
    """The database schema is older than this version of Tact."""

    def __init__(self, current: str | None, head: str) -> None:
        self.current = current
        self.head = head
        super().__init__(
            f"database schema is at revision {current or 'none'}, this Tact needs {head}; run `tact db upgrade`"
        )


class AdapterConfigError(TactError):
    """A channel's adapter cannot be built from its settings."""

    def __init__(self, channel: str, message: str) -> None:
        self.channel = channel
        super().__init__(f"channel {channel!r}: {message}")
