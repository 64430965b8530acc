"""Season rules: summer months (both hemispheres, explicit), cutoff, window, opening."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflows.protocol import ClinicSettings, Protocol
from workflows.season import (
    course_straddles_summer,
    in_summer,
    is_in_season,
    next_season_opening,
    next_summer_start_after,
    season_cutoff,
    season_window,
    summer_end,
    summer_start_after,
)

NORTH = ClinicSettings(hemisphere="north")
SOUTH = ClinicSettings(hemisphere="south")
P = Protocol()


@pytest.mark.parametrize(
    ("clinic", "d", "in_season"),
    [
        (NORTH, date(2027, 5, 31), True),
        (NORTH, date(2027, 6, 1), False),  # first day of summer
        (NORTH, date(2027, 8, 31), False),  # last day of summer
        (NORTH, date(2027, 9, 1), True),
        (NORTH, date(2027, 12, 25), True),
        (SOUTH, date(2026, 11, 30), True),
        (SOUTH, date(2026, 12, 1), False),  # first day of summer
        (SOUTH, date(2027, 1, 1), False),
        (SOUTH, date(2027, 2, 28), False),  # last day of summer (non-leap)
        (SOUTH, date(2028, 2, 29), False),  # last day of summer (leap)
        (SOUTH, date(2027, 3, 1), True),
        (SOUTH, date(2027, 7, 1), True),
    ],
)
def test_summer_boundaries(clinic: ClinicSettings, d: date, in_season: bool) -> None:
    check = is_in_season(d, clinic)
    assert check.in_season is in_season
    assert in_summer(d, clinic) is not in_season
    assert (check.reason is None) is in_season


def test_in_summer_reason_message() -> None:
    check = is_in_season(date(2027, 7, 1), NORTH)
    assert check.reason is not None
    assert check.reason.rule == "in_summer"
    assert "1 July 2027 is in summer (June–August)" in check.reason.message
    assert "opens again on 1 September 2027" in check.reason.message
    south = is_in_season(date(2027, 1, 15), SOUTH).reason
    assert south is not None
    assert "(December–February)" in south.message
    assert "1 March 2027" in south.message


def test_summer_start_after() -> None:
    assert summer_start_after(date(2027, 5, 31), NORTH) == date(2027, 6, 1)
    assert summer_start_after(date(2027, 7, 15), NORTH) == date(2027, 6, 1)  # inside: that one
    assert summer_start_after(date(2027, 9, 1), NORTH) == date(2028, 6, 1)
    assert summer_start_after(date(2027, 1, 15), SOUTH) == date(2026, 12, 1)
    assert summer_start_after(date(2026, 11, 30), SOUTH) == date(2026, 12, 1)
    assert summer_start_after(date(2027, 3, 1), SOUTH) == date(2027, 12, 1)


def test_summer_end_and_opening() -> None:
    assert summer_end(date(2027, 6, 1), NORTH) == date(2027, 8, 31)
    assert summer_end(date(2027, 12, 1), SOUTH) == date(2028, 2, 29)
    assert next_season_opening(date(2027, 8, 31), NORTH) == date(2027, 9, 1)
    assert next_season_opening(date(2027, 6, 1), NORTH) == date(2027, 9, 1)
    assert next_season_opening(date(2027, 5, 31), NORTH) == date(2027, 5, 31)
    assert next_season_opening(date(2027, 1, 15), SOUTH) == date(2027, 3, 1)
    assert next_season_opening(date(2027, 12, 1), SOUTH) == date(2028, 3, 1)


def test_cutoff_north_is_may_2() -> None:
    assert season_cutoff(date(2026, 10, 1), NORTH, P) == date(2027, 5, 2)
    assert season_cutoff(date(2027, 5, 2), NORTH, P) == date(2027, 5, 2)
    assert season_cutoff(date(2027, 5, 20), NORTH, P) == date(2027, 5, 2)  # d after its cutoff
    assert season_cutoff(date(2027, 7, 1), NORTH, P) == date(2028, 5, 2)  # in summer: next


def test_cutoff_south_is_november_1() -> None:
    assert season_cutoff(date(2026, 3, 1), SOUTH, P) == date(2026, 11, 1)
    assert season_cutoff(date(2027, 1, 1), SOUTH, P) == date(2027, 11, 1)


def test_cutoff_follows_buffer() -> None:
    assert season_cutoff(date(2027, 1, 1), NORTH, Protocol(summer_buffer_days=0)) == date(
        2027, 5, 31
    )
    assert season_cutoff(date(2027, 1, 1), NORTH, Protocol(summer_buffer_days=31)) == date(
        2027, 5, 1
    )


def test_season_window_boundaries() -> None:
    assert season_window(date(2027, 5, 2), NORTH, P) == (date(2027, 5, 2), date(2027, 5, 2))
    assert season_window(date(2027, 5, 3), NORTH, P) == (date(2027, 9, 1), date(2028, 5, 2))
    assert season_window(date(2027, 6, 1), NORTH, P) == (date(2027, 9, 1), date(2028, 5, 2))
    assert season_window(date(2026, 11, 1), SOUTH, P) == (date(2026, 11, 1), date(2026, 11, 1))
    assert season_window(date(2026, 11, 2), SOUTH, P) == (date(2027, 3, 1), date(2027, 11, 1))


def test_explicit_summer_months() -> None:
    july = ClinicSettings(summer_months=(7,))
    assert not is_in_season(date(2027, 7, 1), july).in_season
    assert is_in_season(date(2027, 6, 30), july).in_season
    assert is_in_season(date(2027, 8, 1), july).in_season
    assert season_cutoff(date(2027, 1, 1), july, P) == date(2027, 6, 1)
    wrap = ClinicSettings(hemisphere="north", summer_months=(11, 12, 1))  # overrides north
    assert is_in_season(date(2027, 7, 1), wrap).in_season
    assert not is_in_season(date(2026, 11, 1), wrap).in_season
    assert not is_in_season(date(2027, 1, 31), wrap).in_season
    assert is_in_season(date(2027, 2, 1), wrap).in_season
    assert summer_start_after(date(2027, 1, 10), wrap) == date(2026, 11, 1)
    assert next_season_opening(date(2027, 1, 10), wrap) == date(2027, 2, 1)
    assert season_cutoff(date(2027, 2, 1), wrap, P) == date(2027, 10, 2)


@settings(max_examples=200, deadline=None)
@given(
    st.dates(min_value=date(2020, 1, 1), max_value=date(2040, 12, 31)),
    st.sampled_from(
        [NORTH, SOUTH, ClinicSettings(summer_months=(7,)), ClinicSettings(summer_months=(11, 12))]
    ),
    st.integers(min_value=0, max_value=60),
)
def test_window_properties(d: date, clinic: ClinicSettings, buffer: int) -> None:
    protocol = Protocol(summer_buffer_days=buffer)
    opens, cutoff = season_window(d, clinic, protocol)
    assert d <= opens <= cutoff
    assert not in_summer(opens, clinic)
    assert not in_summer(cutoff, clinic)
    summer = summer_start_after(opens, clinic)
    assert summer > cutoff
    assert summer - cutoff == timedelta(days=max(buffer, 1))
    # no summer day between opens and cutoff
    assert summer_start_after(opens, clinic) == summer_start_after(cutoff, clinic)
    # the opening is either d or the first day after a summer / the next season's opening
    if opens != d:
        assert in_summer(opens - timedelta(days=1), clinic) or opens > season_cutoff(
            d, clinic, protocol
        )


# ---------------------------------------------------------------- course_straddles_summer


@pytest.mark.parametrize(
    ("clinic", "dates", "straddles"),
    [
        # north: summer begins 1 June
        (NORTH, [date(2027, 4, 1), date(2027, 9, 1)], True),
        (NORTH, [date(2027, 5, 31), date(2027, 6, 1)], True),  # summer begins on the last date
        (NORTH, [date(2027, 6, 1), date(2027, 9, 1)], False),  # begins on the first: not after
        (NORTH, [date(2027, 7, 1), date(2027, 9, 1)], False),  # starts inside a summer
        (NORTH, [date(2026, 10, 1), date(2027, 4, 1)], False),  # one season (over New Year)
        (NORTH, [date(2026, 10, 1), date(2027, 2, 1), date(2027, 4, 1)], False),  # trip wait
        (NORTH, [date(2027, 4, 1), date(2027, 5, 1), date(2027, 9, 20)], True),
        (NORTH, [date(2027, 9, 1), date(2027, 4, 1)], True),  # order does not matter
        # south: summer begins 1 December and wraps into the new year
        (SOUTH, [date(2026, 11, 1), date(2027, 3, 1)], True),
        (SOUTH, [date(2026, 11, 30), date(2026, 12, 1)], True),
        (SOUTH, [date(2027, 3, 1), date(2027, 11, 1)], False),
        (SOUTH, [date(2027, 1, 15), date(2027, 3, 15)], False),  # starts inside the summer
        (SOUTH, [date(2026, 3, 1), date(2027, 3, 1)], True),
        # too few dates
        (NORTH, [], False),
        (NORTH, [date(2027, 4, 1)], False),
        (NORTH, [date(2027, 4, 1), date(2027, 4, 1)], False),
    ],
)
def test_course_straddles_summer(
    clinic: ClinicSettings, dates: list[date], straddles: bool
) -> None:
    assert course_straddles_summer(dates, clinic) is straddles


def test_course_straddles_explicit_and_wrapping_summers() -> None:
    july = ClinicSettings(summer_months=(7,))
    assert course_straddles_summer([date(2027, 6, 1), date(2027, 7, 1)], july)
    assert not course_straddles_summer([date(2027, 6, 1), date(2027, 6, 30)], july)
    assert not course_straddles_summer([date(2027, 8, 1), date(2028, 6, 30)], july)
    wrap = ClinicSettings(hemisphere="north", summer_months=(12, 1, 2))  # overrides north
    assert course_straddles_summer([date(2026, 11, 2), date(2027, 3, 1)], wrap)
    assert not course_straddles_summer([date(2027, 4, 1), date(2027, 8, 31)], wrap)
    assert not course_straddles_summer([date(2027, 1, 5), date(2027, 11, 30)], wrap)


def _summer_starts_between(first: date, last: date, clinic: ClinicSettings) -> bool:
    """Brute force: a day in (first, last] that is in summer while the day before is not."""
    d = first + timedelta(days=1)
    while d <= last:
        if in_summer(d, clinic) and not in_summer(d - timedelta(days=1), clinic):
            return True
        d += timedelta(days=1)
    return False


@st.composite
def clinics(draw: st.DrawFn) -> ClinicSettings:
    """North, south, or an explicit run of 1–11 months (wrapping December → January too)."""
    kind = draw(st.sampled_from(["north", "south", "explicit"]))
    if kind != "explicit":
        return ClinicSettings(hemisphere=kind)
    first = draw(st.integers(min_value=1, max_value=12))
    length = draw(st.integers(min_value=1, max_value=11))
    months = tuple((first - 1 + i) % 12 + 1 for i in range(length))
    return ClinicSettings(
        hemisphere=draw(st.sampled_from(["north", "south"])), summer_months=months
    )


@settings(max_examples=300, deadline=None)
@given(
    clinics(),
    st.lists(
        st.dates(min_value=date(2024, 1, 1), max_value=date(2026, 12, 31)), min_size=0, max_size=6
    ),
)
def test_course_straddles_summer_matches_brute_force(
    clinic: ClinicSettings, dates: list[date]
) -> None:
    expected = len(dates) >= 2 and _summer_starts_between(min(dates), max(dates), clinic)
    assert course_straddles_summer(dates, clinic) is expected


@settings(max_examples=200, deadline=None)
@given(
    clinics(),
    st.dates(min_value=date(2024, 1, 1), max_value=date(2030, 12, 31)),
    st.integers(min_value=0, max_value=60),
    st.lists(st.integers(min_value=0, max_value=400), min_size=1, max_size=5),
)
def test_course_inside_one_season_never_straddles(
    clinic: ClinicSettings, d: date, buffer: int, offsets: list[int]
) -> None:
    # every date in one season window (however long the waits between them): never split
    protocol = Protocol(summer_buffer_days=min(buffer, 27))
    opens, cutoff = season_window(d, clinic, protocol)
    span = (cutoff - opens).days
    dates = [opens + timedelta(days=o % (span + 1)) for o in offsets] + [opens]
    assert not course_straddles_summer(dates, clinic)
    # and a date after the next summer begins always splits it
    after = next_summer_start_after(opens, clinic)
    assert course_straddles_summer([*dates, after], clinic)
