"""Pure date helpers: months, local days across time zones and DST, open days."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflows.calendar import (
    add_months,
    clinic_today,
    end_of_local_day,
    is_open_day,
    local_datetime,
    next_open_day,
)
from workflows.protocol import ClinicSettings


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (date(2026, 11, 30), 3, date(2027, 2, 28)),  # clamped, non-leap
        (date(2027, 11, 30), 3, date(2028, 2, 29)),  # clamped, leap
        (date(2028, 2, 29), 12, date(2029, 2, 28)),  # leap day + a year
        (date(2028, 2, 29), 48, date(2032, 2, 29)),  # leap day + 4 years
        (date(2027, 1, 31), 1, date(2027, 2, 28)),
        (date(2028, 1, 31), 1, date(2028, 2, 29)),
        (date(2027, 3, 31), 1, date(2027, 4, 30)),
        (date(2027, 12, 31), 2, date(2028, 2, 29)),
        (date(2027, 10, 15), 3, date(2028, 1, 15)),  # year wrap
        (date(2027, 3, 31), -1, date(2027, 2, 28)),  # backwards
        (date(2027, 1, 15), -1, date(2026, 12, 15)),
        (date(2027, 5, 5), 0, date(2027, 5, 5)),
    ],
)
def test_add_months(start: date, months: int, expected: date) -> None:
    assert add_months(start, months) == expected


@settings(max_examples=200, deadline=None)
@given(
    st.dates(min_value=date(2000, 1, 1), max_value=date(2080, 12, 31)),
    st.integers(min_value=-240, max_value=240),
)
def test_add_months_properties(d: date, months: int) -> None:
    result = add_months(d, months)
    assert (result.year * 12 + result.month) - (d.year * 12 + d.month) == months
    assert result.day <= d.day
    if result.day < d.day:  # clamped: it is the month's last day
        assert (result + timedelta(days=1)).day == 1


class TestClinicToday:
    def test_kiritimati_utc_plus_14(self) -> None:
        tz = "Pacific/Kiritimati"
        assert clinic_today(datetime(2027, 1, 1, 9, 59, tzinfo=UTC), tz) == date(2027, 1, 1)
        assert clinic_today(datetime(2027, 1, 1, 10, 0, tzinfo=UTC), tz) == date(2027, 1, 2)

    def test_pago_pago_utc_minus_11(self) -> None:
        tz = "Pacific/Pago_Pago"
        assert clinic_today(datetime(2027, 1, 1, 10, 59, tzinfo=UTC), tz) == date(2026, 12, 31)
        assert clinic_today(datetime(2027, 1, 1, 11, 0, tzinfo=UTC), tz) == date(2027, 1, 1)

    def test_same_instant_two_dates(self) -> None:
        now = datetime(2027, 6, 15, 12, 0, tzinfo=UTC)
        assert clinic_today(now, "Pacific/Kiritimati") == date(2027, 6, 16)
        assert clinic_today(now, "Pacific/Pago_Pago") == date(2027, 6, 15)
        assert clinic_today(now, "UTC") == date(2027, 6, 15)

    def test_naive_now_refused(self) -> None:
        with pytest.raises(ValueError, match="aware"):
            clinic_today(datetime(2027, 1, 1, 12, 0), "UTC")


class TestLocalDatetime:
    tz = "Europe/Berlin"

    def test_spring_forward_last_sunday_of_march(self) -> None:
        # 2027-03-28 is the last Sunday of March: CET (+1) → CEST (+2).
        before = local_datetime(date(2027, 3, 27), time(9, 0), self.tz)
        after = local_datetime(date(2027, 3, 28), time(9, 0), self.tz)
        assert before == datetime(2027, 3, 27, 8, 0, tzinfo=UTC)
        assert after == datetime(2027, 3, 28, 7, 0, tzinfo=UTC)
        assert before.tzinfo is UTC

    def test_fall_back_last_sunday_of_october(self) -> None:
        # 2027-10-31 is the last Sunday of October: CEST (+2) → CET (+1).
        before = local_datetime(date(2027, 10, 30), time(9, 0), self.tz)
        after = local_datetime(date(2027, 10, 31), time(9, 0), self.tz)
        assert before == datetime(2027, 10, 30, 7, 0, tzinfo=UTC)
        assert after == datetime(2027, 10, 31, 8, 0, tzinfo=UTC)

    def test_gap_and_fold(self) -> None:
        gap = local_datetime(date(2027, 3, 28), time(2, 30), self.tz)
        assert gap == datetime(2027, 3, 28, 1, 30, tzinfo=UTC)
        fold = local_datetime(date(2027, 10, 31), time(2, 30), self.tz)
        assert fold == datetime(2027, 10, 31, 0, 30, tzinfo=UTC)  # first occurrence (CEST)

    def test_far_zones(self) -> None:
        assert local_datetime(date(2027, 1, 2), time(9, 0), "Pacific/Kiritimati") == datetime(
            2027, 1, 1, 19, 0, tzinfo=UTC
        )
        assert local_datetime(date(2027, 1, 1), time(9, 0), "Pacific/Pago_Pago") == datetime(
            2027, 1, 1, 20, 0, tzinfo=UTC
        )

    def test_round_trip_with_clinic_today(self) -> None:
        for tz in ("Europe/Berlin", "Pacific/Kiritimati", "Pacific/Pago_Pago", "UTC"):
            d = date(2027, 3, 28)
            assert clinic_today(local_datetime(d, time(0, 0), tz), tz) == d
            assert clinic_today(end_of_local_day(d, tz) - timedelta(microseconds=1), tz) == d
            assert clinic_today(end_of_local_day(d, tz), tz) == d + timedelta(days=1)


class TestEndOfLocalDay:
    def test_berlin_dst_days(self) -> None:
        tz = "Europe/Berlin"
        spring = end_of_local_day(date(2027, 3, 28), tz)
        assert spring == datetime(2027, 3, 28, 22, 0, tzinfo=UTC)
        start = local_datetime(date(2027, 3, 28), time(0, 0), tz)
        assert spring - start == timedelta(hours=23)
        autumn_start = local_datetime(date(2027, 10, 31), time(0, 0), tz)
        assert end_of_local_day(date(2027, 10, 31), tz) - autumn_start == timedelta(hours=25)

    def test_kiritimati(self) -> None:
        assert end_of_local_day(date(2027, 1, 1), "Pacific/Kiritimati") == datetime(
            2027, 1, 1, 10, 0, tzinfo=UTC
        )


class TestOpenDays:
    weekdays = ClinicSettings()  # Monday–Friday
    weekends = ClinicSettings(open_weekdays=(5, 6))

    def test_is_open_day(self) -> None:
        assert is_open_day(date(2027, 4, 23), self.weekdays)  # Friday
        assert not is_open_day(date(2027, 4, 24), self.weekdays)  # Saturday
        assert not is_open_day(date(2027, 4, 25), self.weekdays)  # Sunday
        assert is_open_day(date(2027, 4, 24), self.weekends)

    def test_next_open_day(self) -> None:
        assert next_open_day(date(2027, 4, 23), self.weekdays) == date(2027, 4, 23)
        assert next_open_day(date(2027, 4, 24), self.weekdays) == date(2027, 4, 26)
        assert next_open_day(date(2027, 4, 26), self.weekends) == date(2027, 5, 1)
        only_wed = ClinicSettings(open_weekdays=(2,))
        assert next_open_day(date(2027, 4, 22), only_wed) == date(2027, 4, 28)
