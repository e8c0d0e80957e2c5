"""Slot computation: the grid, exceptions, busy intervals, notice and horizon, DST on both sides."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from functools import partial
from zoneinfo import ZoneInfo

import pytest

from smilingsteps.therapists.slots import (
    MAX_WINDOW,
    Busy,
    DateException,
    SlotPolicy,
    SlotProblem,
    WeeklyRule,
    availability_intervals,
    check_window,
    compute_slots,
    is_bookable,
    local_label,
    parse_timezone,
)

NAIROBI = ZoneInfo("Africa/Nairobi")  # UTC+3 all year
LONDON = ZoneInfo("Europe/London")
NEW_YORK = ZoneInfo("America/New_York")

POLICY = SlotPolicy(session_minutes=50, buffer_minutes=10, min_notice=timedelta(hours=12), horizon=timedelta(days=60))
HALF_HOURLY = SlotPolicy(session_minutes=25, buffer_minutes=5, min_notice=timedelta(0), horizon=timedelta(days=400))

NOW = datetime(2027, 1, 1, tzinfo=UTC)  # a Friday
MONDAY = date(2027, 1, 4)
TUESDAY = date(2027, 1, 5)
SATURDAY = date(2027, 1, 9)
ONE_DAY = timedelta(days=1)

LONDON_SPRING_FORWARD = date(2027, 3, 28)
LONDON_FALL_BACK = date(2027, 10, 31)
NEW_YORK_SPRING_FORWARD = date(2027, 3, 14)
NEW_YORK_FALL_BACK = date(2027, 11, 7)


def at(day: date, clock: str, tz: tzinfo = NAIROBI) -> datetime:
    """The instant whose wall time in ``tz`` is ``clock`` (``"HH:MM"``) on ``day``."""
    return datetime.combine(day, time.fromisoformat(clock), tzinfo=tz)


def rule(weekday: int, start: str, end: str) -> WeeklyRule:
    return WeeklyRule(weekday, time.fromisoformat(start), time.fromisoformat(end))


def every_day(start: str, end: str) -> list[WeeklyRule]:
    return [rule(weekday, start, end) for weekday in range(7)]


def weekdays(start: str, end: str) -> list[WeeklyRule]:
    return [rule(weekday, start, end) for weekday in range(5)]


def off(day: date, start: str | None = None, end: str | None = None) -> DateException:
    return DateException(
        day, "off", time.fromisoformat(start) if start else None, time.fromisoformat(end) if end else None
    )


def extra(day: date, start: str, end: str) -> DateException:
    return DateException(day, "extra", time.fromisoformat(start), time.fromisoformat(end))


def booked(start: datetime, minutes: int = 60) -> Busy:
    return Busy(start, start + timedelta(minutes=minutes))


def slots_between(
    window_start: datetime,
    window_end: datetime,
    rules: Sequence[WeeklyRule],
    *,
    exceptions: Sequence[DateException] = (),
    busy: Sequence[Busy] = (),
    policy: SlotPolicy = POLICY,
    now: datetime = NOW,
    tz: ZoneInfo = NAIROBI,
) -> list[datetime]:
    return compute_slots(
        tz=tz,
        rules=rules,
        exceptions=exceptions,
        busy=busy,
        policy=policy,
        window_start=window_start,
        window_end=window_end,
        now=now,
    )


def clocks_on(
    day: date,
    rules: Sequence[WeeklyRule],
    *,
    exceptions: Sequence[DateException] = (),
    busy: Sequence[Busy] = (),
    policy: SlotPolicy = POLICY,
    now: datetime = NOW,
    tz: ZoneInfo = NAIROBI,
) -> list[str]:
    """The bookable starts on one local day of ``tz``, as ``HH:MM`` wall times there."""
    found = slots_between(
        at(day, "00:00", tz),
        at(day + ONE_DAY, "00:00", tz),
        rules,
        exceptions=exceptions,
        busy=busy,
        policy=policy,
        now=now,
        tz=tz,
    )
    return [slot.astimezone(tz).strftime("%H:%M") for slot in found]


def labels(slots: Sequence[datetime], tz: ZoneInfo) -> list[str]:
    return [local_label(slot, tz) for slot in slots]


# --- the grid ---------------------------------------------------------------------------------------


def test_slots_start_at_the_rule_start_every_session_plus_buffer() -> None:
    assert clocks_on(MONDAY, [rule(0, "09:00", "12:00")]) == ["09:00", "10:00", "11:00"]


def test_a_slot_fits_when_its_session_ends_exactly_at_the_rule_end() -> None:
    assert clocks_on(MONDAY, [rule(0, "09:00", "11:50")]) == ["09:00", "10:00", "11:00"]
    assert clocks_on(MONDAY, [rule(0, "09:00", "11:49")]) == ["09:00", "10:00"]


def test_several_rules_on_one_day_each_anchor_their_own_grid() -> None:
    rules = [rule(0, "14:15", "16:15"), rule(0, "09:00", "11:00")]
    assert clocks_on(MONDAY, rules) == ["09:00", "10:00", "14:15", "15:15"]


def test_overlapping_or_touching_rules_merge_into_one_grid() -> None:
    touching = [rule(0, "09:00", "10:30"), rule(0, "10:30", "12:00")]
    overlapping = [rule(0, "09:00", "11:00"), rule(0, "10:15", "12:00")]
    assert clocks_on(MONDAY, touching) == ["09:00", "10:00", "11:00"]
    assert clocks_on(MONDAY, overlapping) == ["09:00", "10:00", "11:00"]


def test_rules_apply_only_on_their_weekday() -> None:
    rules = [rule(0, "09:00", "10:00"), rule(2, "15:00", "16:00")]
    week = slots_between(at(MONDAY, "00:00"), at(MONDAY + 7 * ONE_DAY, "00:00"), rules)
    assert week == [at(MONDAY, "09:00"), at(MONDAY + 2 * ONE_DAY, "15:00")]


def test_slots_are_aware_utc() -> None:
    found = slots_between(at(MONDAY, "00:00"), at(TUESDAY, "00:00"), [rule(0, "09:00", "10:00")])
    assert found == [datetime(2027, 1, 4, 6, 0, tzinfo=UTC)]
    assert found[0].tzinfo is UTC


# --- exceptions ---------------------------------------------------------------------------------------


def test_a_whole_day_off_removes_that_days_slots_only() -> None:
    rules = weekdays("09:00", "11:00")
    assert clocks_on(MONDAY, rules, exceptions=[off(MONDAY)]) == []
    assert clocks_on(TUESDAY, rules, exceptions=[off(MONDAY)]) == ["09:00", "10:00"]


def test_partial_time_off_leaves_pieces_that_anchor_at_their_own_start() -> None:
    cut = [off(MONDAY, "10:15", "10:45")]
    assert clocks_on(MONDAY, [rule(0, "09:00", "17:00")], exceptions=cut) == [
        "09:00",  # 10:00 would run past 10:15
        "10:45",
        "11:45",
        "12:45",
        "13:45",
        "14:45",
        "15:45",
    ]


def test_time_off_covering_a_whole_rule_removes_it() -> None:
    rules = [rule(0, "09:00", "11:00"), rule(0, "14:00", "16:00")]
    assert clocks_on(MONDAY, rules, exceptions=[off(MONDAY, "08:00", "12:00")]) == ["14:00", "15:00"]


def test_extra_hours_on_a_day_without_rules_add_slots() -> None:
    rules = weekdays("09:00", "17:00")
    assert clocks_on(SATURDAY, rules) == []
    assert clocks_on(SATURDAY, rules, exceptions=[extra(SATURDAY, "10:00", "12:00")]) == ["10:00", "11:00"]


def test_extra_hours_overlapping_a_rule_merge_and_anchor_at_the_merged_start() -> None:
    rules = [rule(0, "09:00", "12:00")]
    assert clocks_on(MONDAY, rules, exceptions=[extra(MONDAY, "08:30", "09:30")]) == ["08:30", "09:30", "10:30"]
    assert clocks_on(MONDAY, rules, exceptions=[extra(MONDAY, "11:30", "14:00")]) == [
        "09:00",
        "10:00",
        "11:00",
        "12:00",
        "13:00",
    ]
    assert clocks_on(MONDAY, rules, exceptions=[extra(MONDAY, "12:00", "13:00")]) == [
        "09:00",
        "10:00",
        "11:00",
        "12:00",
    ]


def test_extra_hours_are_added_after_time_off() -> None:
    exceptions = [extra(MONDAY, "14:00", "16:00"), off(MONDAY)]
    assert clocks_on(MONDAY, weekdays("09:00", "17:00"), exceptions=exceptions) == ["14:00", "15:00"]


def test_availability_intervals_are_sorted_utc_blocks_per_local_day() -> None:
    blocks = availability_intervals(
        NAIROBI,
        [rule(1, "14:00", "15:00"), rule(0, "09:00", "12:00")],
        [extra(TUESDAY, "08:00", "09:00")],
        first_day=MONDAY,
        last_day=TUESDAY,
    )
    assert blocks == [
        (datetime(2027, 1, 4, 6, tzinfo=UTC), datetime(2027, 1, 4, 9, tzinfo=UTC)),
        (datetime(2027, 1, 5, 5, tzinfo=UTC), datetime(2027, 1, 5, 6, tzinfo=UTC)),
        (datetime(2027, 1, 5, 11, tzinfo=UTC), datetime(2027, 1, 5, 12, tzinfo=UTC)),
    ]
    with pytest.raises(ValueError, match="last_day"):
        availability_intervals(NAIROBI, [], [], first_day=TUESDAY, last_day=MONDAY)


# --- busy intervals ---------------------------------------------------------------------------------


def test_a_booking_removes_the_slot_it_overlaps_but_not_the_one_it_touches() -> None:
    rules = [rule(0, "09:00", "12:00")]
    assert clocks_on(MONDAY, rules, busy=[booked(at(MONDAY, "10:00"))]) == ["09:00", "11:00"]
    assert clocks_on(MONDAY, rules, busy=[Busy(at(MONDAY, "08:00"), at(MONDAY, "09:00"))]) == [
        "09:00",
        "10:00",
        "11:00",
    ]


def test_the_new_slots_buffer_may_not_overlap_a_booking() -> None:
    # The 10:00 slot blocks 10:00-11:00 with its buffer: a booking from 10:55 takes it.
    busy = [Busy(at(MONDAY, "10:55"), at(MONDAY, "10:58"))]
    assert clocks_on(MONDAY, [rule(0, "09:00", "12:00")], busy=busy) == ["09:00", "11:00"]


def test_an_existing_bookings_buffer_blocks_the_next_slot() -> None:
    # Booked 08:10 for 50 minutes plus a 5-minute buffer: busy until 09:05.
    busy = [Busy(at(MONDAY, "08:10"), at(MONDAY, "09:05"))]
    assert clocks_on(MONDAY, [rule(0, "09:00", "12:00")], busy=busy) == ["10:00", "11:00"]


def test_a_long_hold_is_not_hidden_by_a_shorter_busy_interval_starting_later() -> None:
    busy = [Busy(at(MONDAY, "09:30"), at(MONDAY, "09:40")), Busy(at(MONDAY, "09:00"), at(MONDAY, "13:00"))]
    assert clocks_on(MONDAY, [rule(0, "09:00", "15:00")], busy=busy) == ["13:00", "14:00"]


def test_unsorted_busy_in_any_zone_is_compared_as_instants() -> None:
    busy = [
        booked(at(MONDAY, "11:00").astimezone(NEW_YORK)),
        booked(at(MONDAY, "09:00").astimezone(LONDON)),
    ]
    assert clocks_on(MONDAY, [rule(0, "09:00", "12:00")], busy=busy) == ["10:00"]


# --- notice, horizon, window ---------------------------------------------------------------------------


def test_min_notice_is_inclusive_to_the_microsecond() -> None:
    rules = weekdays("09:00", "11:00")
    just_in_time = at(MONDAY, "21:00")  # + 12 h = Tuesday 09:00
    assert clocks_on(TUESDAY, rules, now=just_in_time) == ["09:00", "10:00"]
    assert clocks_on(TUESDAY, rules, now=just_in_time + timedelta(microseconds=1)) == ["10:00"]


def test_horizon_is_inclusive_to_the_microsecond() -> None:
    rules = weekdays("09:00", "11:00")
    last_day = MONDAY + 60 * ONE_DAY  # a Friday
    exactly = at(last_day, "10:00") - POLICY.horizon
    assert clocks_on(last_day, rules, now=exactly) == ["09:00", "10:00"]
    assert clocks_on(last_day, rules, now=exactly - timedelta(microseconds=1)) == ["09:00"]


def test_notice_and_horizon_are_real_durations_when_now_is_given_in_a_dst_zone() -> None:
    sunday_rules = [rule(6, "08:00", "12:00")]
    # 21:00 GMT + 12 real hours is 09:00 UTC, 10:00 BST; wall-clock arithmetic would say 09:00 BST.
    now = at(LONDON_SPRING_FORWARD - ONE_DAY, "21:00", LONDON)
    assert clocks_on(LONDON_SPRING_FORWARD, sunday_rules, now=now, tz=LONDON) == ["10:00", "11:00"]
    check = partial(is_bookable, tz=LONDON, rules=sunday_rules, exceptions=[], busy=[], policy=POLICY, now=now)
    assert check(at(LONDON_SPRING_FORWARD, "09:00", LONDON)) is SlotProblem.TOO_SOON
    assert check(at(LONDON_SPRING_FORWARD, "10:00", LONDON)) is None


def test_window_start_is_inclusive_and_window_end_exclusive() -> None:
    rules = [rule(0, "09:00", "12:00")]
    assert slots_between(at(MONDAY, "10:00"), at(MONDAY, "11:00"), rules) == [at(MONDAY, "10:00")]
    assert slots_between(at(MONDAY, "10:01"), at(MONDAY, "11:01"), rules) == [at(MONDAY, "11:00")]


def test_nothing_is_bookable_when_the_window_lies_outside_notice_and_horizon() -> None:
    rules = every_day("09:00", "12:00")
    assert slots_between(NOW - 3 * ONE_DAY, NOW, rules) == []
    assert slots_between(NOW + 61 * ONE_DAY, NOW + 62 * ONE_DAY, rules) == []


# --- clients abroad: a therapist in Nairobi, viewed from zones with DST -------------------------------


@pytest.mark.parametrize(
    ("client", "change_day", "around_the_change"),
    [
        pytest.param(
            LONDON,
            LONDON_SPRING_FORWARD,
            ["2027-03-28T00:00:00+00:00", "2027-03-28T02:00:00+01:00", "2027-03-28T03:00:00+01:00"],
            id="london-spring-forward",
        ),
        pytest.param(
            LONDON,
            LONDON_FALL_BACK,
            ["2027-10-31T01:00:00+01:00", "2027-10-31T01:00:00+00:00", "2027-10-31T02:00:00+00:00"],
            id="london-fall-back",
        ),
        pytest.param(
            NEW_YORK,
            NEW_YORK_SPRING_FORWARD,
            ["2027-03-14T01:00:00-05:00", "2027-03-14T03:00:00-04:00", "2027-03-14T04:00:00-04:00"],
            id="new-york-spring-forward",
        ),
        pytest.param(
            NEW_YORK,
            NEW_YORK_FALL_BACK,
            ["2027-11-07T01:00:00-04:00", "2027-11-07T01:00:00-05:00", "2027-11-07T02:00:00-05:00"],
            id="new-york-fall-back",
        ),
    ],
)
def test_a_client_abroad_sees_hourly_slots_without_gaps_or_duplicates_across_their_dst_change(
    client: ZoneInfo, change_day: date, around_the_change: list[str]
) -> None:
    # Open round the clock in Nairobi: one slot every UTC hour.
    window_start = at(change_day - ONE_DAY, "00:00", client)
    window_end = at(change_day + 2 * ONE_DAY, "00:00", client)
    slots = slots_between(
        window_start, window_end, every_day("00:00", "23:59"), now=window_start - ONE_DAY, policy=POLICY
    )
    hours_in_window = (window_end.astimezone(UTC) - window_start.astimezone(UTC)) // timedelta(hours=1)
    assert hours_in_window in (71, 73)  # three local days, one of them 23 or 25 hours long
    assert len(slots) == hours_in_window
    assert all(later - earlier == timedelta(hours=1) for earlier, later in itertools.pairwise(slots))
    shown = labels(slots, client)
    assert len(set(shown)) == len(shown)
    first = next(index for index, label in enumerate(shown) if label.startswith(around_the_change[0]))
    assert shown[first : first + 3] == around_the_change


def test_the_same_instants_give_the_same_utc_slots_in_any_client_zone() -> None:
    rules = every_day("07:00", "20:00")
    window_start = datetime(2027, 3, 13, 22, tzinfo=UTC)
    window_end = datetime(2027, 3, 29, 3, tzinfo=UTC)
    now = window_start - ONE_DAY
    seen = [
        slots_between(window_start.astimezone(zone), window_end.astimezone(zone), rules, now=now.astimezone(zone))
        for zone in (UTC, LONDON, NEW_YORK, NAIROBI)
    ]
    assert seen[0]
    assert all(slots == seen[0] for slots in seen)
    assert all(slot.tzinfo is UTC for slot in seen[1])


@pytest.mark.parametrize(
    ("day", "zone", "label"),
    [
        (date(2027, 3, 26), LONDON, "2027-03-26T06:00:00+00:00"),
        (date(2027, 3, 29), LONDON, "2027-03-29T07:00:00+01:00"),
        (date(2027, 10, 29), LONDON, "2027-10-29T07:00:00+01:00"),
        (date(2027, 11, 1), LONDON, "2027-11-01T06:00:00+00:00"),
        (date(2027, 3, 12), NEW_YORK, "2027-03-12T01:00:00-05:00"),
        (date(2027, 3, 15), NEW_YORK, "2027-03-15T02:00:00-04:00"),
        (date(2027, 11, 5), NEW_YORK, "2027-11-05T02:00:00-04:00"),
        (date(2027, 11, 8), NEW_YORK, "2027-11-08T01:00:00-05:00"),
        (date(2027, 11, 8), NAIROBI, "2027-11-08T09:00:00+03:00"),
    ],
)
def test_local_labels_carry_the_clients_offset(day: date, zone: ZoneInfo, label: str) -> None:
    # 09:00 in Nairobi is 06:00 UTC all year; only the client's reading changes.
    assert local_label(at(day, "09:00"), zone) == label


# --- a therapist in London, across their own DST changes ------------------------------------------------


@pytest.mark.parametrize(
    ("day", "utc_hour"),
    [
        (LONDON_SPRING_FORWARD - ONE_DAY, 9),
        (LONDON_SPRING_FORWARD, 8),
        (LONDON_SPRING_FORWARD + ONE_DAY, 8),
        (LONDON_FALL_BACK - ONE_DAY, 8),
        (LONDON_FALL_BACK, 9),
        (LONDON_FALL_BACK + ONE_DAY, 9),
    ],
)
def test_a_london_therapists_nine_oclock_stays_nine_local_on_both_sides_of_a_change(day: date, utc_hour: int) -> None:
    midnight = at(day, "00:00", LONDON)
    slots = slots_between(
        midnight, at(day + ONE_DAY, "00:00", LONDON), every_day("09:00", "10:00"), now=midnight - ONE_DAY, tz=LONDON
    )
    assert slots == [datetime.combine(day, time(utc_hour), tzinfo=UTC)]
    assert local_label(slots[0], LONDON).startswith(f"{day.isoformat()}T09:00:00")


def test_spring_forward_night_skips_the_local_hour_that_does_not_exist() -> None:
    rules = [rule(6, "00:30", "03:00")]
    an_ordinary_sunday = clocks_on(LONDON_SPRING_FORWARD - 7 * ONE_DAY, rules, policy=HALF_HOURLY, tz=LONDON)
    assert an_ordinary_sunday == ["00:30", "01:00", "01:30", "02:00", "02:30"]
    slots = slots_between(
        at(LONDON_SPRING_FORWARD, "00:00", LONDON),
        at(LONDON_SPRING_FORWARD + ONE_DAY, "00:00", LONDON),
        rules,
        policy=HALF_HOURLY,
        tz=LONDON,
    )
    # 00:30 GMT to 03:00 BST is 90 real minutes: three 25 + 5 minute slots.
    assert labels(slots, LONDON) == [
        "2027-03-28T00:30:00+00:00",
        "2027-03-28T02:00:00+01:00",
        "2027-03-28T02:30:00+01:00",
    ]


def test_fall_back_night_gives_each_instant_once_through_the_repeated_hour() -> None:
    slots = slots_between(
        at(LONDON_FALL_BACK, "00:00", LONDON),
        at(LONDON_FALL_BACK + ONE_DAY, "00:00", LONDON),
        [rule(6, "00:30", "03:00")],
        policy=HALF_HOURLY,
        tz=LONDON,
    )
    # 00:30 BST to 03:00 GMT is 3.5 real hours.
    assert labels(slots, LONDON) == [
        "2027-10-31T00:30:00+01:00",
        "2027-10-31T01:00:00+01:00",
        "2027-10-31T01:30:00+01:00",
        "2027-10-31T01:00:00+00:00",
        "2027-10-31T01:30:00+00:00",
        "2027-10-31T02:00:00+00:00",
        "2027-10-31T02:30:00+00:00",
    ]
    assert len(set(slots)) == len(slots)
    assert all(later - earlier == timedelta(minutes=30) for earlier, later in itertools.pairwise(slots))


def test_rule_ends_in_a_gap_mean_the_jump_and_repeated_times_their_first_occurrence() -> None:
    def blocks(start: str, end: str, day: date) -> list[tuple[datetime, datetime]]:
        return availability_intervals(LONDON, [rule(6, start, end)], [], first_day=day, last_day=day)

    def utc(day: date, clock: str) -> datetime:
        return at(day, clock, UTC)

    spring, autumn = LONDON_SPRING_FORWARD, LONDON_FALL_BACK
    assert blocks("01:30", "04:00", spring) == [(utc(spring, "01:00"), utc(spring, "03:00"))]
    assert blocks("00:15", "01:30", spring) == [(utc(spring, "00:15"), utc(spring, "01:00"))]
    assert blocks("01:00", "01:45", spring) == []
    assert blocks("01:30", "04:00", autumn) == [(utc(autumn, "00:30"), utc(autumn, "04:00"))]
    assert blocks("00:00", "01:30", autumn) == [(utc(autumn - ONE_DAY, "23:00"), utc(autumn, "00:30"))]


# --- is_bookable agrees with compute_slots ---------------------------------------------------------------


def test_every_computed_slot_is_bookable_and_every_other_start_is_not() -> None:
    saturday, sunday, monday = (LONDON_SPRING_FORWARD + offset * ONE_DAY for offset in (-1, 0, 1))
    rules = [*every_day("09:00", "12:00"), rule(6, "00:30", "03:00"), rule(0, "13:10", "17:00")]
    exceptions = [off(saturday, "10:00", "10:40"), extra(sunday, "11:45", "13:00"), off(monday, "15:00", "15:30")]
    busy = [booked(at(monday, "09:00", LONDON), 45), Busy(at(sunday, "02:10", LONDON), at(sunday, "02:40", LONDON))]
    now = at(saturday, "08:00", LONDON) - ONE_DAY
    window_start, window_end = at(saturday, "00:00", LONDON), at(monday + ONE_DAY, "00:00", LONDON)
    slots = slots_between(
        window_start, window_end, rules, exceptions=exceptions, busy=busy, policy=HALF_HOURLY, now=now, tz=LONDON
    )

    candidates = [
        window_start + step * timedelta(minutes=5)
        for step in range((window_end - window_start) // timedelta(minutes=5))
    ]
    check = partial(is_bookable, tz=LONDON, rules=rules, exceptions=exceptions, busy=busy, policy=HALF_HOURLY, now=now)
    bookable = [start for start in candidates if check(start) is None]
    assert len(slots) > 20
    assert slots == bookable


def test_is_bookable_names_each_problem() -> None:
    check = partial(
        is_bookable,
        tz=NAIROBI,
        rules=weekdays("09:00", "12:00"),
        exceptions=[off(date(2027, 1, 6))],
        busy=[booked(at(TUESDAY, "10:00"))],
        policy=POLICY,
        now=at(MONDAY, "08:00"),
    )
    expected = {
        at(MONDAY, "07:00"): SlotProblem.PAST,
        at(MONDAY, "10:00"): SlotProblem.TOO_SOON,
        at(MONDAY + 63 * ONE_DAY, "09:00"): SlotProblem.BEYOND_HORIZON,
        at(SATURDAY, "09:00"): SlotProblem.OUTSIDE_AVAILABILITY,
        at(TUESDAY, "12:00"): SlotProblem.OUTSIDE_AVAILABILITY,
        at(date(2027, 1, 6), "09:00"): SlotProblem.OUTSIDE_AVAILABILITY,
        at(TUESDAY, "11:20"): SlotProblem.OUTSIDE_AVAILABILITY,  # 11:20 + 50 runs past 12:00
        at(TUESDAY, "09:30"): SlotProblem.NOT_ON_GRID,
        at(TUESDAY, "10:00"): SlotProblem.TAKEN,
        at(TUESDAY, "09:00"): None,
        at(TUESDAY, "11:00"): None,
    }
    found = {start: check(start) for start in expected}
    assert found == expected


# --- validation -------------------------------------------------------------------------------------------


NAIVE = datetime(2027, 1, 4, 9)


@pytest.mark.parametrize("naive", ["window_start", "window_end", "now"])
def test_compute_slots_rejects_naive_datetimes(naive: str) -> None:
    moments = {"window_start": at(MONDAY, "00:00"), "window_end": at(TUESDAY, "00:00"), "now": NOW} | {naive: NAIVE}
    with pytest.raises(ValueError, match="naive"):
        compute_slots(tz=NAIROBI, rules=[], exceptions=[], busy=[], policy=POLICY, **moments)


@pytest.mark.parametrize(("start", "now"), [(NAIVE, NOW), (at(MONDAY, "09:00"), NAIVE)])
def test_is_bookable_rejects_naive_datetimes(start: datetime, now: datetime) -> None:
    with pytest.raises(ValueError, match="naive"):
        is_bookable(start, tz=NAIROBI, rules=[], exceptions=[], busy=[], policy=POLICY, now=now)


def test_naive_values_are_rejected_everywhere_else() -> None:
    with pytest.raises(ValueError, match="naive"):
        local_label(NAIVE, LONDON)
    with pytest.raises(ValueError, match="naive"):
        Busy(NAIVE, at(MONDAY, "10:00"))
    with pytest.raises(ValueError, match="naive"):
        check_window(NAIVE, at(MONDAY, "10:00"))


@pytest.mark.parametrize("length", [timedelta(0), timedelta(hours=-1)])
def test_a_reversed_or_empty_window_is_rejected(length: timedelta) -> None:
    with pytest.raises(ValueError, match="window_end"):
        slots_between(at(MONDAY, "09:00"), at(MONDAY, "09:00") + length, every_day("09:00", "12:00"))
    with pytest.raises(ValueError, match="window_end"):
        check_window(at(MONDAY, "09:00"), at(MONDAY, "09:00") + length)


def test_check_window_caps_the_length_at_sixty_days() -> None:
    check_window(NOW, NOW + MAX_WINDOW)
    with pytest.raises(ValueError, match="60 days"):
        check_window(NOW, NOW + MAX_WINDOW + timedelta(microseconds=1))


def test_check_window_measures_real_time_across_a_clients_dst_change() -> None:
    # 60 wall-clock days over London's fall-back are 60 days and one hour.
    start = at(LONDON_FALL_BACK - 30 * ONE_DAY, "00:00", LONDON)
    with pytest.raises(ValueError, match="60 days"):
        check_window(start, at(LONDON_FALL_BACK + 30 * ONE_DAY, "00:00", LONDON))
    check_window(start, at(LONDON_FALL_BACK + 30 * ONE_DAY, "00:00", LONDON) - timedelta(hours=1))


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: rule(0, "12:00", "09:00"), id="rule-ends-before-it-starts"),
        pytest.param(lambda: rule(0, "09:00", "09:00"), id="rule-empty"),
        pytest.param(lambda: rule(7, "09:00", "12:00"), id="weekday-7"),
        pytest.param(lambda: WeeklyRule(0, time(9, tzinfo=UTC), time(12, tzinfo=UTC)), id="rule-with-tzinfo"),
        pytest.param(lambda: DateException(MONDAY, "extra"), id="extra-without-times"),
        pytest.param(lambda: DateException(MONDAY, "off", time(9)), id="off-with-start-only"),
        pytest.param(lambda: off(MONDAY, "12:00", "09:00"), id="off-reversed"),
        pytest.param(lambda: DateException(MONDAY, "busy", time(9), time(10)), id="unknown-kind"),  # type: ignore[arg-type]
        pytest.param(lambda: Busy(at(MONDAY, "10:00"), at(MONDAY, "10:00")), id="busy-empty"),
        pytest.param(lambda: SlotPolicy(0, 10, timedelta(0), timedelta(days=1)), id="session-zero"),
        pytest.param(lambda: SlotPolicy(50, -1, timedelta(0), timedelta(days=1)), id="buffer-negative"),
        pytest.param(lambda: SlotPolicy(50, 10, timedelta(days=2), timedelta(days=1)), id="horizon-before-notice"),
    ],
)
def test_invalid_building_blocks_are_rejected(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        build()


def test_parse_timezone_accepts_iana_names_only() -> None:
    assert parse_timezone("Africa/Nairobi") == NAIROBI
    for name in ("Mars/Olympus", "Europe", "", "../etc/passwd", "/etc/localtime", "localtime", "europe/london"):
        with pytest.raises(ValueError, match="unknown time zone"):
            parse_timezone(name)


# --- a year of bookings ------------------------------------------------------------------------------------


def grid_of_2027() -> list[datetime]:
    """Every Mon-Fri 08:00-18:00 slot of 2027 in Nairobi (50 + 10 minutes), in UTC."""
    days = (date(2027, 1, 1) + offset * ONE_DAY for offset in range(365))
    return [
        datetime.combine(day, time(hour), tzinfo=NAIROBI).astimezone(UTC)
        for day in days
        if day.weekday() < 5
        for hour in range(8, 18)
    ]


@pytest.mark.parametrize("now", [datetime(2027, 1, 1, tzinfo=UTC), datetime(2027, 7, 1, 5, 30, tzinfo=UTC)])
def test_a_year_of_bookings_leaves_exactly_the_free_slots_in_sixty_days(now: datetime) -> None:
    grid = grid_of_2027()
    taken = {start for index, start in enumerate(grid) if index % 13 < 10}
    busy = [booked(start) for start in sorted(taken, reverse=True)]  # deliberately unsorted input
    assert 1_950 <= len(busy) <= 2_050

    slots = slots_between(now, now + MAX_WINDOW, weekdays("08:00", "18:00"), busy=busy, now=now)

    free = [start for start in grid if now + POLICY.min_notice <= start < now + MAX_WINDOW and start not in taken]
    assert len(slots) == len(free)
    assert slots == free
