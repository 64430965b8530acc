"""Pure builders: database rows → FHIR R4 resources (``fhir.resources`` R4B models).

Every resource is validated by its model before it leaves (``build`` raises on a resource the
model refuses, so a mapping bug is a 500 in tests, never a malformed document for an EMR).

Ids are stable and derived from our keys; FHIR ids allow ``[A-Za-z0-9.-]`` only, so the ``_`` of
patient ids becomes ``.`` (patient ids never contain ``.``, so the mapping is reversible):

* ``Patient/p.abc`` ↔ patient ``p_abc``
* ``CarePlan/p.abc.c1`` (course 1) · ``Appointment/p.abc.c1.s2`` · ``Procedure/p.abc.c1.s2``
* ``QuestionnaireResponse/p.abc.e<event id>`` · ``Flag/p.abc.no-show``
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from fhir.resources.R4B.appointment import Appointment
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.careplan import CarePlan
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.procedure import Procedure
from fhir.resources.R4B.questionnaireresponse import QuestionnaireResponse
from fhir.resources.R4B.resource import Resource

from activities.i18n import LANGUAGE_NAMES

SYSTEM = "https://pore-journey.example/fhir"
PATIENT_ID_SYSTEM = f"{SYSTEM}/sid/patient-id"
FLAG_SYSTEM = f"{SYSTEM}/CodeSystem/journey-flag"
STAGE_SYSTEM = f"{SYSTEM}/CodeSystem/journey-stage"
SCREENING_QUESTIONNAIRE = f"{SYSTEM}/Questionnaire/screening"
PROCEDURE_TEXT = "Non-ablative laser pore contraction"

RESOURCE_TYPES: dict[str, type[Resource]] = {
    "Patient": Patient,
    "CarePlan": CarePlan,
    "Appointment": Appointment,
    "Procedure": Procedure,
    "QuestionnaireResponse": QuestionnaireResponse,
    "Flag": Flag,
}

# Journey stage → CarePlan.status.
_CAREPLAN_STATUS = {
    "paused": "on-hold",
    "withdrawn": "revoked",
    "excluded": "revoked",
    "completed": "completed",
}
# appointments.status → Appointment.status (a deferred session will not happen at that time).
_APPOINTMENT_STATUS = {
    "planned": "proposed",
    "booked": "booked",
    "done": "fulfilled",
    "no_show": "noshow",
    "deferred": "cancelled",
    "cancelled": "cancelled",
}
# appointments.status → CarePlan.activity.detail.status.
_ACTIVITY_STATUS = {
    "planned": "not-started",
    "booked": "scheduled",
    "done": "completed",
    "no_show": "stopped",
    "deferred": "on-hold",
    "cancelled": "cancelled",
}
_FHIR_ID = re.compile(r"^[A-Za-z0-9.-]{1,64}$")


class FhirIdError(ValueError):
    """The id names nothing we could have produced."""


def fhir_patient_id(patient_id: str) -> str:
    """Our patient id as a FHIR id (``_`` → ``.``)."""
    return patient_id.replace("_", ".")


def our_patient_id(fhir_id: str) -> str:
    """The patient id of a FHIR patient id (``.`` → ``_``); accepts ``Patient/<id>`` too.

    Raises:
        FhirIdError: not a FHIR id.
    """
    value = fhir_id.removeprefix("Patient/")
    if not _FHIR_ID.match(value):
        raise FhirIdError(fhir_id)
    return value.replace(".", "_")


def careplan_id(patient_id: str, course: int) -> str:
    return f"{fhir_patient_id(patient_id)}.c{course}"


def session_id(patient_id: str, course: int, session: int) -> str:
    return f"{fhir_patient_id(patient_id)}.c{course}.s{session}"


def _ref(kind: str, rid: str, display: str | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"reference": f"{kind}/{rid}"}
    if display:
        ref["display"] = display
    return ref


def _iso(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


def _clean(value: Any) -> Any:
    """Drop ``None`` values and empty lists (FHIR forbids empty elements)."""
    if isinstance(value, dict):
        cleaned = {k: _clean(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v is not None and v != [] and v != {}}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def build(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """Validate ``data`` as the R4B model of ``kind``; returns its JSON form."""
    model: type[Any] = (
        RESOURCE_TYPES.get(kind)
        or {
            "Bundle": Bundle,
            "CapabilityStatement": CapabilityStatement,
            "OperationOutcome": OperationOutcome,
        }[kind]
    )
    resource = model.model_validate(_clean({"resourceType": kind, **data}))
    dumped: dict[str, Any] = resource.model_dump(mode="json", exclude_none=True, by_alias=True)
    return dumped


# ---------------------------------------------------------------- resources


def patient(row: Mapping[str, Any], clinic_name: str | None = None) -> dict[str, Any]:
    """``Patient`` from a ``patients`` row (personal data: staff only)."""
    telecom = []
    if row.get("email"):
        telecom.append(
            {
                "system": "email",
                "value": row["email"],
                "rank": 1 if row["preferred_channel"] == "email" else 2,
            }
        )
    if row.get("phone"):
        telecom.append(
            {
                "system": "sms",
                "value": row["phone"],
                "rank": 1 if row["preferred_channel"] == "sms" else 2,
            }
        )
    return build(
        "Patient",
        {
            "id": fhir_patient_id(row["patient_id"]),
            "meta": {"lastUpdated": _iso(row.get("created_at"))},
            "identifier": [{"system": PATIENT_ID_SYSTEM, "value": row["patient_id"]}],
            "active": True,
            "name": [{"text": row["full_name"]}],
            "telecom": telecom,
            # The language of the patient's messages and page (docs/languages.md).
            "communication": [
                {
                    "language": {
                        "coding": [{"system": "urn:ietf:bcp:47", "code": row["language"]}],
                        "text": LANGUAGE_NAMES.get(row["language"], row["language"]),
                    },
                    "preferred": True,
                }
            ]
            if row.get("language")
            else None,
            "managingOrganization": {"display": clinic_name or row["clinic_id"]},
        },
    )


def _session_status(journey: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    sessions = (journey.get("status") or {}).get("sessions") or []
    return {int(s["number"]): s for s in sessions if isinstance(s, dict) and "number" in s}


def careplan(
    journey: Mapping[str, Any], appointments: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """``CarePlan`` of the journey's current course: one activity per session (a reference to
    its ``Appointment``, and the ``Procedure`` once done), the SPF-50 window and the review."""
    pid = journey["patient_id"]
    course = int(journey["course_number"])
    status_json = journey.get("status") or {}
    by_number = {int(a["session_number"]): a for a in appointments if a["course_number"] == course}
    activities: list[dict[str, Any]] = []
    planned = _session_status(journey)
    for number in sorted(set(by_number) | set(planned)):
        a = by_number.get(number)
        if a is not None:
            outcome = (
                [_ref("Procedure", session_id(pid, course, number))]
                if a["status"] == "done"
                else []
            )
            activities.append(
                {
                    "outcomeReference": outcome,
                    "reference": _ref(
                        "Appointment", session_id(pid, course, number), f"Session {number}"
                    ),
                }
            )
        else:
            s = planned[number]
            activities.append(
                {
                    "detail": {
                        "kind": "Appointment",
                        "status": _ACTIVITY_STATUS.get(str(s.get("state")), "unknown"),
                        "description": f"Session {number} (planned for {s.get('planned_on')})",
                        "scheduledString": s.get("planned_on"),
                    }
                }
            )
    stage = journey["stage"]
    spf_until = journey.get("spf_until")
    last_done = max(
        (a["starts_at"] for a in by_number.values() if a["status"] == "done"), default=None
    )
    if spf_until is not None:
        spf_status = (
            "completed"
            if stage in ("awaiting_review", "completed")
            else "in-progress"
            if stage == "spf_window"
            else "scheduled"
        )
        activities.append(
            {
                "detail": {
                    "kind": "Task",
                    "code": {"text": "Sun protection SPF 50 daily"},
                    "status": spf_status,
                    "description": "Apply SPF 50 every day until the window ends.",
                    "scheduledPeriod": {
                        "start": _iso(last_done.date() if last_done else None),
                        "end": _iso(spf_until),
                    },
                }
            }
        )
    review_on = journey.get("review_on")
    if review_on is not None:
        activities.append(
            {
                "detail": {
                    "kind": "Appointment",
                    "code": {"text": "3-month review"},
                    "status": "completed" if stage == "completed" else "scheduled",
                    "description": "Review of the course with a clinician.",
                    "scheduledPeriod": {"start": _iso(review_on), "end": _iso(review_on)},
                }
            }
        )
    starts = [a["starts_at"] for a in by_number.values()]
    return build(
        "CarePlan",
        {
            "id": careplan_id(pid, course),
            "meta": {"lastUpdated": _iso(journey.get("updated_at"))},
            "identifier": [{"system": f"{SYSTEM}/sid/journey", "value": journey["workflow_id"]}],
            "status": _CAREPLAN_STATUS.get(stage, "active"),
            "intent": "plan",
            "category": [{"coding": [{"system": STAGE_SYSTEM, "code": stage}]}],
            "title": f"Laser pore contraction, course {course}",
            "description": status_json.get("next_action") or journey.get("next_action"),
            "subject": _ref("Patient", fhir_patient_id(pid)),
            "period": {
                "start": _iso(min(starts)) if starts else _iso(journey.get("created_at")),
                "end": _iso(review_on),
            },
            "activity": activities,
        },
    )


def appointment(journey: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """``Appointment`` of one session (``appointments`` row)."""
    pid = journey["patient_id"]
    course, number = int(row["course_number"]), int(row["session_number"])
    start: datetime = row["starts_at"]
    comment = None
    if row.get("arrive_by") is not None:
        minutes = int((start - row["arrive_by"]).total_seconds() // 60)
        comment = f"Arrive {minutes} minutes early for the numbing cream."
    return build(
        "Appointment",
        {
            "id": session_id(pid, course, number),
            "meta": {"lastUpdated": _iso(row.get("updated_at")), "versionId": str(row["version"])},
            "status": _APPOINTMENT_STATUS[row["status"]],
            "serviceType": [{"text": PROCEDURE_TEXT}],
            "description": f"Laser session {number} of course {course}",
            "start": _iso(start),
            "end": _iso(start + timedelta(minutes=int(row["duration_minutes"]))),
            "minutesDuration": int(row["duration_minutes"]),
            "comment": comment,
            "participant": [{"actor": _ref("Patient", fhir_patient_id(pid)), "status": "accepted"}],
        },
    )


def procedure(journey: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    """``Procedure`` of a completed session, based on the course's ``CarePlan``; the performer
    is the reporting system (``source`` of the completion) when known."""
    pid = journey["patient_id"]
    course, number = int(row["course_number"]), int(row["session_number"])
    s = _session_status(journey).get(number, {}) if int(journey["course_number"]) == course else {}
    performed = s.get("completed_at") or _iso(row["starts_at"])
    performer = [{"actor": {"display": str(s["source"])}}] if s.get("source") else []
    return build(
        "Procedure",
        {
            "id": session_id(pid, course, number),
            "status": "completed",
            "code": {"text": PROCEDURE_TEXT},
            "subject": _ref("Patient", fhir_patient_id(pid)),
            "basedOn": [_ref("CarePlan", careplan_id(pid, course))],
            "performedDateTime": performed,
            "performer": performer,
            "note": [{"text": f"Session {number} of course {course}"}],
        },
    )


def _answer(value: Any) -> dict[str, Any] | None:
    if isinstance(value, bool):
        return {"valueBoolean": value}
    if isinstance(value, int):
        return {"valueInteger": value}
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return {"valueDate": value}
    if isinstance(value, str) and value:
        return {"valueString": value}
    return None


def questionnaire_response(patient_id: str, event: Mapping[str, Any]) -> dict[str, Any]:
    """``QuestionnaireResponse`` of one screening (a ``screening_submitted`` event): the
    answers when the event carries them, the outcome and every reason."""
    data = event.get("data") or {}
    items: list[dict[str, Any]] = []
    answers = data.get("answers")
    if isinstance(answers, dict):
        for link_id, value in answers.items():
            values = value if isinstance(value, list) else [value]
            converted = [a for a in (_answer(v) for v in values) if a is not None]
            if converted:
                items.append({"linkId": str(link_id), "answer": converted})
    if data.get("outcome"):
        items.append(
            {
                "linkId": "outcome",
                "text": "Screening outcome",
                "answer": [{"valueString": data["outcome"]}],
            }
        )
    for i, reason in enumerate(data.get("reasons") or []):
        if isinstance(reason, dict) and reason.get("message"):
            items.append(
                {
                    "linkId": f"reason.{i + 1}",
                    "text": str(reason.get("rule") or "reason"),
                    "answer": [{"valueString": str(reason["message"])}],
                }
            )
    return build(
        "QuestionnaireResponse",
        {
            "id": f"{fhir_patient_id(patient_id)}.e{event['id']}",
            "questionnaire": SCREENING_QUESTIONNAIRE,
            "status": "completed",
            "subject": _ref("Patient", fhir_patient_id(patient_id)),
            "authored": _iso(event["occurred_at"]),
            "author": {"display": str(event.get("actor") or "staff")},
            "item": items,
        },
    )


def intake_screening(journey: Mapping[str, Any]) -> dict[str, Any] | None:
    """``QuestionnaireResponse`` of the intake screening (answered at enrolment, which writes
    no ``screening_submitted`` event): the outcome from the journey's status, or ``None``."""
    outcome = (journey.get("status") or {}).get("screening_outcome")
    if not outcome:
        return None
    pid = journey["patient_id"]
    return build(
        "QuestionnaireResponse",
        {
            "id": f"{fhir_patient_id(pid)}.c{journey['course_number']}.intake",
            "questionnaire": SCREENING_QUESTIONNAIRE,
            "status": "completed",
            "subject": _ref("Patient", fhir_patient_id(pid)),
            "authored": _iso(journey.get("created_at")),
            "item": [
                {
                    "linkId": "outcome",
                    "text": "Screening outcome",
                    "answer": [{"valueString": str(outcome)}],
                }
            ],
        },
    )


def flag(journey: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``Flag`` for one journey flag (``no_show``, ``adverse_event``, ...)."""
    pid = journey["patient_id"]
    return build(
        "Flag",
        {
            "id": f"{fhir_patient_id(pid)}.{name.replace('_', '-')}",
            "status": "active",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/flag-category",
                            "code": "clinical",
                        }
                    ]
                }
            ],
            "code": {
                "coding": [{"system": FLAG_SYSTEM, "code": name}],
                "text": name.replace("_", " "),
            },
            "subject": _ref("Patient", fhir_patient_id(pid)),
            "period": {"start": _iso(journey.get("updated_at"))},
        },
    )


def bundle(
    base: str,
    kind: str,
    entries: Sequence[dict[str, Any]],
    total: int,
    self_url: str,
    next_url: str | None,
) -> dict[str, Any]:
    """A ``searchset`` Bundle with ``total`` and ``self``/``next`` links."""
    links = [{"relation": "self", "url": self_url}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return build(
        "Bundle",
        {
            "type": "searchset",
            "total": total,
            "link": links,
            "entry": [
                {
                    "fullUrl": f"{base}/{kind}/{e['id']}",
                    "resource": e,
                    "search": {"mode": "match"},
                }
                for e in entries
            ],
        },
    )


def operation_outcome(code: str, message: str) -> dict[str, Any]:
    """An ``OperationOutcome`` with one error issue."""
    return build(
        "OperationOutcome",
        {"issue": [{"severity": "error", "code": code, "diagnostics": message}]},
    )


def capability_statement(base: str, software_version: str) -> dict[str, Any]:
    """What this server offers: read and search of the six resource types."""
    searches: dict[str, list[tuple[str, str]]] = {
        "Patient": [("_id", "token")],
        "CarePlan": [("patient", "reference")],
        "Appointment": [("patient", "reference"), ("date", "date")],
        "Procedure": [("patient", "reference")],
        "QuestionnaireResponse": [("patient", "reference")],
        "Flag": [("patient", "reference")],
    }
    return build(
        "CapabilityStatement",
        {
            "status": "active",
            "date": "2026-11-30",
            "kind": "instance",
            "software": {"name": "pore-journey", "version": software_version},
            "implementation": {"description": "Pore journey FHIR read API", "url": base},
            "fhirVersion": "4.0.1",
            "format": ["application/fhir+json", "json"],
            "rest": [
                {
                    "mode": "server",
                    "security": {
                        "description": "A staff bearer token (Authorization: Bearer ...).",
                    },
                    "resource": [
                        {
                            "type": kind,
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "searchParam": [
                                {"name": n, "type": t} for n, t in [*params, ("_count", "number")]
                            ],
                        }
                        for kind, params in searches.items()
                    ],
                }
            ],
        },
    )
