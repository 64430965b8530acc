"""Course planning: boundaries and a property test of every rule."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflows.calendar import add_months, is_open_day, next_open_day
from workflows.planner import plan_course, plan_for_grade, review_date, spf_window_end
from workflows.protocol import ClinicProtocol, ClinicSettings, DateRange, Protocol
from workflows.season import course_straddles_summer, in_summer, season_cutoff

DEFAULT = ClinicProtocol()
EVERY_DAY = ClinicProtocol(clinic=ClinicSettings(open_weekdays=tuple(range(7))))
SOUTH = ClinicProtocol(clinic=ClinicSettings(hemisphere="south"))


def assert_course_rules(
    dates: Sequence[date],
    cp: ClinicProtocol,
    *,
    earliest: date,
    trips: Sequence[DateRange] = (),
    previous: date | None = None,
    conservative: bool = False,
) -> None:
    """Every rule a planned (or re-planned) course must satisfy."""
    protocol, clinic = cp.protocol, cp.clinic
    hard_min, _, _ = protocol.interval_bounds(conservative)
    assert dates, "nothing planned"
    assert list(dates) == sorted(dates)
    for d in dates:
        assert d >= earliest, f"{d} before earliest {earliest}"
        assert is_open_day(d, clinic), f"{d} is a closed day"
        assert not in_summer(d, clinic), f"{d} is in summer"
        for trip in trips:
            assert not trip.contains(d), f"{d} inside {trip}"
    chain = ([previous] if previous is not None else []) + list(dates)
    for a, b in itertools.pairwise(chain):
        assert (b - a).days >= hard_min, f"{a}→{b} shorter than {hard_min} days"
    first, last = dates[0], dates[-1]
    assert last <= season_cutoff(first, clinic, protocol), "after the season cutoff"
    buffer = timedelta(days=protocol.trip_buffer_days)
    for trip in trips:
        if trip.start >= first:
            assert last <= trip.start - buffer, f"last {last} too close to {trip}"


def test_plan_in_season_defaults() -> None:
    plan = plan_for_grade(date(2026, 10, 1), "large", DEFAULT)
    assert plan.sessions == [date(2026, 10, 1), date(2026, 10, 22), date(2026, 11, 12),
                             date(2026, 12, 3)]  # fmt: skip
    assert plan.starts_on == date(2026, 10, 1)
    assert plan.last_session_on == date(2026, 12, 3)
    assert plan.spf_until == date(2027, 2, 3)
    assert plan.review_on == date(2027, 3, 3)
    assert plan.waiting_reason is None
    assert plan.reasons == []
    assert plan.interval_days == (21, 28)
    assert not plan.conservative
    assert plan.requested_from == date(2026, 10, 1)
    assert plan.protocol_version == "pore-2026.1"
    assert len(plan_for_grade(date(2026, 10, 1), "small", DEFAULT).sessions) == 3
    assert len(plan_for_grade(date(2026, 10, 1), "moderate", DEFAULT).sessions) == 3


def test_weekend_start_moves_to_monday_without_waiting_reason() -> None:
    plan = plan_course(date(2026, 10, 3), 3, DEFAULT)  # Saturday
    assert plan.starts_on == date(2026, 10, 5)
    assert plan.waiting_reason is None


def test_interval_exactly_minimum() -> None:
    plan = plan_course(date(2026, 10, 1), 3, EVERY_DAY)
    gaps = {(b - a).days for a, b in itertools.pairwise(plan.sessions)}
    assert gaps == {21}


def test_cutoff_day_allowed_and_day_after_refused() -> None:
    # Every day open: 21 March + 21 + 21 = 2 May 2027, the cutoff (1 June − 30 days).
    fits = plan_course(date(2027, 3, 21), 3, EVERY_DAY)
    assert fits.sessions == [date(2027, 3, 21), date(2027, 4, 11), date(2027, 5, 2)]
    assert fits.waiting_reason is None
    late = plan_course(date(2027, 3, 22), 3, EVERY_DAY)
    assert late.sessions[-1] != date(2027, 5, 3)
    assert late.starts_on == date(2027, 9, 1)
    assert late.reasons[0].rule == "after_season_cutoff"
    assert late.waiting_reason is not None
    assert "would end on 3 May 2027, after 2 May 2027" in late.waiting_reason
    assert "summer starts on 1 June 2027" in late.waiting_reason
    assert "season opens again on 1 September 2027" in late.waiting_reason


def test_waiting_reason_example() -> None:
    plan = plan_for_grade(date(2027, 4, 20), "large", DEFAULT)
    assert plan.starts_on == date(2027, 9, 1)
    assert plan.waiting_reason == (
        "A course of 4 sessions starting on 20 April 2027 would end on 22 June 2027, after "
        "2 May 2027, 30 days before summer starts on 1 June 2027; the season opens again on "
        "1 September 2027."
    )


def test_start_in_summer_waits_for_season() -> None:
    plan = plan_course(date(2027, 7, 1), 3, DEFAULT)
    assert plan.starts_on == date(2027, 9, 1)
    assert [r.rule for r in plan.reasons] == ["in_summer"]
    assert plan.waiting_reason is not None
    assert "1 July 2027 is in summer" in plan.waiting_reason


def test_start_after_cutoff_but_before_summer() -> None:
    plan = plan_course(date(2027, 5, 10), 1, DEFAULT)
    assert plan.starts_on == date(2027, 9, 1)
    assert plan.reasons[0].rule == "after_season_cutoff"


def test_single_session_on_cutoff_day() -> None:
    plan = plan_course(date(2027, 5, 2), 1, EVERY_DAY)
    assert plan.sessions == [date(2027, 5, 2)]


def test_south_hemisphere() -> None:
    plan = plan_for_grade(date(2026, 9, 1), "large", SOUTH)
    assert plan.starts_on == date(2027, 3, 1)  # 4 sessions would end 3 Nov > 1 Nov
    fits = plan_for_grade(date(2026, 9, 1), "small", SOUTH)
    assert fits.last_session_on == date(2026, 10, 13)


def test_trip_buffer_boundary() -> None:
    # Course 1 Oct, 22 Oct, 12 Nov 2026 (every day open); trip buffer 30 days.
    ok_trip = DateRange(start=date(2026, 12, 12), end=date(2026, 12, 20))  # last + 30
    ok = plan_course(date(2026, 10, 1), 3, EVERY_DAY, trips=[ok_trip])
    assert ok.last_session_on == date(2026, 11, 12)
    assert ok.waiting_reason is None
    close_trip = DateRange(start=date(2026, 12, 11), end=date(2026, 12, 20))  # last + 29
    moved = plan_course(date(2026, 10, 1), 3, EVERY_DAY, trips=[close_trip])
    assert moved.starts_on == date(2026, 12, 21)
    assert [r.rule for r in moved.reasons] == ["too_close_to_trip"]
    assert "on or before 11 November 2026" in moved.reasons[0].message
    assert "after the trip ends on 20 December 2026" in moved.reasons[0].message


def test_trip_inside_course_and_session_inside_trip() -> None:
    mid = DateRange(start=date(2026, 10, 10), end=date(2026, 10, 15))
    plan = plan_course(date(2026, 10, 1), 3, DEFAULT, trips=[mid])
    assert plan.starts_on == date(2026, 10, 16)
    assert "would fall during the course" in plan.reasons[0].message
    covering = DateRange(start=date(2026, 9, 20), end=date(2026, 10, 5))
    plan = plan_course(date(2026, 10, 1), 3, DEFAULT, trips=[covering])
    assert plan.starts_on == date(2026, 10, 6)
    assert plan.reasons[0].rule == "during_trip"


def test_trip_before_first_session_does_not_move_course() -> None:
    past = DateRange(start=date(2026, 9, 1), end=date(2026, 9, 30))
    plan = plan_course(date(2026, 10, 1), 3, DEFAULT, trips=[past])
    assert plan.starts_on == date(2026, 10, 1)


def test_trip_pushes_course_past_cutoff_into_next_season() -> None:
    trip = DateRange(start=date(2027, 3, 1), end=date(2027, 3, 31))
    plan = plan_course(date(2027, 2, 1), 3, DEFAULT, trips=[trip])
    assert plan.starts_on == date(2027, 9, 1)
    assert [r.rule for r in plan.reasons] == ["during_trip", "after_season_cutoff"]


def test_previous_session_and_split() -> None:
    plan = plan_course(date(2026, 10, 5), 2, DEFAULT, previous_session_on=date(2026, 10, 1))
    assert plan.starts_on == date(2026, 10, 22)
    assert not plan.course_split
    split = plan_course(date(2027, 4, 20), 2, DEFAULT, previous_session_on=date(2027, 4, 1))
    assert split.starts_on == date(2027, 9, 1)
    assert split.course_split


def test_a_wait_for_a_trip_inside_one_season_is_not_a_split() -> None:
    # session 1 on 1 October; a trip makes the rest wait until after 10 January: same season
    trip = DateRange(start=date(2026, 10, 20), end=date(2027, 1, 10))
    plan = plan_course(
        date(2026, 10, 22), 2, DEFAULT, trips=[trip], previous_session_on=date(2026, 10, 1)
    )
    assert plan.starts_on == date(2027, 1, 11)
    assert [r.rule for r in plan.reasons] == ["during_trip"]
    assert not plan.course_split
    assert not course_straddles_summer([date(2026, 10, 1), *plan.sessions], DEFAULT.clinic)


@settings(max_examples=150, deadline=None)
@given(
    st.dates(min_value=date(2026, 1, 1), max_value=date(2030, 12, 31)),
    st.integers(min_value=1, max_value=4),
    st.integers(min_value=0, max_value=200),
    st.sampled_from([DEFAULT, SOUTH]),
)
def test_course_split_is_course_straddles_summer(
    previous: date, sessions: int, gap: int, cp: ClinicProtocol
) -> None:
    plan = plan_course(previous + timedelta(days=gap), sessions, cp, previous_session_on=previous)
    assert plan.course_split is course_straddles_summer([previous, *plan.sessions], cp.clinic)
    fresh = plan_course(previous, sessions, cp)
    assert not fresh.course_split


def test_conservative_intervals() -> None:
    plan = plan_for_grade(date(2026, 10, 1), "large", DEFAULT, conservative=True)
    assert plan.interval_days == (28, 42)
    assert plan.conservative
    gaps = [(b - a).days for a, b in itertools.pairwise(plan.sessions)]
    assert gaps == [28, 28, 28]
    after = plan_course(
        date(2026, 10, 2), 1, DEFAULT, previous_session_on=date(2026, 10, 1), conservative=True
    )
    assert after.starts_on == date(2026, 10, 29)


def test_target_min_above_hard_min_is_used() -> None:
    cp = ClinicProtocol(protocol=Protocol(target_interval_min_days=25))
    plan = plan_course(date(2026, 10, 1), 2, cp)
    assert (plan.sessions[1] - plan.sessions[0]).days == 25


def test_unplannable_within_horizon() -> None:
    trip = DateRange(start=date(2026, 1, 1), end=date(2040, 1, 1))
    plan = plan_course(date(2026, 10, 1), 3, DEFAULT, trips=[trip])
    assert plan.sessions == []
    assert plan.starts_on is None and plan.spf_until is None and plan.review_on is None
    assert plan.reasons[-1].rule == "planning_horizon"
    assert plan.waiting_reason is not None and "1 October 2036" in plan.waiting_reason


@pytest.mark.parametrize("count", [0, -1, 7])
def test_bad_session_count(count: int) -> None:
    with pytest.raises(ValueError, match="sessions must be between 1 and 6"):
        plan_course(date(2026, 10, 1), count, DEFAULT)


def test_unknown_grade() -> None:
    with pytest.raises(ValueError, match="known grades"):
        plan_for_grade(date(2026, 10, 1), "xl", DEFAULT)


def test_spf_and_review_dates_clamp() -> None:
    p = Protocol()
    assert spf_window_end(date(2026, 12, 31), p) == date(2027, 2, 28)
    assert spf_window_end(date(2027, 12, 31), p) == date(2028, 2, 29)
    assert review_date(date(2026, 11, 30), p) == date(2027, 2, 28)
    assert review_date(date(2027, 11, 30), p) == date(2028, 2, 29)
    assert spf_window_end(date(2027, 3, 3), Protocol(spf_months=3)) == date(2027, 6, 3)


# --- property test ----------------------------------------------------------------------

SUMMERS = st.sampled_from([None, (7,), (5, 6, 7, 8), (12, 1), (1, 2, 3)])


@st.composite
def clinic_protocols(draw: st.DrawFn) -> ClinicProtocol:
    weekdays = draw(st.sets(st.integers(0, 6), min_size=1).map(lambda s: tuple(sorted(s))))
    clinic = ClinicSettings(
        hemisphere=draw(st.sampled_from(["north", "south"])),
        summer_months=draw(SUMMERS),
        open_weekdays=weekdays,
    )
    return ClinicProtocol(clinic=clinic)


@st.composite
def trip_lists(draw: st.DrawFn, around: date) -> list[DateRange]:
    trips = []
    for _ in range(draw(st.integers(0, 3))):
        start = around + timedelta(days=draw(st.integers(-30, 500)))
        trips.append(DateRange(start=start, end=start + timedelta(days=draw(st.integers(0, 30)))))
    return trips


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_every_plan_satisfies_every_rule(data: st.DataObject) -> None:
    cp = data.draw(clinic_protocols())
    earliest = data.draw(st.dates(min_value=date(2020, 1, 1), max_value=date(2040, 12, 31)))
    grade = data.draw(st.sampled_from(["small", "moderate", "large"]))
    conservative = data.draw(st.booleans())
    trips = data.draw(trip_lists(earliest))
    previous = data.draw(st.none() | st.integers(1, 60).map(lambda n: earliest - timedelta(days=n)))
    count = cp.protocol.sessions_for(grade)
    plan = plan_course(
        earliest,
        count,
        cp,
        trips=trips,
        previous_session_on=previous,
        conservative=conservative,
    )
    assert len(plan.sessions) == count
    assert_course_rules(
        plan.sessions,
        cp,
        earliest=earliest,
        trips=trips,
        previous=previous,
        conservative=conservative,
    )
    _, target_min, target_max = cp.protocol.interval_bounds(conservative)
    assert plan.interval_days == (target_min, target_max)
    for a, b in itertools.pairwise(plan.sessions):
        # greedy: the first open day at least target_min later (so within target if possible)
        assert b == next_open_day(a + timedelta(days=target_min), cp.clinic)
        if any(is_open_day(a + timedelta(days=k), cp.clinic)
               for k in range(target_min, target_max + 1)):  # fmt: skip
            assert (b - a).days <= target_max
    assert plan.starts_on == plan.sessions[0]
    assert plan.last_session_on == plan.sessions[-1]
    assert plan.spf_until == add_months(plan.sessions[-1], cp.protocol.spf_months)
    assert plan.review_on == add_months(plan.sessions[-1], cp.protocol.review_months)
    requested = (
        earliest if previous is None else max(earliest, previous + timedelta(days=target_min))
    )
    if plan.waiting_reason is None:
        assert plan.starts_on == next_open_day(requested, cp.clinic)
        assert plan.reasons == []
    else:
        assert plan.reasons and plan.starts_on > requested
