"""One appointment event from a clinic's booking system, from its signature to the journey's
answer (``POST /api/booking/{clinic_id}/events``, docs/booking-systems.md).

Checks run in this order, and each answer says what happened:

1. **Signature** (401): Standard Webhooks only (``webhook-id``, ``webhook-timestamp``,
   ``webhook-signature``) with the clinic's booking-system secret; a clinic without an enabled
   booking system answers the same 401, so nobody learns which clinics have one. Not logged.
2. **Body** (422): the adapter reads and bounds the event (``api/booking/generic.py``).
3. **Idempotency**: a ``webhook-id`` already applied answers 200 ``duplicate`` with the first
   answer and nothing reaches the journey (422 ``idempotency_key_reused`` if the body differs).
4. **Ids** (422): the booking system's patient and appointment ids are mapped to ours
   (``booking_patients``, ``booking_appointments``); the first event that names our
   ``patient_id`` with its ``external_patient_id`` records the patient mapping, the first
   that names an appointment with its session records the appointment mapping.
5. **The journey** (``report_appointment``): ``applied`` (200), ``duplicate`` (200: a racing
   copy), ``anomaly`` (409 ``FactKeptForStaff`` with the reasons: e.g. a start outside the
   session's allowed days; kept for staff, the id may be sent again), a closed journey (409),
   no journey (404), Temporal down (503, retry; not logged).

Every signed event is appended to ``booking_events`` with its status (``applied``,
``duplicate``, ``anomaly``, ``refused``) and reasons.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from api.booking import store
from api.booking.adapter import EventInvalid, ParsedEvent
from api.booking.generic import adapter_for
from api.inbound import InvalidKey, SignatureError, verify_inbound
from api.service import FactKept, JourneyNotFound, JourneyService, RequestRefused
from worker.settings import Settings
from workflows.booking import AppointmentReport
from workflows.ids import workflow_id

__all__ = ["InboxAnswer", "fact_key", "receive"]

logger = logging.getLogger(__name__)

KEY_PREFIX = "booking:"


@dataclass
class InboxAnswer:
    """The HTTP answer to the booking system, and the metrics label of what happened."""

    status_code: int
    body: dict[str, Any]
    outcome: str
    headers: dict[str, str] = field(default_factory=dict)


def fact_key(webhook_id: str) -> str:
    """The journey's idempotency key for a booking-system event (≤ 200 characters)."""
    key = KEY_PREFIX + webhook_id
    if len(key) <= 200:
        return key
    return KEY_PREFIX + "sha256:" + hashlib.sha256(webhook_id.encode()).hexdigest()


def _error(
    status_code: int, outcome: str, items: list[dict[str, Any]], error: str | None = None
) -> InboxAnswer:
    body: dict[str, Any] = {"detail": items}
    if error is not None:
        body["error"] = error
    return InboxAnswer(status_code, body, outcome)


def _unsigned(message: str) -> InboxAnswer:
    return _error(
        401, "bad_signature", [{"rule": "bad_signature", "message": f"Refused: {message}."}]
    )


def _secrets(settings: Settings, registration: store.Registration) -> dict[str, str]:
    if registration.inbound_secret is not None:
        return {"booking": registration.inbound_secret}
    name = registration.integration or ""
    secret = settings.journey_integration_secrets.get(name)
    if secret is None:
        logger.warning(
            "booking system of clinic %s names integration %r, which has no secret",
            registration.clinic_id,
            name,
        )
        return {}
    return {name: secret.get_secret_value()}


class _Refused(Exception):
    def __init__(self, status_code: int, items: list[dict[str, Any]]) -> None:
        super().__init__(items[0]["message"] if items else "refused")
        self.status_code = status_code
        self.items = items


def _refuse(field: str, rule: str, message: str, status_code: int = 422) -> _Refused:
    return _Refused(status_code, [{"field": field, "rule": rule, "message": message}])


@dataclass
class _Mapped:
    patient_id: str
    course_number: int
    session_number: int
    stage: str | None


async def receive(
    service: JourneyService,
    settings: Settings,
    clinic_id: str,
    headers: Mapping[str, str],
    body: bytes,
) -> InboxAnswer:
    """Handle one signed appointment event (see the module docstring).

    Raises:
        ServiceUnavailable: PostgreSQL or Temporal is down (503; nothing was applied or
            logged, the booking system retries with the same ``webhook-id``).
    """
    h = {k.lower(): v for k, v in headers.items()}
    if "webhook-signature" not in h:
        return _unsigned("the request is not signed (webhook-signature)")
    registration = await service.db(store.get_registration(service.pool, clinic_id))
    if registration is None or not registration.active:
        return _unsigned("not signed by this clinic's booking system")
    # Standard Webhooks only; the sender's own name for itself plays no part.
    h.pop("x-integration", None)
    h.pop("x-signature", None)
    try:
        identity = verify_inbound(
            _secrets(settings, registration),
            h,
            body,
            tolerance_seconds=settings.journey_webhook_tolerance_seconds,
        )
    except SignatureError as err:
        return _unsigned(str(err))
    except InvalidKey as err:
        return _error(
            422,
            "invalid",
            [{"field": "header.webhook-id", "rule": "required", "message": str(err)}],
        )
    webhook_id = identity.key
    adapter = adapter_for(registration.adapter)

    async def log(status: str, http_status: int, **values: Any) -> str:
        written: str = await service.db(
            store.log_event(
                service.pool,
                clinic_id=clinic_id,
                webhook_id=webhook_id,
                status=status,
                http_status=http_status,
                **values,
            )
        )
        return written

    try:
        event = adapter.parse_event(h, body)
    except EventInvalid as err:
        await log(
            "refused",
            422,
            event_type=err.event_type,
            request_hash=hashlib.sha256(body).hexdigest(),
            reasons=err.errors,
        )
        return _error(422, "invalid", err.errors)
    request_hash = hashlib.sha256(
        json.dumps(event.canonical(), sort_keys=True).encode()
    ).hexdigest()
    ids: dict[str, Any] = {
        "event_type": event.event_type,
        "request_hash": request_hash,
        "external_patient_id": event.external_patient_id,
        "external_appointment_id": event.external_appointment_id,
    }

    applied = await service.db(store.applied_event(service.pool, clinic_id, webhook_id))
    if applied is not None:
        if applied["request_hash"] != request_hash:
            items = [
                {
                    "field": "header.webhook-id",
                    "rule": "idempotency_key_reused",
                    "message": "This webhook-id was already used for a different event.",
                }
            ]
            await log("refused", 422, reasons=items, **ids)
            return _error(422, "invalid", items)
        answer = {**applied["answer"], "outcome": "duplicate", "duplicate": True}
        await log("duplicate", 200, answer=answer, **ids)
        return InboxAnswer(200, answer, "duplicate")

    try:
        mapped = await _map(service, clinic_id, event)
    except _Refused as err:
        await log("refused", err.status_code, reasons=err.items, **ids)
        return _error(err.status_code, "invalid", err.items)
    ids.update(
        patient_id=mapped.patient_id,
        course_number=mapped.course_number,
        session_number=mapped.session_number,
        starts_at=event.completed_at or event.starts_at,
    )

    report = AppointmentReport(
        event=event.kind,
        session_number=mapped.session_number,
        starts_at=(event.completed_at or event.starts_at)
        if event.kind == "completed"
        else event.starts_at,
        external_appointment_id=event.external_appointment_id,
        idempotency_key=fact_key(webhook_id),
        source=f"booking:{clinic_id}",
    )
    try:
        result = await service.report_appointment(mapped.patient_id, report)
    except FactKept as kept:
        reasons = [r.model_dump() for r in kept.reasons]
        await _remember(service, clinic_id, event, mapped, "anomaly")
        body_409 = {
            "detail": reasons,
            "error": kept.error_type,
            "outcome": "kept_for_staff",
            "anomaly_id": kept.result.anomaly_id,
            "stage": kept.result.stage,
        }
        await log("anomaly", 409, reasons=reasons, answer=body_409, **ids)
        return InboxAnswer(409, body_409, "kept_for_staff")
    except RequestRefused as refused:
        reasons = [r.model_dump() for r in refused.reasons]
        await log("refused", 409, reasons=reasons, **ids)
        return _error(409, "refused", reasons, refused.error_type)
    except JourneyNotFound:
        items = [
            {
                "field": "body.data.patient_id",
                "rule": "not_found",
                "message": f"Patient {mapped.patient_id} has no journey.",
            }
        ]
        await log("refused", 404, reasons=items, **ids)
        return _error(404, "not_found", items)

    await _remember(service, clinic_id, event, mapped, result.outcome)
    answer = {
        "outcome": result.outcome,
        "duplicate": result.outcome == "duplicate",
        "webhook_id": webhook_id,
        "event": event.event_type,
        "clinic_id": clinic_id,
        "patient_id": mapped.patient_id,
        "course": mapped.course_number,
        "session": mapped.session_number,
        "external_appointment_id": event.external_appointment_id,
        "external_patient_id": event.external_patient_id,
        "stage": result.stage,
    }
    written = await log(result.outcome, 200, answer=answer, **ids)
    if written != result.outcome:  # a racing copy of this webhook-id was logged first
        answer = {**answer, "outcome": "duplicate", "duplicate": True}
    return InboxAnswer(200, answer, "accepted" if not answer["duplicate"] else "duplicate")


async def _remember(
    service: JourneyService,
    clinic_id: str,
    event: ParsedEvent,
    mapped: _Mapped,
    outcome: str,
) -> None:
    """Record or update the appointment's mapping once the journey answered."""
    await service.db(
        store.record_appointment(
            service.pool,
            clinic_id=clinic_id,
            external_appointment_id=event.external_appointment_id,
            patient_id=mapped.patient_id,
            workflow_id=workflow_id(mapped.patient_id),
            course_number=mapped.course_number,
            session_number=mapped.session_number,
            status=event.kind,
            starts_at=event.starts_at,
            outcome=outcome,
        )
    )


async def _map(service: JourneyService, clinic_id: str, event: ParsedEvent) -> _Mapped:
    """The booking system's ids → our patient, course and session (see the module docstring).

    Raises:
        _Refused: an unknown patient or appointment, or ids that contradict their mappings.
    """
    pool = service.pool
    appointment = await service.db(
        store.get_appointment(pool, clinic_id, event.external_appointment_id)
    )
    by_external: str | None = None
    if event.external_patient_id is not None:
        by_external = await service.db(
            store.patient_for_external(pool, clinic_id, event.external_patient_id)
        )
    candidates = {
        "the appointment's mapping": appointment.patient_id if appointment else None,
        "external_patient_id": by_external,
        "patient_id": event.patient_id,
    }
    named = {source: pid for source, pid in candidates.items() if pid is not None}
    if len(set(named.values())) > 1:
        raise _refuse(
            "body.data",
            "id_conflict",
            "The ids name different patients: "
            + ", ".join(f"{source} → {pid}" for source, pid in named.items())
            + ".",
        )
    if not named:
        if event.external_patient_id is not None:
            message = (
                f"External patient id {event.external_patient_id!r} is not mapped for clinic "
                f"{clinic_id}: send our patient_id (from the session_window event) with it "
                "once, or ask the clinic to map it."
            )
        else:
            message = (
                "No patient: send external_patient_id and our patient_id (from the "
                "session_window event), or an external_appointment_id mapped before."
            )
        raise _refuse("body.data.external_patient_id", "unknown_patient", message)
    patient_id = next(iter(named.values()))
    found = await service.db(store.journey_of(pool, patient_id))
    if found is None or found[0] != clinic_id:
        raise _refuse(
            "body.data.patient_id",
            "unknown_patient",
            f"No patient {patient_id} in clinic {clinic_id}.",
        )
    _, stage, current_course = found
    if event.external_patient_id is not None and by_external is None:
        try:
            await service.db(
                store.map_patient(pool, clinic_id, event.external_patient_id, patient_id, "event")
            )
        except store.IdConflict as err:
            raise _refuse("body.data.external_patient_id", "id_conflict", str(err)) from None

    course = current_course or event.course_number or 1
    if appointment is not None and appointment.course_number != course:
        raise _refuse(
            "body.data.external_appointment_id",
            "course_mismatch",
            f"Appointment {event.external_appointment_id!r} is for course "
            f"{appointment.course_number}; the journey is in course {course}.",
        )
    if event.course_number is not None and event.course_number != course:
        raise _refuse(
            "body.data.course",
            "course_mismatch",
            f"The journey is in course {course}, not course {event.course_number}.",
        )
    session = appointment.session_number if appointment else event.session_number
    if appointment is not None and event.session_number not in (None, session):
        raise _refuse(
            "body.data.session",
            "id_conflict",
            f"Appointment {event.external_appointment_id!r} is for session {session}, "
            f"not session {event.session_number}.",
        )
    if session is None:
        raise _refuse(
            "body.data.session",
            "unknown_appointment",
            f"Appointment {event.external_appointment_id!r} is not known yet: its first event "
            "needs the session number (from the session_window event).",
        )
    return _Mapped(patient_id, course, session, stage)
