"""The live set of campaigns: loaded from the campaigns directory, reloaded on change.

A file that fails validation is not loaded; the last good version of it keeps running and the
error is reported with ``file:line:col``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from scheduler.campaign import Campaign, load_campaign
from scheduler.errors import CampaignError, Diagnostic

log = structlog.get_logger("tact.campaigns")


@dataclass(frozen=True)
class ReloadReport:
    """What one (re)load changed."""

    loaded: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    errors: list[CampaignError] = field(default_factory=list)


class CampaignCatalog:
    """Campaigns by id, keeping the last good version of each file."""

    def __init__(
        self,
        directory: Path,
        *,
        channels: Collection[str],
        sample_recipient: Mapping[str, Any] | None = None,
    ) -> None:
        self.directory = directory
        self.channels = set(channels)
        self.sample_recipient = sample_recipient or None
        self.campaigns: dict[str, Campaign] = {}
        self._goals: frozenset[str] = frozenset()
        self._by_file: dict[Path, Campaign] = {}
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self.loaded_once = False

    def get(self, campaign_id: str) -> Campaign | None:
        """The campaign with this id, if loaded."""
        return self.campaigns.get(campaign_id)

    def __iter__(self) -> Iterator[Campaign]:
        return iter(self.campaigns.values())

    def triggered_by(self, event_type: str) -> list[Campaign]:
        """Campaigns that enroll on this event type."""
        return [c for c in self.campaigns.values() if c.trigger.event == event_type]

    def goals(self) -> frozenset[str]:
        """The event types that are some campaign's goal (conversions, to the model)."""
        return self._goals

    def scheduled(self) -> list[Campaign]:
        """Campaigns that enroll a segment on a cron schedule."""
        return [c for c in self.campaigns.values() if c.trigger.schedule]

    def signature(self) -> tuple[tuple[str, int, int], ...]:
        """A cheap fingerprint of every file under the directory (for change detection)."""
        entries = []
        if self.directory.is_dir():
            for path in sorted(self.directory.rglob("*")):
                if path.is_file() and not path.name.startswith("."):
                    stat = path.stat()
                    entries.append((str(path), stat.st_mtime_ns, stat.st_size))
        return tuple(entries)

    def changed(self) -> bool:
        """True when a file was added, removed or modified since the last load."""
        return self.signature() != self._signature

    def reload(self) -> ReloadReport:
        """Load every ``*.toml`` in the directory; broken files keep their last good version."""
        self._signature = self.signature()
        report = ReloadReport()
        if not self.directory.is_dir():
            error = CampaignError([Diagnostic(self.directory, 1, 1, "campaigns directory not found")])
            report.errors.append(error)
            log.error("campaigns_dir_missing", path=str(self.directory))
            return report
        files = sorted(p for p in self.directory.glob("*.toml") if p.is_file())
        by_file: dict[Path, Campaign] = {}
        for path in files:
            try:
                by_file[path] = load_campaign(path, channels=self.channels, sample_recipient=self.sample_recipient)
            except CampaignError as exc:
                report.errors.append(exc)
                for diagnostic in exc.diagnostics:
                    log.error("campaign_invalid", error=str(diagnostic))
                if path in self._by_file:
                    by_file[path] = self._by_file[path]
                    log.warning("campaign_kept_last_good", path=str(path))
        campaigns: dict[str, Campaign] = {}
        for path, campaign in by_file.items():
            if campaign.id in campaigns:
                error = CampaignError([Diagnostic(path, 1, 1, f"duplicate campaign id {campaign.id!r}")])
                report.errors.append(error)
                log.error("campaign_invalid", error=str(error))
                continue
            campaigns[campaign.id] = campaign
        report.loaded.extend(cid for cid, c in campaigns.items() if self.campaigns.get(cid) is not c)
        report.removed.extend(cid for cid in self.campaigns if cid not in campaigns)
        self._by_file = by_file
        self.campaigns = campaigns
        self._goals = frozenset(c.exit.goal for c in campaigns.values() if c.exit.goal)
        if report.loaded or report.removed:
            # The first load is announced by the command itself (e.g. daemon_started).
            emit = log.info if self.loaded_once else log.debug
            emit("campaigns_loaded", loaded=report.loaded, removed=report.removed)
        self.loaded_once = True
        return report
