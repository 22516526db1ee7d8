"""Worked examples of how sends and events move the attention state, checked against hand-computed values."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.attention import (
    AttentionState,
    Outcome,
    SendRecord,
    decayed,
    from_row,
    on_event,
    on_send,
    to_row,
)
from scheduler.config import AttentionSettings

AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
PARAMS = AttentionSettings()  # h_A 60 d = 1440 h, h_B 90 d = 2160 h, η₊ 0.15, η₋ 0.30, β 0.2
KEEP = timedelta(days=7)


def fresh(asset: float = 0.5, expectation: float = 0.1) -> AttentionState:
    """A rested recipient as of ``AT``."""
    return AttentionState(updated_at=AT, asset=asset, expectation=expectation, fatigue=0.0)


def send(
    state: AttentionState,
    at: datetime,
    touchpoint_id: int | None,
    *,
    channel: str = "email",
    kind: str = "marketing",
    topics: Sequence[str] = (),
) -> AttentionState:
    """``state`` after one touch went out at ``at``."""
    return on_send(
        state,
        channel=channel,
        kind=kind,
        topics=topics,
        at=at,
        params=PARAMS,
        keep=KEEP,
        touchpoint_id=touchpoint_id,
    )


def window(state: AttentionState, touchpoint_id: int) -> Outcome:
    """The outcome window of one touchpoint."""
    (found,) = [o for o in state.outcomes if o.touchpoint_id == touchpoint_id]
    return found


def email_counts(state: AttentionState) -> tuple[float, float]:
    """The email engagement counts (a, b), checking that no other channel has any."""
    assert set(state.engagement) == {"email"}
    return state.engagement["email"]


def decay(hours: float, half_life_hours: float) -> float:
    """2^(−Δ/h), written out by hand."""
    return float(2 ** (-hours / half_life_hours))


# -- sends ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("channel", "length", "weight"), [("email", 72, 1.0), ("sms", 24, 2.5)])
def test_marketing_send_opens_window_of_channel_length(channel: str, length: int, weight: float) -> None:
    """A marketing send adds the channel's fatigue weight and opens a window as long as the channel's."""
    state = send(fresh(), AT, 7, channel=channel, topics=["tips"])

    assert state.fatigue == weight
    assert state.outcomes == (Outcome(7, channel, AT, AT + length * HOUR, ("tips",)),)
    assert state.resolve_at == AT + length * HOUR
    assert state.topic_last_sent == {"tips": AT}
    assert state.recent_sends == (SendRecord(at=AT, channel=channel, kind="marketing"),)


def test_transactional_send_adds_fatigue_but_opens_no_window() -> None:
    """A transactional send adds fatigue (on top of decayed fatigue) but opens no outcome window."""
    first = send(fresh(), AT, 7, kind="transactional")
    second = send(first, AT + 72 * HOUR, 8, kind="transactional")

    assert first.fatigue == 1.0
    assert first.outcomes == ()
    assert first.resolve_at is None
    assert second.fatigue == pytest.approx(1.0 * 0.5 + 1.0)  # one fatigue half-life later
    assert second.outcomes == ()


# -- answers --------------------------------------------------------------------------------


def test_click_naming_a_touchpoint_resolves_that_window_at_once() -> None:
    """A click naming touchpoint 7 settles 7 (not the later 8): A, E, a and the touch's topics move."""
    state = send(fresh(asset=0.4, expectation=0.1), AT, 7, topics=["tips"])
    state = send(state, AT + HOUR, 8, topics=["news"])

    clicked = on_event(state, "clicked", AT + 2 * HOUR, PARAMS, channel="email", touchpoint_id=7)

    asset = 0.5 + (0.4 - 0.5) * decay(2, 1440)  # drifted toward rest for 2 h
    assert clicked.asset == pytest.approx(asset + 0.15 * (0.6 - 0.1) * (1 - asset))
    assert clicked.expectation == pytest.approx(0.1 + 0.2 * (0.6 - 0.1))
    assert clicked.engagement == {"email": (2.0, 19.0)}
    assert clicked.interests == {"tips": pytest.approx(0.3 + 0.2 * (1 - 0.3))}
    assert window(clicked, 7).answer == "clicked"
    assert window(clicked, 7).resolved_at == AT + 2 * HOUR
    assert window(clicked, 8).pending


def test_open_waits_for_close_then_resolves_as_opened() -> None:
    """An open settles nothing; at the window's close the touch resolves as opened (a += 0.3, b += 0.7)."""
    state = send(fresh(asset=0.5, expectation=0.0), AT, 7, topics=["tips"])

    opened = on_event(state, "opened", AT + HOUR, PARAMS, channel="email", touchpoint_id=7)
    assert window(opened, 7).pending
    assert window(opened, 7).answer == "opened"
    assert (opened.asset, opened.expectation, opened.engagement) == (0.5, 0.0, {})

    assert window(decayed(opened, AT + 72 * HOUR - timedelta(seconds=1), PARAMS), 7).pending
    closed = decayed(opened, AT + 72 * HOUR, PARAMS)
    assert closed.asset == pytest.approx(0.5 + 0.15 * (0.1 - 0.0) * (1 - 0.5))
    assert closed.expectation == pytest.approx(0.2 * 0.1)
    assert email_counts(closed) == pytest.approx((1.3, 19.7))
    assert closed.interests == {}
    assert window(closed, 7).answer == "opened"
    assert window(closed, 7).resolved_at == AT + 72 * HOUR


def test_reply_without_touchpoint_goes_to_latest_window_on_its_channel() -> None:
    """A reply naming no touch settles the latest email window open at its time, not the SMS one."""
    state = send(fresh(), AT, 1)
    state = send(state, AT + HOUR, 2, channel="sms")
    state = send(state, AT + 2 * HOUR, 3)

    replied = on_event(state, "replied", AT + 3 * HOUR, PARAMS, channel="email")

    assert window(replied, 3).answer == "replied"
    assert not window(replied, 3).pending
    assert window(replied, 1).pending and window(replied, 2).pending
    assert replied.engagement == {"email": (2.0, 19.0)}
    assert replied.last_inbound_at == AT + 3 * HOUR


def test_click_without_touchpoint_skips_later_windows_of_other_channels() -> None:
    """A click on email naming no touch settles the email window even when an SMS went out later."""
    state = send(fresh(), AT, 1)
    state = send(state, AT + HOUR, 2, channel="sms")

    clicked = on_event(state, "clicked", AT + 2 * HOUR, PARAMS, channel="email")

    assert window(clicked, 1).answer == "clicked"
    assert window(clicked, 2).pending


# -- late events ----------------------------------------------------------------------------


def test_late_click_moves_asset_by_the_update_decayed_since() -> None:
    """A click that happened 9 h before the state's time moves A by the same update times 2^(−9h/h_A)."""
    state = AttentionState(
        updated_at=AT + 10 * HOUR,
        asset=0.4,
        expectation=0.1,
        fatigue=0.0,
        outcomes=(Outcome(1, "email", AT, AT + 72 * HOUR, ("tips",)),),
    )
    update = 0.15 * (0.6 - 0.1) * (1 - 0.4)  # 0.045

    on_time = on_event(state, "clicked", AT + 10 * HOUR, PARAMS, channel="email", touchpoint_id=1)
    late = on_event(state, "clicked", AT + HOUR, PARAMS, channel="email", touchpoint_id=1)

    assert on_time.asset == pytest.approx(0.4 + update)
    assert late.asset == pytest.approx(0.4 + update * decay(9, 1440))
    assert late.asset < on_time.asset
    assert late.updated_at == AT + 10 * HOUR
    assert email_counts(late) == pytest.approx((1 + decay(9, 2160), 19.0))
    assert window(late, 1).answer == "clicked"
    assert window(late, 1).resolved_at == AT + HOUR


def test_late_click_corrects_a_touch_settled_as_ignored() -> None:
    """A late click on a touch settled as ignored raises A above the ignored result and takes b back down."""
    state = send(fresh(asset=0.5, expectation=0.1), AT, 1, topics=["tips"])
    settled = decayed(state, AT + 80 * HOUR, PARAMS)

    # Settled as ignored at its close (72 h, asset still at rest), then 8 h of decay.
    ignored_asset = 0.5 + 0.30 * (0.0 - 0.1) * 0.5  # 0.485
    asset = 0.5 + (ignored_asset - 0.5) * decay(8, 1440)
    a, b = 1.0 * decay(8, 2160), 20.0 * decay(8, 2160)
    assert settled.asset == pytest.approx(asset)
    assert settled.expectation == pytest.approx(0.08)
    assert email_counts(settled) == pytest.approx((a, b))
    assert settled.interests == {"tips": pytest.approx(0.3 * (1 - 0.2 / 3))}
    assert window(settled, 1).answer == "ignored"

    corrected = on_event(settled, "clicked", AT + 5 * HOUR, PARAMS, channel="email", touchpoint_id=1)

    # The difference between a click's and an ignore's update, decayed over the 75 h since the click.
    as_click = 0.15 * (0.6 - 0.08) * (1 - asset)
    as_ignore = 0.30 * (0.0 - 0.08) * asset
    assert corrected.asset == pytest.approx(asset + (as_click - as_ignore) * decay(75, 1440))
    assert corrected.asset > settled.asset
    assert corrected.expectation == pytest.approx(0.08 + 0.2 * (0.6 - 0.0))
    assert email_counts(corrected) == pytest.approx((a + decay(75, 2160), b - decay(75, 2160)))
    assert corrected.engagement["email"][1] < settled.engagement["email"][1]
    assert corrected.interests == {"tips": pytest.approx(0.28 + 0.2 * (1 - 0.28))}
    assert window(corrected, 1).answer == "clicked"
    assert window(corrected, 1).resolved_at == AT + 72 * HOUR


# -- requests and inbound messages ----------------------------------------------------------


def test_support_opened_sets_the_open_request() -> None:
    """support_opened marks a request open and counts as an inbound message."""
    opened = on_event(fresh(), "support_opened", AT + HOUR, PARAMS)
    assert opened.open_request is True
    assert opened.last_inbound_at == AT + HOUR
    assert opened.asset == 0.5


def test_support_resolved_clears_the_request_and_records_when() -> None:
    """support_resolved clears the open request and records request_resolved_at."""
    opened = on_event(fresh(), "support_opened", AT + HOUR, PARAMS)
    resolved = on_event(opened, "support_resolved", AT + 5 * HOUR, PARAMS)
    assert resolved.open_request is False
    assert resolved.request_resolved_at == AT + 5 * HOUR
    assert resolved.last_inbound_at == AT + HOUR


def test_inbound_message_sets_last_inbound_at_and_never_moves_it_back() -> None:
    """inbound_message records its time; an older one arriving late leaves the later time in place."""
    messaged = on_event(fresh(), "inbound_message", AT + 2 * HOUR, PARAMS)
    assert messaged.last_inbound_at == AT + 2 * HOUR
    assert messaged.open_request is False

    older = on_event(messaged, "inbound_message", AT + HOUR, PARAMS)
    assert older.last_inbound_at == AT + 2 * HOUR


# -- storage --------------------------------------------------------------------------------


def test_row_round_trip_keeps_every_field() -> None:
    """to_row then from_row gives back an equal state, windows included, also through JSON columns."""
    state = AttentionState(
        updated_at=AT + 3 * HOUR,
        asset=0.42,
        expectation=0.15,
        fatigue=1.75,
        engagement={"email": (2.0, 19.7), "sms": (1.0, 20.0)},
        interests={"tips": 0.44, "news": 0.28},
        topic_last_sent={"tips": AT, "news": AT + HOUR},
        recent_sends=(SendRecord(AT, "email", "marketing"), SendRecord(AT + HOUR, "sms", "transactional")),
        open_request=True,
        last_inbound_at=AT + 2 * HOUR,
        request_resolved_at=AT - 24 * HOUR,
        complained_at=None,
        outcomes=(
            Outcome(1, "email", AT, AT + 72 * HOUR, ("tips",), "clicked", AT + 2 * HOUR),
            Outcome(2, "sms", AT + HOUR, AT + 25 * HOUR, (), "opened"),
            Outcome(None, "email", AT + 2 * HOUR, AT + 74 * HOUR, ("tips", "news")),
        ),
    )

    row = to_row(state)
    assert row["resolve_at"] == AT + 25 * HOUR
    assert from_row(row) == state

    json_columns = ("engagement", "interests", "topic_last_sent", "recent_sends", "outcomes")
    stored = {key: json.loads(json.dumps(value)) if key in json_columns else value for key, value in row.items()}
    assert from_row(stored) == state
