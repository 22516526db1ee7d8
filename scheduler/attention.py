"""The attention asset: per-recipient state that decays, and how a send moves it.

Pure code: no I/O, no clock. Every function takes the instant it works at. The value estimate
NV(t) of SPEC section 7 builds on this state (docs/attention-model.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.config import AttentionSettings


@dataclass(frozen=True, slots=True)
class SendRecord:
    """One past send, as the caps see it."""

    at: datetime
    channel: str
    kind: str


@dataclass(slots=True)
class AttentionState:
    """The model's memory of one recipient; ``updated_at`` is when decay was last applied.

    Treated as immutable: every update returns a new state (not frozen only because frozen
    dataclasses are several times slower to build, and states are built on every decision).
    """

    updated_at: datetime | None
    asset: float
    expectation: float
    fatigue: float
    engagement: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    interests: Mapping[str, float] = field(default_factory=dict)
    topic_last_sent: Mapping[str, datetime] = field(default_factory=dict)
    recent_sends: tuple[SendRecord, ...] = ()
    open_request: bool = False
    last_inbound_at: datetime | None = None
    request_resolved_at: datetime | None = None
    complained_at: datetime | None = None

    @classmethod
    def initial(cls, params: AttentionSettings) -> AttentionState:
        """The state of a recipient Tact has never touched."""
        return cls(
            updated_at=None,
            asset=params.asset_start,
            expectation=params.expectation_start,
            fatigue=0.0,
        )


def _half(elapsed: timedelta, half_life: timedelta) -> float:
    if half_life.total_seconds() <= 0:
        return 0.0
    return float(2.0 ** (-elapsed.total_seconds() / half_life.total_seconds()))


def decayed(state: AttentionState, at: datetime, params: AttentionSettings) -> AttentionState:
    """The state as of ``at``: fatigue fades, the asset drifts back to its start, counts age."""
    if state.updated_at is None or at <= state.updated_at:
        return state  # nothing to decay (never touched, or no time has passed)
    elapsed = at - state.updated_at
    rest = params.asset_start
    factor = _half(elapsed, params.engagement_half_life)
    return AttentionState(
        updated_at=at,
        asset=rest + (state.asset - rest) * _half(elapsed, params.asset_half_life),
        expectation=state.expectation,
        fatigue=state.fatigue * _half(elapsed, params.fatigue_half_life),
        engagement={c: (a * factor, b * factor) for c, (a, b) in state.engagement.items()},
        interests=state.interests,
        topic_last_sent=state.topic_last_sent,
        recent_sends=state.recent_sends,
        open_request=state.open_request,
        last_inbound_at=state.last_inbound_at,
        request_resolved_at=state.request_resolved_at,
        complained_at=state.complained_at,
    )


def on_send(
    state: AttentionState,
    *,
    channel: str,
    kind: str,
    topics: Iterable[str],
    at: datetime,
    params: AttentionSettings,
    keep: timedelta,
) -> AttentionState:
    """The state after a touch went out at ``at``: fatigue grows, the send is remembered."""
    current = decayed(state, at, params)
    weight = params.fatigue_weight.get(channel, 1.0)
    last_sent = dict(current.topic_last_sent)
    for topic in topics:
        last_sent[topic] = at
    horizon = at - keep
    sends = (*(s for s in current.recent_sends if s.at > horizon), SendRecord(at=at, channel=channel, kind=kind))
    return AttentionState(
        updated_at=current.updated_at or at,
        asset=current.asset,
        expectation=current.expectation,
        fatigue=current.fatigue + weight,
        engagement=current.engagement,
        interests=current.interests,
        topic_last_sent=last_sent,
        recent_sends=sends,
        open_request=current.open_request,
        last_inbound_at=current.last_inbound_at,
        request_resolved_at=current.request_resolved_at,
        complained_at=current.complained_at,
    )


def engagement_rate(state: AttentionState, channel: str, params: AttentionSettings) -> float:
    """m_c: the recipient's engagement rate on a channel, prior included."""
    a, b = state.engagement.get(channel, params.engagement_prior)
    return a / (a + b) if a + b > 0 else 0.0


def relevance(state: AttentionState, topics: Sequence[str], params: AttentionSettings) -> float:
    """ρ: the recipient's strongest interest among the touch's topics."""
    if not topics:
        return params.interest_start
    return max(state.interests.get(topic, params.interest_start) for topic in topics)


def to_row(state: AttentionState) -> dict[str, Any]:
    """The state as the ``attention`` table's columns."""
    return {
        "updated_at": state.updated_at,
        "asset": state.asset,
        "expectation": state.expectation,
        "fatigue": state.fatigue,
        "engagement": {c: [a, b] for c, (a, b) in state.engagement.items()},
        "interests": dict(state.interests),
        "topic_last_sent": {k: v.timestamp() for k, v in state.topic_last_sent.items()},
        "recent_sends": [[s.at.timestamp(), s.channel, s.kind] for s in state.recent_sends],
        "open_request": state.open_request,
        "last_inbound_at": state.last_inbound_at,
        "request_resolved_at": state.request_resolved_at,
        "complained_at": state.complained_at,
    }


def from_row(row: Mapping[str, Any]) -> AttentionState:
    """Rebuild the state from an ``attention`` row."""
    return AttentionState(
        updated_at=row["updated_at"],
        asset=row["asset"],
        expectation=row["expectation"],
        fatigue=row["fatigue"],
        engagement={c: (float(v[0]), float(v[1])) for c, v in (row["engagement"] or {}).items()},
        interests=dict(row["interests"] or {}),
        topic_last_sent={k: _instant(v) for k, v in (row["topic_last_sent"] or {}).items()},
        recent_sends=tuple(
            SendRecord(at=_instant(at), channel=channel, kind=kind) for at, channel, kind in (row["recent_sends"] or [])
        ),
        open_request=bool(row["open_request"]),
        last_inbound_at=row["last_inbound_at"],
        request_resolved_at=row["request_resolved_at"],
        complained_at=row["complained_at"],
    )


def _instant(value: float | str) -> datetime:
    """A stored instant: epoch seconds (or ISO text) to an aware UTC datetime."""
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return datetime.fromtimestamp(value, UTC)
