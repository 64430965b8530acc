"""What a booking-system adapter does: read the booking system's appointment events, and say how
our session window looks to it.

Signatures are not the adapter's business: every booking system signs with the Standard
Webhooks scheme, checked once in :mod:`api.booking.inbox` before the adapter sees the body.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from workflows.booking import AppointmentEventKind

__all__ = [
    "SESSION_WINDOW_KIND",
    "BookingSystemAdapter",
    "EventInvalid",
    "ParsedEvent",
]

SESSION_WINDOW_KIND = "session_window"
"""The journey event kind that carries a session's allowed window (``journey.session_window``
for the subscribers)."""


@dataclass(frozen=True)
class ParsedEvent:
    """An appointment event in the booking system's ids, bounded and checked, not yet mapped
    to ours (that is :mod:`api.booking.inbox`'s work).

    ``patient_id`` is ours when the booking system echoes it from the window event (the first
    event that carries it with ``external_patient_id`` records the patient mapping);
    ``session_number`` and ``course_number`` likewise; a later event of a mapped appointment
    may leave them out.
    """

    kind: AppointmentEventKind
    event_type: str
    external_appointment_id: str
    external_patient_id: str | None = None
    patient_id: str | None = None
    session_number: int | None = None
    course_number: int | None = None
    starts_at: datetime | None = None
    completed_at: datetime | None = None

    def canonical(self) -> dict[str, Any]:
        """What the request hash covers (a webhook id reused for another event is refused)."""
        return {
            "kind": self.kind,
            "external_appointment_id": self.external_appointment_id,
            "external_patient_id": self.external_patient_id,
            "patient_id": self.patient_id,
            "session_number": self.session_number,
            "course_number": self.course_number,
            "starts_at": self.starts_at.isoformat() if self.starts_at else None,
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
        }


class EventInvalid(ValueError):
    """The body is not an appointment event this adapter understands (answered 422, with every
    problem as ``{field, rule, message}``)."""

    def __init__(self, errors: list[dict[str, str]], event_type: str = "invalid") -> None:
        super().__init__("; ".join(e["message"] for e in errors))
        self.errors = errors
        self.event_type = event_type


class BookingSystemAdapter(Protocol):
    """One kind of booking system (``booking_systems.adapter``)."""

    kind: str
    """The adapter's name as registered (``generic``)."""

    def parse_event(self, headers: Mapping[str, str], body: bytes) -> ParsedEvent:
        """Read one appointment event (already signature-checked).

        Raises:
            EventInvalid: not JSON, an unknown event type, a missing or out-of-bounds value.
        """
        ...

    def window_payload(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """How a ``session_window`` journey event (the outbound webhook payload,
        ``{"type": "journey.session_window", "data": {...}}``) reads for this booking system.

        Raises:
            ValueError: the payload is not a session window.
        """
        ...

    def event_types(self) -> list[str]:
        """The journey event types (``journey.<kind>``) its outbound subscription takes."""
        ...
