"""Shared pieces of the staff-access tests (issue 16): two clinics with a patient each, members
and tokens scoped to them, and the dashboard app on real PostgreSQL (Temporal not needed)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx

from activities import repository
from api.access.config import AccessSettings
from api.main import create_app
from tests.integration_rows import JourneyRows, Session, new_patient
from tests.test_api import make_settings, serve
from workflows.protocol import ClinicProtocol, ClinicSettings

CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def access_settings(**values: Any) -> AccessSettings:
    return AccessSettings(_env_file=None, **values)


@dataclass
class Chain:
    """Two clinics of a chain, a journey in each."""

    pool: asyncpg.Pool
    hamburg_patient: str
    munich_patient: str


async def make_chain(pool: asyncpg.Pool) -> Chain:
    for cid, name in (("hamburg", "Hamburg"), ("munich", "Munich")):
        await repository.upsert_clinic(
            pool,
            ClinicProtocol(
                clinic=ClinicSettings(clinic_id=cid, name=name, timezone="Europe/Berlin")
            ),
        )
    patients = []
    for cid, name in (("hamburg", "Hanna Hamburg"), ("munich", "Max Munich")):
        pid = await new_patient(pool, name, cid)
        j = JourneyRows(pool, pid, cid)
        j.sessions[1] = Session(1, datetime(2027, 3, 2, 9, tzinfo=UTC))
        await j.step(
            ("journey_started", "Journey started", {}),
            sessions=[1],
            at=datetime.now(UTC) - timedelta(days=1),
        )
        patients.append(pid)
    return Chain(pool, patients[0], patients[1])


async def member(
    pool: asyncpg.Pool, name: str, role: repository.StaffRole, clinics: list[str] | None
) -> tuple[int, str]:
    row, token = await repository.create_staff_user(pool, name, role)
    await pool.execute("UPDATE staff_users SET clinics = $2 WHERE id = $1", row.id, clinics)
    return row.id, token


@asynccontextmanager
async def app_client(
    pg_dsn: str, access: AccessSettings | None = None, **settings: Any
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(make_settings(database_url=pg_dsn, temporal_address="127.0.0.1:9", **settings))
    app.state.access = access or access_settings()
    async with serve(app) as http:
        yield http


async def login(http: httpx.AsyncClient, token: str, next_path: str = "/") -> httpx.Response:
    form = (await http.get("/login")).text
    csrf = CSRF_FIELD.search(form)
    assert csrf is not None
    return await http.post(
        "/login", data={"token": token, "csrf_token": csrf.group(1), "next": next_path}
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
