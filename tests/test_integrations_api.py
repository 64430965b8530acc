"""The integration HTTP surfaces on the real app (lifespan, real PostgreSQL): the FHIR R4 read
API (every answer parsed back through the ``fhir.resources`` R4B models, links between resources
followed), the calendar files and feeds (parsed with ``icalendar``), and the admin routes of
outbound webhooks. The journey's rows are written as ``record_step`` writes them
(tests/integration_rows.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from fhir.resources.R4B.appointment import Appointment
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from icalendar import Calendar
from temporalio.testing import WorkflowEnvironment

from activities import repository
from activities.webhooks import WebhookDispatcher
from api.main import create_app
from api.tokens import make_patient_token
from tests.integration_rows import JourneyRows, Session, new_patient
from tests.test_api import make_settings, serve
from worker.settings import Settings

T0 = datetime(2027, 3, 1, 8, 0, tzinfo=UTC)
FHIR = "application/fhir+json"


@dataclass
class Api:
    http: httpx.AsyncClient
    pool: asyncpg.Pool
    settings: Settings
    admin: str
    staff: str

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.staff}"}

    async def fhir(self, path: str, status: int = 200) -> dict[str, Any]:
        url = path if path.startswith("http") else f"/fhir/R4/{path}"
        # FHIR reads are exports (issue 16: export.read, a manager's or an admin's).
        r = await self.http.get(url, headers=self.auth(self.admin))
        assert r.status_code == status, r.text
        assert r.headers["content-type"].startswith(FHIR)
        body: dict[str, Any] = r.json()
        return body


@pytest.fixture
async def api(
    dev_env: WorkflowEnvironment, pg_pool: asyncpg.Pool, pg_dsn: str
) -> AsyncIterator[Api]:
    settings = make_settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        database_url=pg_dsn,
    )
    await repository.ensure_default_clinic(pg_pool)
    _, admin = await repository.create_staff_user(pg_pool, "Ada Admin", "admin")
    _, staff = await repository.create_staff_user(pg_pool, "Sam Staff", "staff")
    async with serve(create_app(settings)) as http:
        yield Api(http, pg_pool, settings, admin, staff)


async def course_in_recovery(pool: asyncpg.Pool, name: str = "Ann Example") -> JourneyRows:
    """Session 1 done (reported by the EMR), 2 booked, 3 planned; a no-show flag; SPF and
    review dates; two screenings (the second with its answers)."""
    j = JourneyRows(pool, await new_patient(pool, name), "default")
    await j.step(("journey_started", "Started.", {}), at=T0)
    await j.step(
        (
            "screening_submitted",
            "Screening: deferred.",
            {
                "outcome": "deferred",
                "reasons": [{"rule": "recent_tan", "message": "Wait 4 weeks after a tan."}],
            },
        ),
        at=T0,
        actor="staff",
    )
    await j.step(
        (
            "screening_submitted",
            "Screening: eligible.",
            {
                "outcome": "eligible",
                "reasons": [],
                "answers": {
                    "pregnant": False,
                    "fitzpatrick_type": 3,
                    "isotretinoin_last_dose_on": "2026-01-10",
                    "photosensitising_drugs": ["doxycycline"],
                },
            },
        ),
        at=T0,
        actor="staff",
    )
    for n, days in ((1, 7), (2, 30), (3, 55)):
        start = T0 + timedelta(days=days, hours=1)
        j.sessions[n] = Session(n, start, "planned", arrive_by=start - timedelta(minutes=20))
    j.sessions[1].state = "booked"
    await j.step(("session_booked", "Session 1 booked.", {"session": 1}), sessions=[1, 2, 3], at=T0)
    j.sessions[1].state, j.sessions[1].source = "done", "emr"
    j.sessions[1].completed_at = j.sessions[1].starts_at + timedelta(minutes=50)
    j.sessions[2].state = "booked"
    j.stage, j.flags = "recovery", ["no_show"]
    j.spf_until, j.review_on = date(2027, 7, 1), date(2027, 8, 1)
    await j.step(
        ("session_completed", "Session 1 done.", {"session": 1}),
        ("session_booked", "Session 2 booked.", {"session": 2}),
        sessions=[1, 2],
        at=T0,
    )
    return j


async def test_fhir_resources_parse_and_link(api: Api) -> None:
    j = await course_in_recovery(api.pool)
    other = await course_in_recovery(api.pool, "Bob Example")
    fid = j.patient_id.replace("_", ".")

    CapabilityStatement.model_validate(await api.fhir("metadata"))
    patient = Patient.model_validate(await api.fhir(f"Patient/{fid}"))
    assert patient.identifier[0].value == j.patient_id  # type: ignore[index]
    assert patient.name[0].text == "Ann Example"  # type: ignore[index]

    plans = Bundle.model_validate(await api.fhir(f"CarePlan?patient=Patient/{fid}"))
    assert plans.total == 1
    plan = CarePlan.model_validate(plans.entry[0].resource.model_dump())  # type: ignore[index,union-attr]
    assert (plan.id, plan.status, plan.intent) == (f"{fid}.c1", "active", "plan")
    assert plan.subject.reference == f"Patient/{fid}"
    refs = [a.reference.reference for a in plan.activity if a.reference]  # type: ignore[union-attr]
    assert refs == [f"Appointment/{fid}.c1.s{n}" for n in (1, 2, 3)]
    details = [a.detail for a in plan.activity if a.detail]  # type: ignore[union-attr]
    assert [d.code.text for d in details] == ["Sun protection SPF 50 daily", "3-month review"]  # type: ignore[union-attr]
    assert str(details[0].scheduledPeriod.end) == "2027-07-01"  # type: ignore[union-attr]
    # CarePlan.activity → Appointment, each readable and in the state of its session.
    states = []
    for ref in refs:
        appointment = Appointment.model_validate(await api.fhir(ref))
        assert appointment.participant[0].actor.reference == f"Patient/{fid}"  # type: ignore[index,union-attr]
        states.append(appointment.status)
    assert states == ["fulfilled", "booked", "proposed"]
    first = Appointment.model_validate(await api.fhir(refs[0]))
    assert first.start == j.sessions[1].starts_at
    assert first.comment == "Arrive 20 minutes early for the numbing cream."
    # The done session's outcome is its Procedure, based on the CarePlan.
    [done] = [a for a in plan.activity if a.outcomeReference]  # type: ignore[union-attr]
    procedure_ref = done.outcomeReference[0].reference  # type: ignore[index]
    procedure = Procedure.model_validate(await api.fhir(procedure_ref))
    assert procedure.basedOn[0].reference == f"CarePlan/{plan.id}"  # type: ignore[index]
    assert procedure.performer[0].actor.display == "emr"  # type: ignore[index,union-attr]
    assert procedure.performedDateTime == j.sessions[1].completed_at
    procedures = Bundle.model_validate(await api.fhir(f"Procedure?patient={fid}"))
    assert [e.resource.id for e in procedures.entry] == [procedure.id]  # type: ignore[union-attr]

    answers = Bundle.model_validate(await api.fhir(f"QuestionnaireResponse?patient={fid}"))
    assert answers.total == 2
    latest = QuestionnaireResponse.model_validate(answers.entry[1].resource.model_dump())  # type: ignore[index,union-attr]
    items = {i.linkId: i.answer[0] for i in latest.item}  # type: ignore[union-attr,index]
    assert items["outcome"].valueString == "eligible"
    assert items["fitzpatrick_type"].valueInteger == 3
    assert str(items["isotretinoin_last_dose_on"].valueDate) == "2026-01-10"
    earlier = QuestionnaireResponse.model_validate(answers.entry[0].resource.model_dump())  # type: ignore[index,union-attr]
    assert [i.answer[0].valueString for i in earlier.item] == [
        "deferred",
        "Wait 4 weeks after a tan.",
    ]  # type: ignore[union-attr,index]

    # A journey screened only at enrolment (no screening_submitted event): its intake outcome.
    intake = JourneyRows(api.pool, await new_patient(api.pool, "Cy Example"), "default")
    intake.screening_outcome = "eligible"
    await intake.step(("journey_started", "Started.", {}), at=T0)
    ifid = intake.patient_id.replace("_", ".")
    [entry] = Bundle.model_validate(await api.fhir(f"QuestionnaireResponse?patient={ifid}")).entry  # type: ignore[misc]
    assert entry.resource.id == f"{ifid}.c1.intake"  # type: ignore[union-attr]
    read = QuestionnaireResponse.model_validate(
        await api.fhir(f"QuestionnaireResponse/{ifid}.c1.intake")
    )
    assert read.item[0].answer[0].valueString == "eligible"  # type: ignore[index]

    flags = Bundle.model_validate(await api.fhir(f"Flag?patient={fid}"))
    [flag] = [Flag.model_validate(e.resource.model_dump()) for e in flags.entry]  # type: ignore[union-attr]
    assert flag.code.coding[0].code == "no_show"  # type: ignore[index]
    assert Flag.model_validate(await api.fhir(f"Flag/{flag.id}")).id == flag.id

    # Ids are stable across calls.
    again = CarePlan.model_validate(await api.fhir(f"CarePlan/{plan.id}"))
    assert again.model_dump() == plan.model_dump()

    # Appointments by date, paged with _count; the next link leads to the rest.
    window = "date=ge2027-03-08&date=lt2027-04-15"
    page1 = Bundle.model_validate(await api.fhir(f"Appointment?{window}&_count=2"))
    assert page1.total == 4  # sessions 1 and 2 of both journeys
    [next_link] = [link.url for link in page1.link if link.relation == "next"]  # type: ignore[union-attr]
    page2 = Bundle.model_validate(await api.fhir(str(next_link)))
    ids = [e.resource.id for e in [*page1.entry, *page2.entry]]  # type: ignore[union-attr]
    assert len(ids) == len(set(ids)) == 4
    assert not [link for link in page2.link if link.relation == "next"]  # type: ignore[union-attr]
    mine = Bundle.model_validate(await api.fhir(f"Appointment?patient={fid}&date=ge2027-03-20"))
    assert [e.resource.id for e in mine.entry] == [f"{fid}.c1.s2", f"{fid}.c1.s3"]  # type: ignore[union-attr]
    assert other.patient_id not in str(mine.model_dump())

    # Errors are OperationOutcomes.
    OperationOutcome.model_validate(await api.fhir(f"CarePlan/{fid}.c9", 404))
    OperationOutcome.model_validate(await api.fhir("Appointment/nonsense", 404))
    OperationOutcome.model_validate(await api.fhir("Procedure", 400))
    OperationOutcome.model_validate(await api.fhir("Appointment?date=tomorrow", 400))
    OperationOutcome.model_validate(await api.fhir("Appointment?date=le9999-12-31", 400))
    OperationOutcome.model_validate(await api.fhir("Flag?patient=Patient/p%00x", 400))


async def test_fhir_needs_a_staff_token(api: Api) -> None:
    j = await course_in_recovery(api.pool)
    fid = j.patient_id.replace("_", ".")
    r = await api.http.get(f"/fhir/R4/Patient/{fid}")
    assert r.status_code == 401
    patient_token = make_patient_token(api.settings, j.patient_id)
    r = await api.http.get(f"/fhir/R4/Patient/{fid}", headers=api.auth(patient_token))
    assert r.status_code == 403
    # Reception may not export (issue 16): 403 naming the permission.
    r = await api.http.get(f"/fhir/R4/Patient/{fid}", headers=api.auth())
    assert r.status_code == 403 and "export.read" in r.json()["detail"][0]["message"]


def parse_ics(body: bytes) -> tuple[Calendar, list[Any]]:
    cal = Calendar.from_ical(body)
    return cal, list(cal.walk("VEVENT"))


async def test_calendar_files_and_feeds(api: Api) -> None:
    j = await course_in_recovery(api.pool)
    k = await course_in_recovery(api.pool, "Bob Example")
    patient_token = make_patient_token(api.settings, j.patient_id)

    r = await api.http.get(f"/api/journeys/{j.patient_id}/sessions/2.ics", headers=api.auth())
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/calendar")
    cal, [event] = parse_ics(r.content)
    assert str(cal["METHOD"]) == "REQUEST"
    uid, sequence = str(event["UID"]), int(event["SEQUENCE"])
    assert uid == f"{j.workflow_id}.c1.s2@pore-journey"
    mine = await api.http.get("/api/me/sessions/2.ics", headers=api.auth(patient_token))
    assert parse_ics(mine.content)[1][0]["UID"] == uid
    assert (
        await api.http.get("/api/journeys/p_nobody/sessions/1.ics", headers=api.auth())
    ).status_code == 404

    # A patient feed made by staff, one made by the patient; the patient revokes theirs.
    r = await api.http.post(f"/api/journeys/{j.patient_id}/calendar-feeds", headers=api.auth())
    assert r.status_code == 201, r.text
    staff_made = r.json()["url"].removeprefix("http://testserver")
    r = await api.http.post("/api/me/calendar-feeds", headers=api.auth(patient_token))
    assert r.status_code == 201
    own = r.json()["url"].removeprefix("http://testserver")
    feed = await api.http.get(own)  # the link is the credential
    assert feed.status_code == 200
    cal, events = parse_ics(feed.content)
    assert str(cal["METHOD"]) == "PUBLISH"
    assert sorted(str(e["UID"]) for e in events) == [
        f"{j.workflow_id}.c1.s{n}@pore-journey" for n in (1, 2, 3)
    ]
    [same] = [e for e in events if str(e["UID"]) == uid]
    assert int(same["SEQUENCE"]) == sequence
    assert "Ann" not in feed.text and k.workflow_id not in feed.text

    # Moved: same UID, higher SEQUENCE, in the feed and in the invitation.
    j.sessions[2].starts_at += timedelta(days=2)
    await j.step(("rescheduled", "Session 2 moved.", {"session": 2}), sessions=[2], at=T0)
    cal, events = parse_ics((await api.http.get(own)).content)
    [moved] = [e for e in events if str(e["UID"]) == uid]
    assert int(moved["SEQUENCE"]) > sequence
    assert moved["DTSTART"].dt == j.sessions[2].starts_at

    r = await api.http.delete("/api/me/calendar-feeds", headers=api.auth(patient_token))
    assert r.json() == {"revoked": 2}  # both links of this patient
    assert (await api.http.get(own)).status_code == 404
    assert (await api.http.get(staff_made)).status_code == 404

    # The clinic feed: admins only; every journey of the clinic, ids and no names.
    url = "/api/admin/clinics/default/calendar-feeds"
    assert (await api.http.post(url, headers=api.auth())).status_code == 403
    r = await api.http.post(url, headers=api.auth(api.admin))
    assert r.status_code == 201
    clinic = await api.http.get(r.json()["url"].removeprefix("http://testserver"))
    _, events = parse_ics(clinic.content)
    assert {str(e["UID"]).split(".c1")[0] for e in events} == {j.workflow_id, k.workflow_id}
    assert "Ann" not in clinic.text and "Bob" not in clinic.text
    assert j.patient_id in clinic.text
    r = await api.http.delete(
        f"/api/admin/calendar-feeds/{r.json()['id']}", headers=api.auth(api.admin)
    )
    assert r.json() == {"revoked": 1}


async def test_webhook_admin_routes(api: Api) -> None:
    body = {
        "clinic_id": "default",
        "url": "http://127.0.0.1:9/hooks",
        "event_types": ["journey.session_completed"],
    }
    assert (
        await api.http.post("/api/admin/webhooks/subscribers", json=body, headers=api.auth())
    ).status_code == 403
    r = await api.http.post(
        "/api/admin/webhooks/subscribers", json=body, headers=api.auth(api.admin)
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["secret"].startswith("whsec_")
    listed = await api.http.get("/api/admin/webhooks/subscribers", headers=api.auth(api.admin))
    assert listed.json()["count"] == 1 and "secret" not in listed.json()["data"][0]
    r = await api.http.post(
        "/api/admin/webhooks/subscribers",
        json={**body, "clinic_id": "nowhere"},
        headers=api.auth(api.admin),
    )
    assert r.status_code == 422 and r.json()["detail"][0]["rule"] == "unknown_clinic"
    r = await api.http.post(
        "/api/admin/webhooks/subscribers",
        json={**body, "event_types": ["session_completed"]},
        headers=api.auth(api.admin),
    )
    assert r.status_code == 422
    for bad in ({"description": "a\x00b"}, {"url": "http://127.0.0.1:9/\x00"}):
        r = await api.http.post(
            "/api/admin/webhooks/subscribers", json={**body, **bad}, headers=api.auth(api.admin)
        )
        assert r.status_code == 422, r.text
    r = await api.http.get(
        "/api/admin/webhooks/deliveries",
        params={"journey_id": "journey-\x00"},
        headers=api.auth(api.admin),
    )
    assert r.status_code == 422

    # A dead delivery is listed and replayed.
    j = JourneyRows(api.pool, await new_patient(api.pool), "default")
    j.sessions[1] = Session(1, T0, "done")
    await j.step(("session_completed", "Done.", {"session": 1}), sessions=[1], at=T0)
    dispatcher = WebhookDispatcher(api.pool, max_attempts=1, timeout_seconds=2)
    await dispatcher.run_once()
    assert dispatcher.counts["dead"] == 1
    dead = await api.http.get(
        "/api/admin/webhooks/deliveries?status=dead", headers=api.auth(api.admin)
    )
    [row] = dead.json()["data"]
    assert (row["event_type"], row["workflow_id"], row["attempts"]) == (
        "journey.session_completed",
        j.workflow_id,
        1,
    )
    assert row["last_error"]
    r = await api.http.post(
        f"/api/admin/webhooks/deliveries/{row['id']}/replay", headers=api.auth(api.admin)
    )
    assert r.json() == {"replayed": 1}
    r = await api.http.post(
        f"/api/admin/webhooks/deliveries/{row['id']}/replay", headers=api.auth(api.admin)
    )
    assert r.status_code == 404  # no longer dead
    r = await api.http.delete(
        f"/api/admin/webhooks/subscribers/{created['id']}", headers=api.auth(api.admin)
    )
    assert r.json()["disabled_at"] is not None
