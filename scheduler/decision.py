"""The decision for one touchpoint: gates in order, then value. Pure: no I/O, no clock.

Order (the first that applies wins, SPEC section 7): permission (consent, complaint,
suppression) → journey (exit, skip_if) → expiry → open request → send window / quiet hours →
safety caps → transactional / ``always`` bypass → holdout → value.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

from scheduler.attention import AttentionState, decayed, faded, half
from scheduler.campaign import WEEKDAYS, Campaign, Step
from scheduler.config import Settings
from scheduler.value import Estimate, TouchTerms, estimate, rested
from scheduler.windows import (
    CapRule,
    QuietHours,
    WeeklyWindow,
    cap_clear_time,
    cap_gate,
    hourly_candidates,
    next_allowed,
    next_window_opening,
    window_gate,
    zone,
)

ONE_HOUR = timedelta(hours=1)

DecisionKind = Literal["sent", "deferred", "dropped", "failed", "retrying"]


@dataclass(frozen=True, slots=True)
class RecipientView:
    """What the decision needs to know about the recipient."""

    id: str
    timezone: str | None
    value: float
    consent: Mapping[str, str]
    suppressed: bool


@dataclass(slots=True)
class Numbers:
    """The model's numbers at decision time, as logged (treated as immutable; not frozen
    because one is built per decision and frozen dataclasses are slow to build)."""

    asset: float | None = None
    expectation: float | None = None
    fatigue: float | None = None
    engagement_p: float | None = None
    relevance: float | None = None
    value: float | None = None
    net_value: float | None = None
    threshold: float | None = None


@dataclass(slots=True)
class Decision:
    """What to do with a touchpoint now, and why (treated as immutable, like Numbers)."""

    decision: Literal["send", "defer", "drop"]
    reason: str
    deferred_until: datetime | None = None
    numbers: Numbers = field(default_factory=Numbers)
    propensity: float = 1.0


@dataclass(slots=True)
class Touch:
    """One touchpoint as the decision sees it."""

    campaign: Campaign
    step: Step
    scheduled_at: datetime
    enrollment_state: str
    seen_events: Collection[str]
    key: str = ""  # the touchpoint's idempotency key: seeds exploration draws


def in_holdout(recipient_id: str, fraction: float) -> bool:
    """Stable membership of the fixed-cadence holdout group, hashed from the recipient id."""
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"holdout:{recipient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def deadline(touch: Touch, settings: Settings) -> datetime:
    """The latest instant the touch may still go out (scheduled time + max_defer)."""
    max_defer = touch.step.max_defer
    if max_defer is None:
        max_defer = settings.engine.default_max_defer
    return touch.scheduled_at + max_defer


def recipient_zone(recipient: RecipientView, campaign: Campaign, settings: Settings) -> ZoneInfo:
    """The recipient's own time zone, else the campaign's window zone, else the default."""
    window_zone = campaign.send_window.timezone if campaign.send_window else None
    return zone(recipient.timezone or window_zone or settings.timezone, settings.timezone)


def decide(
    touch: Touch,
    recipient: RecipientView,
    state: AttentionState,
    at: datetime,
    settings: Settings,
) -> Decision:
    """Decide one touchpoint at ``at``; the state is the recipient's, decayed to ``at`` here."""
    campaign, step = touch.campaign, touch.step
    marketing = campaign.kind == "marketing"
    state = decayed(state, at, settings.attention)
    terms = touch_terms(touch, recipient)
    now = estimate(state, terms, at, settings.attention)
    numbers = _numbers(state, step, now, settings)

    permission = _permission_gate(marketing, recipient, step.channel, state, settings)
    if permission:
        return Decision("drop", permission, numbers=numbers)
    if touch.enrollment_state == "exited":
        return Decision("drop", "exited", numbers=numbers)
    if any(event in touch.seen_events for event in step.skip_if):
        return Decision("drop", "skipped", numbers=numbers)

    last_chance = deadline(touch, settings)
    if at > last_chance:
        return Decision("drop", "expired", numbers=numbers)

    if not settings.attention.enabled:
        # The model is off (fixed cadence, as simulations compare): no open-request gate and
        # no value rule; windows and caps still apply.
        state = replace(state, open_request=False, last_inbound_at=None, request_resolved_at=None)
    gates = _Gates(touch, recipient, state, settings)
    timing = gates.check(at, last_chance)
    if timing is not None:
        return timing.with_numbers(numbers)

    if not marketing:
        return Decision("send", "transactional", numbers=numbers)
    if campaign.policy == "always":
        return Decision("send", "always", numbers=numbers)
    if not settings.attention.enabled:
        return Decision("send", "fixed", numbers=numbers)
    if in_holdout(recipient.id, settings.attention.holdout):
        return Decision("send", "holdout", numbers=numbers)
    decision = _by_value(terms, now, state, at, settings, numbers, gates, last_chance)
    return _explore(decision, touch, at, settings, gates, last_chance)


def touch_terms(touch: Touch, recipient: RecipientView) -> TouchTerms:
    """The touch as the value estimate sees it."""
    campaign, step = touch.campaign, touch.step
    index = campaign.step_index(step.id)
    later = campaign.steps[index:] if index is not None else [step]
    return TouchTerms(
        channel=step.channel,
        topics=step.topics,
        value=step.value,
        remaining=sum(s.value for s in later),
        recipient_value=recipient.value,
    )


def _by_value(
    terms: TouchTerms,
    now: Estimate,
    state: AttentionState,
    at: datetime,
    settings: Settings,
    numbers: Numbers,
    gates: _Gates,
    last_chance: datetime,
) -> Decision:
    """Rule 8: send when NV(now) ≥ θ; else defer to the first allowed hour where it is; drop
    what is not worth sending even to a rested recipient."""
    params = settings.attention
    if now.net_value >= params.theta:
        return Decision("send", "value_ok", numbers=numbers)
    if estimate(rested(state), terms, at, params).net_value < params.theta:
        return Decision("drop", "value_below_threshold", numbers=numbers)

    def worth(moment: datetime) -> bool:
        return estimate(faded(state, moment, params), terms, moment, params).net_value >= params.theta

    def roughly_worth(moment: datetime) -> bool:
        # Only fatigue and topic novelty move within max_defer; the asset and the counts decay
        # over months. The instant found is checked with the full decay below.
        rest = AttentionState(
            moment, state.asset, state.expectation,
            state.fatigue * half(moment - at, params.fatigue_half_life), state.engagement,
            state.interests, state.topic_last_sent,
        )  # fmt: skip
        return estimate(rest, terms, moment, params).net_value >= params.theta

    # NV rises as the recipient rests (fatigue fades, topics age): bisect for the first
    # worthwhile hour, then take the first instant from there that every gate allows.
    hours = int((last_chance - at) / ONE_HOUR)
    if hours < 1 or not worth(at + hours * ONE_HOUR):
        return Decision("drop", "fatigue", numbers=numbers)
    low, high = 0, hours
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if roughly_worth(at + middle * ONE_HOUR) else (middle, high)
    until = next_allowed(at + high * ONE_HOUR, [gates.request_clear, gates.window_clear, gates.caps_clear])
    if until is not None and until <= last_chance and worth(until):
        return Decision("defer", "fatigue", deferred_until=until, numbers=numbers)
    for candidate in hourly_candidates(until or last_chance, last_chance, gates.allowed):
        if worth(candidate):  # the gates' opening was not worth it after all: look hour by hour
            return Decision("defer", "fatigue", deferred_until=candidate, numbers=numbers)
    return Decision("drop", "fatigue", numbers=numbers)


def _explore(
    decision: Decision, touch: Touch, at: datetime, settings: Settings, gates: _Gates, last_chance: datetime
) -> Decision:
    """With probability ``explore``, take the other action; log how likely the action was."""
    rate = settings.attention.explore
    if rate <= 0:
        return decision
    digest = hashlib.sha256(f"explore:{touch.key}:{at.isoformat()}".encode()).digest()
    flipped = int.from_bytes(digest[:8], "big") / 2**64 < rate
    if not flipped:
        return replace(decision, propensity=1 - rate)
    if decision.decision != "send":
        return Decision("send", "explore", numbers=decision.numbers, propensity=rate)
    later = next(hourly_candidates(at + ONE_HOUR, last_chance, gates.allowed), None)
    if later is None:
        return Decision("drop", "explore", numbers=decision.numbers, propensity=rate)
    return Decision("defer", "explore", deferred_until=later, numbers=decision.numbers, propensity=rate)


def _numbers(state: AttentionState, step: Step, parts: Estimate, settings: Settings) -> Numbers:
    return Numbers(
        asset=state.asset,
        expectation=state.expectation,
        fatigue=state.fatigue,
        engagement_p=parts.engagement_p,
        relevance=parts.relevance,
        value=step.value,
        net_value=parts.net_value,
        threshold=settings.attention.theta,
    )


def _permission_gate(
    marketing: bool,
    recipient: RecipientView,
    channel: str,
    state: AttentionState,
    settings: Settings,
) -> str | None:
    if recipient.suppressed:
        return "suppressed"
    if not marketing:
        return None
    if state.complained_at is not None:
        return "suppressed"
    status = recipient.consent.get(channel) or settings.consent.default_for(channel)
    if status == "opted_out":
        return "unsubscribed"
    if status != "opted_in":
        return "no_consent"
    return None


@dataclass(frozen=True, slots=True)
class _Timing:
    decision: Literal["defer", "drop"]
    reason: str
    until: datetime | None

    def with_numbers(self, numbers: Numbers) -> Decision:
        return Decision(self.decision, self.reason, deferred_until=self.until, numbers=numbers)


class _Gates:
    """Open request, windows and caps for one touch: which instants they allow, and the first
    one that fails now (its reason names the deferral)."""

    def __init__(self, touch: Touch, recipient: RecipientView, state: AttentionState, settings: Settings) -> None:
        campaign = touch.campaign
        self.marketing = campaign.kind == "marketing"
        self.state = state
        self.settings = settings
        self.tz = recipient_zone(recipient, campaign, settings)
        self.window = _window(campaign)
        self.quiet = _quiet(settings, self.marketing)
        self.caps = _cap_inputs(state, touch.step.channel, settings) if self.marketing else None

    def request_clear(self, t: datetime) -> datetime | None:
        if not self.marketing:
            return t
        state = self.state
        if state.open_request:
            return None
        cooldown = self.settings.attention.inbound_cooldown
        latest = t
        for moment in (state.last_inbound_at, state.request_resolved_at):
            if moment is not None and moment + cooldown > latest:
                latest = moment + cooldown
        return latest

    def window_clear(self, t: datetime) -> datetime | None:
        if self.window is None and self.quiet is None:
            return t
        return next_window_opening(t, self.tz, self.window, self.quiet)

    def caps_clear(self, t: datetime) -> datetime | None:
        if self.caps is None:
            return t
        rule, history, gap_history = self.caps
        return cap_clear_time(t, history, rule, self.settings.caps.min_gap, gap_history)

    def allowed(self, t: datetime) -> bool:
        """Whether every timing gate lets the touch go at ``t``."""
        return self.request_clear(t) == t and self.window_clear(t) == t and self.caps_clear(t) == t

    def check(self, at: datetime, last_chance: datetime) -> _Timing | None:
        """None when the touch may go now; else the deferral (or drop) and its reason."""
        reason: str | None = None
        if self.request_clear(at) != at:
            reason = "open_request"
        elif self.window is not None or self.quiet is not None:
            reason = window_gate(at, self.tz, self.window, self.quiet)
        if reason is None and self.caps is not None:
            rule, history, gap_history = self.caps
            if cap_gate(at, history, rule, self.settings.caps.min_gap, gap_history):
                reason = "frequency_cap"
        if reason is None:
            return None
        if reason == "open_request" and self.state.open_request:
            # No end is known: wait until the last chance; support_resolved pulls it forward.
            if at >= last_chance:
                return _Timing("drop", reason, None)
            return _Timing("defer", reason, last_chance)
        until = next_allowed(at, [self.request_clear, self.window_clear, self.caps_clear])
        if until is None or until > last_chance:
            return _Timing("drop", reason, None)
        return _Timing("defer", reason, until)


def _window(campaign: Campaign) -> WeeklyWindow | None:
    spec = campaign.send_window
    if spec is None:
        return None
    return _weekly_window(tuple(spec.days), spec.start, spec.end)


def _quiet(settings: Settings, marketing: bool) -> QuietHours | None:
    quiet = settings.quiet_hours
    if not quiet.enabled or (quiet.applies_to == "marketing" and not marketing):
        return None
    return _quiet_hours(quiet.start, quiet.end)


# Built for every decision from a handful of distinct settings: validated once, then shared
# (both are frozen).
@lru_cache(maxsize=256)
def _weekly_window(days: tuple[str, ...], start: time, end: time | None) -> WeeklyWindow:
    return WeeklyWindow(days=frozenset(WEEKDAYS.index(day) for day in days), start=start, end=end)


@lru_cache(maxsize=16)
def _quiet_hours(start: time, end: time) -> QuietHours:
    return QuietHours(start=start, end=end)


def _cap_inputs(
    state: AttentionState, channel: str, settings: Settings
) -> tuple[CapRule | None, list[datetime], list[datetime]] | None:
    caps = settings.caps
    if not caps.enabled:
        return None
    limit = caps.per_channel.get(channel)
    rule = CapRule(limit=limit, period=caps.window) if limit is not None else None
    marketing_sends = [s for s in state.recent_sends if s.kind == "marketing"]
    history = [s.at for s in marketing_sends if s.channel == channel]
    gap_history = [s.at for s in marketing_sends]
    return rule, history, gap_history


def cap_memory(settings: Settings) -> timedelta:
    """How long past sends must be remembered for the caps to work."""
    return max(settings.caps.window, settings.caps.min_gap, timedelta(days=1))
