"""The development stack's clinics run the simulation clock: ``journey dev`` marks the default
clinic and the demo's southern clinic as sandbox (the journey honours ``time_scale`` only
there); production paths (``ensure_default_clinic``) never do."""

from __future__ import annotations

import asyncpg

from activities import repository
from worker.demo import DEMO_SOUTH_CLINIC, mark_dev_clinics_sandbox
from workflows.protocol import ClinicProtocol, ClinicSettings, Protocol


async def test_production_default_clinic_is_not_sandbox(pg_pool: asyncpg.Pool) -> None:
    assert (await repository.ensure_default_clinic(pg_pool)).clinic.sandbox is False


async def test_dev_stack_marks_its_clinics_sandbox_once(pg_pool: asyncpg.Pool) -> None:
    assert sorted(await mark_dev_clinics_sandbox(pg_pool)) == ["default", DEMO_SOUTH_CLINIC]
    default = await repository.get_clinic(pg_pool, "default")
    south = await repository.get_clinic(pg_pool, DEMO_SOUTH_CLINIC)
    assert default is not None and default.clinic.sandbox
    assert south is not None and south.clinic.sandbox and south.clinic.hemisphere == "south"
    assert await mark_dev_clinics_sandbox(pg_pool) == []


async def test_dev_stack_keeps_a_tuned_default_clinic(pg_pool: asyncpg.Pool) -> None:
    tuned = ClinicProtocol(
        clinic=ClinicSettings(clinic_id="default", name="My clinic", timezone="Europe/Paris"),
        protocol=Protocol(version="pore-mine", spf_months=3),
    )
    await repository.upsert_clinic(pg_pool, tuned)
    await mark_dev_clinics_sandbox(pg_pool)
    stored = await repository.get_clinic(pg_pool, "default")
    assert stored is not None
    assert stored.clinic.sandbox
    assert stored.model_copy(update={"clinic": tuned.clinic}) == tuned
    assert stored.clinic.model_copy(update={"sandbox": False}) == tuned.clinic
