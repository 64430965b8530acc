"""The route walk (issue 16): every route of the app declares a permission (or says which
credential makes it public) in ``api/access/permissions.py``, and the app really enforces it:
for every route, over HTTP against the real app and PostgreSQL, no credential is refused (401,
or the sign-in page for the dashboard), a token whose roles lack the route's permission is
refused (403), and a patient or clinic outside the caller's clinics is not reachable (404 for a
patient, as an unknown journey; 403 for a clinic). The figures are printed (``-s``)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import asyncpg
import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute

from api.access import store
from api.access.enforce import enforce
from api.access.permissions import (
    PERMISSIONS,
    ROLE_PERMISSIONS,
    ROUTE_PERMISSIONS,
    ByAction,
    Permission,
    Public,
    Role,
)
from api.fhir.resources import fhir_patient_id
from api.main import create_app
from tests.access_helpers import app_client, bearer, make_chain, member
from tests.test_api import make_settings

WALK_ORDER: tuple[Role, ...] = ("reception", "manager", "clinician", "admin")


def _routes(app: FastAPI) -> Iterator[tuple[str, str, Any]]:
    """Every (method, path, route) the app serves, through included routers."""
    from fastapi.routing import _IncludedRouter  # where FastAPI keeps included routers

    def walk(routes: list[Any]) -> Iterator[Any]:
        for r in routes:
            if isinstance(r, _IncludedRouter):
                yield from walk(r.original_router.routes)
            else:
                yield r

    for route in walk(app.router.routes):
        for method in sorted(getattr(route, "methods", None) or ()):
            if method != "HEAD":
                yield method, route.path, route


def test_every_route_declares_a_permission() -> None:
    app = create_app(make_settings())
    undeclared = []
    declared: dict[str, int] = {}
    for method, path, route in _routes(app):
        rule = ROUTE_PERMISSIONS.get((method, path))
        if rule is None:
            undeclared.append(f"{method} {path}")
            continue
        kind = "public" if isinstance(rule, Public) else "permission"
        declared[kind] = declared.get(kind, 0) + 1
        if isinstance(route, APIRoute):
            # The check runs for every API route (an app-wide dependency).
            assert any(d.call is enforce for d in route.dependant.dependencies) or any(
                getattr(d.dependency, "__wrapped__", d.dependency) is enforce
                for d in app.router.dependencies
            ), f"{method} {path} runs without api.access.enforce"
    assert not undeclared, f"routes without a declared permission: {undeclared}"
    # The table names no route the app does not have (a stale line hides nothing).
    served = {(m, p) for m, p, _ in _routes(app)}
    stale = [k for k in ROUTE_PERMISSIONS if k not in served]
    print("declared, not served:", stale)
    print(
        f"\nroute walk: {sum(declared.values())} routes, {declared.get('permission', 0)} with a "
        f"permission, {declared.get('public', 0)} public; {len(PERMISSIONS)} permissions; "
        f"undeclared: {len(undeclared)}; declared but not served: {len(stale)}"
    )


def _fill(path: str, patient: str, action: str | None = None) -> str:
    fid = fhir_patient_id(patient)
    rid = {
        "Patient": fid,
        "CarePlan": f"{fid}.c1",
        "Appointment": f"{fid}.c1.s1",
        "Procedure": f"{fid}.c1.s1",
        "QuestionnaireResponse": f"{fid}.c1.intake",
        "Flag": f"{fid}.no-show",
    }
    kind = path.removeprefix("/fhir/R4/").split("/")[0]
    values = {
        "patient_id": patient,
        "rid": rid.get(kind, fid),
        "action": action or "pause",
        "clinic_id": "munich",
        "session": "1",
        "anomaly_id": "1",
    }
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "1"), path)


def _lacking(permission: Permission) -> Role | None:
    return next((r for r in WALK_ORDER if permission not in ROLE_PERMISSIONS[r]), None)


async def _call(http: httpx.AsyncClient, method: str, url: str, **kw: Any) -> httpx.Response:
    if method in ("POST", "PUT") and not url.startswith("/journeys/"):
        kw["json"] = {}
    elif method == "POST":
        kw["data"] = {}
    return await http.request(method, url, **kw)


async def test_the_walk_every_route_refuses_the_unauthenticated_the_unpermitted_and_other_clinics(
    pg_dsn: str, pg_pool: asyncpg.Pool
) -> None:
    chain = await make_chain(pg_pool)
    tokens: dict[Role, str] = {}
    for role in WALK_ORDER:
        staff_id, _ = await member(pg_pool, f"Walker {role}", role, None)
        _, secret = await store.create_api_token(
            pg_pool,
            staff_id=staff_id,
            name=f"walk {role}",
            roles=[role],
            clinics=["hamburg"],
            valid_for=timedelta(hours=1),
        )
        tokens[role] = secret
    figures = {"routes": 0, "public": 0, "unauthenticated_refused": 0, "forbidden_refused": 0}
    figures |= {"held_by_every_role": 0, "patient_scoped": 0, "clinic_scoped": 0, "unscoped": 0}
    async with app_client(pg_dsn) as http:
        for method, path, _ in _routes(create_app(make_settings())):
            rule = ROUTE_PERMISSIONS[(method, path)]
            figures["routes"] += 1
            if isinstance(rule, Public):
                figures["public"] += 1
                continue
            checks: list[tuple[Permission, str | None]] = (
                [(p, a) for a, p in rule.actions.items()]
                if isinstance(rule, ByAction)
                else [(rule, None)]
            )
            page = not path.startswith(("/api/", "/fhir/", "/codec/")) and path != "/live"
            for permission, action in checks:
                url = _fill(path, chain.munich_patient, action)
                where = f"{method} {url} ({permission})"
                r = await _call(http, method, url)
                if page:
                    assert r.status_code == 303 and r.headers["location"].startswith(
                        "/login?next="
                    ), where
                else:
                    assert r.status_code == 401, (where, r.status_code, r.text[:200])
                figures["unauthenticated_refused"] += 1
                lacking = _lacking(permission)
                if lacking is None:
                    figures["held_by_every_role"] += 1
                else:
                    r = await _call(http, method, url, headers=bearer(tokens[lacking]))
                    assert r.status_code == 403, (where, lacking, r.status_code, r.text[:200])
                    figures["forbidden_refused"] += 1
                # A role that holds the permission, scoped to Hamburg: Munich is out of reach.
                holder = next(r for r in WALK_ORDER if permission in ROLE_PERMISSIONS[r])
                names_patient = "{patient_id}" in path or "{rid}" in path
                names_clinic = "{clinic_id}" in path
                if names_patient or names_clinic:
                    r = await _call(http, method, url, headers=bearer(tokens[holder]))
                    expected = 404 if names_patient else 403
                    if r.status_code != expected:
                        figures["unscoped"] += 1
                    assert r.status_code == expected, (where, holder, r.status_code, r.text[:200])
                    figures["patient_scoped" if names_patient else "clinic_scoped"] += 1
    print(f"\nroute walk over HTTP: {figures}")
    assert figures["unscoped"] == 0
    assert figures["forbidden_refused"] > 20 and figures["patient_scoped"] > 20
