"""FHIR R4 read API (``/fhir/R4``), staff tokens only: ``Patient``, ``CarePlan``,
``Appointment``, ``Procedure``, ``QuestionnaireResponse``, ``Flag`` and the
``CapabilityStatement`` at ``/fhir/R4/metadata``.

Reads the read model (``journeys``, ``appointments``), the event log and ``patients``; never
Temporal, so it answers while Temporal is down. Answers are ``application/fhir+json``; a bad
search or an unknown id is an ``OperationOutcome`` (400/404). Searches page with ``_count``
(1–500, default 50) and ``_offset`` (the ``next`` link carries it).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

import asyncpg
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api import schemas
from api.access.enforce import ClinicScopeDep
from api.deps import ServiceDep, SettingsDep, StaffDep
from api.fhir import resources as fhir

router = APIRouter(prefix="/fhir/R4", tags=["fhir"])

MEDIA_TYPE = "application/fhir+json"
MAX_COUNT = 500
FHIR_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {MEDIA_TYPE: {"schema": {"type": "object"}}}, "description": "A resource."},
    400: {"content": {MEDIA_TYPE: {"schema": {"type": "object"}}}, "description": "Bad search."},
    401: {"model": schemas.ErrorBody, "description": "Missing or bad staff token."},
    403: {"model": schemas.ErrorBody, "description": "A token outside its scope."},
    404: {"content": {MEDIA_TYPE: {"schema": {"type": "object"}}}, "description": "Unknown id."},
    422: {"model": schemas.ErrorBody, "description": "A parameter breaks a rule."},
    503: {"model": schemas.ErrorBody, "description": "PostgreSQL down; retry."},
}
CountParam = Annotated[int, Query(alias="_count", ge=1, le=MAX_COUNT)]
OffsetParam = Annotated[int, Query(alias="_offset", ge=0, le=1_000_000)]
PatientParam = Annotated[str | None, Query(max_length=80, description="Patient/<id> or <id>")]

_SESSION_ID = re.compile(
    r"^(?P<patient>[A-Za-z0-9.-]+)\.c(?P<course>\d{1,4})\.s(?P<session>\d{1,4})$"
)
_CAREPLAN_ID = re.compile(r"^(?P<patient>[A-Za-z0-9.-]+)\.c(?P<course>\d{1,4})$")
_QR_ID = re.compile(r"^(?P<patient>[A-Za-z0-9.-]+)\.(e\d{1,18}|c\d{1,4}\.intake)$")
_FLAG_ID = re.compile(r"^(?P<patient>[A-Za-z0-9.-]+)\.(?P<flag>[a-z-]{1,64})$")
_DATE_PARAM = re.compile(r"^(?P<op>eq|ne|lt|le|gt|ge|sa|eb|ap)?(?P<value>\d{4}-\d{2}-\d{2}(T.+)?)$")


def _fhir(body: dict[str, Any], status_code: int = 200) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False, separators=(",", ":")),
        status_code=status_code,
        media_type=MEDIA_TYPE,
    )


def _outcome(status_code: int, code: str, message: str) -> Response:
    return _fhir(fhir.operation_outcome(code, message), status_code)


def _not_found(kind: str, rid: str) -> Response:
    return _outcome(404, "not-found", f"{kind}/{rid} is not known.")


def _base(settings: Any) -> str:
    return f"{str(settings.journey_public_url).rstrip('/')}/fhir/R4"


class _Search:
    """One search's paging: slices in-memory results or gives SQL limit/offset, and links."""

    def __init__(self, request: Request, base: str, kind: str, count: int, offset: int) -> None:
        self.request, self.base, self.kind, self.count, self.offset = (
            request,
            base,
            kind,
            count,
            offset,
        )

    def _url(self, offset: int) -> str:
        params = [(k, v) for k, v in self.request.query_params.multi_items() if k != "_offset"]
        params.append(("_offset", str(offset)))
        return f"{self.base}/{self.kind}?{urlencode(params)}"

    def bundle(self, page: list[dict[str, Any]], total: int) -> Response:
        more = self.offset + len(page) < total
        return _fhir(
            fhir.bundle(
                self.base,
                self.kind,
                page,
                total,
                self._url(self.offset),
                self._url(self.offset + self.count) if more else None,
            )
        )

    def slice(self, everything: list[dict[str, Any]]) -> Response:
        return self.bundle(everything[self.offset : self.offset + self.count], len(everything))


# ---------------------------------------------------------------- data access


async def _journey(pool: asyncpg.Pool, patient_id: str) -> dict[str, Any] | None:
    row = await pool.fetchrow("SELECT * FROM journeys WHERE patient_id = $1", patient_id)
    return None if row is None else dict(row)


async def _appointments(pool: asyncpg.Pool, workflow_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT * FROM appointments WHERE workflow_id = $1 ORDER BY course_number, session_number",
        workflow_id,
    )
    return [dict(r) for r in rows]


async def _patient_resources(
    pool: asyncpg.Pool, kind: str, patient_id: str
) -> list[dict[str, Any]]:
    """Every resource of ``kind`` about one patient (a patient has a handful)."""
    if kind == "Patient":
        row = await pool.fetchrow(
            """
            SELECT p.*, c.name AS clinic_name FROM patients p
            LEFT JOIN clinics c ON c.clinic_id = p.clinic_id WHERE p.patient_id = $1
            """,
            patient_id,
        )
        return [] if row is None else [fhir.patient(dict(row), row["clinic_name"])]
    journey = await _journey(pool, patient_id)
    if journey is None:
        return []
    if kind == "CarePlan":
        return [fhir.careplan(journey, await _appointments(pool, journey["workflow_id"]))]
    if kind == "Appointment":
        return [
            fhir.appointment(journey, a) for a in await _appointments(pool, journey["workflow_id"])
        ]
    if kind == "Procedure":
        return [
            fhir.procedure(journey, a)
            for a in await _appointments(pool, journey["workflow_id"])
            if a["status"] == "done"
        ]
    if kind == "Flag":
        return [fhir.flag(journey, f) for f in journey["flags"]]
    if kind == "QuestionnaireResponse":
        events = await pool.fetch(
            """
            SELECT id, occurred_at, actor, data FROM journey_events
            WHERE workflow_id = $1 AND kind = 'screening_submitted' ORDER BY occurred_at, id
            """,
            journey["workflow_id"],
        )
        found = [fhir.questionnaire_response(patient_id, dict(e)) for e in events]
        intake = fhir.intake_screening(journey)
        return found if found or intake is None else [intake]
    raise KeyError(kind)


def _date_bounds(values: list[str]) -> list[tuple[str, datetime]]:
    """``date`` search values → ``(operator, instant)`` conditions on ``starts_at``.

    A date without a time is the whole UTC day. Raises ValueError on anything else.
    """
    conditions: list[tuple[str, datetime]] = []
    for raw in values:
        m = _DATE_PARAM.match(raw)
        if m is None:
            raise ValueError(f"date={raw!r} is not [prefix]YYYY-MM-DD[Thh:mm:ss+zz:zz]")
        op = m["op"] or "eq"
        if op not in ("eq", "lt", "le", "gt", "ge"):
            raise ValueError(f"the prefix {op!r} is not supported (eq, lt, le, gt, ge)")
        value = m["value"]
        if "T" in value:
            instant = datetime.fromisoformat(value)
            if instant.tzinfo is None:
                raise ValueError("a date-time needs its offset")
            if not 1900 <= instant.year <= 2100:
                raise ValueError(f"date={raw!r} is outside 1900–2100")
            sql_op = {"eq": "=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}[op]
            conditions.append((sql_op, instant))
            continue
        day = date.fromisoformat(value)
        if not date(1900, 1, 1) <= day <= date(2100, 12, 31):
            raise ValueError(f"date={raw!r} is outside 1900–2100")
        start = datetime.combine(day, time(), UTC)
        end = start + timedelta(days=1)
        match op:
            case "eq":
                conditions += [(">=", start), ("<", end)]
            case "lt":
                conditions.append(("<", start))
            case "le":
                conditions.append(("<", end))
            case "gt":
                conditions.append((">=", end))
            case "ge":
                conditions.append((">=", start))
    return conditions


# ---------------------------------------------------------------- routes


@router.get("/metadata", responses=FHIR_RESPONSES, response_class=Response)
async def metadata(settings: SettingsDep, staff: StaffDep) -> Response:
    """The ``CapabilityStatement``: what this server reads and searches."""
    return _fhir(fhir.capability_statement(_base(settings), "0.1.0"))


async def _search(
    request: Request,
    service: ServiceDep,
    settings: Any,
    kind: str,
    patient: str | None,
    count: int,
    offset: int,
    dates: list[str] | None = None,
    ids: str | None = None,
    clinics: list[str] | None = None,
) -> Response:
    # ``clinics``: the caller's scope (api/access; None: every clinic). A search naming a
    # patient was checked against it before the route ran.
    search = _Search(request, _base(settings), kind, count, offset)
    pool = service.pool
    subject = patient if patient is not None else ids if kind == "Patient" else None
    if subject is not None:
        try:
            pid = fhir.our_patient_id(subject)
        except fhir.FhirIdError:
            return _outcome(400, "value", f"{subject!r} is not a patient reference.")
        found = await service.db(_patient_resources(pool, kind, pid))
        if dates:
            try:
                bounds = _date_bounds(dates)
            except ValueError as err:
                return _outcome(400, "value", str(err))
            found = [
                r
                for r in found
                if all(_compare(datetime.fromisoformat(r["start"]), op, at) for op, at in bounds)
            ]
        return search.slice(found)
    if kind == "Patient":
        rows = await service.db(
            pool.fetch(
                """
                SELECT p.*, c.name AS clinic_name, count(*) OVER () AS total FROM patients p
                LEFT JOIN clinics c ON c.clinic_id = p.clinic_id
                WHERE ($3::text[] IS NULL OR p.clinic_id = ANY($3))
                ORDER BY p.patient_id LIMIT $1 OFFSET $2
                """,
                count,
                offset,
                clinics,
            )
        )
        page = [fhir.patient(dict(r), r["clinic_name"]) for r in rows]
        return search.bundle(
            page,
            await _total(
                service,
                rows,
                "SELECT count(*) FROM patients WHERE ($1::text[] IS NULL OR clinic_id = ANY($1))",
                clinics,
            ),
        )
    if kind == "CarePlan":
        rows = await service.db(
            pool.fetch(
                "SELECT *, count(*) OVER () AS total FROM journeys"
                " WHERE ($3::text[] IS NULL OR clinic_id = ANY($3))"
                " ORDER BY patient_id LIMIT $1 OFFSET $2",
                count,
                offset,
                clinics,
            )
        )
        page = [
            fhir.careplan(dict(r), await service.db(_appointments(pool, r["workflow_id"])))
            for r in rows
        ]
        return search.bundle(
            page,
            await _total(
                service,
                rows,
                "SELECT count(*) FROM journeys WHERE ($1::text[] IS NULL OR clinic_id = ANY($1))",
                clinics,
            ),
        )
    if kind == "Appointment":
        try:
            bounds = _date_bounds(dates or [])
        except ValueError as err:
            return _outcome(400, "value", str(err))
        where = " AND ".join(
            [
                "($3::text[] IS NULL OR j.clinic_id = ANY($3))",
                *(f"a.starts_at {op} ${i + 4}" for i, (op, _) in enumerate(bounds)),
            ]
        )
        sql = f"""
            SELECT a.*, j.patient_id, count(*) OVER () AS total
            FROM appointments a JOIN journeys j ON j.workflow_id = a.workflow_id
            WHERE {where}
            ORDER BY a.starts_at, a.workflow_id, a.course_number, a.session_number
            LIMIT $1 OFFSET $2
        """
        rows = await service.db(pool.fetch(sql, count, offset, clinics, *(at for _, at in bounds)))
        page = [fhir.appointment({"patient_id": r["patient_id"]}, dict(r)) for r in rows]
        total = int(rows[0]["total"]) if rows else 0
        if not rows and offset:
            total = int(
                await service.db(
                    pool.fetchval(
                        "SELECT count(*) FROM appointments a"
                        " JOIN journeys j ON j.workflow_id = a.workflow_id"
                        f" WHERE {where} AND $1::int > 0 AND $2::int >= 0",
                        count,
                        offset,
                        clinics,
                        *(at for _, at in bounds),
                    )
                )
                or 0
            )
        return search.bundle(page, total)
    return _outcome(
        400, "required", f"Searching {kind} needs a patient: {kind}?patient=Patient/<id>."
    )


async def _total(
    service: ServiceDep, rows: list[asyncpg.Record], count_sql: str, *args: Any
) -> int:
    if rows:
        return int(rows[0]["total"])
    return int(await service.db(service.pool.fetchval(count_sql, *args)) or 0)


def _compare(value: datetime, op: str, at: datetime) -> bool:
    match op:
        case "=":
            return value == at
        case "<":
            return value < at
        case "<=":
            return value <= at
        case ">":
            return value > at
        case _:
            return value >= at


def _register(kind: str) -> None:
    async def search(
        request: Request,
        service: ServiceDep,
        settings: SettingsDep,
        staff: StaffDep,
        scope: ClinicScopeDep,
        patient: PatientParam = None,
        count: CountParam = 50,
        offset: OffsetParam = 0,
        date_: Annotated[list[str] | None, Query(alias="date", max_length=4)] = None,
        id_: Annotated[str | None, Query(alias="_id", max_length=80)] = None,
    ) -> Response:
        return await _search(
            request, service, settings, kind, patient, count, offset, date_, id_, scope
        )

    async def read(
        rid: str, service: ServiceDep, settings: SettingsDep, staff: StaffDep
    ) -> Response:
        if len(rid) > 100:
            return _not_found(kind, rid[:100])
        patterns = {
            "Patient": re.compile(r"^(?P<patient>[A-Za-z0-9.-]{1,64})$"),
            "CarePlan": _CAREPLAN_ID,
            "Appointment": _SESSION_ID,
            "Procedure": _SESSION_ID,
            "QuestionnaireResponse": _QR_ID,
            "Flag": _FLAG_ID,
        }
        m = patterns[kind].match(rid)
        if m is None:
            return _not_found(kind, rid)
        pid = fhir.our_patient_id(m["patient"])
        for resource in await service.db(_patient_resources(service.pool, kind, pid)):
            if resource["id"] == rid:
                return _fhir(resource)
        return _not_found(kind, rid)

    search.__name__ = f"search_{kind.lower()}"
    search.__doc__ = f"Search ``{kind}`` resources; a ``searchset`` Bundle."
    read.__name__ = f"read_{kind.lower()}"
    read.__doc__ = f"Read one ``{kind}`` by its id."
    router.add_api_route(
        f"/{kind}", search, methods=["GET"], responses=FHIR_RESPONSES, response_class=Response
    )
    router.add_api_route(
        f"/{kind}/{{rid}}", read, methods=["GET"], responses=FHIR_RESPONSES, response_class=Response
    )


for _kind in fhir.RESOURCE_TYPES:
    _register(_kind)
