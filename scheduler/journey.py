"""Journeys: applying inbound events (enrollment triggers, exits, consent, requests) and
enrolling segments on their cron schedule. Runs inside the tick, before touchpoints are claimed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from apscheduler.triggers.cron import CronTrigger

from scheduler import metrics
from scheduler.attention import MODEL_EVENTS, AttentionState, decayed, on_event
from scheduler.campaign import Campaign, cron_trigger, matches
from scheduler.catalog import CampaignCatalog
from scheduler.config import Settings
from scheduler.errors import TactError
from scheduler.store import Row, Store

log = structlog.get_logger("tact.journey")

EVENT_CHUNK = 1000
SEGMENT_PAGE = 5000


def recipient_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """The fields audiences, segments and templates see: attributes plus the core columns."""
    fields = dict(row.get("attributes") or {})
    for key in ("id", "email", "phone", "timezone", "locale", "value"):
        fields[key] = row.get(key)
    return fields


class Journeys:
    """Moves recipients into, through and out of campaigns as events arrive."""

    def __init__(self, store: Store, catalog: CampaignCatalog, settings: Settings) -> None:
        self.store = store
        self.catalog = catalog
        self.settings = settings
        # Per scheduled campaign: (schedule, zone) and its next cron instant, so idle ticks
        # need no database round trip. Only a hint: the segment_run row decides.
        self._next_fire: dict[str, tuple[tuple[str | None, str], datetime]] = {}

    # -- events --------------------------------------------------------------------------------

    def apply_events(self, now: datetime) -> int:
        """Apply every queued event whose time has come, in time order; return how many."""
        total = 0
        while True:
            with self.store.transaction() as connection:
                events = self.store.queued_events(connection, now, EVENT_CHUNK)
                if events:
                    self._apply(connection, events, now)
                    self.store.mark_applied(connection, [e["id"] for e in events], now)
            metrics.count_events(e["type"] for e in events)  # after the commit: each event counted once
            total += len(events)
            if len(events) < EVENT_CHUNK:
                return total

    def _apply(self, connection: sa.Connection, events: Sequence[Row], now: datetime) -> None:
        recipient_ids = {e["recipient_id"] for e in events}
        recipients = self.store.recipients_by_id(connection, recipient_ids)
        # Events move active journeys; a triggering event also needs the campaign's past
        # enrollments (re-entry rules). Finished journeys of other campaigns are not read.
        triggered = {c.id for kind in {e["type"] for e in events} for c in self.catalog.triggered_by(kind)}
        enrollments: dict[str, list[Row]] = {}
        for row in self.store.enrollments_of(connection, recipient_ids, active_or_in=triggered):
            enrollments.setdefault(row["recipient_id"], []).append(row)
        params = self.settings.attention
        states = self.store.attention_states(connection, recipient_ids)
        changed_states: set[str] = set()
        changed_enrollments: dict[int, Row] = {}
        new_enrollments: list[Row] = []
        consents: list[Row] = []
        to_hasten: list[int] = []

        for event in events:
            recipient = recipients.get(event["recipient_id"])
            if recipient is None:
                continue
            rid, kind, at = recipient["id"], event["type"], event["at"]
            self._attribute(connection, event)
            state = states.get(rid) or AttentionState.initial(params)
            new_state = self._update_state(connection, state, event)
            if new_state is not state:
                states[rid] = new_state
                changed_states.add(rid)
            consents.extend(self._consent_changes(event))
            if kind == "bounced" and (event["properties"] or {}).get("type", "hard") != "soft":
                self.store.suppress(connection, rid, at, "bounced")

            for enrollment in enrollments.get(rid, []):
                if enrollment["state"] != "active" or enrollment["enrolled_at"] > at:
                    continue
                campaign = self.catalog.get(enrollment["campaign_id"])
                if campaign is None:
                    continue
                touched = self._journey_event(campaign, enrollment, kind, at)
                if touched and enrollment.get("id") is not None:
                    changed_enrollments[enrollment["id"]] = enrollment
                    if enrollment["state"] == "exited":
                        to_hasten.append(enrollment["id"])

            for campaign in self.catalog.triggered_by(kind):
                if self._may_enroll(campaign, recipient, enrollments.get(rid, [])):
                    row = self._new_enrollment(campaign, rid, at, f"event:{event['event_id']}")
                    enrollments.setdefault(rid, []).append(row)
                    new_enrollments.append(row)

        self._write_enrollments(connection, new_enrollments, changed_enrollments.values())
        self.store.hasten_pending(connection, to_hasten, now)
        self.store.write_consents(connection, consents)
        self.store.write_attention(connection, {rid: states[rid] for rid in changed_states})

    def _attribute(self, connection: sa.Connection, event: Row) -> None:
        """Link an event to the touch it answers when it names the provider's message id."""
        if event.get("touchpoint_id") is None and event.get("message_id"):
            touchpoint_id = self.store.touchpoint_for_message(connection, event["message_id"])
            if touchpoint_id is not None:
                event["touchpoint_id"] = touchpoint_id
                self.store.attribute_event(connection, event["id"], touchpoint_id)

    def _update_state(self, connection: sa.Connection, state: AttentionState, event: Row) -> AttentionState:
        kind, at = event["type"], event["at"]
        if kind in self.catalog.goals():
            kind = "converted"  # a campaign's goal reached is a conversion, whatever its name
        if kind not in MODEL_EVENTS:
            return state
        if kind == "support_resolved":
            cleared = at + self.settings.attention.inbound_cooldown
            self.store.recall_deferred(connection, event["recipient_id"], cleared)
        return on_event(
            state,
            kind,
            at,
            self.settings.attention,
            channel=event.get("channel"),
            touchpoint_id=event.get("touchpoint_id"),
        )

    def resolve_outcomes(self, now: datetime) -> int:
        """Settle the outcome windows that closed by ``now`` (ignored touches); return how many
        recipients' states moved."""
        total = 0
        params = self.settings.attention
        while True:
            with self.store.transaction() as connection:
                due = self.store.attention_due(connection, now, EVENT_CHUNK)
                states = {rid: decayed(state, now, params) for rid, state in due.items()}
                self.store.write_attention(connection, states)
            total += len(states)
            if len(states) < EVENT_CHUNK:
                return total

    def _consent_changes(self, event: Row) -> list[Row]:
        kind, channel = event["type"], event.get("channel")
        if kind == "consent_granted" and channel:
            status, channels = "opted_in", [channel]
        elif kind == "consent_withdrawn" and channel:
            status, channels = "opted_out", [channel]
        elif kind == "unsubscribed":
            status, channels = "opted_out", [channel] if channel else list(self.settings.channels)
        else:
            return []
        return [
            {
                "recipient_id": event["recipient_id"],
                "channel": c,
                "status": status,
                "source": f"event:{kind}",
                "at": event["at"],
            }
            for c in channels
        ]

    @staticmethod
    def _journey_event(campaign: Campaign, enrollment: Row, kind: str, at: datetime) -> bool:
        touched = False
        if kind in campaign.exit.on_events:
            enrollment.update(state="exited", exit_reason=kind, ended_at=at)
            touched = True
        if campaign.exit.goal == kind and enrollment.get("converted_at") is None:
            enrollment["converted_at"] = at
            touched = True
        if any(kind in step.skip_if for step in campaign.steps) and kind not in enrollment["seen_events"]:
            enrollment["seen_events"] = [*enrollment["seen_events"], kind]
            touched = True
        return touched

    # -- enrollment ----------------------------------------------------------------------------

    def _may_enroll(
        self,
        campaign: Campaign,
        recipient: Row,
        existing: Iterable[Row],
        *,
        check_audience: bool = True,
    ) -> bool:
        mine = [e for e in existing if e["campaign_id"] == campaign.id]
        if any(e["state"] == "active" for e in mine):
            return False
        if mine and not campaign.trigger.reenroll:
            return False
        return not check_audience or matches(campaign.audience, recipient_fields(recipient))

    @staticmethod
    def _new_enrollment(campaign: Campaign, recipient_id: str, at: datetime, trigger: str) -> Row:
        return {
            "id": None,
            "campaign_id": campaign.id,
            "recipient_id": recipient_id,
            "state": "active",
            "enrolled_at": at,
            "trigger": trigger,
            "seen_events": [],
        }

    def _write_enrollments(self, connection: sa.Connection, new: Sequence[Row], changed: Iterable[Row]) -> None:
        updates: list[Row] = [
            {k: row[k] for k in ("id", "state", "exit_reason", "ended_at", "converted_at", "seen_events") if k in row}
            for row in changed
        ]
        self.store.update_enrollments(connection, updates)
        if not new:
            return
        rows, firsts = [], []
        for row in new:
            campaign = self.catalog.get(row["campaign_id"])
            assert campaign is not None
            first = campaign.steps[0]
            rows.append({k: v for k, v in row.items() if k != "id"})
            due = row["enrolled_at"] + first.after
            firsts.append(
                {
                    "campaign_id": campaign.id,
                    "recipient_id": row["recipient_id"],
                    "step_id": first.id,
                    "channel": first.channel,
                    "state": "pending",
                    "scheduled_at": due,
                    "due_at": due,
                    "attempts": 0,
                    "created_at": row["enrolled_at"],
                }
            )
        ids = self.store.enroll(connection, rows, firsts)
        for row, enrollment_id in zip(new, ids, strict=True):
            row["id"] = enrollment_id

    def enroll(self, campaign_id: str, recipient_ids: Sequence[str], at: datetime) -> tuple[int, list[str]]:
        """Enroll recipients by hand (audience not checked); return (enrolled, unknown ids)."""
        campaign = self.catalog.get(campaign_id)
        if campaign is None:
            raise TactError(
                f"unknown campaign {campaign_id!r}; loaded: {', '.join(sorted(self.catalog.campaigns)) or 'none'}"
            )
        enrolled, unknown = 0, list[str]()
        for start in range(0, len(recipient_ids), SEGMENT_PAGE):
            chunk = list(dict.fromkeys(recipient_ids[start : start + SEGMENT_PAGE]))
            with self.store.transaction() as connection:
                recipients = self.store.recipients_by_id(connection, chunk)
                unknown.extend(rid for rid in chunk if rid not in recipients)
                existing: dict[str, list[Row]] = {}
                mine = self.store.enrollments_of(
                    connection, recipients, campaign_id=campaign.id, active_only=campaign.trigger.reenroll
                )
                for row in mine:
                    existing.setdefault(row["recipient_id"], []).append(row)
                new = [
                    self._new_enrollment(campaign, rid, at, "manual")
                    for rid, recipient in recipients.items()
                    if self._may_enroll(campaign, recipient, existing.get(rid, []), check_audience=False)
                ]
                self._write_enrollments(connection, new, [])
                enrolled += len(new)
        return enrolled, unknown

    # -- segments ------------------------------------------------------------------------------

    def run_segments(self, now: datetime) -> int:
        """Enroll matching recipients for every cron instant that came due; return how many."""
        total = 0
        for campaign in self.catalog.scheduled():
            key = (campaign.trigger.schedule, self._schedule_zone(campaign))
            known = self._next_fire.get(campaign.id)
            if known is not None and known[0] == key and now < known[1]:
                continue  # not due yet: no need to ask the database
            fire = self._due_instant(campaign, now)
            following = self._trigger(campaign).get_next_fire_time(None, now + timedelta(microseconds=1))
            if following is not None:
                self._next_fire[campaign.id] = (key, following.astimezone(UTC))
            if fire is None:
                continue
            with self.store.transaction() as connection:
                if not self.store.record_segment_run(connection, campaign.id, fire, now):
                    continue
                enrolled = self._enroll_segment(connection, campaign, fire)
                total += enrolled
            log.info(
                "segment_enrolled",
                campaign_id=campaign.id,
                scheduled_at=fire.isoformat(),
                enrolled=enrolled,
            )
        return total

    def _schedule_zone(self, campaign: Campaign) -> str:
        return (campaign.send_window.timezone if campaign.send_window else None) or self.settings.timezone

    def _trigger(self, campaign: Campaign) -> CronTrigger:
        assert campaign.trigger.schedule is not None
        return cron_trigger(campaign.trigger.schedule, self._schedule_zone(campaign))

    def _due_instant(self, campaign: Campaign, now: datetime) -> datetime | None:
        """The latest cron instant in (last run or now - misfire grace, now], if any."""
        trigger = self._trigger(campaign)
        with self.store.engine.connect() as connection:
            last = self.store.last_segment_run(connection, campaign.id)
        start = now - self.settings.engine.cron_misfire_grace
        if last is not None and last > start:
            start = last
        latest: datetime | None = None
        probe = start + timedelta(microseconds=1)
        while True:
            fire = trigger.get_next_fire_time(None, probe)
            if fire is None or fire > now:
                return latest.astimezone(UTC) if latest else None
            latest = fire
            probe = fire + timedelta(seconds=1)

    def _enroll_segment(self, connection: sa.Connection, campaign: Campaign, fire: datetime) -> int:
        segment = campaign.trigger.segment or {}
        enrolled = 0
        after: str | None = None
        while True:
            page = self.store.segment_members(connection, after, SEGMENT_PAGE)
            if not page:
                return enrolled
            after = page[-1]["id"]
            candidates = [
                r
                for r in page
                if matches(segment, recipient_fields(r)) and matches(campaign.audience, recipient_fields(r))
            ]
            existing: dict[str, list[Row]] = {}
            mine = self.store.enrollments_of(
                connection,
                [r["id"] for r in candidates],
                campaign_id=campaign.id,
                active_only=campaign.trigger.reenroll,
            )  # re-enrolling campaigns only need to know who is enrolled now
            for row in mine:
                existing.setdefault(row["recipient_id"], []).append(row)
            new = [
                self._new_enrollment(campaign, r["id"], fire, f"schedule:{fire.isoformat()}")
                for r in candidates
                if self._may_enroll(campaign, r, existing.get(r["id"], []), check_audience=False)
            ]
            self._write_enrollments(connection, new, [])
            enrolled += len(new)


def _later(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate > current else current
