"""Read-model queries, patients, staff tokens and API idempotency keys on a real PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import asyncpg
import pydantic
import pytest
from temporalio.testing import ActivityEnvironment

from activities import repository
from activities.store import JourneyStore
from tests.status_helpers import full_status
from workflows.protocol import ClinicProtocol, ClinicSettings
from workflows.records import JourneyEvent, StepRecord

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


async def enrol(
    pool: asyncpg.Pool,
    name: str,
    *,
    stage: str,
    clinic_id: str = "default",
    flags: list[str] | None = None,
    next_in_days: int | None = 1,
) -> repository.PatientRow:
    """A patient record and their journey's first step, written the way the worker writes it."""
    patient = await repository.create_patient(
        pool,
        repository.PatientCreate(
            full_name=name, email=f"{name.split()[0].lower()}@example.com", clinic_id=clinic_id
        ),
    )
    await ActivityEnvironment().run(
        JourneyStore(pool).record_step,
        StepRecord(
            workflow_id=f"journey-{patient.patient_id}",
            step=1,
            events=[
                JourneyEvent(
                    key="1.0",
                    kind="journey_started",
                    actor="system",
                    occurred_at=T0,
                    summary="Course 1 started.",
                )
            ],
            patient_id=patient.patient_id,
            clinic_id=clinic_id,
            status_patch=full_status(
                patient.patient_id,
                clinic_id,
                stage=stage,
                sessions_planned=3,
                next_action="Next",
                next_action_at=None if next_in_days is None else T0 + timedelta(days=next_in_days),
                flags=flags,
            ),
        ),
    )
    return patient


@pytest.fixture
async def clinics(pg_pool: asyncpg.Pool) -> None:
    await repository.ensure_default_clinic(pg_pool)
    await repository.upsert_clinic(
        pg_pool,
        ClinicProtocol(
            clinic=ClinicSettings(clinic_id="paris", name="Paris", timezone="Europe/Paris")
        ),
    )


@pytest.fixture
async def journeys(pg_pool: asyncpg.Pool, clinics: None) -> list[repository.PatientRow]:
    return [
        await enrol(pg_pool, "Alice Martin", stage="scheduled", next_in_days=3),
        await enrol(pg_pool, "Bob Stone", stage="scheduled", next_in_days=1, flags=["no_show"]),
        await enrol(pg_pool, "Chloé Martinez", stage="recovery", clinic_id="paris", next_in_days=2),
        await enrol(pg_pool, "Dan 100% Real", stage="screening", next_in_days=None),
        await enrol(
            pg_pool,
            "Eve Adams",
            stage="awaiting_review",
            clinic_id="paris",
            flags=["review_overdue", "no_show"],
            next_in_days=10,
        ),
    ]


def names(rows: list[repository.JourneyRow]) -> list[str | None]:
    return [r.patient_name for r in rows]


async def test_list_filters(pg_pool: asyncpg.Pool, journeys: list[repository.PatientRow]) -> None:
    rows, total = await repository.list_journeys(pg_pool)
    # Soonest next action first; a journey with none comes last.
    assert names(rows) == [
        "Bob Stone",
        "Chloé Martinez",
        "Alice Martin",
        "Eve Adams",
        "Dan 100% Real",
    ]
    assert total == 5
    rows, total = await repository.list_journeys(pg_pool, stage="scheduled")
    assert (names(rows), total) == (["Bob Stone", "Alice Martin"], 2)
    rows, total = await repository.list_journeys(pg_pool, clinic_id="paris")
    assert (names(rows), total) == (["Chloé Martinez", "Eve Adams"], 2)
    rows, total = await repository.list_journeys(pg_pool, flag="no_show")
    assert (names(rows), total) == (["Bob Stone", "Eve Adams"], 2)
    rows, _ = await repository.list_journeys(pg_pool, flag="no_show", clinic_id="paris")
    assert names(rows) == ["Eve Adams"]
    rows, _ = await repository.list_journeys(
        pg_pool, next_action_before=T0 + timedelta(days=2, hours=12)
    )
    assert names(rows) == ["Bob Stone", "Chloé Martinez"]
    rows, _ = await repository.list_journeys(pg_pool, order="patient_name")
    assert names(rows)[0] == "Alice Martin"
    with pytest.raises(ValueError, match="order must be one of"):
        await repository.list_journeys(pg_pool, order="full_name; DROP TABLE journeys")  # type: ignore[arg-type]


async def test_name_search(pg_pool: asyncpg.Pool, journeys: list[repository.PatientRow]) -> None:
    rows, total = await repository.list_journeys(pg_pool, name_query="martin")
    assert (names(rows), total) == (["Chloé Martinez", "Alice Martin"], 2)
    rows, _ = await repository.list_journeys(pg_pool, name_query="CHLOÉ")
    assert names(rows) == ["Chloé Martinez"]
    # LIKE wildcards in the query are literal characters.
    rows, _ = await repository.list_journeys(pg_pool, name_query="100%")
    assert names(rows) == ["Dan 100% Real"]
    rows, _ = await repository.list_journeys(pg_pool, name_query="%")
    assert names(rows) == ["Dan 100% Real"]
    rows, total = await repository.list_journeys(pg_pool, name_query="_")
    assert (rows, total) == ([], 0)


async def test_paging(pg_pool: asyncpg.Pool, journeys: list[repository.PatientRow]) -> None:
    seen: list[str | None] = []
    for offset in (0, 2, 4):
        rows, total = await repository.list_journeys(pg_pool, limit=2, offset=offset)
        assert total == 5
        seen += names(rows)
    assert len(seen) == len(set(seen)) == 5
    rows, total = await repository.list_journeys(pg_pool, limit=2, offset=10)
    assert (rows, total) == ([], 5)
    with pytest.raises(ValueError):
        await repository.list_journeys(pg_pool, limit=0)


async def test_count_by_stage(pg_pool: asyncpg.Pool, journeys: list[repository.PatientRow]) -> None:
    assert await repository.count_by_stage(pg_pool) == {
        "awaiting_review": 1,
        "recovery": 1,
        "scheduled": 2,
        "screening": 1,
    }
    assert await repository.count_by_stage(pg_pool, clinic_id="paris") == {
        "awaiting_review": 1,
        "recovery": 1,
    }
    assert await repository.count_by_stage(pg_pool, clinic_id="nowhere") == {}


async def test_journey_detail_and_timeline(
    pg_pool: asyncpg.Pool, journeys: list[repository.PatientRow]
) -> None:
    alice = journeys[0]
    row = await repository.get_journey(pg_pool, alice.patient_id)
    assert row is not None
    assert (row.workflow_id, row.stage, row.patient_name) == (
        f"journey-{alice.patient_id}",
        "scheduled",
        "Alice Martin",
    )
    timeline = await repository.get_timeline(pg_pool, row.workflow_id)
    assert [(e.event_key, e.kind) for e in timeline] == [("1.0", "journey_started")]
    assert await repository.get_journey(pg_pool, "p_unknown") is None


async def test_patients(pg_pool: asyncpg.Pool, clinics: None) -> None:
    created = await repository.create_patient(
        pg_pool,
        repository.PatientCreate(
            full_name="Zoë Q", phone="+33 6 12 34 56 78", preferred_channel="sms"
        ),
    )
    assert created.patient_id.startswith("p_") and len(created.patient_id) == 14
    assert await repository.get_patient(pg_pool, created.patient_id) == created
    assert await repository.get_patient(pg_pool, "p_missing") is None
    with pytest.raises(pydantic.ValidationError, match="phone is required"):
        repository.PatientCreate(full_name="No Phone", preferred_channel="sms")
    with pytest.raises(repository.UnknownClinicError):
        await repository.create_patient(
            pg_pool,
            repository.PatientCreate(full_name="X", email="x@example.com", clinic_id="nowhere"),
        )


async def test_default_clinic_created_once_and_kept(pg_pool: asyncpg.Pool) -> None:
    assert await repository.get_clinic(pg_pool, "default") is None
    assert await repository.ensure_default_clinic(pg_pool) == ClinicProtocol()
    tuned = ClinicProtocol(clinic=ClinicSettings(timezone="Europe/Paris"))
    await repository.upsert_clinic(pg_pool, tuned)
    assert await repository.ensure_default_clinic(pg_pool) == tuned


async def test_staff_token_round_trip(pg_pool: asyncpg.Pool) -> None:
    staff, token = await repository.create_staff_user(pg_pool, "Nurse Joy", "clinician")
    stored = await pg_pool.fetchval("SELECT token_hash FROM staff_users WHERE id = $1", staff.id)
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert token not in stored
    assert await repository.get_staff_by_token(pg_pool, token) == staff
    assert await repository.get_staff_by_token(pg_pool, token + "x") is None
    assert await repository.disable_staff_user(pg_pool, staff.id)
    assert await repository.get_staff_by_token(pg_pool, token) is None


async def test_idempotent_response_first_writer_wins(pg_pool: asyncpg.Pool) -> None:
    assert await repository.get_idempotent_response(pg_pool, "session", "k1") is None
    first = await repository.save_idempotent_response(
        pg_pool, "session", "k1", "hash-a", 202, {"accepted": True}
    )
    again = await repository.save_idempotent_response(
        pg_pool, "session", "k1", "hash-b", 500, {"accepted": False}
    )
    assert again == first
    assert (first.request_hash, first.status_code, first.response) == (
        "hash-a",
        202,
        {"accepted": True},
    )
    assert await repository.get_idempotent_response(pg_pool, "session", "k1") == first
    assert await repository.get_idempotent_response(pg_pool, "other", "k1") is None
