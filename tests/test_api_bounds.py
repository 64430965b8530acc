"""Bounds at every door and an atomic, idempotent enrolment (issue 12), against the real stack:
each hostile request of the issue gets a 4xx naming the problem and leaves no orphan row."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import pydantic
import pytest

from activities import repository
from api import schemas
from api.main import create_app
from tests.test_api import (
    FAST_CLINIC,
    Stack,
    enrol_body,
    eventually,
    make_settings,
    serve,
    stack,
    stage_of,
)
from workflows.bounds import MAX_DATE, MIN_DATE, ClinicDateTime, check_text

__all__ = ["stack"]  # the fixture, imported for the tests below

NUL = "\x00"


def problem(r: Any) -> tuple[int, set[str]]:
    """The status and the fields named by an error body."""
    return r.status_code, {d.get("field") for d in r.json()["detail"]}


async def patients(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM patients"))


# ---------------------------------------------------------------- the shared types


@pytest.mark.parametrize(
    "value",
    [
        "9999-12-31T23:59:59-14:00",
        "0001-01-01T00:00:00+14:00",
        "1900-01-01T00:30:00+01:00",  # its UTC date is 1899-12-31
        "2101-01-01T00:00:00Z",
        "2026-05-01T10:00:00",  # no offset
    ],
)
def test_date_times_outside_the_window_are_refused(value: str) -> None:
    with pytest.raises(pydantic.ValidationError):
        pydantic.TypeAdapter(ClinicDateTime).validate_python(value)


def test_the_window_edges_are_accepted() -> None:
    adapter = pydantic.TypeAdapter(ClinicDateTime)
    assert adapter.validate_python("2100-12-31T23:59:59Z").date() == MAX_DATE
    assert adapter.validate_python("1900-01-01T00:00:00Z").date() == MIN_DATE


@pytest.mark.parametrize("text", ["a\x00b", "tab\there", "\x7f", "\x85", "line\nbreak"])
def test_control_characters_are_refused_in_one_line_text(text: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        check_text(text)


def test_multiline_text_keeps_line_breaks_but_not_nul() -> None:
    assert check_text("line 1\r\nline 2\tend", multiline=True)
    with pytest.raises(ValueError, match="U\\+0000"):
        check_text("a\x00", multiline=True)


def test_the_webhook_body_refuses_the_dates_and_text_that_broke_journeys() -> None:
    for completed_at in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
        with pytest.raises(pydantic.ValidationError, match="completed_at"):
            schemas.SessionCompletedIn(
                patient_id="p_x", session_number=1, completed_at=completed_at
            )
    with pytest.raises(pydantic.ValidationError, match="source"):
        schemas.SessionCompletedIn(
            patient_id="p_x",
            session_number=1,
            completed_at=datetime.now(UTC),
            source=f"emr{NUL}",
        )


# ---------------------------------------------------------------- query, path, body


async def test_list_parameters_are_bounded(stack: Stack) -> None:
    for params, field in [
        ({"offset": str(2**63)}, "query.offset"),
        ({"offset": "1000001"}, "query.offset"),
        ({"limit": "501"}, "query.limit"),
        ({"q": f"Jo{NUL}"}, "query.q"),
        ({"flag": NUL}, "query.flag"),
        ({"clinic": f"default{NUL}"}, "query.clinic"),
        ({"next_action_before": "9999-12-31T23:59:59-14:00"}, "query.next_action_before"),
    ]:
        r = await stack.http.get("/api/journeys", params=params, headers=stack.auth())
        assert problem(r) == (422, {field}), (params, r.text)
    r = await stack.http.get(
        "/api/journeys", params={"offset": "999999", "q": "Jo"}, headers=stack.auth()
    )
    assert r.status_code == 200 and r.json()["data"] == []


async def test_a_nul_in_a_path_id_is_no_such_journey(stack: Stack) -> None:
    r = await stack.http.get("/api/journeys/p_a%00b", headers=stack.auth())
    assert r.status_code == 404, r.text


async def test_text_with_nul_never_reaches_a_journey(stack: Stack) -> None:
    pid = (await _enrol(stack))["patient_id"]
    r = await stack.http.post(
        f"/api/journeys/{pid}/pause", json={"reason": f"x{NUL}y"}, headers=stack.auth()
    )
    assert problem(r) == (422, {"body.reason"})
    r = await stack.http.post(
        f"/api/journeys/{pid}/screening",
        json={"answers": {"other_condition": f"eczema{NUL}"}},
        headers=stack.auth(),
    )
    assert problem(r) == (422, {"body.answers.other_condition"})
    r = await stack.http.post(
        "/api/journeys",
        json=enrol_body(patient={"full_name": f"Jo{NUL}", "email": "jo@example.com"}),
        headers=stack.auth(),
    )
    assert problem(r) == (422, {"body.patient.full_name"})


async def test_plan_preview_near_year_9999_is_a_422_not_a_500(stack: Stack) -> None:
    for earliest in ("9999-12-31", "9999-12-01", "0001-01-01"):
        r = await stack.http.post(
            "/api/plans/preview",
            json={"pore_grade": "large", "earliest": earliest},
            headers=stack.auth(),
        )
        assert problem(r) == (422, {"body.earliest"}), r.text
    r = await stack.http.post(
        "/api/plans/preview",
        json={"pore_grade": "large", "earliest": "2100-12-01"},
        headers=stack.auth(),
    )
    assert r.status_code == 200, r.text


async def test_huge_lists_and_fields_are_413_or_422(stack: Stack) -> None:
    huge_list = {"photosensitising_drugs": ["doxycycline" * 10] * 30_000}  # ~3 MB
    r = await stack.http.post(
        "/api/plans/preview",
        json={"pore_grade": "small", "screening": huge_list},
        headers=stack.auth(),
    )
    assert r.status_code == 413 and r.json()["detail"][0]["rule"] == "body_too_large"
    r = await stack.http.post(
        "/api/journeys",
        json=enrol_body(screening={"other_condition": "x" * 10_000_000}),
        headers=stack.auth(),
    )
    assert r.status_code == 413
    r = await stack.http.post(
        "/api/journeys",
        json=enrol_body(screening={"photosensitising_drugs": ["doxycycline"] * 21}),
        headers=stack.auth(),
    )
    assert problem(r) == (422, {"body.screening.photosensitising_drugs"})
    assert await patients(stack.pool) == 0


async def test_a_chunked_body_over_the_limit_is_413(stack: Stack) -> None:
    async def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1024

    r = await stack.http.post(
        "/api/plans/preview",
        content=chunks(),
        headers={**stack.auth(), "Content-Type": "application/json"},
    )
    assert r.status_code == 413


# ---------------------------------------------------------------- enrolment


async def _enrol(s: Stack, token: str | None = None, **overrides: Any) -> dict[str, Any]:
    r = await s.http.post("/api/journeys", json=enrol_body(**overrides), headers=s.auth(token))
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_absurd_enrolments_are_refused_and_leave_no_row(stack: Stack) -> None:
    today = date.today()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"earliest_start": "9999-12-31"}, "body.earliest_start"),
        ({"earliest_start": str(today + timedelta(days=3 * 365))}, "body.earliest_start"),
        (
            {"trips": [{"start": str(today), "end": str(today + timedelta(days=3650))}]},
            "body.trips.0",
        ),
        ({"trips": [{"start": "2027-05-10", "end": "2027-05-01"}]}, "body.trips.0"),
        (
            {"screening": {"isotretinoin": True, "isotretinoin_last_dose_on": "9999-01-01"}},
            "body.screening.isotretinoin_last_dose_on",
        ),
        (
            {
                "screening": {
                    "isotretinoin": True,
                    "isotretinoin_last_dose_on": str(today + timedelta(days=30)),
                }
            },
            "body.screening.isotretinoin_last_dose_on",
        ),
        ({"time_scale": 1000}, "body.time_scale"),  # not a sandbox clinic, not development
    ]
    for overrides, field in cases:
        r = await stack.http.post(
            "/api/journeys", json=enrol_body(**overrides), headers=stack.auth()
        )
        assert problem(r) == (422, {field}), (overrides, r.text)
    assert await patients(stack.pool) == 0
    # The simulation clock is fine in a sandbox clinic.
    await _enrol(stack, clinic_id=FAST_CLINIC, time_scale=1000)


async def test_enrolment_is_idempotent_per_caller(stack: Stack) -> None:
    key = {"Idempotency-Key": "reception-42"}
    first = await stack.http.post(
        "/api/journeys", json=enrol_body(), headers={**stack.auth(), **key}
    )
    again = await stack.http.post(
        "/api/journeys", json=enrol_body(), headers={**stack.auth(), **key}
    )
    assert first.status_code == again.status_code == 201, again.text
    assert again.json()["patient_id"] == first.json()["patient_id"]
    assert again.json()["workflow_id"] == first.json()["workflow_id"]
    assert again.json()["run_id"] == first.json()["run_id"]
    assert await patients(stack.pool) == 1
    # Another caller's key is their own: the same key from another member is a new enrolment.
    theirs = await stack.http.post(
        "/api/journeys", json=enrol_body(), headers={**stack.auth(stack.staff), **key}
    )
    assert theirs.status_code == 201
    assert theirs.json()["patient_id"] != first.json()["patient_id"]
    # The same key for a different enrolment is refused.
    other = enrol_body(patient={"full_name": "Someone Else", "email": "se@example.com"})
    r = await stack.http.post("/api/journeys", json=other, headers={**stack.auth(), **key})
    assert problem(r) == (422, {"header.Idempotency-Key"})
    assert await patients(stack.pool) == 2


async def test_a_failed_start_leaves_no_personal_data(pg_pool: asyncpg.Pool, pg_dsn: str) -> None:
    _, token = await repository.create_staff_user(pg_pool, "Ada", "admin")
    auth = {"Authorization": f"Bearer {token}", "Idempotency-Key": "k-1"}
    settings = make_settings(temporal_address="127.0.0.1:1", database_url=pg_dsn)
    async with serve(create_app(settings)) as http:
        r = await http.post("/api/journeys", json=enrol_body(), headers=auth)
        assert r.status_code == 503
    assert await patients(pg_pool) == 0
    failed = await pg_pool.fetch(
        "SELECT workflow_id, actor, summary, data FROM journey_events "
        "WHERE kind = 'enrolment_failed'"
    )
    assert len(failed) == 1 and failed[0]["actor"] == "system"
    assert "Jo Example" not in failed[0]["summary"] + json.dumps(failed[0]["data"])
    # The key stays reserved with its patient id: a retry finishes the same enrolment.
    reserved = await pg_pool.fetchrow("SELECT status_code, response FROM idempotency_keys")
    assert reserved is not None and reserved["status_code"] == 0
    assert failed[0]["workflow_id"] == f"journey-{reserved['response']['patient_id']}"


async def test_a_retry_after_a_failed_start_finishes_the_same_enrolment(stack: Stack) -> None:
    key = {"Idempotency-Key": "retry-me"}
    reserved = "p_reservedid01"
    await stack.pool.execute(
        "INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response) "
        "SELECT 'enrol:staff:' || id, 'retry-me', $1, 0, $2 FROM staff_users WHERE name = $3",
        _hash(enrol_body()),
        {"patient_id": reserved},
        "Ada Admin",
    )
    r = await stack.http.post("/api/journeys", json=enrol_body(), headers={**stack.auth(), **key})
    assert r.status_code == 201, r.text
    assert r.json()["patient_id"] == reserved
    assert await patients(stack.pool) == 1


def _hash(body: dict[str, Any]) -> str:
    import hashlib

    request = schemas.EnrolRequest.model_validate(body)
    return hashlib.sha256(
        json.dumps(request.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()


# ---------------------------------------------------------------- clinician-only answers


async def test_only_a_clinician_overrides_or_sets_a_washout_and_is_named(stack: Stack) -> None:
    _, clinician = await repository.create_staff_user(stack.pool, "Dr Clara Weiss", "clinician")
    override = {"photosensitivity": True, "clinician_override_reason": "Cleared by derm."}
    washout = {
        "photosensitising_drugs": ["doxycycline"],
        "drug_washout_until": str(date.today() + timedelta(days=20)),
    }
    for answers, field in [
        (override, "body.screening.clinician_override_reason"),
        (washout, "body.screening.drug_washout_until"),
    ]:
        for token in (stack.staff, stack.admin):
            r = await stack.http.post(
                "/api/journeys", json=enrol_body(screening=answers), headers=stack.auth(token)
            )
            assert problem(r) == (403, {field}), r.text
    assert await patients(stack.pool) == 0

    pid = (await _enrol(stack, clinician, screening=override))["patient_id"]
    named = await stack.pool.fetch(
        "SELECT actor, summary, data FROM journey_events "
        "WHERE workflow_id = $1 AND kind = 'clinician_authorised'",
        f"journey-{pid}",
    )
    assert len(named) == 1 and named[0]["actor"] == "clinician"
    assert "Dr Clara Weiss" in named[0]["summary"]
    assert named[0]["data"]["fields"] == ["clinician_override_reason"]

    # The journey takes the override as the clinician's (screening_by): not excluded.
    async def screened() -> str | None:
        stage = await stage_of(stack, pid)
        return None if stage == "screening" else stage

    assert await eventually(screened) != "excluded"

    # The same rule on a re-screen: staff 403, before anything reaches the journey.
    r = await stack.http.post(
        f"/api/journeys/{pid}/screening", json={"answers": washout}, headers=stack.auth()
    )
    assert problem(r) == (403, {"body.answers.drug_washout_until"})


async def test_an_empty_review_note_is_no_note_not_a_500(stack: Stack) -> None:
    """Found by the fuzz suite: the workflow's ReviewRequest refuses an empty note_ref."""
    pid = (await _enrol(stack))["patient_id"]
    r = await stack.http.post(
        f"/api/journeys/{pid}/review",
        json={"outcome": "complete", "note_ref": ""},
        headers=stack.auth(),
    )
    assert r.status_code == 409, r.text  # not due yet: the journey's own answer
