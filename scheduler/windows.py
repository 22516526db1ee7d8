"""Time arithmetic of the gates: send windows, quiet hours and frequency caps.

Everything here is a pure function of its arguments: no clock reads (every function takes
`at`), no I/O. Datetimes must be timezone-aware; results are in UTC.

Windows and quiet hours are wall-clock times in the recipient's zone. Each local day turns
them into a half-open UTC interval ``[opens, closes)``. A wall time that does not exist
(skipped by a spring-forward change) means the first instant after the gap; a wall time that
happens twice (fall-back) means its first occurrence. Because that mapping never goes
backwards, the intervals of successive days never overlap, and a search walks local days
rather than minutes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "ALWAYS",
    "CapRule",
    "QuietHours",
    "WeeklyWindow",
    "cap_clear_time",
    "cap_gate",
    "hourly_candidates",
    "next_allowed",
    "next_window_opening",
    "window_gate",
    "zone",
]

ONE_DAY = timedelta(days=1)
ONE_HOUR = timedelta(hours=1)
MIDNIGHT = time(0)


def _check_wall_time(value: time, field: str) -> None:
    if value.tzinfo is not None:
        raise ValueError(f"{field} must be a local wall time without tzinfo, got {value}")


@dataclass(frozen=True, slots=True)
class WeeklyWindow:
    """Days and hours, in local time, when touches may be sent.

    ``days`` holds weekdays (Monday=0 .. Sunday=6). ``start`` is inclusive, ``end`` exclusive;
    ``end=None`` means the end of the day. ``end <= start`` wraps past midnight and belongs to
    the day it starts on (22:00-02:00 on Friday covers Friday night into Saturday).
    """

    days: frozenset[int]
    start: time
    end: time | None

    def __post_init__(self) -> None:
        if any(not 0 <= day <= 6 for day in self.days):
            raise ValueError(f"weekdays must be 0 (Monday) to 6 (Sunday), got {sorted(self.days)}")
        _check_wall_time(self.start, "start")
        if self.end is not None:
            _check_wall_time(self.end, "end")


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local hours, every day, when no touch may be sent; ``end <= start`` wraps midnight.

    Equal ``start`` and ``end`` mean no quiet time at all.
    """

    start: time
    end: time

    def __post_init__(self) -> None:
        _check_wall_time(self.start, "start")
        _check_wall_time(self.end, "end")


ALWAYS = WeeklyWindow(frozenset(range(7)), time(0), None)


@dataclass(frozen=True, slots=True)
class CapRule:
    """At most ``limit`` touches in any rolling ``period``."""

    limit: int
    period: timedelta

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"a cap limit must be at least 1, got {self.limit}")
        if self.period <= timedelta(0):
            raise ValueError(f"a cap period must be positive, got {self.period}")


@lru_cache(maxsize=1024)
def zone(name: str | None, fallback: str = "UTC") -> ZoneInfo:
    """The zone called ``name``; ``fallback`` (then UTC) when it is missing or unknown."""
    for candidate in (name, fallback):
        if not candidate:
            continue
        try:
            return ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            continue
    return ZoneInfo("UTC")


def _as_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"a timezone-aware datetime is required, got {moment!r}")
    return moment.astimezone(UTC)


def _local_date(moment: datetime, tz: ZoneInfo) -> date:
    return moment.astimezone(tz).date()


@lru_cache(maxsize=16384)
def _wall_to_utc(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of ``wall`` on ``day``: first occurrence, or the end of a DST gap."""
    first = datetime.combine(day, wall.replace(fold=0), tzinfo=tz)
    instant = first.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == first.replace(tzinfo=None):
        return instant
    return _gap_end(day, wall, tz, instant)


def _gap_end(day: date, wall: time, tz: ZoneInfo, after_gap: datetime) -> datetime:
    # ``wall`` was skipped. Read with the later offset it lands before the change, read with
    # the earlier offset after it; the change lies between, at a whole second.
    before_gap = datetime.combine(day, wall.replace(fold=1), tzinfo=tz).astimezone(UTC)
    offset_after = after_gap.astimezone(tz).utcoffset()
    low = int(before_gap.timestamp())
    high = int(after_gap.timestamp()) + 1
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, tz).utcoffset() == offset_after:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def _window_interval(day: date, window: WeeklyWindow, tz: ZoneInfo) -> tuple[datetime, datetime]:
    opens = _wall_to_utc(day, window.start, tz)
    if window.end is None:
        closes = _wall_to_utc(day + ONE_DAY, MIDNIGHT, tz)
    elif window.end > window.start:
        closes = _wall_to_utc(day, window.end, tz)
    else:
        closes = _wall_to_utc(day + ONE_DAY, window.end, tz)
    return opens, closes


def _in_window(instant: datetime, tz: ZoneInfo, window: WeeklyWindow) -> bool:
    today = _local_date(instant, tz)
    for day in (today - ONE_DAY, today):
        if day.weekday() in window.days:
            opens, closes = _window_interval(day, window, tz)
            if opens <= instant < closes:
                return True
    return False


def _quiet_end(instant: datetime, tz: ZoneInfo, quiet: QuietHours) -> datetime | None:
    """When the quiet spell holding ``instant`` ends; None when ``instant`` is not quiet."""
    if quiet.start == quiet.end:
        return None
    today = _local_date(instant, tz)
    for day in (today - ONE_DAY, today):
        begins = _wall_to_utc(day, quiet.start, tz)
        end_day = day if quiet.end > quiet.start else day + ONE_DAY
        ends = _wall_to_utc(end_day, quiet.end, tz)
        if begins <= instant < ends:
            return ends
    return None


def window_gate(at: datetime, tz: ZoneInfo, window: WeeklyWindow | None, quiet: QuietHours | None) -> str | None:
    """Why ``at`` is closed: ``"send_window"`` (checked first), ``"quiet_hours"``, or None."""
    instant = _as_utc(at)
    if window is not None and not _in_window(instant, tz, window):
        return "send_window"
    if quiet is not None and _quiet_end(instant, tz, quiet) is not None:
        return "quiet_hours"
    return None


def next_window_opening(
    at: datetime,
    tz: ZoneInfo,
    window: WeeklyWindow | None,
    quiet: QuietHours | None,
    *,
    horizon: timedelta = timedelta(days=15),
) -> datetime | None:
    """The earliest instant at or after ``at`` inside the window and outside quiet hours.

    ``at`` itself when it is open; None when nothing opens within ``horizon``.
    """
    instant = _as_utc(at)
    if window is None:
        window = ALWAYS
    deadline = instant + horizon
    day = _local_date(instant, tz) - ONE_DAY
    last_day = _local_date(deadline, tz)
    while day <= last_day:
        if day.weekday() in window.days:
            opens, closes = _window_interval(day, window, tz)
            candidate = max(opens, instant)
            if candidate > deadline:
                return None
            while candidate < closes:
                quiet_end = None if quiet is None else _quiet_end(candidate, tz, quiet)
                if quiet_end is None:
                    return candidate if candidate <= deadline else None
                candidate = quiet_end
        day += ONE_DAY
    return None


def _past(moments: Sequence[datetime], instant: datetime) -> list[datetime]:
    return [moment for moment in map(_as_utc, moments) if moment <= instant]


def cap_gate(
    at: datetime,
    history: Sequence[datetime],
    rule: CapRule | None,
    min_gap: timedelta | None,
    gap_history: Sequence[datetime],
) -> bool:
    """True when a touch at ``at`` would break the cap or come too soon after the last one.

    The cap counts ``history`` in ``(at - period, at]``; the gap looks at the latest entry of
    ``gap_history`` not after ``at``.
    """
    instant = _as_utc(at)
    if rule is not None:
        window_start = instant - rule.period
        recent = sum(1 for sent in _past(history, instant) if sent > window_start)
        if recent >= rule.limit:
            return True
    if min_gap is not None:
        earlier = _past(gap_history, instant)
        if earlier and instant < max(earlier) + min_gap:
            return True
    return False


def cap_clear_time(
    at: datetime,
    history: Sequence[datetime],
    rule: CapRule | None,
    min_gap: timedelta | None,
    gap_history: Sequence[datetime],
) -> datetime:
    """The earliest instant at or after ``at`` when :func:`cap_gate` is False.

    Entries after ``at`` are ignored; histories need not be sorted.
    """
    instant = _as_utc(at)
    clear = instant
    if rule is not None:
        earlier = sorted(_past(history, instant), reverse=True)
        if len(earlier) >= rule.limit:
            # The window must slide past the limit-th most recent touch.
            clear = max(clear, earlier[rule.limit - 1] + rule.period)
    if min_gap is not None:
        earlier_gap = _past(gap_history, instant)
        if earlier_gap:
            clear = max(clear, max(earlier_gap) + min_gap)
    return clear


def next_allowed(
    at: datetime,
    checks: Sequence[Callable[[datetime], datetime | None]],
    *,
    limit: int = 20,
) -> datetime | None:
    """The earliest instant every check allows, found by letting each push the candidate.

    Each check returns the earliest instant at or after its argument that it allows, or None
    for never. Returns None when a check says never or the checks do not agree within
    ``limit`` rounds.
    """
    candidate = _as_utc(at)
    for _ in range(limit):
        moved = False
        for check in checks:
            allowed = check(candidate)
            if allowed is None:
                return None
            allowed = _as_utc(allowed)
            if allowed < candidate:
                raise ValueError(f"a check answered {allowed}, earlier than {candidate}")
            if allowed != candidate:
                candidate = allowed
                moved = True
        if not moved:
            return candidate
    return None


def hourly_candidates(start: datetime, until: datetime, allowed: Callable[[datetime], bool]) -> Iterator[datetime]:
    """``start``, ``start + 1h``, ... up to and including ``until``, kept when ``allowed``."""
    candidate = _as_utc(start)
    last = _as_utc(until)
    while candidate <= last:
        if allowed(candidate):
            yield candidate
        candidate += ONE_HOUR
