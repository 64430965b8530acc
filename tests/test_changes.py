"""Session changes (reschedule): every refusal at its boundary, shifting, property test."""

from __future__ import annotations

from datetime import date, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_planner import assert_course_rules, clinic_protocols, trip_lists
from workflows.changes import SessionSlot, check_session_change
from workflows.planner import plan_course
from workflows.protocol import ClinicProtocol, DateRange

CP = ClinicProtocol()
TODAY = date(2026, 10, 5)
# Thursday 1 Oct (done), Thursday 22 Oct, Thursday 12 Nov 2026.
COURSE = [
    SessionSlot(number=1, on=date(2026, 10, 1), done=True),
    SessionSlot(number=2, on=date(2026, 10, 22)),
    SessionSlot(number=3, on=date(2026, 11, 12)),
]


def rules_of(number: int, new: date, **kwargs: object) -> list[str]:
    kwargs.setdefault("today", TODAY)
    check = check_session_change(number, new, COURSE, CP, **kwargs)  # type: ignore[arg-type]
    assert check.accepted is (not check.reasons)
    return [r.rule for r in check.reasons]


def test_accept_without_shift() -> None:
    course = [*COURSE[:2], SessionSlot(number=3, on=date(2026, 11, 19))]
    check = check_session_change(2, date(2026, 10, 29), course, CP, today=TODAY)
    assert check.accepted
    assert check.new_dates == [date(2026, 10, 29), date(2026, 11, 19)]
    assert check.shifted_sessions == []


def test_accept_with_shift_to_keep_minimum() -> None:
    check = check_session_change(2, date(2026, 10, 29), COURSE, CP, today=TODAY)
    assert check.accepted
    assert check.new_dates == [date(2026, 10, 29), date(2026, 11, 19)]
    assert check.shifted_sessions == [3]


def test_shift_lands_on_open_day() -> None:
    check = check_session_change(2, date(2026, 10, 30), COURSE, CP, today=TODAY)  # Friday
    assert check.new_dates == [date(2026, 10, 30), date(2026, 11, 20)]
    check = check_session_change(2, date(2026, 11, 2), COURSE, CP, today=TODAY)  # Monday
    assert check.new_dates == [date(2026, 11, 2), date(2026, 11, 23)]


def test_interval_20_refused_21_allowed() -> None:
    assert rules_of(2, date(2026, 10, 21)) == ["too_soon_after_previous"]
    assert rules_of(2, date(2026, 10, 22)) == []
    check = check_session_change(2, date(2026, 10, 21), COURSE, CP, today=TODAY)
    assert "no earlier than 22 October 2026" in check.reasons[0].message
    assert check.new_dates == []


def test_earliest_allowed_date_names_open_day() -> None:
    course = [SessionSlot(number=1, on=date(2026, 10, 3), done=True), COURSE[1], COURSE[2]]
    check = check_session_change(2, date(2026, 10, 22), course, CP, today=TODAY)
    message = check.reasons[0].message
    assert "no earlier than 24 October 2026" in message
    assert "first open day from then is 26 October 2026" in message


def test_conservative_27_refused_28_allowed() -> None:
    assert rules_of(2, date(2026, 10, 28), conservative=True) == ["too_soon_after_previous"]
    assert rules_of(2, date(2026, 10, 29), conservative=True) == []


def test_today_allowed_yesterday_refused() -> None:
    course = [SessionSlot(number=1, on=date(2026, 9, 1), done=True), *COURSE[1:]]
    today = date(2026, 10, 6)  # Tuesday
    ok = check_session_change(2, today, course, CP, today=today)
    assert ok.accepted
    past = check_session_change(2, today - timedelta(days=1), course, CP, today=today)
    assert [r.rule for r in past.reasons] == ["in_past"]


def test_closed_day() -> None:
    assert rules_of(2, date(2026, 10, 24)) == ["closed_day"]  # Saturday
    check = check_session_change(2, date(2026, 10, 25), COURSE, CP, today=TODAY)
    assert "closed on Sundays" in check.reasons[0].message


def test_unknown_and_done_sessions() -> None:
    assert rules_of(4, date(2026, 12, 3)) == ["no_such_session"]
    assert rules_of(1, date(2026, 10, 8)) == ["session_done"]


def test_in_summer_and_after_cutoff() -> None:
    summer = rules_of(2, date(2027, 6, 1))
    assert "in_summer" in summer
    # Session 3 alone: the cutoff is 2 May 2027 (Sunday) so use an every-day clinic.
    every = ClinicProtocol.model_validate({"clinic": {"open_weekdays": list(range(7))}})
    course = [
        SessionSlot(number=1, on=date(2027, 3, 1), done=True),
        SessionSlot(number=2, on=date(2027, 3, 22), done=True),
        SessionSlot(number=3, on=date(2027, 4, 12)),
    ]
    today = date(2027, 3, 25)
    ok = check_session_change(3, date(2027, 5, 2), course, every, today=today)
    assert ok.accepted
    late = check_session_change(3, date(2027, 5, 3), course, every, today=today)
    assert [r.rule for r in late.reasons] == ["after_season_cutoff"]
    assert "after 2 May 2027" in late.reasons[0].message
    assert "summer starts on 1 June 2027" in late.reasons[0].message


def test_shift_pushes_last_session_past_cutoff() -> None:
    course = [
        SessionSlot(number=1, on=date(2027, 3, 1), done=True),
        SessionSlot(number=2, on=date(2027, 3, 22)),
        SessionSlot(number=3, on=date(2027, 4, 12)),
    ]
    ok = check_session_change(2, date(2027, 4, 9), course, CP, today=date(2027, 3, 2))
    assert ok.accepted and ok.new_dates == [date(2027, 4, 9), date(2027, 4, 30)]
    late = check_session_change(2, date(2027, 4, 12), course, CP, today=date(2027, 3, 2))
    assert [r.rule for r in late.reasons] == ["after_season_cutoff"]
    assert "session 3" in late.reasons[0].message


def test_during_trip_and_trip_buffer_boundary() -> None:
    trip = DateRange(start=date(2026, 10, 20), end=date(2026, 10, 30))
    assert "during_trip" in rules_of(2, date(2026, 10, 22), trips=[trip])
    # last session 12 Nov: a trip starting 12 Dec (30 days) is fine, 11 Dec is too close
    ok = DateRange(start=date(2026, 12, 12), end=date(2026, 12, 20))
    assert rules_of(2, date(2026, 10, 22), trips=[ok]) == []
    close = DateRange(start=date(2026, 12, 11), end=date(2026, 12, 20))
    assert rules_of(2, date(2026, 10, 22), trips=[close]) == ["too_close_to_trip"]
    # a trip between the remaining sessions is too close as well
    between = DateRange(start=date(2026, 11, 1), end=date(2026, 11, 5))
    assert rules_of(2, date(2026, 10, 22), trips=[between]) == ["too_close_to_trip"]
    # a shifted later session landing inside a trip is reported
    later_trip = DateRange(start=date(2026, 11, 18), end=date(2026, 11, 22))
    assert "during_trip" in rules_of(2, date(2026, 10, 29), trips=[later_trip])


def test_all_reasons_collected() -> None:
    trip = DateRange(start=date(2026, 10, 3), end=date(2026, 10, 4))
    got = rules_of(2, date(2026, 10, 4), trips=[trip])
    assert set(got) >= {"in_past", "closed_day", "too_soon_after_previous", "during_trip"}
    got = rules_of(1, date(2027, 7, 3))
    assert set(got) == {"session_done", "closed_day", "in_summer"}


def test_course_split_flag() -> None:
    course = [
        SessionSlot(number=1, on=date(2027, 4, 1), done=True),
        SessionSlot(number=2, on=date(2027, 4, 22)),
    ]
    check = check_session_change(2, date(2027, 9, 1), course, CP, today=date(2027, 4, 2))
    assert check.accepted and check.course_split


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_accepted_changes_satisfy_every_rule(data: st.DataObject) -> None:
    cp = data.draw(clinic_protocols())
    start = data.draw(st.dates(min_value=date(2020, 1, 1), max_value=date(2040, 12, 31)))
    conservative = data.draw(st.booleans())
    count = data.draw(st.integers(2, 4))
    plan = plan_course(start, count, cp, conservative=conservative)
    done = data.draw(st.integers(0, count - 1))
    slots = [SessionSlot(number=i + 1, on=d, done=i < done) for i, d in enumerate(plan.sessions)]
    number = data.draw(st.integers(1, count))
    target = slots[number - 1].on
    new_date = target + timedelta(days=data.draw(st.integers(-30, 60)))
    today = start + timedelta(days=data.draw(st.integers(0, 40)))
    trips = data.draw(trip_lists(start))
    check = check_session_change(
        number, new_date, slots, cp, today=today, trips=trips, conservative=conservative
    )
    assert check.accepted is (not check.reasons)
    if not check.accepted:
        assert check.new_dates == []
        return
    later = [s for s in slots if s.number > number and not s.done]
    assert len(check.new_dates) == 1 + len(later)
    assert check.new_dates[0] == new_date
    assert new_date >= today
    for slot, d in zip(later, check.new_dates[1:], strict=True):
        assert d >= slot.on  # later sessions only move later, and only when needed
        if d != slot.on:
            assert slot.number in check.shifted_sessions
    previous = next((s.on for s in reversed(slots) if s.number < number), None)
    pending_before = [s for s in slots if s.number < number and not s.done]
    remaining = [s.on for s in pending_before] + check.new_dates
    assert_course_rules(
        check.new_dates,
        cp,
        earliest=today,
        trips=[t for t in trips if not remaining or t.start >= remaining[0]] if False else [],
        previous=previous,
        conservative=conservative,
    )
    # trips: no new date inside one; none starts between the first remaining session and
    # trip_buffer_days after the last one
    buffer = timedelta(days=cp.protocol.trip_buffer_days)
    last = check.new_dates[-1]
    for trip in trips:
        assert not any(trip.contains(d) for d in check.new_dates)
        if trip.start >= min(remaining):
            assert last <= trip.start - buffer
