"""The attention asset: per-recipient state that decays, and how sends and answers move it.

Pure code: no I/O, no clock. Every function takes the instant it works at. State is stored
lazily: each stored value is as of ``updated_at``, and decay (plus the resolution of outcome
windows that closed meanwhile) is applied on read by :func:`decayed`. The value estimate lives
in :mod:`scheduler.value`; docs/attention-model.md explains both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.config import AttentionSettings

# What an answer to a touch says, strongest last: a later, stronger answer replaces a weaker one.
OUTCOME_RANK = {
    "ignored": 0,
    "opened": 1,
    "clicked": 2,
    "replied": 3,
    "converted": 3,
    "unsubscribed": 4,
    "complained": 5,
}
# Event types the model learns from (a campaign's goal event counts as ``converted``).
MODEL_EVENTS = frozenset(OUTCOME_RANK) - {"ignored"} | {"support_opened", "support_resolved", "inbound_message"}
# Answers that settle a touch at once; an open waits for the window to close (a click may follow).
DECISIVE = frozenset({"clicked", "replied", "converted", "unsubscribed", "complained"})
# Answers that end a relationship: they never raise the asset, whatever their configured value.
REBUFFS = frozenset({"unsubscribed", "complained"})
# Outcome windows remembered after they resolve, so a late answer can still correct one.
RESOLVED_KEPT = 4


@dataclass(slots=True)
class SendRecord:
    """One past send, as the caps see it (treated as immutable; not frozen because thousands
    are rebuilt from storage per batch, and frozen dataclasses are slow to build)."""

    at: datetime
    channel: str
    kind: str


@dataclass(slots=True)
class Outcome:
    """The outcome window of one marketing touch: open until ``closes_at`` or a decisive answer
    (treated as immutable, like SendRecord)."""

    touchpoint_id: int | None
    channel: str
    sent_at: datetime
    closes_at: datetime
    topics: tuple[str, ...] = ()
    answer: str = "ignored"  # the strongest answer seen so far
    resolved_at: datetime | None = None

    @property
    def pending(self) -> bool:
        """Whether the touch still awaits its outcome."""
        return self.resolved_at is None


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
    outcomes: tuple[Outcome, ...] = ()

    @classmethod
    def initial(cls, params: AttentionSettings) -> AttentionState:
        """The state of a recipient Tact has never touched."""
        return cls(
            updated_at=None,
            asset=params.asset_start,
            expectation=params.expectation_start,
            fatigue=0.0,
        )

    @property
    def resolve_at(self) -> datetime | None:
        """When the next pending outcome window closes (the tick resolves it then)."""
        pending = [o.closes_at for o in self.outcomes if o.pending]
        return min(pending) if pending else None


def half(elapsed: timedelta, half_life: timedelta) -> float:
    """The fraction left after ``elapsed`` for a quantity halving every ``half_life``."""
    if half_life.total_seconds() <= 0:
        return 0.0
    return float(2.0 ** (-elapsed.total_seconds() / half_life.total_seconds()))


def _decay_to(state: AttentionState, at: datetime, params: AttentionSettings) -> AttentionState:
    """Decay only: fatigue fades, the asset drifts back to its start, engagement counts age."""
    if state.updated_at is None or at <= state.updated_at:
        return state
    elapsed = at - state.updated_at
    rest = params.asset_start
    factor = half(elapsed, params.engagement_half_life)
    # Built field by field: this runs for every decision, and dataclasses.replace is slow.
    return AttentionState(
        at,
        rest + (state.asset - rest) * half(elapsed, params.asset_half_life),
        state.expectation,
        state.fatigue * half(elapsed, params.fatigue_half_life),
        {c: (a * factor, b * factor) for c, (a, b) in state.engagement.items()},
        state.interests,
        state.topic_last_sent,
        state.recent_sends,
        state.open_request,
        state.last_inbound_at,
        state.request_resolved_at,
        state.complained_at,
        state.outcomes,
    )


def faded(state: AttentionState, at: datetime, params: AttentionSettings) -> AttentionState:
    """The state at a later ``at`` by decay alone, windows left open: how rested the recipient
    will be then, not guessing how pending touches will be answered."""
    return _decay_to(state, at, params)


def decayed(state: AttentionState, at: datetime, params: AttentionSettings) -> AttentionState:
    """The state as of ``at``: windows that closed by then resolve (an ignored touch is a
    signal too), each at its closing time, and everything decays to ``at``."""
    while True:
        closing = [o for o in state.outcomes if o.resolved_at is None and o.closes_at <= at]
        if not closing:
            return _decay_to(state, at, params)
        first = min(closing, key=lambda o: o.closes_at)
        state = _decay_to(state, first.closes_at, params)
        state = _resolve(state, first, first.answer, first.closes_at, params)


def engagement_rate(state: AttentionState, channel: str, params: AttentionSettings) -> float:
    """m_c: the recipient's engagement rate on a channel, prior included."""
    a, b = state.engagement.get(channel, params.engagement_prior)
    return a / (a + b) if a + b > 0 else 0.0


def relevance(state: AttentionState, topics: Sequence[str], params: AttentionSettings) -> float:
    """ρ: the recipient's strongest interest among the touch's topics."""
    if not topics:
        return params.interest_start
    return max(state.interests.get(topic, params.interest_start) for topic in topics)


# -- updates ----------------------------------------------------------------------------------


def on_send(
    state: AttentionState,
    *,
    channel: str,
    kind: str,
    topics: Iterable[str],
    at: datetime,
    params: AttentionSettings,
    keep: timedelta,
    touchpoint_id: int | None = None,
) -> AttentionState:
    """The state after a touch went out at ``at``: fatigue grows, the send is remembered, and a
    marketing touch opens its outcome window."""
    current = decayed(state, at, params)
    weight = params.fatigue_weight.get(channel, 1.0)
    topics = tuple(topics)
    last_sent = dict(current.topic_last_sent)
    for topic in topics:
        last_sent[topic] = at
    horizon = at - keep
    sends = (*(s for s in current.recent_sends if s.at > horizon), SendRecord(at=at, channel=channel, kind=kind))
    outcomes = current.outcomes
    if kind == "marketing":
        window = params.outcome_window.get(channel, timedelta(hours=72))
        outcomes = (*outcomes, Outcome(touchpoint_id, channel, at, at + window, topics))
    return replace(
        current,
        updated_at=current.updated_at or at,
        fatigue=current.fatigue + weight,
        topic_last_sent=last_sent,
        recent_sends=sends,
        outcomes=outcomes,
    )


def on_event(
    state: AttentionState,
    kind: str,
    at: datetime,
    params: AttentionSettings,
    *,
    channel: str | None = None,
    touchpoint_id: int | None = None,
) -> AttentionState:
    """The state after an event of ``kind`` that happened at ``at``.

    ``kind`` is an answer (``opened``, ``clicked``, ``replied``, ``converted``,
    ``unsubscribed``, ``complained``) or ``support_opened``, ``support_resolved``,
    ``inbound_message``. An answer counts for the touch it names, else for the latest outcome
    window open at ``at`` on its channel. An event older than the state (it arrived late) moves
    the state by what it would have moved it then, decayed since: not as if it were new.
    """
    if state.updated_at is not None and at < state.updated_at:
        return _late(state, kind, at, params, channel, touchpoint_id)
    current = decayed(state, at, params) if state.updated_at is not None else replace(state, updated_at=at)
    return _apply(current, kind, at, params, channel, touchpoint_id)


def _late(
    state: AttentionState,
    kind: str,
    at: datetime,
    params: AttentionSettings,
    channel: str | None,
    touchpoint_id: int | None,
) -> AttentionState:
    assert state.updated_at is not None
    moved = _apply(state, kind, at, params, channel, touchpoint_id)
    since = state.updated_at - at
    asset_left = half(since, params.asset_half_life)
    counts_left = half(since, params.engagement_half_life)
    engagement = dict(moved.engagement)
    for c, (a, b) in moved.engagement.items():
        a0, b0 = state.engagement.get(c, params.engagement_prior)
        engagement[c] = (max(a0 + (a - a0) * counts_left, 0.0), max(b0 + (b - b0) * counts_left, 0.0))
    asset = state.asset + (moved.asset - state.asset) * asset_left
    if kind == "complained":
        asset = 0.0  # a complaint ends trust whenever it happened
    return replace(moved, asset=_clamp(asset), engagement=engagement)


def _apply(
    state: AttentionState,
    kind: str,
    at: datetime,
    params: AttentionSettings,
    channel: str | None,
    touchpoint_id: int | None,
) -> AttentionState:
    if kind == "support_opened":
        return replace(state, open_request=True, last_inbound_at=_later(state.last_inbound_at, at))
    if kind == "support_resolved":
        return replace(state, open_request=False, request_resolved_at=_later(state.request_resolved_at, at))
    if kind == "inbound_message":
        return replace(state, last_inbound_at=_later(state.last_inbound_at, at))
    if kind not in OUTCOME_RANK:
        return state
    if kind == "replied":
        state = replace(state, last_inbound_at=_later(state.last_inbound_at, at))
    target = _attributed(state, at, channel, touchpoint_id)
    if target is None:
        state = _direct(state, kind, channel, (), params)
    elif target.pending:
        if OUTCOME_RANK[kind] > OUTCOME_RANK[target.answer]:
            if kind in DECISIVE:
                state = _resolve(state, target, kind, at, params)
            else:
                state = _swap(state, target, replace(target, answer=kind))
    elif OUTCOME_RANK[kind] > OUTCOME_RANK[target.answer]:
        state = _correct(state, target, kind, params)
    if kind == "unsubscribed":
        state = replace(state, asset=state.asset / 2)
    elif kind == "complained":
        state = replace(state, asset=0.0, complained_at=state.complained_at or at)
    return state


def _attributed(state: AttentionState, at: datetime, channel: str | None, touchpoint_id: int | None) -> Outcome | None:
    """The outcome window an answer belongs to."""
    if touchpoint_id is not None:
        for outcome in state.outcomes:
            if outcome.touchpoint_id == touchpoint_id:
                return outcome
    candidates = [
        o for o in state.outcomes if (channel is None or o.channel == channel) and o.sent_at <= at < o.closes_at
    ]
    return max(candidates, key=lambda o: o.sent_at) if candidates else None


def _swap(state: AttentionState, old: Outcome, new: Outcome) -> AttentionState:
    return replace(state, outcomes=tuple(new if o is old else o for o in state.outcomes))


def _realized(answer: str, params: AttentionSettings) -> float:
    return params.outcome_value.get(answer, 0.0)


def asset_step(asset: float, expectation: float, realized: float, params: AttentionSettings) -> float:
    """P − E = S: trust grows by a share of what is left to gain, falls by a share of what it has."""
    surprise = realized - expectation
    if surprise >= 0:
        return asset + params.eta_up * surprise * (1 - asset)
    return asset + params.eta_down * surprise * asset


def _resolve(
    state: AttentionState, outcome: Outcome, answer: str, at: datetime, params: AttentionSettings
) -> AttentionState:
    """Settle a touch with its answer: asset and expectation move, counts and interests learn."""
    realized = _realized(answer, params)
    asset = _clamp(asset_step(state.asset, state.expectation, realized, params))
    if realized < 0 or answer in REBUFFS:
        asset = min(asset, state.asset)  # a rebuff never builds trust, whatever was expected
    engagement, interests = _learned(state, answer, outcome.channel, outcome.topics, params)
    settled = replace(outcome, answer=answer, resolved_at=at)
    pending = [o for o in state.outcomes if o is not outcome and o.pending]
    resolved = [o for o in state.outcomes if o is not outcome and not o.pending][-(RESOLVED_KEPT - 1) :]
    return replace(
        state,
        asset=asset,
        expectation=state.expectation + params.beta * (realized - state.expectation),
        engagement=engagement,
        interests=interests,
        outcomes=(*resolved, settled, *pending),
    )


def _correct(state: AttentionState, outcome: Outcome, answer: str, params: AttentionSettings) -> AttentionState:
    """A late, stronger answer to a settled touch: move the asset by the difference between the
    two answers' updates, and relearn the counts."""
    before = _realized(outcome.answer, params)
    after = _realized(answer, params)
    delta = asset_step(state.asset, state.expectation, after, params) - asset_step(
        state.asset, state.expectation, before, params
    )
    if answer in REBUFFS:
        delta = min(delta, 0.0)
    a, b = state.engagement.get(outcome.channel, params.engagement_prior)
    da, db = _count_step(outcome.answer, params)
    engagement = {**state.engagement, outcome.channel: (max(a - da, 0.0), max(b - db, 0.0))}
    state = replace(
        state,
        asset=_clamp(state.asset + delta),
        expectation=state.expectation + params.beta * (after - before),
        engagement=engagement,
    )
    state = _direct(state, answer, outcome.channel, outcome.topics, params)
    return _swap(state, outcome, replace(outcome, answer=answer))


def _count_step(answer: str, params: AttentionSettings) -> tuple[float, float]:
    """What an answer adds to the engagement counts (a, b)."""
    if answer in ("clicked", "replied", "converted"):
        return 1.0, 0.0
    if answer == "opened":
        return params.open_credit, 1 - params.open_credit
    return 0.0, 1.0  # ignored, unsubscribed, complained


def _direct(
    state: AttentionState, answer: str, channel: str | None, topics: Sequence[str], params: AttentionSettings
) -> AttentionState:
    """Counts and interests: what the answer teaches about the recipient, touch or no touch."""
    engagement, interests = _learned(state, answer, channel, topics, params)
    return replace(state, engagement=engagement, interests=interests)


def _learned(
    state: AttentionState, answer: str, channel: str | None, topics: Sequence[str], params: AttentionSettings
) -> tuple[Mapping[str, tuple[float, float]], Mapping[str, float]]:
    """The engagement counts and interests after an answer."""
    engagement = state.engagement
    if channel is not None:
        a, b = engagement.get(channel, params.engagement_prior)
        da, db = _count_step(answer, params)
        engagement = {**engagement, channel: (a + da, b + db)}
    interests = state.interests
    if topics and answer != "opened":
        interests = dict(interests)
        rate = params.interest_rate
        for topic in topics:
            current = interests.get(topic, params.interest_start)
            if answer in ("clicked", "replied", "converted"):
                interests[topic] = current + rate * (1 - current)
            else:
                interests[topic] = current * (1 - rate / 3)
    return engagement, interests


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


def _later(current: datetime | None, candidate: datetime) -> datetime:
    return candidate if current is None or candidate > current else current


# -- storage ----------------------------------------------------------------------------------


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
        "outcomes": [
            [
                o.touchpoint_id,
                o.channel,
                o.sent_at.timestamp(),
                o.closes_at.timestamp(),
                list(o.topics),
                o.answer,
                o.resolved_at.timestamp() if o.resolved_at else None,
            ]
            for o in state.outcomes
        ],
        "resolve_at": state.resolve_at,
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
            SendRecord(_instant(at), channel, kind) for at, channel, kind in (row["recent_sends"] or [])
        ),
        open_request=bool(row["open_request"]),
        last_inbound_at=row["last_inbound_at"],
        request_resolved_at=row["request_resolved_at"],
        complained_at=row["complained_at"],
        outcomes=tuple(
            Outcome(
                tp,
                channel,
                _instant(sent),
                _instant(closes),
                tuple(topics),
                answer,
                _instant(resolved) if resolved is not None else None,
            )
            for tp, channel, sent, closes, topics, answer, resolved in (row.get("outcomes") or [])
        ),
    )


def _instant(value: float | str) -> datetime:
    """A stored instant: epoch seconds (or ISO text) to an aware UTC datetime."""
    try:
        return _from_epoch(value, UTC)  # type: ignore[arg-type]
    except TypeError:
        return datetime.fromisoformat(str(value))


_from_epoch = datetime.fromtimestamp
