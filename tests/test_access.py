"""Staff access for a clinic chain (issue 16), on the real app and PostgreSQL (Temporal is not
needed: everything here is answered from the read model or refused before Temporal).

API tokens (scoped, expiring, revocable, stored hashed, a disabled member's stop at once),
clinic scoping of the lists, pages, FHIR reads and searches, the permission table at work, the
append-only access log with its page and CSV, and the pasted-token login off in production."""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import timedelta

import asyncpg
import httpx
import pytest

from api.access import store
from api.fhir.resources import fhir_patient_id
from api.web.routes import CSRF_COOKIE, SESSION_COOKIE
from tests.access_helpers import access_settings, app_client, bearer, login, make_chain, member
from worker.codec import generate_key


async def test_api_tokens_are_scoped_expiring_revocable_and_stored_hashed(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    chain = await make_chain(pg_pool)
    admin_id, _ = await member(pg_pool, "Org Admin", "admin", None)
    row, secret = await store.create_api_token(
        pg_pool,
        staff_id=admin_id,
        name="hamburg booking sync",
        roles=["reception"],
        clinics=["hamburg"],
        valid_for=timedelta(days=1),
    )
    stored = await pg_pool.fetchval("SELECT token_hash FROM api_tokens WHERE id = $1", row.id)
    assert stored == hashlib.sha256(secret.encode()).hexdigest() and secret not in stored
    async with app_client(pg_dsn) as http:
        r = await http.get("/api/journeys", headers=bearer(secret))
        assert r.status_code == 200, r.text
        assert [j["patient_id"] for j in r.json()["data"]] == [chain.hamburg_patient]
        # Another clinic's journey does not exist for this token; a clinician's action is 403.
        r = await http.get(f"/api/journeys/{chain.munich_patient}", headers=bearer(secret))
        assert r.status_code == 404 and r.json()["detail"][0]["rule"] == "journey_not_found"
        r = await http.post(
            f"/api/journeys/{chain.hamburg_patient}/review",
            json={"outcome": "complete"},
            headers=bearer(secret),
        )
        assert r.status_code == 403 and r.json()["detail"][0]["rule"] == "forbidden"
        r = await http.post(
            "/api/journeys",
            json={
                "patient": {"full_name": "New Patient", "email": "n@example.com"},
                "pore_grade": "moderate",
                "numbing_cream": False,
                "clinic_id": "munich",
            },
            headers=bearer(secret),
        )
        assert r.status_code == 403 and r.json()["detail"][0]["rule"] == "clinic_out_of_scope"
        for clinic, status in (("munich", 403), ("hamburg", 200)):
            r = await http.post(
                "/api/plans/preview",
                json={"pore_grade": "small", "clinic_id": clinic},
                headers=bearer(secret),
            )
            assert r.status_code == status, (clinic, r.text)
        used = await pg_pool.fetchval("SELECT last_used_at FROM api_tokens WHERE id = $1", row.id)
        assert used is not None

        # Expired (its end moved into the past, as time would): refused.
        await pg_pool.execute(
            "UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE id = $1", row.id
        )
        r = await http.get("/api/journeys", headers=bearer(secret))
        assert r.status_code == 401 and r.json()["detail"][0]["rule"] == "unauthorized"

        # Revoked: refused at once; revoking twice says so.
        row2, secret2 = await store.create_api_token(
            pg_pool,
            staff_id=admin_id,
            name="report script",
            roles=["manager"],
            clinics=None,
            valid_for=timedelta(days=30),
        )
        assert (await http.get("/fhir/R4/Patient", headers=bearer(secret2))).status_code == 200
        assert await store.revoke_api_token(pg_pool, row2.id)
        assert not await store.revoke_api_token(pg_pool, row2.id)
        assert (await http.get("/fhir/R4/Patient", headers=bearer(secret2))).status_code == 401


async def test_a_token_never_exceeds_its_member(pg_pool: asyncpg.Pool) -> None:
    await make_chain(pg_pool)
    rita, _ = await member(pg_pool, "Rita Reception", "reception", ["hamburg"])
    with pytest.raises(store.ScopeError):
        await store.create_api_token(
            pg_pool, staff_id=rita, name="x", roles=["admin"], clinics=None, valid_for=timedelta(1)
        )
    with pytest.raises(store.ScopeError):
        await store.create_api_token(
            pg_pool,
            staff_id=rita,
            name="x",
            roles=["reception"],
            clinics=["munich"],
            valid_for=timedelta(1),
        )
    # No clinic named: the member's own clinics, not every clinic.
    row, _ = await store.create_api_token(
        pg_pool, staff_id=rita, name="x", roles=["staff"], clinics=None, valid_for=timedelta(1)
    )
    assert row.clinics == ["hamburg"] and row.roles == ["reception"]


async def test_disabling_a_member_stops_their_sessions_and_tokens_at_once(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    await make_chain(pg_pool)
    rita, own = await member(pg_pool, "Rita Reception", "reception", ["hamburg"])
    _, secret = await store.create_api_token(
        pg_pool, staff_id=rita, name="x", roles=["reception"], clinics=None, valid_for=timedelta(1)
    )
    async with app_client(pg_dsn) as http:
        assert (await login(http, own)).status_code == 303
        assert (await http.get("/journeys")).status_code == 200
        assert (await http.get("/api/journeys", headers=bearer(secret))).status_code == 200
        disabled, sessions, tokens = await store.disable_staff(pg_pool, rita)
        assert (disabled, sessions, tokens) == (True, 1, 1)
        page = await http.get("/journeys")
        assert page.status_code == 303 and page.headers["location"].startswith("/login")
        assert (await http.get("/api/journeys", headers=bearer(secret))).status_code == 401
        assert (await http.get("/api/journeys", headers=bearer(own))).status_code == 401


async def test_rotating_a_members_token_stops_the_old_one(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    sam, old = await member(pg_pool, "Sam", "clinician", None)
    async with app_client(pg_dsn) as http:
        assert (await http.get("/api/journeys", headers=bearer(old))).status_code == 200
        rotated = await store.rotate_staff_token(pg_pool, sam)
        assert rotated is not None
        new, _ = rotated
        assert (await http.get("/api/journeys", headers=bearer(old))).status_code == 401
        assert (await http.get("/api/journeys", headers=bearer(new))).status_code == 200


async def test_a_receptionist_sees_her_clinic_only_on_every_page_and_list(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    chain = await make_chain(pg_pool)
    _, rita = await member(pg_pool, "Rita Reception", "reception", ["hamburg"])
    async with app_client(pg_dsn) as http:
        assert (await login(http, rita)).status_code == 303
        overview = (await http.get("/")).text
        listed = (await http.get("/journeys")).text
        searched = (await http.get("/journeys?q=Max")).text
        assert "Hanna Hamburg" in listed and "Max Munich" not in listed
        assert "Max Munich" not in overview and "Max Munich" not in searched
        assert "(1 in all)" in overview  # the counts are her clinic's (two journeys in the chain)
        # The clinic filter offers her clinic only.
        assert 'value="munich"' not in listed
        own = await http.get(f"/journeys/{chain.hamburg_patient}")
        assert own.status_code == 200 and "Hanna Hamburg" in own.text
        other = await http.get(f"/journeys/{chain.munich_patient}")
        assert other.status_code == 404 and "Max Munich" not in other.text
        assert (await http.get(f"/live?patient_id={chain.hamburg_patient}")).status_code == 200
        assert (await http.get(f"/live?patient_id={chain.munich_patient}")).status_code == 404
        # Her page offers what reception may do, never a clinician's form.
        assert 'id="form-review"' not in own.text and 'id="form-check"' not in own.text
        assert 'href="/access-log"' not in own.text
        # A clinician's form posted anyway is refused.
        r = await http.post(f"/journeys/{chain.hamburg_patient}/review", data={})
        assert r.status_code == 403
        assert (await http.get("/access-log")).status_code == 403


async def test_fhir_reads_and_searches_are_scoped_in_sql(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    chain = await make_chain(pg_pool)
    manager, _ = await member(pg_pool, "Mia Manager", "manager", ["hamburg"])
    _, secret = await store.create_api_token(
        pg_pool,
        staff_id=manager,
        name="fhir",
        roles=["manager"],
        clinics=None,
        valid_for=timedelta(1),
    )
    h = bearer(secret)
    mine, theirs = fhir_patient_id(chain.hamburg_patient), fhir_patient_id(chain.munich_patient)
    async with app_client(pg_dsn) as http:
        for kind in ("Patient", "CarePlan", "Appointment"):
            r = await http.get(f"/fhir/R4/{kind}", headers=h)
            assert r.status_code == 200, (kind, r.text)
            bundle = r.json()
            assert bundle["total"] == 1, (kind, bundle)
            assert theirs not in r.text and mine in r.text, kind
        assert (await http.get(f"/fhir/R4/Patient/{mine}", headers=h)).status_code == 200
        assert (await http.get(f"/fhir/R4/Patient/{theirs}", headers=h)).status_code == 404
        assert (await http.get(f"/fhir/R4/CarePlan/{theirs}.c1", headers=h)).status_code == 404
        r = await http.get(f"/fhir/R4/Flag?patient=Patient/{theirs}", headers=h)
        assert r.status_code == 404
        r = await http.get(f"/fhir/R4/Patient?_id={theirs}", headers=h)
        assert r.status_code == 404
        # An organisation-wide manager sees both clinics.
        boss, _ = await member(pg_pool, "Org Manager", "manager", None)
        _, wide = await store.create_api_token(
            pg_pool,
            staff_id=boss,
            name="fhir",
            roles=["manager"],
            clinics=None,
            valid_for=timedelta(1),
        )
        r = await http.get("/fhir/R4/Patient", headers=bearer(wide))
        assert r.json()["total"] == 2


async def test_the_access_log_records_who_saw_which_patient_append_only(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    chain = await make_chain(pg_pool)
    rita_id, rita = await member(pg_pool, "Rita Reception", "reception", ["hamburg"])
    mia_id, mia = await member(pg_pool, "Mia Manager", "manager", ["hamburg"])
    async with app_client(pg_dsn) as http:
        assert (await login(http, rita)).status_code == 303
        await http.get(f"/journeys/{chain.hamburg_patient}")
        await http.get(f"/journeys/{chain.munich_patient}")  # out of scope: denied, logged
        await http.post("/logout", data={})
    rows = await pg_pool.fetch(
        "SELECT staff_id, action, patient_id, clinic_id, route, client FROM access_log ORDER BY id"
    )
    got = [(r["staff_id"], r["action"], r["patient_id"], r["clinic_id"]) for r in rows]
    assert (rita_id, "view", chain.hamburg_patient, "hamburg") in got
    assert (rita_id, "denied", chain.munich_patient, "munich") in got
    assert all(r["client"] for r in rows) and rows[0]["route"] == "GET /journeys/{patient_id}"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pg_pool.execute("UPDATE access_log SET staff_id = 0")
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await pg_pool.execute("DELETE FROM access_log")

    async with app_client(pg_dsn) as http:
        assert (await login(http, mia)).status_code == 303
        page = await http.get("/access-log")
        assert page.status_code == 200 and chain.hamburg_patient in page.text
        # Her clinics' lines only: the denied Munich attempt is Munich's privacy officer's.
        assert chain.munich_patient not in page.text
        r = await http.get("/access-log.csv")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        lines = list(csv.DictReader(io.StringIO(r.text)))
        assert {line["patient_id"] for line in lines} >= {chain.hamburg_patient}
        assert "Hanna" not in r.text and "Rita" not in r.text  # ids only
        # The export itself is logged.
        exported = await pg_pool.fetchval(
            "SELECT count(*) FROM access_log WHERE staff_id = $1 AND action = 'export'", mia_id
        )
        assert exported == 1
        r = await http.get(f"/access-log?patient_id={chain.hamburg_patient}")
        assert r.status_code == 200


async def test_production_turns_the_pasted_token_off_unless_break_glass(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    await make_chain(pg_pool)
    admin_id, own = await member(pg_pool, "Org Admin", "admin", None)
    _, secret = await store.create_api_token(
        pg_pool,
        staff_id=admin_id,
        name="ops",
        roles=["admin"],
        clinics=None,
        valid_for=timedelta(1),
    )
    production = {
        "journey_env": "production",
        "journey_patient_link_secret": "a-real-secret-from-the-vault-0123456789",
        "journey_codec_keys": f"k1:{generate_key()}",
        "journey_codec_active_key": "k1",
        "journey_public_url": "https://journey.clinic.example",
    }
    async with app_client(pg_dsn, **production) as http:
        page = (await http.get("https://testserver/login")).text
        assert 'name="token"' not in page
        r = await login_anyway(http, own)
        assert r.status_code == 403
        assert (await http.get("/api/journeys", headers=bearer(own))).status_code == 401
        assert (await http.get("/api/journeys", headers=bearer(secret))).status_code == 200
    async with app_client(pg_dsn, access_settings(token_login=True), **production) as http:
        assert 'name="token"' in (await http.get("https://testserver/login")).text
        assert (await http.get("/api/journeys", headers=bearer(own))).status_code == 200
        r = await login_anyway(http, own)
        assert r.status_code == 303
        session = http.cookies.get(SESSION_COOKIE)
        assert session and (await http.get("https://testserver/journeys")).status_code == 200
    # Break-glass over (the setting back to its default): that session no longer admits.
    async with app_client(pg_dsn, **production) as http:
        http.cookies.set(SESSION_COOKIE, session, domain="testserver.local")
        r = await http.get("https://testserver/journeys")
        assert r.status_code == 303 and r.headers["location"].startswith("/login")
    # (The same cookie still admits while the path is on: it is the setting that refused it.)
    async with app_client(pg_dsn, access_settings(token_login=True), **production) as http:
        http.cookies.set(SESSION_COOKIE, session, domain="testserver.local")
        assert (await http.get("https://testserver/journeys")).status_code == 200


async def login_anyway(http: httpx.AsyncClient, token: str) -> httpx.Response:
    """POST the token form although the page does not offer it (the CSRF cookie is the token)."""
    await http.get("https://testserver/login")
    csrf = http.cookies.get(CSRF_COOKIE)
    assert csrf is not None
    return await http.post(
        "https://testserver/login", data={"token": token, "csrf_token": csrf, "next": "/"}
    )
