"""Properties of the pure attention model that hold for any state, event order and valid constants."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from scheduler.attention import (
    MODEL_EVENTS,
    OUTCOME_RANK,
    AttentionState,
    Outcome,
    decayed,
    half,
    on_event,
    on_send,
)
from scheduler.campaign import Campaign
from scheduler.config import AttentionSettings, Settings
from scheduler.decision import RecipientView, Touch, decide, in_holdout
from scheduler.value import TouchTerms, estimate

AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday, noon UTC: outside the default quiet hours
KEEP = timedelta(days=7)
CHANNELS = ("email", "sms", "push")
TOPICS = ("tips", "news", "billing")
EVENT_KINDS = tuple(sorted(MODEL_EVENTS))
ANSWERS = tuple(sorted(OUTCOME_RANK))
SEND_IDS = tuple(range(100, 120))
NAMED_IDS = (1, 2, 3, 4, 5, 6, 7, 8, *SEND_IDS[:8])
RECIPIENT_ID = "r-2"  # not in the default 5 % holdout

unit = st.floats(0, 1)
ANY_EXPECTATION = st.floats(-2, 1)


def hours(low: float, high: float) -> st.SearchStrategy[timedelta]:
    """Durations between ``low`` and ``high`` hours."""
    return st.floats(low, high).map(lambda value: timedelta(hours=value))


# -- settings -------------------------------------------------------------------------------


@st.composite
def random_settings(draw: st.DrawFn) -> AttentionSettings:
    """Valid constants: rates in [0, 1], positive half-lives, outcome values ordered by rank."""
    worse = sorted(draw(st.lists(st.floats(-2, 0), min_size=2, max_size=2)))
    better = sorted(draw(st.lists(st.floats(0, 1), min_size=3, max_size=3)))
    half_life = hours(1, 24 * 365)
    return AttentionSettings(
        theta=draw(st.floats(-0.5, 0.5)),
        asset_start=draw(unit),
        expectation_start=draw(st.floats(-1, 1)),
        interest_start=draw(unit),
        engagement_prior=(draw(st.floats(0.01, 50)), draw(st.floats(0.01, 50))),
        fatigue_half_life=draw(half_life),
        asset_half_life=draw(half_life),
        engagement_half_life=draw(half_life),
        fatigue_weight={"email": draw(st.floats(0, 5)), "sms": draw(st.floats(0, 5))},
        outcome_window={"email": draw(hours(1, 240)), "sms": draw(hours(1, 240))},
        eta_up=draw(unit),
        eta_down=draw(unit),
        beta=draw(unit),
        outcome_value={
            "complained": worse[0],
            "unsubscribed": worse[1],
            "ignored": 0.0,
            "opened": better[0],
            "clicked": better[1],
            "replied": better[2],
            "converted": better[2],
        },
        open_credit=draw(unit),
        interest_rate=draw(unit),
        kappa=draw(st.floats(0, 2)),
        novelty_drop=draw(unit),
        novelty_half_life=draw(half_life),
        unsubscribe_base={"email": draw(st.floats(0, 0.05)), "sms": draw(st.floats(0, 0.05))},
        kappa_u=draw(st.floats(0, 1)),
        unsubscribe_max=draw(unit),
        positive_outcome=draw(unit),
        lambda_asset=draw(st.floats(0, 2)),
        unsubscribe_loss=draw(st.floats(0, 2)),
    )


attention_settings = st.one_of(st.just(AttentionSettings()), random_settings())


# -- states ---------------------------------------------------------------------------------


@st.composite
def outcome_windows(draw: st.DrawFn, pending: bool) -> tuple[Outcome, ...]:
    """Windows of past marketing touches as of ``AT``: settled ones, and open ones if ``pending``."""
    count = draw(st.integers(0, 4))
    ids = draw(st.lists(st.integers(1, 8), min_size=count, max_size=count, unique=True))
    windows = []
    for touchpoint_id in ids:
        channel = draw(st.sampled_from(CHANNELS))
        topics = tuple(draw(st.lists(st.sampled_from(TOPICS), max_size=2, unique=True)))
        named = touchpoint_id if draw(st.booleans()) else None
        if pending and draw(st.booleans()):
            sent_at = AT - draw(hours(0, 48))
            closes_at = AT + draw(hours(0.01, 72))
            answer = draw(st.sampled_from(["ignored", "opened"]))
            windows.append(Outcome(named, channel, sent_at, closes_at, topics, answer))
        else:
            sent_at = AT - draw(hours(1, 400))
            closes_at = sent_at + draw(hours(1, 96))
            resolved_at = sent_at + (min(closes_at, AT) - sent_at) * draw(unit)
            answer = draw(st.sampled_from(ANSWERS))
            windows.append(Outcome(named, channel, sent_at, closes_at, topics, answer, resolved_at))
    return tuple(windows)


@st.composite
def attention_states(
    draw: st.DrawFn,
    *,
    expectation: st.SearchStrategy[float] = ANY_EXPECTATION,
    pending: bool = True,
    complained: bool = True,
) -> AttentionState:
    """Any state as of ``AT``: asset in [0, 1], expectation in [-2, 1], fatigue >= 0, windows."""
    counts = st.tuples(st.floats(0, 200), st.floats(0, 200))
    past = st.one_of(st.none(), hours(0, 500).map(lambda ago: AT - ago))
    return AttentionState(
        updated_at=AT,
        asset=draw(unit),
        expectation=draw(expectation),
        fatigue=draw(st.floats(0, 50)),
        engagement=draw(st.dictionaries(st.sampled_from(CHANNELS), counts, max_size=3)),
        interests=draw(st.dictionaries(st.sampled_from(TOPICS), unit, max_size=3)),
        topic_last_sent=draw(st.dictionaries(st.sampled_from(TOPICS), hours(0, 500).map(lambda ago: AT - ago))),
        open_request=draw(st.booleans()),
        last_inbound_at=draw(past),
        request_resolved_at=draw(past),
        complained_at=draw(past) if complained else None,
        outcomes=draw(outcome_windows(pending)),
    )


# -- operations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """A touch goes out ``step`` after the previous operation."""

    step: timedelta
    channel: str
    kind: str
    topics: tuple[str, ...]
    named: bool


@dataclass(frozen=True)
class Event:
    """An event arrives ``step`` after the previous operation, having happened ``lag`` earlier."""

    step: timedelta
    lag: timedelta
    kind: str
    channel: str | None
    touchpoint_id: int | None


@dataclass(frozen=True)
class Decay:
    """The state is read ``step`` after the previous operation."""

    step: timedelta


def operations(late: bool) -> st.SearchStrategy[list[Send | Event | Decay]]:
    """Sequences of sends, events and reads; with ``late``, events may predate the state."""
    step = hours(0, 200)
    send = st.builds(
        Send,
        step=step,
        channel=st.sampled_from(CHANNELS),
        kind=st.sampled_from(["marketing", "transactional"]),
        topics=st.lists(st.sampled_from(TOPICS), max_size=2, unique=True).map(tuple),
        named=st.booleans(),
    )
    event = st.builds(
        Event,
        step=step,
        lag=hours(0, 300) if late else st.just(timedelta(0)),
        kind=st.sampled_from(EVENT_KINDS),
        channel=st.one_of(st.none(), st.sampled_from(CHANNELS)),
        touchpoint_id=st.one_of(st.none(), st.sampled_from(NAMED_IDS)),
    )
    return st.lists(st.one_of(send, event, st.builds(Decay, step=step)), max_size=12)


def replay(
    state: AttentionState, steps: Sequence[Send | Event | Decay], params: AttentionSettings
) -> list[AttentionState]:
    """Every state the operations pass through, in order."""
    now = AT
    seen = []
    for index, operation in enumerate(steps):
        now += operation.step
        if isinstance(operation, Send):
            touchpoint_id = SEND_IDS[index] if operation.named else None
            state = on_send(
                state,
                channel=operation.channel,
                kind=operation.kind,
                topics=operation.topics,
                at=now,
                params=params,
                keep=KEEP,
                touchpoint_id=touchpoint_id,
            )
        elif isinstance(operation, Event):
            state = on_event(
                state,
                operation.kind,
                now - operation.lag,
                params,
                channel=operation.channel,
                touchpoint_id=operation.touchpoint_id,
            )
        else:
            state = decayed(state, now, params)
        seen.append(state)
    return seen


# -- 1. the asset stays in [0, 1] -----------------------------------------------------------


@settings(deadline=None)
@given(params=attention_settings, state=attention_states(), steps=operations(late=False))
def test_asset_stays_in_unit_interval_for_events_in_order(
    params: AttentionSettings, state: AttentionState, steps: list[Send | Event | Decay]
) -> None:
    """Sends, events in time order and reads keep the asset within [0, 1]."""
    for after in replay(state, steps, params):
        assert 0.0 <= after.asset <= 1.0


@settings(deadline=None)
@given(params=attention_settings, state=attention_states(), steps=operations(late=True))
def test_asset_stays_in_unit_interval_for_late_events(
    params: AttentionSettings, state: AttentionState, steps: list[Send | Event | Decay]
) -> None:
    """Events that arrive after later ones (late, possibly naming touchpoints) keep the asset in [0, 1]."""
    for after in replay(state, steps, params):
        assert 0.0 <= after.asset <= 1.0


# -- 2. more fatigue never raises NV --------------------------------------------------------


@st.composite
def touch_terms(draw: st.DrawFn) -> TouchTerms:
    """A touch on any channel, with any topics, value and recipient value R >= 0."""
    value = draw(unit)
    return TouchTerms(
        channel=draw(st.sampled_from(CHANNELS)),
        topics=tuple(draw(st.lists(st.sampled_from(TOPICS), max_size=3, unique=True))),
        value=value,
        remaining=value + draw(st.floats(0, 5)),
        recipient_value=draw(st.floats(0, 100)),
    )


def nv_and_chance(
    state: AttentionState, fatigue: float, terms: TouchTerms, at: datetime, params: AttentionSettings
) -> tuple[float, float]:
    """NV and p̂ of the touch for the state with the given fatigue."""
    parts = estimate(replace(state, fatigue=fatigue), terms, at, params)
    return parts.net_value, parts.engagement_p


FATIGUE = st.floats(0, 50)
LATER = hours(0, 500)


@settings(deadline=None)
@given(
    params=attention_settings,
    state=attention_states(),
    terms=touch_terms(),
    fatigue=FATIGUE,
    extra=FATIGUE,
    after=LATER,
)
def test_more_fatigue_never_raises_engagement_chance(
    params: AttentionSettings,
    state: AttentionState,
    terms: TouchTerms,
    fatigue: float,
    extra: float,
    after: timedelta,
) -> None:
    """For the same state and touch, more fatigue gives an engagement chance p̂ no higher."""
    at = AT + after
    _, rested_chance = nv_and_chance(state, fatigue, terms, at, params)
    _, tired_chance = nv_and_chance(state, fatigue + extra, terms, at, params)
    assert tired_chance <= rested_chance


@settings(deadline=None)
@given(
    params=attention_settings,
    state=attention_states(expectation=st.floats(0, 1)),
    terms=touch_terms(),
    fatigue=FATIGUE,
    extra=FATIGUE,
    after=LATER,
)
def test_more_fatigue_never_raises_net_value_when_expectation_is_not_negative(
    params: AttentionSettings,
    state: AttentionState,
    terms: TouchTerms,
    fatigue: float,
    extra: float,
    after: timedelta,
) -> None:
    """With an expectation E >= 0, more fatigue gives an NV no higher."""
    at = AT + after
    rested_nv, _ = nv_and_chance(state, fatigue, terms, at, params)
    tired_nv, _ = nv_and_chance(state, fatigue + extra, terms, at, params)
    assert tired_nv <= rested_nv + 1e-12


NEGATIVE_EXPECTATION = AttentionState(updated_at=AT, asset=1.0, expectation=-2.0, fatigue=0.0)
WORTHLESS_EMAIL = TouchTerms(channel="email", topics=(), value=0.0, remaining=0.0, recipient_value=1.0)


@settings(deadline=None)
@example(
    params=AttentionSettings(),
    state=NEGATIVE_EXPECTATION,
    terms=WORTHLESS_EMAIL,
    fatigue=0.0,
    extra=1.0,
    after=timedelta(0),
)
@given(
    params=attention_settings,
    state=attention_states(),
    terms=touch_terms(),
    fatigue=FATIGUE,
    extra=FATIGUE,
    after=LATER,
)
def test_more_fatigue_never_raises_net_value(
    params: AttentionSettings,
    state: AttentionState,
    terms: TouchTerms,
    fatigue: float,
    extra: float,
    after: timedelta,
) -> None:
    """Across the whole expectation range [-2, 1], more fatigue gives an NV no higher."""
    at = AT + after
    rested_nv, _ = nv_and_chance(state, fatigue, terms, at, params)
    tired_nv, _ = nv_and_chance(state, fatigue + extra, terms, at, params)
    assert tired_nv <= rested_nv + 1e-12


# -- 3. complaints and unsubscribes never raise the asset -----------------------------------

EVENT_OFFSET = hours(-300, 300)  # before the state's time (late), at it, or after it
ANSWER_CHANNEL = st.one_of(st.none(), st.sampled_from(CHANNELS))
ANSWER_TARGET = st.one_of(st.none(), st.integers(1, 8))


def asset_before(state: AttentionState, at: datetime, params: AttentionSettings) -> float:
    """The asset an event at ``at`` meets: the state's own for a late event, else decayed to ``at``."""
    assert state.updated_at is not None
    if at < state.updated_at:
        return state.asset
    return decayed(state, at, params).asset


@settings(deadline=None)
@given(
    params=attention_settings,
    state=attention_states(),
    offset=EVENT_OFFSET,
    channel=ANSWER_CHANNEL,
    touchpoint_id=ANSWER_TARGET,
)
def test_complaint_zeroes_the_asset_and_is_remembered(
    params: AttentionSettings,
    state: AttentionState,
    offset: timedelta,
    channel: str | None,
    touchpoint_id: int | None,
) -> None:
    """A complaint, on time or late, never raises the asset (it ends at 0) and sets complained_at."""
    at = AT + offset
    after = on_event(state, "complained", at, params, channel=channel, touchpoint_id=touchpoint_id)
    assert after.asset <= asset_before(state, at, params)
    assert after.asset == 0.0
    assert after.complained_at == (state.complained_at or at)


@st.composite
def unsubscribe_cases(draw: st.DrawFn) -> tuple[AttentionSettings, AttentionState]:
    """Constants and a state whose expectation is at least the value of an unsubscribe."""
    params = draw(attention_settings)
    floor = params.outcome_value["unsubscribed"]
    return params, draw(attention_states(expectation=st.floats(floor, 1)))


@settings(deadline=None)
@given(case=unsubscribe_cases(), offset=EVENT_OFFSET, channel=ANSWER_CHANNEL, touchpoint_id=ANSWER_TARGET)
def test_unsubscribe_never_raises_the_asset_when_it_disappoints(
    case: tuple[AttentionSettings, AttentionState],
    offset: timedelta,
    channel: str | None,
    touchpoint_id: int | None,
) -> None:
    """An unsubscribe, on time or late, never raises the asset when E is at least its value P."""
    params, state = case
    at = AT + offset
    after = on_event(state, "unsubscribed", at, params, channel=channel, touchpoint_id=touchpoint_id)
    assert after.asset <= asset_before(state, at, params)


LOW_ASSET_PENDING = AttentionState(
    updated_at=AT,
    asset=0.01,
    expectation=-2.0,
    fatigue=0.0,
    outcomes=(Outcome(1, "email", AT, AT + timedelta(hours=72)),),
)


@settings(deadline=None)
@example(params=AttentionSettings(), state=LOW_ASSET_PENDING, offset=timedelta(0), channel="email", touchpoint_id=1)
@given(
    params=attention_settings,
    state=attention_states(),
    offset=EVENT_OFFSET,
    channel=ANSWER_CHANNEL,
    touchpoint_id=ANSWER_TARGET,
)
def test_unsubscribe_never_raises_the_asset(
    params: AttentionSettings,
    state: AttentionState,
    offset: timedelta,
    channel: str | None,
    touchpoint_id: int | None,
) -> None:
    """Across the whole expectation range [-2, 1], an unsubscribe never raises the asset."""
    at = AT + offset
    after = on_event(state, "unsubscribed", at, params, channel=channel, touchpoint_id=touchpoint_id)
    assert after.asset <= asset_before(state, at, params)


# -- 4. decay moves the state toward rest ---------------------------------------------------


@settings(deadline=None)
@given(
    params=attention_settings,
    state=attention_states(pending=False),
    offsets=st.lists(hours(-100, 5000), min_size=1, max_size=6).map(sorted),
)
def test_decay_moves_monotonically_toward_rest(
    params: AttentionSettings, state: AttentionState, offsets: list[timedelta]
) -> None:
    """Without pending windows, reading later never moves the asset away from rest, nor raises F or counts."""
    rest = params.asset_start
    direct, chained = state, state
    for offset in offsets:
        at = AT + offset
        # Decayed from the start each time, and step by step: both paths only move toward rest.
        for previous, current in ((direct, decayed(state, at, params)), (chained, decayed(chained, at, params))):
            before_gap, gap = previous.asset - rest, current.asset - rest
            assert abs(gap) <= abs(before_gap)
            assert gap * before_gap >= 0
            assert current.fatigue <= previous.fatigue
            assert current.engagement.keys() == previous.engagement.keys()
            for channel, (a, b) in current.engagement.items():
                previous_a, previous_b = previous.engagement[channel]
                assert a <= previous_a and b <= previous_b
        direct, chained = decayed(state, at, params), decayed(chained, at, params)


@st.composite
def one_open_window(draw: st.DrawFn) -> tuple[AttentionSettings, AttentionState, Outcome]:
    """Constants, a state with settled windows only, and one open window left ignored."""
    params = draw(attention_settings)
    state = draw(attention_states(pending=False))
    window = Outcome(
        draw(st.sampled_from([None, 42])),
        draw(st.sampled_from(CHANNELS)),
        AT - draw(hours(0, 48)),
        AT + draw(hours(0.01, 72)),
        tuple(draw(st.lists(st.sampled_from(TOPICS), max_size=2, unique=True))),
    )
    return params, replace(state, outcomes=(*state.outcomes, window)), window


@settings(deadline=None)
@given(case=one_open_window(), past_close=hours(0, 500))
def test_decay_resolves_a_closed_window_as_ignored(
    case: tuple[AttentionSettings, AttentionState, Outcome], past_close: timedelta
) -> None:
    """A window that closed unanswered resolves as ignored: b rises by 1 at its close, then decays; E moves toward 0."""
    params, state, window = case
    at = window.closes_at + past_close
    after = decayed(state, at, params)

    assert window.channel not in state.engagement or window.channel in after.engagement
    if window.channel in state.engagement:
        a0, b0 = state.engagement[window.channel]
        at_close = half(window.closes_at - AT, params.engagement_half_life)
        a0, b0 = a0 * at_close, b0 * at_close
    else:
        a0, b0 = params.engagement_prior
    since_close = half(past_close, params.engagement_half_life)
    a, b = after.engagement[window.channel]
    assert a == pytest.approx(a0 * since_close)
    assert b == pytest.approx((b0 + 1) * since_close)

    expected_expectation = state.expectation * (1 - params.beta)
    assert after.expectation == pytest.approx(expected_expectation)
    assert abs(after.expectation) <= abs(state.expectation)
    (settled,) = [o for o in after.outcomes if o.sent_at == window.sent_at and o.closes_at == window.closes_at]
    assert settled.answer == "ignored"
    assert settled.resolved_at == window.closes_at


# -- 5. a gate always beats value -----------------------------------------------------------

DECISION_SETTINGS = Settings()


def campaign(kind: str = "marketing", value: float = 0.9) -> Campaign:
    """A two-step campaign without a send window; its first step skips on ``activated``."""
    text: dict[str, Any] = {"subject": "Hello", "text": "Hello {{ recipient.first_name }}"}
    return Campaign.model_validate(
        {
            "id": "onboarding",
            "kind": kind,
            "trigger": {"event": "signed_up"},
            "exit": {"on_events": ["purchased"]},
            "steps": [
                {
                    "id": "welcome",
                    "channel": "email",
                    **text,
                    "value": value,
                    "topics": ["tips"],
                    "max_defer": "2d",
                    "skip_if": ["activated"],
                },
                {"id": "follow-up", "after": "2d", "channel": "email", **text, "value": 0.5},
            ],
        }
    )


MARKETING = campaign()


def touch(of: Campaign = MARKETING, *, enrollment_state: str = "active", seen_events: Sequence[str] = ()) -> Touch:
    """The first step of ``of``, scheduled at ``AT``."""
    return Touch(
        campaign=of,
        step=of.steps[0],
        scheduled_at=AT,
        enrollment_state=enrollment_state,
        seen_events=seen_events,
        key="enrollment-1:welcome",
    )


def recipient(value: float, consent: dict[str, str] | None = None, suppressed: bool = False) -> RecipientView:
    """A recipient without a time zone of their own (UTC, the default zone)."""
    return RecipientView(id=RECIPIENT_ID, timezone=None, value=value, consent=consent or {}, suppressed=suppressed)


@st.composite
def valuable_states(draw: st.DrawFn) -> AttentionState:
    """A rested, trusting, highly engaged recipient: NV far above the threshold."""
    return AttentionState(
        updated_at=AT,
        asset=draw(st.floats(0.8, 1)),
        expectation=draw(st.floats(0, 0.3)),
        fatigue=0.0,
        engagement={"email": (draw(st.floats(50, 500)), draw(st.floats(0, 5)))},
        interests={"tips": draw(st.floats(0.8, 1))},
        open_request=draw(st.booleans()),
    )


gated_states = st.one_of(attention_states(complained=False), valuable_states())
RECIPIENT_VALUE = st.floats(0, 100)


@settings(deadline=None)
@given(state=valuable_states(), value=RECIPIENT_VALUE)
def test_valuable_state_is_sent_when_no_gate_applies(state: AttentionState, value: float) -> None:
    """Without a gate in the way, the valuable states below are sent on value (so the gates decide)."""
    assert not in_holdout(RECIPIENT_ID, DECISION_SETTINGS.attention.holdout)
    decision = decide(touch(), recipient(value), replace(state, open_request=False), AT, DECISION_SETTINGS)
    assert (decision.decision, decision.reason) == ("send", "value_ok")


@settings(deadline=None)
@given(state=gated_states, value=RECIPIENT_VALUE)
def test_opted_out_recipient_is_dropped_as_unsubscribed(state: AttentionState, value: float) -> None:
    """A marketing touch to a recipient who opted out of its channel is dropped, whatever the NV."""
    decision = decide(touch(), recipient(value, {"email": "opted_out"}), state, AT, DECISION_SETTINGS)
    assert (decision.decision, decision.reason) == ("drop", "unsubscribed")


@settings(deadline=None)
@given(state=gated_states, value=RECIPIENT_VALUE)
def test_suppressed_recipient_is_dropped(state: AttentionState, value: float) -> None:
    """A touch to a suppressed address is dropped as suppressed, whatever the NV."""
    decision = decide(touch(), recipient(value, suppressed=True), state, AT, DECISION_SETTINGS)
    assert (decision.decision, decision.reason) == ("drop", "suppressed")


@settings(deadline=None)
@given(state=gated_states, value=RECIPIENT_VALUE, ago=hours(0, 100))
def test_complained_recipient_is_dropped_as_suppressed(state: AttentionState, value: float, ago: timedelta) -> None:
    """A marketing touch after a complaint is dropped as suppressed, whatever the NV."""
    complained = replace(state, complained_at=AT - ago)
    decision = decide(touch(), recipient(value), complained, AT, DECISION_SETTINGS)
    assert (decision.decision, decision.reason) == ("drop", "suppressed")


@settings(deadline=None)
@given(state=gated_states, value=RECIPIENT_VALUE)
def test_exited_enrollment_is_dropped(state: AttentionState, value: float) -> None:
    """A touch of an exited enrollment is dropped as exited, whatever the NV."""
    decision = decide(touch(enrollment_state="exited"), recipient(value), state, AT, DECISION_SETTINGS)
    assert (decision.decision, decision.reason) == ("drop", "exited")


@settings(deadline=None)
@given(state=gated_states, value=RECIPIENT_VALUE)
def test_seen_skip_if_event_drops_the_touch(state: AttentionState, value: float) -> None:
    """A touch whose skip_if event was seen is dropped as skipped, whatever the NV."""
    decision = decide(touch(seen_events=["activated"]), recipient(value), state, AT, DECISION_SETTINGS)
    assert (decision.decision, decision.reason) == ("drop", "skipped")


@settings(deadline=None)
@given(state=gated_states, value=RECIPIENT_VALUE)
def test_open_request_holds_back_a_marketing_touch(state: AttentionState, value: float) -> None:
    """A marketing touch to a recipient with an open request is held back for it, whatever the NV."""
    decision = decide(touch(), recipient(value), replace(state, open_request=True), AT, DECISION_SETTINGS)
    assert decision.decision in ("defer", "drop")
    assert decision.reason == "open_request"


@st.composite
def worthless_states(draw: st.DrawFn) -> AttentionState:
    """A tired, disengaged recipient whose expectation is already high: NV below zero."""
    return AttentionState(
        updated_at=AT,
        asset=draw(st.floats(0.1, 1)),
        expectation=draw(st.floats(0.6, 1)),
        fatigue=draw(st.floats(20, 60)),
        engagement={"email": (draw(st.floats(0, 1)), draw(st.floats(50, 500)))},
        open_request=draw(st.booleans()),
    )


TRANSACTIONAL = campaign("transactional", value=0.0)
WORTHLESS_MARKETING = campaign("marketing", value=0.0)


@settings(deadline=None)
@given(
    state=worthless_states(),
    value=st.floats(0.1, 100),
    consent=st.sampled_from(["opted_in", "opted_out", "unknown"]),
)
def test_transactional_touch_is_sent_however_low_its_value(state: AttentionState, value: float, consent: str) -> None:
    """A transactional touch is sent (reason transactional) even when NV is far below the threshold."""
    who = recipient(value, {"email": consent})
    decision = decide(touch(TRANSACTIONAL), who, state, AT, DECISION_SETTINGS)
    assert (decision.decision, decision.reason) == ("send", "transactional")
    assert decision.numbers.net_value is not None
    assert decision.numbers.net_value < DECISION_SETTINGS.attention.theta

    calm = replace(state, open_request=False)
    as_marketing = decide(touch(WORTHLESS_MARKETING), recipient(value), calm, AT, DECISION_SETTINGS)
    assert as_marketing.decision != "send"
