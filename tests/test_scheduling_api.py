"""Built-in scheduling over HTTP (api/routes/scheduling.py): the clinic's resources, hours,
closures and rules (with their permission and bounds), preferences at enrolment and by staff,
and the free times of a session for staff and for the patient, inside the allowed window; a
patient moving a session to one of them gets that slot reserved."""

from __future__ import annotations

import re
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from activities import repository
from tests.test_api import Stack, enrol, eventually, stack  # noqa: F401 (the fixture)
from workflows.protocol import ClinicProtocol, ClinicSettings

CLINIC = "sched-api"
TZ = "Europe/Paris"


async def add_clinic(s: Stack) -> None:
    await repository.upsert_clinic(
        s.pool,
        ClinicProtocol(
            clinic=ClinicSettings(
                clinic_id=CLINIC, name="Sched", timezone=TZ, open_weekdays=(0, 1, 2, 3, 4)
            )
        ),
    )


async def set_up_resources(s: Stack) -> None:
    base = f"/api/clinics/{CLINIC}/scheduling"
    week = {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}
    r = await s.http.put(f"{base}/hours", json=week, headers=s.auth())
    assert r.status_code == 200, r.text
    rules = {
        "slot_minutes": {"small": 20, "moderate": 30, "large": 30},
        "turnover_minutes": 10,
        "step_minutes": 20,
        "needs": {"device": 1, "practitioner": 1},
    }
    r = await s.http.put(f"{base}/rules", json=rules, headers=s.auth())
    assert r.status_code == 200, r.text
    for rid, kind, label in (
        ("laser-1", "device", "L1"),
        ("laser-2", "device", "L2"),
        ("prac-ab", "practitioner", "AB"),
        ("prac-cd", "practitioner", "CD"),
    ):
        r = await s.http.put(
            f"{base}/resources/{rid}", json={"kind": kind, "label": label}, headers=s.auth()
        )
        assert r.status_code == 200, r.text


async def test_resources_crud_permissions_and_bounds(stack: Stack) -> None:  # noqa: F811
    s = stack
    await add_clinic(s)
    await set_up_resources(s)
    base = f"/api/clinics/{CLINIC}/scheduling"
    got = (await s.http.get(base, headers=s.auth())).json()
    assert [r["resource_id"] for r in got["resources"]] == [
        "laser-1",
        "laser-2",
        "prac-ab",
        "prac-cd",
    ]
    assert got["turnover_minutes"] == 10 and got["hours"]["mon"] == [
        {"start": "09:00", "end": "17:00"}
    ]
    # Reception sees the set-up but may not change it.
    assert (await s.http.get(base, headers=s.auth(s.staff))).status_code == 200
    r = await s.http.put(
        f"{base}/resources/laser-3", json={"kind": "device"}, headers=s.auth(s.staff)
    )
    assert r.status_code == 403
    # Bad input is a 422 naming the field.
    bad: list[tuple[str, str, Any]] = [
        ("PUT", f"{base}/hours", {"mon": ["17:00-09:00"]}),
        ("PUT", f"{base}/hours", {"mon": ["09:00-12:00", "11:00-13:00"]}),
        ("PUT", f"{base}/rules", {"turnover_minutes": 10_000}),
        ("PUT", f"{base}/resources/laser-9", {"kind": "spaceship"}),
        ("PUT", f"{base}/resources/laser-9", {"kind": "device", "label": "x" * 81}),
        ("PUT", f"{base}/resources/laser-9", {"kind": "device", "label": "a\x00b"}),
        (
            "POST",
            f"{base}/closures",
            {"starts_on": "2027-01-02", "ends_on": "2027-01-01", "reason": "x"},
        ),
        (
            "POST",
            f"{base}/closures",
            {"starts_on": "2027-01-01", "ends_on": "2027-01-01", "reason": ""},
        ),
        (
            "POST",
            f"{base}/closures",
            {
                "starts_on": "2027-01-01",
                "ends_on": "2027-01-01",
                "reason": "x",
                "resource_id": "zz",
            },
        ),
    ]
    for method, url, body in bad:
        r = await s.http.request(method, url, json=body, headers=s.auth())
        assert r.status_code == 422, (url, body, r.text)
        assert r.json()["detail"][0]["message"]
    r = await s.http.put(f"{base}/resources/bad%20id", json={"kind": "device"}, headers=s.auth())
    assert r.status_code == 422
    r = await s.http.get("/api/clinics/nope/scheduling", headers=s.auth())
    assert r.status_code == 404
    # Closures: add, list, delete; resources: deactivate.
    r = await s.http.post(
        f"{base}/closures",
        json={
            "starts_on": "2027-01-04",
            "ends_on": "2027-01-05",
            "reason": "Service",
            "resource_id": "laser-2",
        },
        headers=s.auth(),
    )
    assert r.status_code == 201, r.text
    closure_id = r.json()["id"]
    assert (
        await s.http.delete(f"{base}/closures/{closure_id}", headers=s.auth())
    ).status_code == 204
    assert (
        await s.http.delete(f"{base}/closures/{closure_id}", headers=s.auth())
    ).status_code == 404
    assert (await s.http.delete(f"{base}/resources/laser-2", headers=s.auth())).status_code == 204
    assert (await s.http.delete(f"{base}/resources/nope", headers=s.auth())).status_code == 404
    got = (await s.http.get(base, headers=s.auth())).json()
    assert {r["resource_id"]: r["active"] for r in got["resources"]}["laser-2"] is False


async def test_free_times_for_staff_and_patient(stack: Stack) -> None:  # noqa: F811
    s = stack
    await add_clinic(s)
    await set_up_resources(s)
    created = await enrol(
        s,
        clinic_id=CLINIC,
        scheduling_preferences={"weekdays": [1, 3], "day_parts": ["afternoon"]},
    )
    pid = created["patient_id"]
    token = created["patient_link"].rsplit("/", 1)[1]

    async def first_reserved() -> asyncpg.Record | None:
        return await s.pool.fetchrow(
            "SELECT starts_at, count(*) OVER () AS n FROM slot_reservations "
            "WHERE workflow_id = $1 AND session_number = 1 AND status = 'active'",
            f"journey-{pid}",
        )

    row = await eventually(first_reserved, timeout=30)
    local = row["starts_at"].astimezone(ZoneInfo(TZ))
    # The patient's preferences: a Tuesday or Thursday afternoon (the window holds several).
    assert local.weekday() in (1, 3) and local.time() >= time(12)
    assert row["n"] == 2  # a laser and a practitioner

    # A closure added after the booking does not move it: the answer names it for staff.
    day = local.date().isoformat()
    base = f"/api/clinics/{CLINIC}/scheduling/closures"
    r = await s.http.post(
        base,
        json={"starts_on": day, "ends_on": day, "reason": "Power cut"},
        headers=s.auth(),
    )
    assert r.status_code == 201, r.text
    held = r.json()["held_sessions"]
    assert [(h["patient_id"], h["session_number"]) for h in held] == [(pid, 1)]
    assert len(held[0]["resources"]) == 2
    await s.http.delete(f"{base}/{r.json()['id']}", headers=s.auth())
    r = await s.http.post(
        base,
        json={"starts_on": "2099-01-01", "ends_on": "2099-01-02", "reason": "Far away"},
        headers=s.auth(),
    )
    assert r.status_code == 201 and r.json()["held_sessions"] == []
    await s.http.delete(f"{base}/{r.json()['id']}", headers=s.auth())

    r = await s.http.get(f"/api/journeys/{pid}/scheduling-preferences", headers=s.auth())
    assert r.json()["weekdays"] == [1, 3]
    r = await s.http.put(
        f"/api/journeys/{pid}/scheduling-preferences",
        json={"weekdays": [9]},
        headers=s.auth(),
    )
    assert r.status_code == 422

    r = await s.http.get(f"/api/journeys/{pid}/sessions/1/free-times", headers=s.auth())
    assert r.status_code == 200, r.text
    staff_view = r.json()
    assert staff_view["capacity_known"] is True
    allowed = {date.fromisoformat(d) for d in staff_view["allowed_days"]}
    times = staff_view["free_times"]
    assert 0 < len(times) <= 20
    for t in times:
        assert date.fromisoformat(t["on"]) in allowed
        assert {x["kind"] for x in t["resources"]} == {"device", "practitioner"}
    per_day: dict[str, int] = {}
    for t in times:
        per_day[t["on"]] = per_day.get(t["on"], 0) + 1
    assert max(per_day.values()) <= 3

    r = await s.http.get(
        "/api/me/sessions/1/free-times", headers={"Authorization": f"Bearer {token}"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["free_times"] == times
    assert (await s.http.get("/api/me/sessions/1/free-times")).status_code == 401
    r = await s.http.get(f"/api/journeys/{pid}/sessions/0/free-times", headers=s.auth())
    assert r.status_code == 422
    r = await s.http.get(f"/api/journeys/{pid}/sessions/9/free-times", headers=s.auth())
    assert r.status_code == 422
    r = await s.http.get(f"/api/journeys/{pid}/sessions/1/free-times?limit=500", headers=s.auth())
    assert r.status_code == 422

    # The patient page offers the same times; picking one moves the session into that slot.
    page = await s.http.get(f"/p/{token}?session=1")
    assert page.status_code == 200, page.text
    assert 'id="free-times"' in page.text
    offered = re.findall(r'name="slot" value="([^"]+)"', page.text)
    assert offered and len(offered) <= 20
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    pick = offered[-1]
    r = await s.http.post(
        f"/p/{token}/reschedule",
        data={
            "csrf_token": csrf.group(1),
            "request_id": "pick-1",
            "session_number": "1",
            "slot": pick,
        },
    )
    assert r.status_code in (200, 303), r.text
    day, hhmm = pick.split(" ")
    wanted = datetime.combine(date.fromisoformat(day), time.fromisoformat(hhmm), ZoneInfo(TZ))

    async def moved() -> bool:
        found = await first_reserved()
        return found is not None and found["starts_at"] == wanted

    await eventually(moved, timeout=30)

    # Staff see the free times on the journey page, next to the reschedule form.
    login = await s.http.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text)
    assert csrf is not None
    r = await s.http.post("/login", data={"csrf_token": csrf.group(1), "token": s.admin})
    assert r.status_code in (200, 303), r.text
    page = await s.http.get(f"/journeys/{pid}")
    assert page.status_code == 200, page.text
    assert 'id="free-times"' in page.text and "Free times for session 1" in page.text

    # Through the API too: another offered time, exactly.
    r = await s.http.get(
        "/api/me/sessions/1/free-times", headers={"Authorization": f"Bearer {token}"}
    )
    other = r.json()["free_times"][0]
    r = await s.http.post(
        "/api/me/reschedule",
        json={"session_number": 1, "new_date": other["on"], "new_time": other["local_time"][:5]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200, r.text
    wanted = datetime.fromisoformat(other["starts_at"])
    await eventually(moved, timeout=30)
