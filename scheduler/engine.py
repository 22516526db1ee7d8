"""The engine: the tick lifecycle, and the synchronous Python API over it.

A tick reads the clock once, applies queued events and cron enrollments, then claims due
touchpoints in batches (each with a lease), decides each one (gates, then value), sends through
the channel's adapter with bounded concurrency, and records the batch in one transaction:
touchpoint states, attention state, send_log rows and the next step's touchpoint.

``Engine.tick`` drains everything due (tests, ``tact tick --at``); the daemon calls ``atick`` with
a batch limit so the loop stays responsive. Both run the same code.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import structlog

from adapters import Adapter, AdapterSettings, Message, SendResult, SendStatus
from adapters.limits import Throttled
from scheduler import metrics
from scheduler.attention import AttentionState, decayed, on_send
from scheduler.calibration import (
    LEARNED_KAPPA_KEY,
    LEARNED_UNSUBSCRIBE_KEY,
    AnsweredTouch,
    KappaFit,
    RiskFit,
    fit_kappa,
    fit_unsubscribe_ratio,
)
from scheduler.campaign import Campaign, Step
from scheduler.catalog import CampaignCatalog, ReloadReport
from scheduler.config import Settings
from scheduler.decision import (
    Decision,
    RecipientView,
    Touch,
    cap_memory,
    decide,
    touch_terms,
)
from scheduler.errors import DatabaseUnavailable, RecordError, TactError
from scheduler.journey import Journeys, recipient_fields
from scheduler.records import parse_event, parse_recipient
from scheduler.store import AnsweredSend, BatchWrite, Row, Store
from scheduler.templates import RenderedMessage
from scheduler.tokens import TokenSigner
from scheduler.value import estimate, unsubscribe_p

log = structlog.get_logger("tact.engine")
T = TypeVar("T")

COMMIT_RETRY_FIRST_DELAY = 0.2
COMMIT_RETRY_MAX_DELAY = 2.0
COMMIT_RETRY_SECONDS_MIN = 5.0
"""A batch's commit is retried for its lease's length, and at least this long."""


def utcnow() -> datetime:
    """The wall clock, in UTC."""
    return datetime.now(UTC)


@dataclass(slots=True)
class DecisionRow:
    """One decision of a tick, with the send_log fields (not frozen: thousands are built per
    second, and frozen dataclasses are several times slower to build)."""

    at: datetime
    touchpoint_id: int
    enrollment_id: int
    recipient_id: str
    campaign_id: str
    step_id: str
    channel: str | None
    adapter: str | None
    kind: str | None
    decision: str
    reason: str
    deferred_until: datetime | None = None
    asset: float | None = None
    expectation: float | None = None
    fatigue: float | None = None
    engagement_p: float | None = None
    relevance: float | None = None
    value: float | None = None
    net_value: float | None = None
    threshold: float | None = None
    propensity: float | None = None
    provider_message_id: str | None = None
    error: str | None = None
    latency_ms: float | None = None
    attempt: int | None = None

    def as_row(self) -> Row:
        """The send_log row."""
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass
class TickResult:
    """What one tick did."""

    at: datetime
    decisions: list[DecisionRow] = field(default_factory=list)
    events_applied: int = 0
    enrolled: int = 0
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def decided(self) -> int:
        """How many touchpoints were decided."""
        return sum(self.counts.values())


@dataclass
class IngestReport:
    """The outcome of a batch of recipients or events: good items kept, bad ones explained."""

    accepted: int = 0
    duplicates: int = 0
    rejected: list[tuple[int, str, str]] = field(default_factory=list)  # (index, reason, message)


@dataclass(slots=True)
class _Planned:
    touchpoint: Row
    campaign: Campaign | None
    step: Step | None
    decision: Decision
    message: Message | None = None
    result: SendResult | None = None
    latency_ms: float | None = None
    error: str | None = None
    state_after: AttentionState | None = None  # provisional: assumes every send so far succeeds
    settled: AttentionState | None = None  # the stored state with its closed outcome windows settled


UNLIMITED = 1_000_000
"""Concurrency of an adapter without limit settings (the engine's own ``concurrency`` binds)."""


def _throttled(adapter: Adapter) -> Throttled:
    """The adapter within its channel's ``rate_limit`` and ``concurrency`` settings, if it has them."""
    settings = getattr(adapter, "settings", None)
    if not isinstance(settings, AdapterSettings):
        return Throttled(adapter, rate_limit=None, concurrency=UNLIMITED)
    return Throttled(adapter, rate_limit=settings.rate_limit, concurrency=settings.concurrency)


def _kappa_at(history: Sequence[tuple[datetime, float]], at: datetime, configured: float) -> float:
    """The κ in force at ``at``: the last learned by then, else the configured one."""
    kappa = configured
    for since, learned in history:
        if since > at:
            break
        kappa = learned
    return kappa


class Engine:
    """The scheduler. Build it with ``Engine.from_config``; close it with ``close()``."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        catalog: CampaignCatalog,
        adapters: Mapping[str, Adapter],
        *,
        adapter_names: Mapping[str, str],
        channel_settings: Mapping[str, Mapping[str, Any]],
        signer: TokenSigner,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.store = store
        self.catalog = catalog
        self.journeys = Journeys(store, catalog, settings)
        self.adapters = dict(adapters)
        self.adapter_names = dict(adapter_names)
        self.channel_settings = {k: dict(v) for k, v in channel_settings.items()}
        self._senders = {channel: _throttled(adapter) for channel, adapter in self.adapters.items()}
        self.signer = signer
        self._public_url = settings.api.public_url.rstrip("/")
        self.clock = clock
        self.owner = settings.engine.worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.offload_db = False
        self.stopping = False  # set by a shutdown that gave its leases up: send nothing more
        # False: messages go out without rendered bodies (simulation: nobody reads them).
        self.render_bodies = True
        self._resolved_at: datetime | None = None
        self._learned_at: datetime | None = None
        self._learned_loaded = False
        self._configured = settings.attention  # before any learning: the prior of what is learned
        self.removed_steps: dict[str, dict[str, str | None]] = {}
        self._random = random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._closed = False

    @classmethod
    def from_config(
        cls,
        path: str | Path | None = None,
        *,
        database_url: str | None = None,
        channels: Mapping[str, str | Mapping[str, Any]] | None = None,
        **overrides: Any,
    ) -> Engine:
        """Build an engine from a config file (optional) plus keyword overrides.

        ``channels`` maps a channel to an adapter name (its defaults) or to the channel's whole
        table; any other setting can be overridden by keyword (``attention={"theta": 0.05}``).
        """
        from scheduler.app import build_engine

        return build_engine(path, database_url=database_url, channels=channels, **overrides)

    # -- the synchronous facade ----------------------------------------------------------------

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coroutine.close()
            raise TactError("engine is closed")
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(target=self._loop.run_forever, name="tact-engine", daemon=True)
            self._loop_thread.start()
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def tick(self, at: datetime | None = None, *, collect: bool = True) -> TickResult:
        """Run one tick at ``at`` (default: now) and drain everything due then."""
        return self._run(self.atick(at, collect=collect))

    def adapter(self, channel: str) -> Adapter:
        """The adapter instance serving ``channel``."""
        try:
            return self.adapters[channel]
        except KeyError:
            raise TactError(f"no channel {channel!r}; configured: {', '.join(self.adapters)}") from None

    def close(self) -> None:
        """Close adapters and the database. Safe to call twice."""
        if self._closed:
            return
        if self._loop is not None:
            self._run(self.aclose())
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._loop_thread is not None:
                self._loop_thread.join(timeout=5)
            self._loop.close()
        self._closed = True
        self.store.close()

    async def aclose(self) -> None:
        """Close every adapter."""
        for adapter in self.adapters.values():
            await adapter.aclose()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ingest --------------------------------------------------------------------------------

    def upsert_recipients(self, records: Iterable[Mapping[str, Any]], *, source: str = "api") -> IngestReport:
        """Insert or update recipients; fields not given keep their stored values."""
        report = IngestReport()
        chunk: list[tuple[int, Any]] = []
        for index, raw in enumerate(records):
            try:
                chunk.append((index, parse_recipient(raw)))
            except RecordError as exc:
                report.rejected.append((index, exc.reason, exc.message))
            if len(chunk) >= 2000:
                report.accepted += self._upsert_chunk([r for _, r in chunk], source)
                chunk = []
        if chunk:
            report.accepted += self._upsert_chunk([r for _, r in chunk], source)
        return report

    def _upsert_chunk(self, records: Sequence[Any], source: str) -> int:
        now = self.clock()
        latest: dict[str, Any] = {}
        for record in records:
            latest[record.id] = record if record.id not in latest else _merge_records(latest[record.id], record)
        with self.store.engine.connect() as connection:
            existing = self.store.recipients_by_id(connection, latest)
        rows: list[Row] = []
        consents: list[Row] = []
        for rid, record in latest.items():
            given = record.model_fields_set
            row = existing.get(rid) or {
                "id": rid, "email": None, "phone": None, "timezone": None, "locale": None,
                "value": 1.0, "attributes": {}, "suppressed_at": None, "suppressed_reason": None,
                "created_at": now,
            }  # fmt: skip
            for name in ("email", "phone", "timezone", "locale", "value"):
                if name in given:
                    row[name] = getattr(record, name)
            row["attributes"] = {**(row.get("attributes") or {}), **record.attributes}
            row["updated_at"] = now
            rows.append(row)
            consents.extend(
                {
                    "recipient_id": rid,
                    "channel": channel,
                    "status": status,
                    "source": source,
                    "at": now,
                }
                for channel, status in record.consent.items()
            )
        self.store.upsert_recipients(rows, consents)
        return len(records)

    def record_events(self, records: Iterable[Mapping[str, Any]]) -> IngestReport:
        """Store events for the next tick; replays (same id) are ignored, unknown recipients
        rejected with reason ``unknown_recipient``."""
        report = IngestReport()
        parsed: list[tuple[int, Any]] = []
        for index, raw in enumerate(records):
            try:
                parsed.append((index, parse_event(raw)))
            except RecordError as exc:
                report.rejected.append((index, exc.reason, exc.message))
        now = self.clock()
        for start in range(0, len(parsed), 5000):
            chunk = parsed[start : start + 5000]
            with self.store.engine.connect() as connection:
                known = self.store.recipients_by_id(connection, {e.recipient_id for _, e in chunk})
            rows = []
            for index, event in chunk:
                if event.recipient_id not in known:
                    report.rejected.append((index, "unknown_recipient", f"no recipient with id {event.recipient_id!r}"))
                    continue
                rows.append(_event_row(event, now))
            duplicates = self.store.insert_events(rows) if rows else 0
            report.duplicates += duplicates
            report.accepted += len(rows) - duplicates
        report.rejected.sort()
        return report

    def enroll(
        self, campaign_id: str, recipient_ids: Sequence[str], at: datetime | None = None
    ) -> tuple[int, list[str]]:
        """Enroll recipients in a campaign by hand; return (enrolled, unknown recipient ids)."""
        return self.journeys.enroll(campaign_id, recipient_ids, (at or self.clock()).astimezone(UTC))

    def reload_campaigns(self) -> ReloadReport:
        """Reload the campaigns directory (a broken file keeps its last good version)."""
        report = self.catalog.reload()
        self.sync_campaigns()
        return report

    def sync_campaigns(self) -> None:
        """Record the loaded campaigns in the ``campaign`` table, with where the journeys of
        removed steps go on (kept in the database, so a restart between edits loses nothing)."""
        now = self.clock()
        stored = self.store.campaign_steps()
        for campaign in self.catalog:
            old_steps, removed = stored.get(campaign.id, ([], {}))
            self.removed_steps[campaign.id] = removed_step_successors(old_steps, removed, campaign)
        self.store.sync_campaigns(
            [
                {
                    "id": c.id,
                    "name": c.name,
                    "kind": c.kind,
                    "priority": c.priority,
                    "goal": c.exit.goal,
                    "steps": [s.id for s in c.steps],
                    "removed_steps": self.removed_steps.get(c.id, {}),
                    "source": str(c.source) if c.source else None,
                    "loaded_at": now,
                }
                for c in self.catalog
            ]
        )

    # -- the tick ------------------------------------------------------------------------------

    async def _db(self, function: Callable[..., T], *args: Any) -> T:
        if self.offload_db:
            return await asyncio.to_thread(function, *args)
        return function(*args)

    async def atick(
        self,
        at: datetime | None = None,
        *,
        collect: bool = True,
        max_batches: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TickResult:
        """One tick at ``at``: events, cron enrollments, then claimed batches until none is due
        (or ``max_batches``, or ``should_stop()``)."""
        started = time.perf_counter()
        now = (at or self.clock()).astimezone(UTC)
        result = TickResult(at=now)
        result.events_applied = await self._db(self.journeys.apply_events, now)
        if (
            self._resolved_at is None
            or now - self._resolved_at >= self.settings.engine.resolve_interval
            or now < self._resolved_at
        ):
            await self._db(self.journeys.resolve_outcomes, now)
            self._resolved_at = now
        if not self._learned_loaded:
            await self._db(self.load_learned)
        learned_at = self._learned_at
        if learned_at is None or now - learned_at >= self.settings.attention.learn_interval or now < learned_at:
            await self._db(self.learn, now)
        result.enrolled = await self._db(self.journeys.run_segments, now)
        batches = 0
        batch_size = self.settings.engine.batch_size
        lease = self.settings.engine.lease.total_seconds()
        while max_batches is None or batches < max_batches:
            if should_stop is not None and should_stop():
                break
            claimed = await self._db(self.store.claim, now, self.owner, lease, batch_size)
            claimed_at = time.monotonic()
            if not claimed:
                break
            batches += 1
            context = await self._db(self.store.load_context, claimed)
            planned = self._decide_batch(claimed, context, now)
            if time.monotonic() - claimed_at > lease / 2:
                planned = await self._still_held(planned, lease)
                claimed_at = time.monotonic()
            await self._deliver([p for p in planned if p.message is not None], lease, claimed_at)
            write, rows = self._record(planned, context, now)
            self._report_lost(await self._commit(write))
            batch_counts: dict[str, int] = {}
            for row in rows:
                key = f"{row.decision}:{row.reason}"
                batch_counts[key] = batch_counts.get(key, 0) + 1
            for key, count in batch_counts.items():
                result.counts[key] = result.counts.get(key, 0) + count
            metrics.count_decisions(batch_counts)
            if collect:
                result.decisions.extend(rows)
        if result.counts:
            log.info("tick", at=now.isoformat(), batches=batches, **result.counts)
        metrics.observe_tick(time.perf_counter() - started)
        return result

    # -- learning ------------------------------------------------------------------------------

    def load_learned(self) -> dict[str, float]:
        """With ``kappa_learning`` or ``unsubscribe_learning`` set to ``"apply"``, use what was
        last learned per channel (kept in ``meta``), so a restart or ``tact explain`` decides as
        the running engine does; return the κ now in use from learning (empty otherwise)."""
        self._learned_loaded = True
        params = self.settings.attention
        stored = self.learned_fits() if params.kappa_learning != "off" else {}
        risks = self.learned_unsubscribe() if params.unsubscribe_learning != "off" else {}
        fitted_at = [datetime.fromisoformat(fit["history"][-1][0]) for fit in stored.values() if fit.get("history")]
        fitted_at += [datetime.fromisoformat(fit["at"]) for fit in risks.values() if fit.get("at")]
        if fitted_at:
            self._learned_at = max(fitted_at)  # a `tact tick` every minute need not refit each time
        if params.unsubscribe_learning == "apply" and risks:
            self._use_unsubscribe({channel: float(fit["ratio"]) for channel, fit in risks.items()})
        if params.kappa_learning != "apply":
            return {}
        learned = {channel: float(fit["kappa"]) for channel, fit in stored.items()}
        if learned:
            self._use_kappa(learned)
        return learned

    def learn(self, now: datetime) -> dict[str, KappaFit]:
        """Fit κ and the unsubscribe rate per channel from the marketing touches of the last
        ``learn_window`` whose answers are in (docs/attention-model.md, "Learning κ" and
        "Learning the unsubscribe rate") and keep the fits in ``meta``; with a mode set to
        ``"apply"``, decide with that fit from now on. Returns the κ fits."""
        self._learned_at = now
        params = self.settings.attention
        if not params.enabled or (params.kappa_learning == "off" and params.unsubscribe_learning == "off"):
            return {}
        settled = now - max(params.outcome_window.values(), default=timedelta(hours=72))
        since = settled - params.learn_window
        answered = self.store.answered_touches(since, settled, params.open_credit, params.learn_max_touches)
        if params.unsubscribe_learning != "off":
            self._learn_unsubscribe(answered, now)
        if params.kappa_learning == "off":
            return {}
        return self._learn_kappa(answered, since, now)

    def _learn_kappa(self, answered: Sequence[AnsweredSend], since: datetime, now: datetime) -> dict[str, KappaFit]:
        params = self.settings.attention
        apply = params.kappa_learning == "apply"
        stored = self.learned_fits()
        # The κ in force over time, to take each touch's own fatigue factor out of its p̂.
        histories = {
            c: [(datetime.fromisoformat(at), k) for at, k in fit.get("history", [])] for c, fit in stored.items()
        }
        touches: dict[str, list[AnsweredTouch]] = {}
        for send in answered:
            then = _kappa_at(histories.get(send.channel, []), send.at, self._configured.kappa_for(send.channel))
            touches.setdefault(send.channel, []).append(
                AnsweredTouch(send.recipient, send.fatigue, send.predicted, then, send.engaged)
            )
        low, high = params.kappa_bounds
        fits: dict[str, KappaFit] = {}
        for channel, found in sorted(touches.items()):
            fit = fit_kappa(
                found, configured=self._configured.kappa_for(channel), reference=params.kappa_reference,
                prior_sd=params.kappa_prior_sd, low=low, high=high,
                min_touches=params.learn_min_touches, min_answered=params.learn_min_answered,
            )  # fmt: skip
            if fit is None:
                continue
            fits[channel] = fit
            in_force = fit.kappa if apply else params.kappa_for(channel)
            history = histories.get(channel, [])
            before = [h for h in history if h[0] < since][-1:]  # the κ in force when the window opens
            history = [*before, *(h for h in history if h[0] >= since), (now, in_force)]
            stored[channel] = {
                **fit.as_dict(), "applied": apply, "history": [[at.isoformat(), k] for at, k in history],
            }  # fmt: skip
        if fits:
            self.store.set_meta({LEARNED_KAPPA_KEY: json.dumps(stored, sort_keys=True)})
            if apply:
                self._use_kappa({channel: fit.kappa for channel, fit in fits.items()})
            log.info("kappa_learned", applied=apply, **{channel: round(fit.kappa, 3) for channel, fit in fits.items()})
        return fits

    def _learn_unsubscribe(self, answered: Sequence[AnsweredSend], now: datetime) -> dict[str, RiskFit]:
        """How often each channel's sends really drew an unsubscribe or complaint, against the
        p_u the configured settings give them; kept in ``meta`` and, applied, scaling
        ``unsubscribe_base``."""
        params, configured = self.settings.attention, self._configured
        sends: dict[str, tuple[list[float], list[float]]] = {}
        for send in answered:
            expected, observed = sends.setdefault(send.channel, ([], []))
            expected.append(unsubscribe_p(send.channel, send.fatigue, send.asset, send.relevance, configured))
            observed.append(1.0 if send.rebuffed else 0.0)
        low, high = params.unsubscribe_ratio_bounds
        fits: dict[str, RiskFit] = {}
        for channel, (expected, observed) in sorted(sends.items()):
            fit = fit_unsubscribe_ratio(
                expected, observed, prior_count=params.unsubscribe_prior_count, low=low, high=high,
                min_touches=params.learn_min_touches,
            )  # fmt: skip
            if fit is not None:
                fits[channel] = fit
        if not fits:
            return {}
        apply = params.unsubscribe_learning == "apply"
        stored = self.learned_unsubscribe()
        for channel, fit in fits.items():
            base = configured.unsubscribe_base_for(channel) * fit.ratio
            stored[channel] = {**fit.as_dict(), "base": round(base, 6), "applied": apply, "at": now.isoformat()}
        self.store.set_meta({LEARNED_UNSUBSCRIBE_KEY: json.dumps(stored, sort_keys=True)})
        if apply:  # as kept, so that a restart decides exactly as this engine does
            self._use_unsubscribe({channel: float(stored[channel]["ratio"]) for channel in fits})
        ratios = {channel: round(fit.ratio, 3) for channel, fit in fits.items()}
        log.info("unsubscribe_learned", applied=apply, **ratios)
        return fits

    def learned_unsubscribe(self) -> dict[str, dict[str, Any]]:
        """The last unsubscribe-rate fit per channel as kept in ``meta`` (empty before the first)."""
        return self._learned(LEARNED_UNSUBSCRIBE_KEY)

    def _use_unsubscribe(self, ratios: Mapping[str, float]) -> None:
        learned = {channel: self._configured.unsubscribe_base_for(channel) * ratio for channel, ratio in ratios.items()}
        self._set_attention(unsubscribe_base={**self.settings.attention.unsubscribe_base, **learned})

    def learned_fits(self) -> dict[str, dict[str, Any]]:
        """The last κ fit per channel as kept in ``meta`` (empty before the first)."""
        return self._learned(LEARNED_KAPPA_KEY)

    def _learned(self, key: str) -> dict[str, dict[str, Any]]:
        stored = self.store.get_meta(key)
        return dict(json.loads(stored)) if stored else {}

    def _use_kappa(self, learned: Mapping[str, float]) -> None:
        self._set_attention(channel_kappa={**self.settings.attention.channel_kappa, **learned})

    def _set_attention(self, **changes: Any) -> None:
        """Decide with these ``[attention]`` values from now on (what learning applies)."""
        attention = self.settings.attention.model_copy(update=changes)
        self.settings = self.settings.model_copy(update={"attention": attention})

    @staticmethod
    def _report_lost(lost: int) -> None:
        if lost:
            log.warning("lease_lost", touchpoints=lost)

    def _decide_batch(self, claimed: list[Row], context: Any, now: datetime) -> list[_Planned]:
        by_recipient: dict[str, list[Row]] = {}
        for touchpoint in claimed:
            by_recipient.setdefault(touchpoint["recipient_id"], []).append(touchpoint)
        planned: list[_Planned] = []
        keep = cap_memory(self.settings)
        for recipient_id, touchpoints in by_recipient.items():
            recipient = context.recipients.get(recipient_id)
            stored = context.attention.get(recipient_id)
            before = stored or AttentionState.initial(self.settings.attention)
            state = decayed(before, now, self.settings.attention)  # once per recipient and batch
            settled = state if stored and _open_windows(before) != _open_windows(state) else None
            view = None
            if recipient is not None:
                view = RecipientView(
                    id=recipient_id,
                    timezone=recipient["timezone"],
                    value=recipient["value"],
                    consent=context.consents.get(recipient_id, {}),
                    suppressed=recipient["suppressed_at"] is not None,
                )
            if len(touchpoints) > 1 and view is not None:
                # Competing touches: higher priority first, then higher NV.
                worth = {t["id"]: self._net_value(t, view, state, now) for t in touchpoints}
                ordered = sorted(touchpoints, key=lambda t: (-self._priority(t), -worth[t["id"]], t["due_at"], t["id"]))
            else:
                ordered = touchpoints
            for touchpoint in ordered:
                item = self._decide_one(touchpoint, view, recipient, state, context, now)
                item.settled, settled = settled, None  # written even if nothing is sent
                planned.append(item)
                if item.message is not None and item.campaign is not None and item.step is not None:
                    state = on_send(
                        state, channel=item.step.channel, kind=item.campaign.kind,
                        topics=item.step.topics, at=now, params=self.settings.attention, keep=keep,
                        touchpoint_id=touchpoint["id"],
                    )  # fmt: skip
                    item.state_after = state
        return planned

    def _net_value(self, touchpoint: Row, view: RecipientView, state: AttentionState, now: datetime) -> float:
        campaign = self.catalog.get(touchpoint["campaign_id"])
        step = campaign.step(touchpoint["step_id"]) if campaign else None
        if campaign is None or step is None:
            return 0.0
        touch = Touch(campaign=campaign, step=step, scheduled_at=touchpoint["scheduled_at"],
                      enrollment_state="active", seen_events=())  # fmt: skip
        return estimate(state, touch_terms(touch, view), now, self.settings.attention).net_value

    def _priority(self, touchpoint: Row) -> int:
        campaign = self.catalog.get(touchpoint["campaign_id"])
        return campaign.priority if campaign else 0

    def _decide_one(
        self,
        touchpoint: Row,
        view: RecipientView | None,
        recipient: Row | None,
        state: AttentionState,
        context: Any,
        now: datetime,
    ) -> _Planned:
        campaign = self.catalog.get(touchpoint["campaign_id"])
        step = campaign.step(touchpoint["step_id"]) if campaign else None
        if campaign is None or step is None:
            return _Planned(touchpoint, campaign, None, Decision("drop", "step_removed"))
        if view is None or recipient is None:
            return _Planned(touchpoint, campaign, step, Decision("drop", "unknown_recipient"))
        enrollment = context.enrollments.get(touchpoint["enrollment_id"]) or {}
        touch = Touch(
            campaign=campaign,
            step=step,
            scheduled_at=touchpoint["scheduled_at"],
            enrollment_state=enrollment.get("state", "active"),
            seen_events=enrollment.get("seen_events") or (),
            key=touchpoint["idempotency_key"],
        )
        decision = decide(touch, view, state, now, self.settings)
        item = _Planned(touchpoint, campaign, step, decision)
        if decision.decision == "send":
            self._build_message(item, recipient)
        return item

    def _build_message(self, item: _Planned, recipient: Row) -> None:
        campaign, step, touchpoint = item.campaign, item.step, item.touchpoint
        assert campaign is not None and step is not None
        address = self._address(step.channel, recipient)
        if not address:
            item.decision = Decision("drop", "no_address", numbers=item.decision.numbers)
            return
        token = self.signer.sign(touchpoint["id"], step.channel)
        unsubscribe_url = f"{self._public_url}/u/{token}"
        context = {
            "recipient": recipient_fields(recipient),
            "campaign": {"id": campaign.id, "name": campaign.name},
            "step": {"id": step.id},
            "unsubscribe_url": unsubscribe_url,
        }
        try:
            if self.render_bodies:
                rendered = campaign.compiled(step.id).render(context)
            else:
                rendered = RenderedMessage(subject=step.subject, text="", html=None)
        except TactError as exc:
            item.decision = Decision("drop", "template_error", numbers=item.decision.numbers)
            item.error = str(exc)
            return
        headers: dict[str, str] = {}
        if campaign.kind == "marketing" and step.channel == "email":
            targets = f"<{unsubscribe_url}>"
            mailbox = self.channel_settings.get(step.channel, {}).get("unsubscribe_mailto")
            if mailbox:
                targets += f", <mailto:{mailbox}?subject=unsubscribe%20{token}>"
            headers["List-Unsubscribe"] = targets
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        item.message = Message(
            touchpoint_id=str(touchpoint["id"]),
            idempotency_key=touchpoint["idempotency_key"],
            channel=step.channel,
            to=address,
            recipient_id=recipient["id"],
            campaign_id=campaign.id,
            step_id=step.id,
            kind=campaign.kind,
            subject=rendered.subject,
            text=rendered.text,
            html=rendered.html,
            headers=headers,
            attempt=touchpoint["attempts"] + 1,
        )

    def _address(self, channel: str, recipient: Row) -> str | None:
        field_name = self.channel_settings.get(channel, {}).get("address")
        if field_name is None:
            field_name = "phone" if "sms" in channel else "email"
        if field_name in ("email", "phone", "id"):
            address = recipient.get(field_name)
            return str(address) if address else None
        value = (recipient.get("attributes") or {}).get(field_name)
        return str(value) if value else None

    async def _commit(self, write: BatchWrite) -> int:
        """Write a delivered batch; while the database is unreachable (a restart, a dropped
        connection), try again for up to a lease's length rather than drop the record of sends
        already made, which another replica would then repeat.

        Safe to repeat: a failed attempt rolled back, and one whose COMMIT did land before the
        connection broke has cleared the leases, so the next attempt writes nothing."""
        deadline = time.monotonic() + max(self.settings.engine.lease.total_seconds(), COMMIT_RETRY_SECONDS_MIN)
        delay = COMMIT_RETRY_FIRST_DELAY
        while True:
            try:
                return await self._db(self.store.commit_batch, write, self.owner)
            except DatabaseUnavailable as error:
                if self.stopping or time.monotonic() + delay > deadline:
                    raise
                log.warning("commit_retry", retry_in=delay, error=str(error))
                await asyncio.sleep(delay)
                delay = min(delay * 2, COMMIT_RETRY_MAX_DELAY)

    async def _still_held(self, planned: list[_Planned], lease: float) -> list[_Planned]:
        """Renew the batch's leases before sending; drop what another replica reclaimed
        meanwhile (this process was paused or slow past its lease): it is theirs to decide.

        Called only when half the lease has passed since the claim: before that, no replica
        can have reclaimed the rows, whatever the clocks' small disagreements."""
        if not any(item.message is not None for item in planned):
            return planned
        held = await self._db(self.store.renew_leases, [item.touchpoint["id"] for item in planned], self.owner, lease)
        if len(held) < len(planned):
            self._report_lost(len(planned) - len(held))
            planned = [item for item in planned if item.touchpoint["id"] in held]
        return planned

    async def _deliver(self, items: Sequence[_Planned], lease: float, claimed_at: float) -> None:
        if not items:
            return
        queue = iter(items)
        ids = [item.touchpoint["id"] for item in items]
        lost: set[int] = set()
        secured = [claimed_at]  # when the batch's leases were last known to be ours (monotonic)
        renewing = asyncio.Lock()

        async def renew() -> None:
            async with renewing:
                held = await self._db(self.store.renew_leases, ids, self.owner, lease)
                lost.update(i for i in ids if i not in held)
                secured[0] = time.monotonic()

        async def keep_leases() -> None:
            # Sends can outlast the lease (slow providers, retries inside the adapter): keep it.
            while True:
                await asyncio.sleep(max(lease / 3, 0.2))
                await renew()

        async def still_ours(touchpoint_id: int) -> bool:
            # Asked right before each send, after any wait for a slot: a process paused past
            # half its lease (SIGSTOP, a stalled host) checks before sending anything more.
            if self.stopping:
                return False
            if time.monotonic() - secured[0] > lease / 2:
                await renew()
            return touchpoint_id not in lost

        async def worker() -> None:
            # A fixed pool of workers pulls from one queue: `concurrency` sends in flight at
            # most, without a task per message.
            for item in queue:
                assert item.message is not None
                adapter = self._senders[item.message.channel]
                started = time.perf_counter()
                go_ahead = functools.partial(still_ours, item.touchpoint["id"])
                try:
                    item.result = await adapter.send(item.message, go_ahead=go_ahead)
                except Exception as exc:  # an adapter bug must not stop the tick
                    item.result = SendResult.from_exception(exc)
                item.latency_ms = (time.perf_counter() - started) * 1000

        workers = min(self.settings.engine.concurrency, len(items))
        renewal = asyncio.ensure_future(keep_leases())
        try:
            await asyncio.gather(*(worker() for _ in range(workers)))
        finally:
            renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewal
        metrics.record_sends(
            (self.adapter_names.get(item.message.channel, item.message.channel), item.result.status, item.latency_ms)
            for item in items
            if item.message is not None and item.result is not None and item.latency_ms is not None
        )

    def _record(self, planned: Sequence[_Planned], context: Any, now: datetime) -> tuple[BatchWrite, list[DecisionRow]]:
        write = BatchWrite()
        rows: list[DecisionRow] = []
        keep = cap_memory(self.settings)
        states: dict[str, AttentionState] = {}
        diverged: set[str] = set()  # recipients with a failed send: provisional states are off
        for item in planned:
            tp = item.touchpoint
            decision, reason = self._outcome(item)
            attempt = tp["attempts"] + 1
            numbers = item.decision.numbers
            result = item.result
            error = item.error or (result.detail if result is not None and result.status != SendStatus.SENT else None)
            row = DecisionRow(
                at=now, touchpoint_id=tp["id"], enrollment_id=tp["enrollment_id"],
                recipient_id=tp["recipient_id"], campaign_id=tp["campaign_id"], step_id=tp["step_id"],
                channel=item.step.channel if item.step else tp["channel"],
                adapter=self.adapter_names.get(item.step.channel) if item.step and item.message else None,
                kind=item.campaign.kind if item.campaign else None,
                decision=decision, reason=reason,
                deferred_until=item.decision.deferred_until if decision == "deferred" else None,
                asset=numbers.asset, expectation=numbers.expectation, fatigue=numbers.fatigue,
                engagement_p=numbers.engagement_p, relevance=numbers.relevance, value=numbers.value,
                net_value=numbers.net_value, threshold=numbers.threshold,
                propensity=item.decision.propensity,
                provider_message_id=result.provider_message_id if result else None,
                error=error, latency_ms=item.latency_ms,
                attempt=attempt if item.message is not None else None,
            )  # fmt: skip
            rows.append(row)
            write.send_log.append(row)
            if decision == "deferred":
                assert item.decision.deferred_until is not None
                write.rescheduled.append(
                    {
                        "b_id": tp["id"],
                        "b_due_at": item.decision.deferred_until,
                        "b_attempts": tp["attempts"],
                    }
                )
                continue
            if decision == "retrying":
                diverged.add(tp["recipient_id"])
                write.rescheduled.append(
                    {
                        "b_id": tp["id"],
                        "b_due_at": now + self._backoff(attempt, result),
                        "b_attempts": attempt,
                    }
                )
                continue
            sent = decision == "sent"
            write.done.append(
                {
                    "b_id": tp["id"], "b_outcome": decision, "b_reason": reason, "b_decided_at": now,
                    "b_sent_at": now if sent else None,
                    "b_provider_message_id": result.provider_message_id if result else None,
                    "b_attempts": attempt if item.message is not None else tp["attempts"],
                }
            )  # fmt: skip
            rid = tp["recipient_id"]
            if item.message is not None and not sent:
                diverged.add(rid)
                if result is not None and result.address_invalid:
                    write.suppressed.append((rid, now, "bounced"))
            if sent and item.state_after is not None and rid not in diverged:
                states[rid] = item.state_after
            elif sent and item.campaign is not None and item.step is not None:
                base = states.get(rid)
                if base is None:
                    base = context.attention.get(rid) or AttentionState.initial(self.settings.attention)
                states[rid] = on_send(
                    base, channel=item.step.channel, kind=item.campaign.kind, topics=item.step.topics,
                    at=now, params=self.settings.attention, keep=keep, touchpoint_id=tp["id"],
                )  # fmt: skip
            self._advance(item, reason, now, context, write)
        for item in planned:
            rid = item.touchpoint["recipient_id"]
            if item.settled is not None and rid not in states:
                states[rid] = item.settled
        write.attention.update(states)
        return write, rows

    def _outcome(self, item: _Planned) -> tuple[str, str]:
        decision = item.decision
        if decision.decision == "defer":
            return "deferred", decision.reason
        if decision.decision == "drop":
            return "dropped", decision.reason
        result = item.result
        assert result is not None
        if result.status == SendStatus.SENT:
            return "sent", decision.reason
        if result.status == SendStatus.RETRYABLE:
            attempt = item.touchpoint["attempts"] + 1
            if attempt < self._max_attempts(item):
                return "retrying", "provider_error"
        return "failed", "provider_error"

    def _max_attempts(self, item: _Planned) -> int:
        channel = item.step.channel if item.step else item.touchpoint["channel"]
        return int(self.channel_settings.get(channel, {}).get("max_attempts", 5))

    def _backoff(self, attempt: int, result: SendResult | None) -> timedelta:
        """Exponential backoff with full jitter, never sooner than the provider's Retry-After."""
        engine = self.settings.engine
        ceiling = min(engine.retry_max.total_seconds(), engine.retry_base.total_seconds() * 2 ** (attempt - 1))
        delay = self._random.uniform(engine.retry_base.total_seconds() / 2, max(ceiling, 1.0))
        if result is not None and result.retry_after:
            delay = max(delay, result.retry_after)
        return timedelta(seconds=delay)

    def _advance(self, item: _Planned, reason: str, now: datetime, context: Any, write: BatchWrite) -> None:
        """Queue the next step of the journey, or end the enrollment after its last step."""
        tp = item.touchpoint
        enrollment = context.enrollments.get(tp["enrollment_id"]) or {}
        if reason == "exited" or enrollment.get("state") != "active":
            return
        campaign = item.campaign
        following: Step | None = None
        if campaign is not None:
            if item.step is not None:
                index = campaign.step_index(item.step.id)
                if index is not None and index + 1 < len(campaign.steps):
                    following = campaign.steps[index + 1]
            else:
                successor = self.removed_steps.get(campaign.id, {}).get(tp["step_id"])
                following = campaign.step(successor) if successor else None
        if following is None:
            write.enrollments_ended.append({"b_id": tp["enrollment_id"], "b_state": "completed", "b_ended_at": now})
            return
        due = now + following.after
        write.new_touchpoints.append(
            {
                "enrollment_id": tp["enrollment_id"], "campaign_id": tp["campaign_id"],
                "recipient_id": tp["recipient_id"], "step_id": following.id, "channel": following.channel,
                "idempotency_key": f"{tp['enrollment_id']}:{following.id}", "state": "pending",
                "scheduled_at": due, "due_at": due, "attempts": 0, "created_at": now,
            }
        )  # fmt: skip


def _open_windows(state: AttentionState) -> int:
    return sum(1 for outcome in state.outcomes if outcome.resolved_at is None)


def removed_step_successors(
    old_steps: Sequence[str], removed: Mapping[str, str | None], campaign: Campaign
) -> dict[str, str | None]:
    """For every step removed from a campaign so far: the step its journeys continue with.

    ``old_steps`` is the previous version's step order and ``removed`` what earlier edits
    recorded; a successor that was itself removed since is followed to a surviving step.
    """
    alive = {step.id for step in campaign.steps}
    result = {step: following for step, following in removed.items() if step not in alive}
    for index, step in enumerate(old_steps):
        if step not in alive:
            result[step] = next((s for s in old_steps[index + 1 :] if s in alive), None)
    for step, following in list(result.items()):
        seen: set[str] = set()
        while following is not None and following not in alive and following not in seen:
            seen.add(following)
            following = result.get(following)
        result[step] = following if following in alive else None
    return result


def _merge_records(first: Any, second: Any) -> Any:
    """Two records for one id in one batch: the later one's given fields win."""
    data = first.model_dump()
    for name in second.model_fields_set:
        value = getattr(second, name)
        if name in ("attributes", "consent"):
            data[name] = {**data[name], **value}
        else:
            data[name] = value
    merged = type(first).model_validate(data)
    object.__setattr__(merged, "__pydantic_fields_set__", first.model_fields_set | second.model_fields_set)
    return merged


def _event_row(event: Any, now: datetime) -> Row:
    touchpoint_id = None
    if event.touchpoint_id is not None:
        try:
            touchpoint_id = int(event.touchpoint_id)
        except ValueError:
            touchpoint_id = None
    return {
        "event_id": event.id,
        "recipient_id": event.recipient_id,
        "type": event.type,
        "at": event.at or now,
        "channel": event.channel,
        "touchpoint_id": touchpoint_id,
        "message_id": event.message_id,
        "properties": dict(event.properties),
        "received_at": now,
        "applied_at": None,
    }
