"""Bookable slots from a therapist's weekly rules, dated exceptions and existing bookings.

Pure functions over frozen dataclasses: no database, no clock, no I/O. The services load the
rules, exceptions and busy intervals, pass ``now`` in, and render what comes back.

How a slot is decided (each rule below is tested in ``tests/unit/test_slots.py``):

Availability, per local day of the therapist, in wall-clock time
    1. The day's weekly rules, merged where they overlap or touch (09:00-12:00 and 12:00-15:00
       are one block, 09:00-15:00).
    2. Minus time off: an ``"off"`` exception without times removes the whole day's rules; one
       with a time range cuts that range out. Each remaining piece is its own block.
    3. Plus extra hours: an ``"extra"`` exception adds its range *after* time off is removed, so
       "off all day" plus "extra 14:00-16:00" means 14:00-16:00 only. An extra range that overlaps
       or touches a block is merged with it into one block.
    A rule or exception can end at 23:59:59.999999 at the latest: blocks never cross midnight.

Wall clock to UTC, in the therapist's zone
    A block is the set of instants whose local wall time lies in ``[start, end)``:
    * an ambiguous wall time (autumn fall-back, e.g. 01:30 in London on 2027-10-31) means its
      first occurrence (``fold=0``), for both ends. A block spanning the whole repeated hour
      (00:30-03:00) therefore lasts 3.5 real hours;
    * a wall time that does not exist (spring-forward gap, e.g. 01:30 in London on 2027-03-28)
      means the moment the clocks jump, the first instant after the gap. A block 01:30-04:00
      that day starts at 02:00 BST; a block 01:00-01:45 vanishes.
    So no slot ever starts at a local time that does not exist.

The grid
    Within each block (after the steps above), slots start at the block's start and then every
    ``session + buffer`` minutes of *elapsed* time, as long as ``start + session <= block end``
    (the buffer may run past the end). 09:00-12:00 with 50 + 10 gives 09:00, 10:00 and 11:00.
    A piece left by a partial "off" anchors at its own start (09:00-17:00 minus 10:15-10:45 gives
    09:00, then 10:45, 11:45, ...); a block merged from a rule and an extra anchors at the merged
    start. Elapsed time means a slot lasts its real 50 minutes even across a DST change in the
    therapist's zone: on fall-back night the repeated hour gives slots in both passes (different
    instants with different UTC offsets, never duplicates).

Booking constraints
    * taken: a slot blocks ``[start, start + session + buffer)``; it is taken when that overlaps
      any busy ``[start, end)`` (a busy end already includes that booking's buffer). Touching is
      not overlapping.
    * notice and horizon: ``now + min_notice <= start <= now + horizon`` (both ends included).
    * window: ``window_start <= start < window_end``.

``is_bookable`` applies exactly the same rules; ``compute_slots`` returns precisely the starts in
the window for which ``is_bookable`` is ``None``. All datetimes in and out are aware; results are
UTC. The 60-day cap on a request's window belongs to the HTTP layer (``check_window`` helps).
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo

from smilingsteps.platform.timezones import is_iana_zone

MAX_WINDOW = timedelta(days=60)


WallRange = tuple[time, time]
UtcInterval = tuple[datetime, datetime]


class SlotProblem(StrEnum):
    """Why a start time cannot be booked, most fundamental first."""

    PAST = "past"
    TOO_SOON = "too_soon"
    BEYOND_HORIZON = "beyond_horizon"
    OUTSIDE_AVAILABILITY = "outside_availability"
    NOT_ON_GRID = "not_on_grid"
    TAKEN = "taken"


@dataclass(frozen=True)
class WeeklyRule:
    """Open every ``weekday`` (0 = Monday ... 6 = Sunday) from ``start`` to ``end``, therapist's zone."""

    weekday: int
    start: time
    end: time

    def __post_init__(self) -> None:
        if not 0 <= self.weekday <= 6:
            raise ValueError(f"weekday must be 0 (Monday) to 6 (Sunday), got {self.weekday}")
        _check_wall_range(self.start, self.end)


@dataclass(frozen=True)
class DateException:
    """A dated change in the therapist's zone: time off (whole day or a range) or extra hours."""

    day: date
    kind: Literal["off", "extra"]
    start: time | None = None
    end: time | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("off", "extra"):
            raise ValueError(f"kind must be 'off' or 'extra', got {self.kind!r}")
        if self.start is None and self.end is None:
            if self.kind == "extra":
                raise ValueError("extra hours need a start and an end")
            return
        if self.start is None or self.end is None:
            raise ValueError("give both start and end, or neither for a whole day off")
        _check_wall_range(self.start, self.end)

    @property
    def whole_day(self) -> bool:
        return self.start is None


@dataclass(frozen=True)
class Busy:
    """An existing booking or live hold; ``end`` already includes that booking's buffer."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        _require_aware(start=self.start, end=self.end)
        if self.end <= self.start:
            raise ValueError("a busy interval must end after it starts")


@dataclass(frozen=True)
class SlotPolicy:
    """How long a session is, the gap after it, and how far ahead a client may book."""

    session_minutes: int
    buffer_minutes: int
    min_notice: timedelta
    horizon: timedelta

    def __post_init__(self) -> None:
        if self.session_minutes <= 0 or self.buffer_minutes < 0:
            raise ValueError("session_minutes must be positive and buffer_minutes not negative")
        if self.min_notice < timedelta(0) or self.horizon < self.min_notice:
            raise ValueError("need 0 <= min_notice <= horizon")

    @property
    def session(self) -> timedelta:
        return timedelta(minutes=self.session_minutes)

    @property
    def step(self) -> timedelta:
        """Distance between grid starts, and how long a booking blocks the calendar."""
        return timedelta(minutes=self.session_minutes + self.buffer_minutes)


# --- public functions ---------------------------------------------------------------------------


def parse_timezone(name: str) -> ZoneInfo:
    """The IANA zone called ``name``; ``ValueError`` for anything else (the HTTP layer's 422)."""
    if not is_iana_zone(name):
        raise ValueError(f"unknown time zone {name!r}")
    return ZoneInfo(name)


def check_window(window_start: datetime, window_end: datetime, *, max_window: timedelta = MAX_WINDOW) -> None:
    """Raise ``ValueError`` unless the window is aware, non-empty and at most ``max_window`` long."""
    _check_window_order(window_start, window_end)
    # In UTC: subtracting two datetimes that share a tzinfo ignores their offsets (wall-clock time).
    if window_end.astimezone(UTC) - window_start.astimezone(UTC) > max_window:
        raise ValueError(f"the window may span at most {max_window.days} days")


def local_label(start_utc: datetime, tz: ZoneInfo) -> str:
    """ISO 8601 local time with its offset in ``tz``, e.g. ``2027-03-28T10:00:00+01:00``."""
    _require_aware(start_utc=start_utc)
    return start_utc.astimezone(tz).isoformat()


def availability_intervals(
    tz: ZoneInfo,
    rules: Sequence[WeeklyRule],
    exceptions: Sequence[DateException],
    *,
    first_day: date,
    last_day: date,
) -> list[UtcInterval]:
    """The therapist's open blocks on local days ``first_day`` to ``last_day`` inclusive.

    Each block is an aware UTC ``(start, end)`` pair and is also its own slot grid (see the module
    docstring for merging, time off and DST). Sorted, non-overlapping and non-empty.
    """
    if last_day < first_day:
        raise ValueError("last_day must not be before first_day")
    weekly = _weekly_ranges(rules)
    by_day = _exceptions_by_day(exceptions)
    blocks: list[UtcInterval] = []
    day = first_day
    while day <= last_day:
        for wall_start, wall_end in _day_ranges(weekly[day.weekday()], by_day.get(day, ())):
            start = _wall_to_utc(day, wall_start, tz)
            end = _wall_to_utc(day, wall_end, tz)
            if start < end:  # a block inside a spring-forward gap is empty
                blocks.append((start, end))
        day += timedelta(days=1)
    return blocks


def compute_slots(
    *,
    tz: ZoneInfo,
    rules: Sequence[WeeklyRule],
    exceptions: Sequence[DateException],
    busy: Sequence[Busy],
    policy: SlotPolicy,
    window_start: datetime,
    window_end: datetime,
    now: datetime,
) -> list[datetime]:
    """Every bookable start with ``window_start <= start < window_end``: aware UTC, ascending, unique.

    A start is returned exactly when ``is_bookable`` would return ``None`` for it. ``ValueError``
    for naive datetimes or ``window_end <= window_start``.
    """
    _check_window_order(window_start, window_end)
    _require_aware(now=now)
    # In UTC before any arithmetic: aware + timedelta in a DST zone moves the wall clock, so
    # "12 hours from now" would be 11 or 13 real hours across a change.
    now = now.astimezone(UTC)
    earliest = max(window_start.astimezone(UTC), now + policy.min_notice)
    latest = now + policy.horizon  # inclusive
    window_end = window_end.astimezone(UTC)  # exclusive
    if earliest > latest or earliest >= window_end:
        return []
    last_start = min(latest, window_end)
    taken = _BusyIndex.build(busy, since=earliest, until=last_start + policy.step)
    one_day = timedelta(days=1)
    # A block only holds instants of its own local day, so the days of `earliest` and `last_start`
    # would do; one more day either side is cheap insurance for zones that change at midnight.
    # The grid drops whatever lies outside [earliest, latest].
    blocks = availability_intervals(
        tz,
        rules,
        exceptions,
        first_day=_local_day(earliest, tz) - one_day,
        last_day=_local_day(last_start, tz) + one_day,
    )
    slots: list[datetime] = []
    for block in blocks:
        for start in _grid(block, policy, earliest=earliest, latest=latest):
            if start >= window_end:
                return slots
            if not taken.overlaps(start, start + policy.step):
                slots.append(start)
    return slots


def is_bookable(
    start: datetime,
    *,
    tz: ZoneInfo,
    rules: Sequence[WeeklyRule],
    exceptions: Sequence[DateException],
    busy: Sequence[Busy],
    policy: SlotPolicy,
    now: datetime,
) -> SlotProblem | None:
    """``None`` when a session starting at ``start`` may be booked, else the first problem found.

    Checked in the order of ``SlotProblem``: past, too soon, beyond the horizon, outside the
    therapist's availability (including a session that would run past the block's end), off the
    grid, taken. Same rules as ``compute_slots``. ``ValueError`` for naive datetimes.
    """
    _require_aware(start=start, now=now)
    start, now = start.astimezone(UTC), now.astimezone(UTC)  # real durations, as in compute_slots
    if start < now:
        return SlotProblem.PAST
    if start < now + policy.min_notice:
        return SlotProblem.TOO_SOON
    if start > now + policy.horizon:
        return SlotProblem.BEYOND_HORIZON
    block = _block_holding(start, policy.session, tz, rules, exceptions)
    if block is None:
        return SlotProblem.OUTSIDE_AVAILABILITY
    if (start - block[0]) % policy.step:
        return SlotProblem.NOT_ON_GRID
    end = start + policy.step
    if _BusyIndex.build(busy, since=start, until=end).overlaps(start, end):
        return SlotProblem.TAKEN
    return None


# --- availability in wall-clock time --------------------------------------------------------------


def _weekly_ranges(rules: Iterable[WeeklyRule]) -> list[list[WallRange]]:
    """Per weekday (index 0 = Monday), the merged wall ranges of its rules."""
    per_weekday: list[list[WallRange]] = [[] for _ in range(7)]
    for rule in rules:
        per_weekday[rule.weekday].append((rule.start, rule.end))
    return [_merged(ranges) for ranges in per_weekday]


def _exceptions_by_day(exceptions: Iterable[DateException]) -> dict[date, list[DateException]]:
    by_day: defaultdict[date, list[DateException]] = defaultdict(list)
    for exception in exceptions:
        by_day[exception.day].append(exception)
    return by_day


def _day_ranges(weekly: list[WallRange], exceptions: Sequence[DateException]) -> list[WallRange]:
    """One day's blocks: the weekly ranges, minus time off, plus extra hours (in that order)."""
    if not exceptions:
        return weekly
    ranges = weekly
    for off in (e for e in exceptions if e.kind == "off"):
        ranges = [] if off.whole_day else _without(ranges, _wall_range(off))
    extras = [_wall_range(e) for e in exceptions if e.kind == "extra"]
    return _merged([*ranges, *extras]) if extras else ranges


def _wall_range(exception: DateException) -> WallRange:
    if exception.start is None or exception.end is None:
        raise ValueError("this exception has no time range")
    return (exception.start, exception.end)


def _merged(ranges: list[WallRange]) -> list[WallRange]:
    """Sorted ranges with those that overlap or touch joined into one."""
    merged: list[WallRange] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _without(ranges: list[WallRange], cut: WallRange) -> list[WallRange]:
    """``ranges`` with ``cut`` removed; a range split in two keeps both pieces."""
    pieces: list[WallRange] = []
    for start, end in ranges:
        if cut[1] <= start or end <= cut[0]:
            pieces.append((start, end))
            continue
        if start < cut[0]:
            pieces.append((start, cut[0]))
        if cut[1] < end:
            pieces.append((cut[1], end))
    return pieces


# --- wall clock to UTC ------------------------------------------------------------------------------


def _wall_to_utc(day: date, wall: time, tz: ZoneInfo) -> datetime:
    """The first instant whose local time in ``tz`` is ``wall`` on ``day``, or right after it.

    Ambiguous times resolve to their first occurrence (``fold=0``); times in a spring-forward
    gap to the instant the clocks jump.
    """
    local = datetime.combine(day, wall, tzinfo=tz)  # fold=0
    instant = local.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == local.replace(tzinfo=None):
        return instant
    # In a gap, fold=1 reads the wall time with the offset after the jump, which puts it before
    # the jump; fold=0 reads it with the offset before, which puts it after. zoneinfo does not
    # expose the transition itself, so find it between the two (rare: once a year per rule end).
    return _jump_between(local.replace(fold=1).astimezone(UTC), instant, tz)


def _jump_between(before: datetime, after: datetime, tz: ZoneInfo) -> datetime:
    """The first instant in ``(before, after]`` with ``after``'s UTC offset, to the microsecond."""
    offset_after = after.astimezone(tz).utcoffset()
    while after - before > timedelta(microseconds=1):
        middle = before + (after - before) / 2
        if middle.astimezone(tz).utcoffset() == offset_after:
            after = middle
        else:
            before = middle
    return after


def _local_day(instant: datetime, tz: ZoneInfo) -> date:
    return instant.astimezone(tz).date()


# --- the grid, busy intervals ---------------------------------------------------------------------


def _grid(block: UtcInterval, policy: SlotPolicy, *, earliest: datetime, latest: datetime) -> Iterable[datetime]:
    """The block's grid starts within ``[earliest, latest]``, jumping straight to the first one."""
    block_start, block_end = block
    last = min(block_end - policy.session, latest)
    step = policy.step
    # Ceiling division: the index of the first grid start at or after `earliest`.
    first_index = max(0, -((block_start - earliest) // step))
    start = block_start + first_index * step
    while start <= last:
        yield start
        start += step


def _block_holding(
    start: datetime,
    session: timedelta,
    tz: ZoneInfo,
    rules: Sequence[WeeklyRule],
    exceptions: Sequence[DateException],
) -> UtcInterval | None:
    """The block in which a session starting at ``start`` fits entirely, if any."""
    day = _local_day(start, tz)
    one_day = timedelta(days=1)
    # A block only holds instants of its own local day; the neighbours are checked for safety.
    for block in availability_intervals(tz, rules, exceptions, first_day=day - one_day, last_day=day + one_day):
        if block[0] <= start and start + session <= block[1]:
            return block
    return None


@dataclass(frozen=True)
class _BusyIndex:
    """Busy intervals sorted by start, with the running maximum of their ends.

    The running maximum makes one bisect enough even when busy intervals overlap each other
    (a long hold can hide a short booking that starts later and ends sooner).
    """

    starts: list[datetime]
    max_ends: list[datetime]

    @classmethod
    def build(cls, busy: Iterable[Busy], *, since: datetime, until: datetime) -> _BusyIndex:
        """Index only what can touch ``[since, until)``: one linear pass, then a sort of the rest."""
        relevant = sorted(
            (entry.start.astimezone(UTC), entry.end.astimezone(UTC))
            for entry in busy
            if entry.end > since and entry.start < until
        )
        return cls(
            starts=[start for start, _ in relevant],
            max_ends=list(itertools.accumulate((end for _, end in relevant), max)),
        )

    def overlaps(self, start: datetime, end: datetime) -> bool:
        """Whether ``[start, end)`` overlaps any busy interval: O(log n)."""
        before_end = bisect_left(self.starts, end)  # busy intervals starting before `end`
        return before_end > 0 and self.max_ends[before_end - 1] > start


# --- validation -------------------------------------------------------------------------------------


def _check_wall_range(start: time, end: time) -> None:
    if start.tzinfo is not None or end.tzinfo is not None:
        raise ValueError("wall times are in the therapist's zone: give them without tzinfo")
    if end <= start:
        raise ValueError("end must be after start (ranges cannot cross midnight)")


def _check_window_order(window_start: datetime, window_end: datetime) -> None:
    _require_aware(window_start=window_start, window_end=window_end)
    if window_end <= window_start:
        raise ValueError("window_end must be after window_start")


def _require_aware(**moments: datetime) -> None:
    for name, moment in moments.items():
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"{name} must carry a UTC offset (naive datetime given)")
