"""A patient's reply to a message, as the journey receives it (issue 18 item 2,
docs/messaging.md): its kind and the session it answers, never its text.

The text, the sender's phone number or address and the matching stay in PostgreSQL
(``patient_replies``, :mod:`activities.replies`); the journey gets the reply's id there, so the
timeline and the dashboard can show the text next to the journey's own record of it.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.bounds import ClinicDateTime, IdempotencyKeyText, safe_multiline_text, safe_text

ReplyKind = Literal["confirm", "reschedule", "other", "stop", "start"]
"""``confirm`` (YES, C, JA, OUI, SÍ...), ``reschedule`` (R, CHANGE...), ``stop`` and ``start``
(consent to be contacted on that channel), ``other`` (a staff task)."""


class PatientReplyReport(BaseModel):
    """The ``report_reply`` update: one reply, applied once per ``idempotency_key`` (built from
    the provider's message id)."""

    model_config = ConfigDict(extra="forbid")

    idempotency_key: IdempotencyKeyText
    reply_id: int = Field(ge=1, le=2**62, description="patient_replies.id in PostgreSQL.")
    kind: ReplyKind
    session_number: int | None = Field(
        default=None, ge=1, le=100, description="The session of the message it answers."
    )
    channel: Literal["email", "sms"]
    received_at: ClinicDateTime | None = None
    offers: list[ClinicDateTime] = Field(
        default=[],
        max_length=3,
        description="For ``reschedule``: free start times found in PostgreSQL (the clinic's "
        "slots, scheduling.store.free_times); the journey keeps those on an allowed day. Empty: "
        "the journey offers allowed days at the session's time.",
    )


def reply_key(channel: str, provider_message_id: str) -> str:
    """The journey's idempotency key of a reply (at most 200 characters)."""
    key = f"reply:{channel}:{provider_message_id}"
    if len(key) <= 200 and key.isprintable():
        return key
    return f"reply:{channel}:sha256:{hashlib.sha256(provider_message_id.encode()).hexdigest()}"


if TYPE_CHECKING:
    _Note = str
    _StaffRef = str
else:
    _Note = safe_multiline_text(500, min_length=1)
    _StaffRef = safe_text(64)


class ReplyAnsweredRequest(BaseModel):
    """The ``answer_reply`` update: staff dealt with a reply that became their task (they
    called the patient, moved the session...); the task closes and the note goes to the
    timeline."""

    model_config = ConfigDict(extra="forbid")

    reply_id: int = Field(ge=1, le=2**62)
    note: _Note
    requested_by: Literal["staff", "clinician"] = "staff"
    staff_ref: _StaffRef | None = None


class ReplyAnsweredResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reply_id: int
    tasks_closed: int
