"""The pure slot search (scheduling/search.py): properties over random clinics, bookings and
preferences (every slot inside working hours, on an allowed day, outside closures, clear of
busy ranges with turnover, needs met, ordered by preference), DST days, and the clinic file's
``[scheduling]`` section."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduling.preferences import SlotPreferences
from scheduling.resources import (
    WEEKDAYS,
    ClinicScheduling,
    Closure,
    Resource,
    SchedulingFileError,
    SlotRules,
    TimeRange,
    WeekHours,
    scheduling_from_dict,
    scheduling_from_file,
)
from scheduling.search import Busy, Capacity, first_free_day, local_start, search
from workflows.protocol import ProtocolFileError, clinic_protocol_from_dict, load_clinic_protocol

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ZONES = ["Europe/Berlin", "America/New_York", "Australia/Sydney", "UTC"]
# Weeks holding a DST change in one of the zones above (and one without).
BASES = [
    date(2027, 3, 24),
    date(2027, 10, 27),
    date(2027, 3, 10),
    date(2027, 4, 1),
    date(2027, 1, 11),
]


# ---------------------------------------------------------------- strategies


@st.composite
def ranges(draw: st.DrawFn) -> list[TimeRange]:
    """0–2 non-overlapping local ranges of one day, on a 15-minute grid (some around 02:00)."""
    cuts = sorted(draw(st.sets(st.integers(0, 95), min_size=0, max_size=4)))
    if len(cuts) % 2:
        cuts = cuts[:-1]
    out = []
    for a, b in zip(cuts[::2], cuts[1::2], strict=True):
        out.append(TimeRange(start=time(a // 4, a % 4 * 15), end=time(b // 4, b % 4 * 15)))
    return out


@st.composite
def week_hours(draw: st.DrawFn) -> WeekHours:
    return WeekHours.model_validate({name: draw(ranges()) for name in WEEKDAYS})


@st.composite
def clinics(draw: st.DrawFn) -> tuple[Capacity, list[date], date]:
    zone = draw(st.sampled_from(ZONES))
    base = draw(st.sampled_from(BASES))
    devices = draw(st.integers(1, 3))
    pracs = draw(st.integers(1, 2))
    resources = [Resource(resource_id=f"dev-{i}", kind="device") for i in range(devices)] + [
        Resource(resource_id=f"prac-{i}", kind="practitioner") for i in range(pracs)
    ]
    default = draw(week_hours())
    hours = {
        r.resource_id: (draw(week_hours()) if draw(st.booleans()) else default) for r in resources
    }
    day_offsets = draw(st.sets(st.integers(0, 13), min_size=1, max_size=10))
    days = sorted(base + timedelta(days=o) for o in day_offsets)
    closures = []
    for _ in range(draw(st.integers(0, 3))):
        start = base + timedelta(days=draw(st.integers(0, 13)))
        closures.append(
            Closure(
                starts_on=start,
                ends_on=start + timedelta(days=draw(st.integers(0, 2))),
                reason="closed",
                resource_id=draw(st.sampled_from([None, *(r.resource_id for r in resources)])),
            )
        )
    rules = SlotRules(
        turnover_minutes=draw(st.sampled_from([0, 5, 10, 30])),
        step_minutes=draw(st.sampled_from([5, 15, 30, 60])),
        needs={"device": draw(st.integers(1, 2)), "practitioner": 1},
    )
    cap = Capacity(
        timezone=zone,
        resources=tuple(resources),
        hours=hours,
        closures=tuple(closures),
        rules=rules,
    )
    preferred = base + timedelta(days=draw(st.integers(0, 13)))
    return cap, days, preferred


@st.composite
def busy_of(
    draw: st.DrawFn, cap: Capacity, days: list[date]
) -> dict[str, list[tuple[datetime, datetime]]]:
    zone = ZoneInfo(cap.timezone)
    out: dict[str, list[tuple[datetime, datetime]]] = {}
    for r in cap.resources:
        for _ in range(draw(st.integers(0, 6))):
            day = draw(st.sampled_from(days))
            minute = draw(st.integers(0, 24 * 60 - 1))
            start = datetime.combine(day, time(minute // 60, minute % 60)).replace(tzinfo=zone)
            length = timedelta(minutes=draw(st.integers(5, 180)))
            out.setdefault(r.resource_id, []).append(
                (start.astimezone(UTC), (start + length).astimezone(UTC))
            )
    return out


preferences = st.builds(
    SlotPreferences,
    weekdays=st.lists(st.integers(0, 6), max_size=3),
    day_parts=st.lists(st.sampled_from(["morning", "afternoon", "evening"]), max_size=2),
)


# ---------------------------------------------------------------- properties


def _inside_hours(cap: Capacity, rid: str, day: date, start: datetime, end: datetime) -> bool:
    zone = ZoneInfo(cap.timezone)
    for r in cap.hours[rid].on(day.weekday()):
        lo = datetime.combine(day, r.start).replace(tzinfo=zone)
        hi = datetime.combine(day, r.end).replace(tzinfo=zone)
        if lo <= start and end <= hi:
            return True
    return False


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(), clinic=clinics(), prefs=preferences, duration=st.sampled_from([15, 25, 45, 90])
)
def test_every_slot_is_free_and_inside_the_rules(
    data: st.DataObject,
    clinic: tuple[Capacity, list[date], date],
    prefs: SlotPreferences,
    duration: int,
) -> None:
    cap, days, preferred = clinic
    intervals = data.draw(busy_of(cap, days))
    exact = data.draw(st.none() | st.sampled_from([time(9, 0), time(2, 30), time(14, 15)]))
    found = search(
        cap,
        Busy(intervals),
        days,
        duration_minutes=duration,
        preferred_on=preferred,
        preferences=prefs,
        exact_time=exact,
        limit=500,
    )
    zone = ZoneInfo(cap.timezone)
    turnover = timedelta(minutes=cap.rules.turnover_minutes)
    kinds = {r.resource_id: r.kind for r in cap.resources}
    for c in found:
        assert c.on in days
        local = c.starts_at.astimezone(zone)
        assert local.date() == c.on
        assert local.time() == c.local_time
        assert c.ends_at - c.starts_at == timedelta(minutes=duration)
        if exact is not None:
            assert c.local_time == exact
        counts = Counter(kinds[r.resource_id] for r in c.resources)
        assert counts == Counter({k: n for k, n in cap.rules.needs.items() if n})
        assert len({r.resource_id for r in c.resources}) == len(c.resources)
        for r in c.resources:
            assert _inside_hours(cap, r.resource_id, c.on, c.starts_at, c.ends_at)
            assert not any(cl.covers(c.on, r.resource_id) for cl in cap.closures)
            for s, e in intervals.get(r.resource_id, []):
                assert e <= c.starts_at or c.ends_at + turnover <= s, (r, s, e, c)
        assert c.matches == (prefs.day_matches(c.on.weekday()) and prefs.time_matches(c.local_time))
    # Ordering: preference matches first, then nearness to the preferred day, then the start.
    keys = [(not c.matches, abs((c.on - preferred).days), c.on, c.starts_at) for c in found]
    assert keys == sorted(keys)
    assert len({c.starts_at for c in found}) == len(found)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clinic=clinics())
def test_an_empty_clinic_day_offers_every_grid_start(
    clinic: tuple[Capacity, list[date], date],
) -> None:
    """Completeness on a clinic where every resource shares one range and nothing is busy."""
    cap, days, preferred = clinic
    hours = WeekHours.model_validate({name: ["08:00-12:00"] for name in WEEKDAYS})
    cap = Capacity(
        timezone=cap.timezone,
        resources=cap.resources,
        hours={r.resource_id: hours for r in cap.resources},
        rules=SlotRules(turnover_minutes=0, step_minutes=30, needs={"device": 1}),
    )
    found = search(cap, Busy(), days, duration_minutes=30, preferred_on=preferred, limit=500)
    assert len(found) == 8 * len(days)


# ---------------------------------------------------------------- DST and examples


def _one_room(zone: str, hours: str = "00:00-06:00") -> Capacity:
    week = WeekHours.model_validate({name: [hours] for name in WEEKDAYS})
    return Capacity(
        timezone=zone,
        resources=(Resource(resource_id="room", kind="room"),),
        hours={"room": week},
        rules=SlotRules(turnover_minutes=0, step_minutes=30, needs={"room": 1}),
    )


def test_spring_forward_skips_the_missing_hour() -> None:
    day = date(2027, 3, 28)  # Berlin: 02:00 → 03:00
    found = search(_one_room("Europe/Berlin"), Busy(), [day], duration_minutes=30, limit=100)
    walls = [c.local_time for c in found]
    assert time(2, 0) not in walls and time(2, 30) not in walls
    assert walls[:4] == [time(0, 0), time(0, 30), time(1, 0), time(1, 30)]
    # 01:30 + 30 minutes is 03:00 local (an absolute half hour).
    c = next(c for c in found if c.local_time == time(1, 30))
    assert c.ends_at.astimezone(ZoneInfo("Europe/Berlin")).time() == time(3, 0)
    assert all(c.ends_at - c.starts_at == timedelta(minutes=30) for c in found)


def test_fall_back_uses_the_first_occurrence() -> None:
    day = date(2027, 10, 31)  # Berlin: 03:00 → 02:00
    found = search(_one_room("Europe/Berlin"), Busy(), [day], duration_minutes=30, limit=100)
    at = next(c for c in found if c.local_time == time(2, 30))
    assert at.starts_at == datetime(2027, 10, 31, 0, 30, tzinfo=UTC)  # 02:30 CEST
    assert local_start(day, time(2, 30), ZoneInfo("Europe/Berlin")) == at.starts_at


def test_office_hours_follow_the_offset_across_the_change() -> None:
    cap = _one_room("Europe/Berlin", "09:00-10:00")
    before, after = date(2027, 3, 26), date(2027, 3, 29)
    found = search(cap, Busy(), [before, after], duration_minutes=60, preferred_on=before)
    assert [c.starts_at for c in found] == [
        datetime(2027, 3, 26, 8, 0, tzinfo=UTC),
        datetime(2027, 3, 29, 7, 0, tzinfo=UTC),
    ]


def test_turnover_is_held_after_each_session() -> None:
    cap = _one_room("UTC", "09:00-11:00")
    cap = Capacity(
        timezone="UTC",
        resources=cap.resources,
        hours=cap.hours,
        rules=SlotRules(turnover_minutes=15, step_minutes=15, needs={"room": 1}),
    )
    day = date(2027, 1, 12)
    booked = (datetime(2027, 1, 12, 9, 0, tzinfo=UTC), datetime(2027, 1, 12, 9, 45, tzinfo=UTC))
    found = search(cap, Busy({"room": [booked]}), [day], duration_minutes=30, limit=20)
    assert [c.local_time for c in found] == [time(9, 45), time(10, 0), time(10, 15), time(10, 30)]
    # Turnover may run past closing time; the session itself may not.
    assert found[-1].ends_at == datetime(2027, 1, 12, 11, 0, tzinfo=UTC)


def test_first_free_day_skips_closures() -> None:
    cap = _one_room("UTC", "09:00-10:00")
    cap = Capacity(
        timezone="UTC",
        resources=cap.resources,
        hours=cap.hours,
        closures=(Closure(starts_on=date(2027, 1, 13), ends_on=date(2027, 1, 15), reason="x"),),
        rules=cap.rules,
    )
    assert first_free_day(cap, Busy(), date(2027, 1, 12), duration_minutes=30) == date(2027, 1, 16)
    assert first_free_day(cap, Busy(), date(2027, 1, 12), duration_minutes=30, days=3) is None


def test_example_clinic_files_have_a_scheduling_section_outside_the_protocol() -> None:
    for name in ("clinic.toml", "clinic-south.yaml"):
        section = scheduling_from_file(EXAMPLES / name)
        assert section is not None
        assert {r.kind for r in section.resources} == {"device", "practitioner"}
        assert section.closures
        cp = load_clinic_protocol(EXAMPLES / name)
        assert "scheduling" not in cp.model_dump()


def test_bad_sections_are_refused_with_the_field() -> None:
    assert scheduling_from_dict({"clinic": {}}) is None
    with pytest.raises(SchedulingFileError, match=r"scheduling\.hours\.mon\.0"):
        scheduling_from_dict({"scheduling": {"hours": {"mon": ["17:00-09:00"]}}})
    with pytest.raises(SchedulingFileError, match="unknown key"):
        scheduling_from_dict({"scheduling": {"lasers": 2}})
    with pytest.raises(SchedulingFileError, match="needs 1 practitioner"):
        scheduling_from_dict(
            {"scheduling": {"resources": [{"resource_id": "l1", "kind": "device"}]}}
        )
    with pytest.raises(SchedulingFileError, match="unique"):
        scheduling_from_dict(
            {
                "scheduling": {
                    "needs": {"device": 1},
                    "resources": [
                        {"resource_id": "l1", "kind": "device"},
                        {"resource_id": "l1", "kind": "device"},
                    ],
                }
            }
        )
    # The protocol loader still refuses unknown top-level keys, and ignores [scheduling].
    with pytest.raises(ProtocolFileError):
        clinic_protocol_from_dict({"schedule": {}})
    assert clinic_protocol_from_dict({"scheduling": {"anything": 1}}).clinic.clinic_id
    assert ClinicScheduling().hours.mon
