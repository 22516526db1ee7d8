"""Tests for the time arithmetic of the gates (send windows, quiet hours, caps)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.windows import (
    ALWAYS,
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

NEW_YORK = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")
SYDNEY = ZoneInfo("Australia/Sydney")
KOLKATA = ZoneInfo("Asia/Kolkata")

EVERY_DAY = frozenset(range(7))
WEEKDAYS = frozenset(range(5))
OFFICE_HOURS = WeeklyWindow(EVERY_DAY, time(9), time(18))
WEEKDAY_OFFICE_HOURS = WeeklyWindow(WEEKDAYS, time(9), time(18))
NIGHT = QuietHours(time(21), time(8))
FRIDAY = 4


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def local(tz: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=tz)


# --- send windows across daylight-saving changes -------------------------------------------


@pytest.mark.parametrize(
    ("tz", "day", "opens_utc"),
    [
        (NEW_YORK, date(2026, 3, 7), utc(2026, 3, 7, 14)),
        (NEW_YORK, date(2026, 3, 8), utc(2026, 3, 8, 13)),
        (NEW_YORK, date(2026, 3, 9), utc(2026, 3, 9, 13)),
        (NEW_YORK, date(2026, 10, 31), utc(2026, 10, 31, 13)),
        (NEW_YORK, date(2026, 11, 1), utc(2026, 11, 1, 14)),
        (NEW_YORK, date(2026, 11, 2), utc(2026, 11, 2, 14)),
        (PARIS, date(2026, 3, 28), utc(2026, 3, 28, 8)),
        (PARIS, date(2026, 3, 29), utc(2026, 3, 29, 7)),
        (PARIS, date(2026, 3, 30), utc(2026, 3, 30, 7)),
        (SYDNEY, date(2026, 4, 4), utc(2026, 4, 3, 22)),
        (SYDNEY, date(2026, 4, 5), utc(2026, 4, 4, 23)),
        (SYDNEY, date(2026, 10, 3), utc(2026, 10, 2, 23)),
        (SYDNEY, date(2026, 10, 4), utc(2026, 10, 3, 22)),
        (KOLKATA, date(2026, 3, 8), datetime(2026, 3, 8, 3, 30, tzinfo=UTC)),
    ],
)
def test_window_opens_at_local_nine_on_each_side_of_a_change(tz: ZoneInfo, day: date, opens_utc: datetime) -> None:
    """A 09:00-18:00 window opens at 09:00 and closes at 18:00 local time, whatever the offset."""
    midnight = datetime.combine(day, time(0), tzinfo=tz)
    assert next_window_opening(midnight, tz, OFFICE_HOURS, None) == opens_utc
    closes_utc = datetime.combine(day, time(18), tzinfo=tz).astimezone(UTC)
    assert window_gate(closes_utc - timedelta(microseconds=1), tz, OFFICE_HOURS, None) is None
    assert window_gate(closes_utc, tz, OFFICE_HOURS, None) == "send_window"


@pytest.mark.parametrize(
    ("tz", "asked", "opens_utc"),
    [
        (NEW_YORK, utc(2026, 3, 8, 5), utc(2026, 3, 8, 7)),
        (PARIS, utc(2026, 3, 28, 23), utc(2026, 3, 29, 1)),
    ],
)
def test_window_starting_in_the_skipped_hour_opens_when_the_clock_jumps(
    tz: ZoneInfo, asked: datetime, opens_utc: datetime
) -> None:
    """A window starting at 02:30 on spring-forward day opens at 03:00, the first instant after."""
    window = WeeklyWindow(EVERY_DAY, time(2, 30), time(5))
    assert next_window_opening(asked, tz, window, None) == opens_utc
    assert opens_utc.astimezone(tz).time() == time(3)
    assert window_gate(opens_utc, tz, window, None) is None
    assert window_gate(opens_utc - timedelta(microseconds=1), tz, window, None) == "send_window"


def test_window_ending_in_the_skipped_hour_closes_when_the_clock_jumps() -> None:
    """A window ending at 02:30 on spring-forward day closes at 03:00 local, 07:00 UTC."""
    window = WeeklyWindow(EVERY_DAY, time(1), time(2, 30))
    assert window_gate(utc(2026, 3, 8, 6, 59), NEW_YORK, window, None) is None
    assert window_gate(utc(2026, 3, 8, 7), NEW_YORK, window, None) == "send_window"


def test_repeated_hour_uses_its_first_occurrence() -> None:
    """On fall-back day a window at 01:30-01:45 is open only during the first 01:30-01:45."""
    window = WeeklyWindow(EVERY_DAY, time(1, 30), time(1, 45))
    first_occurrence = utc(2026, 11, 1, 5, 30)
    assert first_occurrence.astimezone(NEW_YORK).utcoffset() == timedelta(hours=-4)
    assert next_window_opening(utc(2026, 11, 1, 4), NEW_YORK, window, None) == first_occurrence
    second_occurrence = utc(2026, 11, 1, 6, 35)
    assert second_occurrence.astimezone(NEW_YORK).time() == time(1, 35)
    assert window_gate(second_occurrence, NEW_YORK, window, None) == "send_window"
    assert next_window_opening(utc(2026, 11, 1, 6), NEW_YORK, window, None) == utc(2026, 11, 2, 6, 30)


def test_repeated_hour_counts_once_in_a_window_spanning_it() -> None:
    """A 00:00-03:00 window on fall-back day lasts four real hours, through both 01:00s."""
    window = WeeklyWindow(EVERY_DAY, time(0), time(3))
    assert window_gate(utc(2026, 11, 1, 4), NEW_YORK, window, None) is None
    assert window_gate(utc(2026, 11, 1, 6, 30), NEW_YORK, window, None) is None
    assert window_gate(utc(2026, 11, 1, 7, 59), NEW_YORK, window, None) is None
    assert window_gate(utc(2026, 11, 1, 8), NEW_YORK, window, None) == "send_window"


# --- quiet hours and window shapes ----------------------------------------------------------


@pytest.mark.parametrize(
    ("wall", "expected"),
    [
        (time(20, 59), None),
        (time(21), "quiet_hours"),
        (time(23, 30), "quiet_hours"),
        (time(0), "quiet_hours"),
        (time(7, 59), "quiet_hours"),
        (time(8), None),
        (time(12), None),
    ],
)
def test_quiet_hours_wrap_past_midnight(wall: time, expected: str | None) -> None:
    """Quiet hours 21:00-08:00 cover the night, start inclusive and end exclusive."""
    at = datetime.combine(date(2026, 6, 10), wall, tzinfo=NEW_YORK)
    assert window_gate(at, NEW_YORK, None, NIGHT) == expected


def test_quiet_hours_defer_to_the_next_morning() -> None:
    """A touch asked for at 22:00 local opens at 08:00 the next morning."""
    asked = local(NEW_YORK, 2026, 6, 10, 22)
    assert next_window_opening(asked, NEW_YORK, None, NIGHT) == utc(2026, 6, 11, 12)


def test_window_is_checked_before_quiet_hours() -> None:
    """An instant both outside the window and in quiet hours reports the window."""
    at = local(NEW_YORK, 2026, 6, 10, 22)
    assert window_gate(at, NEW_YORK, OFFICE_HOURS, NIGHT) == "send_window"


def test_equal_quiet_bounds_mean_no_quiet_time() -> None:
    """Quiet hours whose start equals their end never close anything."""
    quiet = QuietHours(time(8), time(8))
    assert window_gate(local(PARIS, 2026, 6, 10, 8), PARIS, None, quiet) is None


@pytest.mark.parametrize(
    ("at", "expected"),
    [
        (local(PARIS, 2026, 6, 11, 23), "send_window"),
        (local(PARIS, 2026, 6, 12, 21, 59), "send_window"),
        (local(PARIS, 2026, 6, 12, 22), None),
        (local(PARIS, 2026, 6, 12, 23, 30), None),
        (local(PARIS, 2026, 6, 13, 1, 59), None),
        (local(PARIS, 2026, 6, 13, 2), "send_window"),
        (local(PARIS, 2026, 6, 13, 23), "send_window"),
    ],
)
def test_window_wrapping_midnight_belongs_to_its_start_day(at: datetime, expected: str | None) -> None:
    """A Friday 22:00-02:00 window covers Friday night into early Saturday only."""
    window = WeeklyWindow(frozenset({FRIDAY}), time(22), time(2))
    assert window_gate(at, PARIS, window, None) == expected


def test_wrapping_window_reopens_a_week_later() -> None:
    """After a Friday night window closes, the next opening is the following Friday 22:00."""
    window = WeeklyWindow(frozenset({FRIDAY}), time(22), time(2))
    opening = next_window_opening(local(PARIS, 2026, 6, 13, 3), PARIS, window, None)
    assert opening == local(PARIS, 2026, 6, 19, 22).astimezone(UTC)


def test_window_inside_quiet_hours_never_opens() -> None:
    """A window lying wholly inside quiet hours has no opening within the horizon."""
    window = WeeklyWindow(EVERY_DAY, time(22), time(2))
    assert next_window_opening(utc(2026, 6, 10), PARIS, window, NIGHT) is None


def test_weekday_window_asked_on_friday_evening_opens_monday_morning() -> None:
    """Mon-Fri 09:00-18:00 asked on Friday 19:00 opens Monday 09:00 (here also across DST)."""
    asked = local(NEW_YORK, 2026, 3, 6, 19)
    assert next_window_opening(asked, NEW_YORK, WEEKDAY_OFFICE_HOURS, NIGHT) == utc(2026, 3, 9, 13)


def test_instant_at_window_end_is_closed() -> None:
    """The end of a window is exclusive."""
    at = local(NEW_YORK, 2026, 6, 10, 18)
    assert window_gate(at, NEW_YORK, OFFICE_HOURS, None) == "send_window"
    assert next_window_opening(at, NEW_YORK, OFFICE_HOURS, None) == utc(2026, 6, 11, 13)


def test_instant_at_window_start_is_open() -> None:
    """The start of a window is inclusive, and an open instant is its own opening."""
    at = local(NEW_YORK, 2026, 6, 10, 9)
    assert window_gate(at, NEW_YORK, OFFICE_HOURS, None) is None
    assert next_window_opening(at, NEW_YORK, OFFICE_HOURS, None) == at


def test_open_end_window_runs_to_midnight() -> None:
    """A window without an end stays open to the last instant of its day."""
    window = WeeklyWindow(frozenset({FRIDAY}), time(20), None)
    last_instant = local(PARIS, 2026, 6, 13) - timedelta(microseconds=1)
    assert window_gate(last_instant, PARIS, window, None) is None
    assert window_gate(local(PARIS, 2026, 6, 13), PARIS, window, None) == "send_window"


def test_non_utc_input_gives_the_same_utc_answer() -> None:
    """An `at` in any zone is read as the same instant, and the answer is in UTC."""
    asked_utc = utc(2026, 6, 10, 2)
    asked_tokyo = asked_utc.astimezone(ZoneInfo("Asia/Tokyo"))
    opening = next_window_opening(asked_tokyo, NEW_YORK, OFFICE_HOURS, NIGHT)
    assert opening == next_window_opening(asked_utc, NEW_YORK, OFFICE_HOURS, NIGHT)
    assert opening is not None and opening.tzinfo is UTC
    assert opening == utc(2026, 6, 10, 13)


def test_window_without_days_never_opens() -> None:
    """A window with no days has no opening."""
    window = WeeklyWindow(frozenset(), time(9), time(18))
    assert next_window_opening(utc(2026, 6, 10), PARIS, window, None) is None


def test_opening_beyond_the_horizon_is_none() -> None:
    """An opening later than `at + horizon` is reported as none."""
    mondays = WeeklyWindow(frozenset({0}), time(9), time(18))
    tuesday = local(PARIS, 2026, 6, 9, 12)
    assert next_window_opening(tuesday, PARIS, mondays, None, horizon=timedelta(days=2)) is None
    assert next_window_opening(tuesday, PARIS, mondays, None) == local(PARIS, 2026, 6, 15, 9).astimezone(UTC)


def test_naive_datetime_is_rejected() -> None:
    """A naive `at` raises ValueError instead of guessing a zone."""
    with pytest.raises(ValueError, match="timezone-aware"):
        window_gate(datetime(2026, 6, 10, 12), PARIS, ALWAYS, None)


def test_window_rejects_weekday_out_of_range() -> None:
    """Weekdays outside 0-6 are refused."""
    with pytest.raises(ValueError, match="weekdays"):
        WeeklyWindow(frozenset({7}), time(9), time(18))


# --- zones -----------------------------------------------------------------------------------


def test_zone_resolves_a_known_name() -> None:
    """A valid IANA name gives that zone, cached between calls."""
    assert zone("Europe/Paris") == PARIS
    assert zone("Europe/Paris") is zone("Europe/Paris")


@pytest.mark.parametrize("name", [None, "", "Mars/Olympus", "America", "../etc/passwd"])
def test_zone_falls_back_on_a_bad_name(name: str | None) -> None:
    """A missing or invalid name gives the fallback zone."""
    assert zone(name) == ZoneInfo("UTC")
    assert zone(name, fallback="Asia/Kolkata") == KOLKATA


def test_zone_with_a_bad_fallback_is_utc() -> None:
    """When the fallback is invalid too, the zone is UTC."""
    assert zone("Nowhere/Town", fallback="Nowhere/Else") == ZoneInfo("UTC")


# --- caps -------------------------------------------------------------------------------------

WEEKLY_THREE = CapRule(limit=3, period=timedelta(days=7))
DAILY_ONE = CapRule(limit=1, period=timedelta(days=1))
GAP = timedelta(hours=20)


def test_weekly_cap_blocks_a_fourth_touch_until_the_first_ages_out() -> None:
    """Three touches in 7 days block a fourth until 7 days after the oldest."""
    history = [utc(2026, 3, 2, 10), utc(2026, 3, 3, 10), utc(2026, 3, 4, 10)]
    at = utc(2026, 3, 5, 10)
    assert cap_gate(at, history, WEEKLY_THREE, GAP, history)
    clear = cap_clear_time(at, history, WEEKLY_THREE, GAP, history)
    assert clear == utc(2026, 3, 9, 10)
    assert not cap_gate(clear, history, WEEKLY_THREE, GAP, history)
    assert cap_gate(clear - timedelta(microseconds=1), history, WEEKLY_THREE, GAP, history)


def test_minimum_gap_spaces_touches_under_the_cap() -> None:
    """Under the cap, a touch still waits 20 h after the latest one."""
    history = [utc(2026, 3, 3, 10), utc(2026, 3, 2, 10)]
    at = utc(2026, 3, 3, 20)
    assert cap_gate(at, history, WEEKLY_THREE, GAP, history)
    assert cap_clear_time(at, history, WEEKLY_THREE, GAP, history) == utc(2026, 3, 4, 6)
    assert not cap_gate(utc(2026, 3, 4, 6), history, WEEKLY_THREE, GAP, history)


def test_one_per_day_clears_exactly_a_day_after_the_last_send() -> None:
    """A one-per-day cap clears exactly 24 h after the latest send, unsorted history or not."""
    history = [utc(2026, 3, 3, 9, 15), utc(2026, 3, 2, 10)]
    at = utc(2026, 3, 3, 12)
    assert cap_clear_time(at, history, DAILY_ONE, None, []) == utc(2026, 3, 4, 9, 15)
    assert cap_gate(utc(2026, 3, 4, 9, 14), history, DAILY_ONE, None, [])
    assert not cap_gate(utc(2026, 3, 4, 9, 15), history, DAILY_ONE, None, [])


def test_caps_ignore_entries_after_at() -> None:
    """Touches later than `at` count neither for the cap nor for the gap."""
    later = [utc(2026, 3, 5, 10)]
    at = utc(2026, 3, 5, 9)
    assert not cap_gate(at, later, DAILY_ONE, GAP, later)
    assert cap_clear_time(at, later, DAILY_ONE, GAP, later) == at


def test_caps_compare_instants_across_zones() -> None:
    """History in local zones is compared as instants, not wall times."""
    sent = local(NEW_YORK, 2026, 3, 7, 22)
    assert cap_clear_time(utc(2026, 3, 8, 4), [sent], DAILY_ONE, None, []) == utc(2026, 3, 9, 3)


def test_no_rule_and_no_gap_never_blocks() -> None:
    """Without a rule or gap, any instant is clear."""
    history = [utc(2026, 3, 5, 8, 59)]
    at = utc(2026, 3, 5, 9)
    assert not cap_gate(at, history, None, None, history)
    assert cap_clear_time(at, history, None, None, history) == at


def test_cap_rule_rejects_nonsense() -> None:
    """A cap needs a positive limit and period."""
    with pytest.raises(ValueError, match="limit"):
        CapRule(limit=0, period=timedelta(days=1))
    with pytest.raises(ValueError, match="period"):
        CapRule(limit=1, period=timedelta(0))


# --- combining checks -------------------------------------------------------------------------


def window_check(tz: ZoneInfo, window: WeeklyWindow) -> Callable[[datetime], datetime | None]:
    def check(at: datetime) -> datetime | None:
        return next_window_opening(at, tz, window, NIGHT)

    return check


def cap_check(
    history: list[datetime], rule: CapRule | None, gap: timedelta | None
) -> Callable[[datetime], datetime | None]:
    def check(at: datetime) -> datetime | None:
        return cap_clear_time(at, history, rule, gap, history)

    return check


def test_gap_clearing_at_night_waits_for_the_morning_window() -> None:
    """A gap clearing at 06:00 local is pushed by the window to 09:00 the same morning."""
    history = [local(NEW_YORK, 2026, 3, 10, 10)]
    checks = [cap_check(history, None, GAP), window_check(NEW_YORK, WEEKDAY_OFFICE_HOURS)]
    result = next_allowed(local(NEW_YORK, 2026, 3, 10, 15), checks)
    assert result == local(NEW_YORK, 2026, 3, 11, 9).astimezone(UTC)


@pytest.mark.parametrize(
    ("oldest", "expected"),
    [
        (local(NEW_YORK, 2026, 3, 4, 10, 30), local(NEW_YORK, 2026, 3, 11, 11, 30)),
        (local(NEW_YORK, 2026, 3, 4, 17, 30), local(NEW_YORK, 2026, 3, 12, 9)),
    ],
)
def test_window_opening_that_hits_the_cap_is_pushed_again(oldest: datetime, expected: datetime) -> None:
    """Gap, window, then weekly cap push in turn until all agree (same day, or next morning)."""
    history = [oldest, local(NEW_YORK, 2026, 3, 9, 10), local(NEW_YORK, 2026, 3, 10, 10)]
    checks = [
        cap_check(history, None, GAP),
        window_check(NEW_YORK, WEEKDAY_OFFICE_HOURS),
        cap_check(history, WEEKLY_THREE, None),
    ]
    result = next_allowed(local(NEW_YORK, 2026, 3, 10, 15), checks)
    assert result == expected.astimezone(UTC)
    assert window_gate(result, NEW_YORK, WEEKDAY_OFFICE_HOURS, NIGHT) is None
    assert not cap_gate(result, history, WEEKLY_THREE, GAP, history)


def test_next_allowed_is_none_when_a_check_says_never() -> None:
    """One check answering never makes the whole answer never."""
    empty = WeeklyWindow(frozenset(), time(9), time(18))
    checks = [cap_check([], DAILY_ONE, GAP), window_check(PARIS, empty)]
    assert next_allowed(utc(2026, 3, 10), checks) is None


def test_next_allowed_is_none_without_a_fixpoint() -> None:
    """Checks that never agree within the round limit give none."""

    def always_later(at: datetime) -> datetime:
        return at + timedelta(hours=1)

    assert next_allowed(utc(2026, 3, 10), [always_later], limit=5) is None


def test_next_allowed_without_checks_is_at() -> None:
    """With nothing to check, `at` itself is allowed (in UTC)."""
    at = local(PARIS, 2026, 3, 10, 12)
    result = next_allowed(at, [])
    assert result == at and result is not None and result.tzinfo is UTC


def test_next_allowed_rejects_a_check_going_backwards() -> None:
    """A check answering earlier than its argument breaks the contract and raises."""

    def earlier(at: datetime) -> datetime:
        return at - timedelta(seconds=1)

    with pytest.raises(ValueError, match="earlier"):
        next_allowed(utc(2026, 3, 10), [earlier])


# --- hourly candidates ------------------------------------------------------------------------


def test_hourly_candidates_keep_only_allowed_hours() -> None:
    """Hourly steps from start to until are kept when inside the window."""
    start = utc(2026, 3, 9, 11, 30)

    def open_now(at: datetime) -> bool:
        return window_gate(at, NEW_YORK, OFFICE_HOURS, None) is None

    candidates = list(hourly_candidates(start, utc(2026, 3, 9, 23, 30), open_now))
    assert candidates == [start + timedelta(hours=hour) for hour in range(2, 11)]


def test_hourly_candidates_include_until() -> None:
    """The last candidate may equal `until`."""
    at = utc(2026, 3, 9, 12)
    assert list(hourly_candidates(at, at, lambda _: True)) == [at]


def test_hourly_candidates_step_in_real_hours_across_spring_forward() -> None:
    """Steps are real hours, so local 02:00 is skipped on spring-forward night."""
    start = local(NEW_YORK, 2026, 3, 8)
    candidates = list(hourly_candidates(start, utc(2026, 3, 8, 9), lambda _: True))
    assert [c.astimezone(NEW_YORK).hour for c in candidates] == [0, 1, 3, 4, 5]
    assert all(c.tzinfo is UTC for c in candidates)


# --- properties -------------------------------------------------------------------------------

PROPERTY_ZONES = [
    "America/New_York",
    "Europe/Paris",
    "Australia/Sydney",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "America/Santiago",
    "UTC",
]

wall_times = st.builds(time, st.integers(0, 23), st.sampled_from([0, 1, 15, 30, 45, 59]))
windows = st.builds(
    WeeklyWindow,
    st.frozensets(st.integers(0, 6)),
    wall_times,
    st.one_of(st.none(), wall_times),
)
quiet_hours = st.one_of(st.none(), st.builds(QuietHours, wall_times, wall_times))
instants = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC))


def sample_minutes(count: int) -> list[int]:
    """Every minute near both ends of a span, and about 200 spread between."""
    edge = range(min(count, 180))
    tail = range(max(0, count - 180), count)
    spread = range(0, count, max(1, count // 200))
    return sorted({*edge, *tail, *spread})


@settings(deadline=None, max_examples=300)
@given(
    at=instants,
    zone_name=st.sampled_from(PROPERTY_ZONES),
    window=windows,
    quiet=quiet_hours,
)
def test_next_opening_is_open_and_earliest(
    at: datetime, zone_name: str, window: WeeklyWindow, quiet: QuietHours | None
) -> None:
    """The opening is open, not before `at`, and no sampled earlier minute is open."""
    tz = ZoneInfo(zone_name)
    horizon = timedelta(days=15)
    opening = next_window_opening(at, tz, window, quiet, horizon=horizon)
    if opening is None:
        span = horizon
    else:
        assert window_gate(opening, tz, window, quiet) is None
        assert at <= opening <= at + horizon
        if opening > at:
            assert window_gate(opening - timedelta(microseconds=1), tz, window, quiet) is not None
        span = opening - at
    count = -(-span // timedelta(minutes=1))
    for minute in sample_minutes(count):
        earlier = at + timedelta(minutes=minute)
        if opening is None or earlier < opening:
            assert window_gate(earlier, tz, window, quiet) is not None


def wall_clock_gate(at: datetime, tz: ZoneInfo, window: WeeklyWindow, quiet: QuietHours | None) -> str | None:
    """An independent reading of the rules on the local clock, valid away from DST changes."""
    wall_at = at.astimezone(tz)
    wall, weekday = wall_at.time().replace(tzinfo=None), wall_at.weekday()
    yesterday = (weekday - 1) % 7
    if window.end is None:
        inside = weekday in window.days and wall >= window.start
    elif window.end > window.start:
        inside = weekday in window.days and window.start <= wall < window.end
    else:
        inside = (weekday in window.days and wall >= window.start) or (yesterday in window.days and wall < window.end)
    if not inside:
        return "send_window"
    if quiet is None or quiet.start == quiet.end:
        return None
    wraps = quiet.end <= quiet.start
    quiet_now = (wall >= quiet.start or wall < quiet.end) if wraps else quiet.start <= wall < quiet.end
    return "quiet_hours" if quiet_now else None


@settings(deadline=None, max_examples=300)
@given(
    at=instants,
    zone_name=st.sampled_from(PROPERTY_ZONES),
    window=windows,
    quiet=quiet_hours,
)
def test_gate_matches_the_wall_clock_away_from_changes(
    at: datetime, zone_name: str, window: WeeklyWindow, quiet: QuietHours | None
) -> None:
    """Away from offset changes, the gate agrees with a plain reading of the local clock."""
    tz = ZoneInfo(zone_name)
    offsets = {(at + timedelta(days=shift)).astimezone(tz).utcoffset() for shift in (-2, 0, 2)}
    if len(offsets) == 1:
        assert window_gate(at, tz, window, quiet) == wall_clock_gate(at, tz, window, quiet)


@settings(deadline=None)
@given(
    at=instants,
    ages_minutes=st.lists(st.integers(0, 60 * 24 * 20), max_size=8),
    limit=st.integers(1, 4),
    period_hours=st.integers(1, 24 * 14),
    gap_hours=st.one_of(st.none(), st.integers(0, 72)),
)
def test_cap_clear_time_is_the_earliest_clear_instant(
    at: datetime, ages_minutes: list[int], limit: int, period_hours: int, gap_hours: int | None
) -> None:
    """The clear time passes the cap gate, and the instant just before it does not."""
    history = [at - timedelta(minutes=age) for age in ages_minutes]
    rule = CapRule(limit, timedelta(hours=period_hours))
    gap = None if gap_hours is None else timedelta(hours=gap_hours)
    clear = cap_clear_time(at, history, rule, gap, history)
    assert clear >= at
    assert not cap_gate(clear, history, rule, gap, history)
    if clear > at:
        assert cap_gate(clear - timedelta(microseconds=1), history, rule, gap, history)
