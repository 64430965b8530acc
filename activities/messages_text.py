"""The words of each notification: plain patient language, no clinical detail beyond what the
patient needs to act (when to come, how early for the numbing cream, sun protection until when).

Patient messages greet the patient by name (from the patients table). Staff alerts name only the
patient id and what to do; the details are in the journey's timeline.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict


class RenderedMessage(BaseModel):
    """Subject and body of one message."""

    model_config = ConfigDict(frozen=True)

    subject: str
    body: str


_STAFF_ALERTS: dict[str, tuple[str, str]] = {
    "no_show": (
        "No-show",
        "No completion was reported for session {session}. Check with the patient and confirm "
        "the rebooked date.",
    ),
    "checkin_overdue": (
        "Recovery check-in overdue",
        "No recovery check-in was recorded for session {session}. Call the patient and record "
        "the check-in.",
    ),
    "prolonged_reaction": (
        "Clinician review needed",
        "The journey is paused after session {session}. A clinician must see the patient "
        "before it is resumed.",
    ),
    "adverse_event": (
        "Clinician review needed",
        "An adverse event was reported and the journey is paused. A clinician must review it "
        "before the journey is resumed.",
    ),
    "review_overdue": (
        "Review overdue",
        "The review is overdue. Book it with the patient and record its outcome.",
    ),
    # activities/delivery.py: a patient message that no channel could deliver.
    "undeliverable": (
        "Message not delivered",
        "A message to the patient could not be delivered by e-mail or SMS. Check the contact "
        "details, reach the patient another way, and see the journey's messages for the reason.",
    ),
    # --- issue 18 items 2-3 (replies, consent to be contacted; activities/contact.py) ---
    "opted_out_essential": (
        "Essential message not sent",
        "The patient opted out of every channel we have for them, and an essential message "
        "(session {session}) could not be sent. Reach the patient another way.",
    ),
    "patient_reply": (
        "Patient replied",
        "The patient replied to a message about session {session}. Read the reply on the "
        "journey page and answer the patient.",
    ),
}


def _zone(params: dict[str, str], clinic_timezone: str | None) -> ZoneInfo:
    for name in (params.get("timezone"), clinic_timezone):
        if name:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def format_when(value: str, zone: ZoneInfo) -> str:
    """``2026-03-03T09:00:00+00:00`` → ``Tuesday 3 March at 09:00`` in the clinic's zone."""
    at = datetime.fromisoformat(value).astimezone(zone)
    return f"{at:%A} {at.day} {at:%B} at {at:%H:%M}"


def _sunscreen(params: dict[str, str]) -> str:
    """The sun protection the clinic's protocol names (``spf_factor`` from the journey)."""
    factor = params.get("spf_factor")
    return f"SPF {factor} sunscreen" if factor else "your high-protection sunscreen"


def format_day(value: str) -> str:
    """``2026-05-01`` → ``Friday 1 May 2026``."""
    d = date.fromisoformat(value[:10])
    return f"{d:%A} {d.day} {d:%B %Y}"


def _arrive_line(params: dict[str, str]) -> str:
    # Only a patient who chose numbing cream gets an arrive-by time from the workflow.
    minutes = params.get("arrive_early_minutes")
    if not minutes:
        return ""
    return f" Please arrive {minutes} minutes early for the numbing cream."


def render(
    kind: str,
    params: dict[str, str],
    *,
    patient_name: str | None,
    patient_id: str,
    clinic_name: str | None = None,
    clinic_timezone: str | None = None,
    audience: str = "patient",
) -> RenderedMessage:
    """The subject and body of a notification.

    Args:
        kind: The notification kind (``workflows.records.NotificationKind``).
        params: The parameters the journey gave (dates as ISO strings, session number, ...).
        patient_name: The patient's full name (patient messages only).
        patient_id: The opaque id (staff messages name only this).
        clinic_name: Signs patient messages.
        clinic_timezone: Used when the parameters carry no ``timezone``.
        audience: ``patient`` or ``staff``.
    """
    zone = _zone(params, clinic_timezone)
    if audience == "staff" or kind in ("staff_alert", "rescreen_due"):
        return _render_staff(kind, params, patient_id)

    session = params.get("session", "")
    when = format_when(params["starts_at"], zone) if params.get("starts_at") else ""
    subject: str
    text: str
    match kind:
        case "booking_confirmation":
            subject = "Your session is booked"
            text = f"Your session {session} is booked for {when}.{_arrive_line(params)}"
        case "session_reminder":
            subject = "Reminder of your session"
            text = f"Your session on {when}.{_arrive_line(params)}"
        case "session_rebooked":
            subject = "Your session has a new date"
            text = f"Your session {session} has moved to {when}.{_arrive_line(params)}"
        case "aftercare":
            subject = "After your session"
            low, high = params.get("recovery_days_min"), params.get("recovery_days_max")
            days = f" for {low} to {high} days" if low and high else " for a few days"
            text = (
                f"Thank you for coming in. Some redness and swelling{days} is normal. Please "
                f"use {_sunscreen(params)} every day and contact us if you are worried."
            )
        case "recovery_checkin":
            subject = "How is your skin?"
            text = (
                f"Please tell us how your skin feels after session {session}: reply to this "
                "message or use your patient page."
            )
        case "spf_reminder":
            until = params.get("spf_until")
            tail = f" until {format_day(until)}" if until else ""
            subject = "Keep using sunscreen"
            text = f"Please keep using {_sunscreen(params)} every day{tail}."
        case "review_invite":
            on = params.get("review_on")
            tail = f" from {format_day(on)}" if on else ""
            subject = "Time for your review"
            text = f"Your review appointment is due{tail}. Please contact us to book it."
        case "season_waiting":
            starts = params.get("starts_on")
            tail = f" on {format_day(starts)}" if starts else " soon"
            subject = "Your first session"
            text = (
                f"Your first session is planned{tail}. We will confirm the booking closer to "
                "the date."
            )
        case "journey_paused":
            subject = "Your treatment is on hold"
            text = "Your treatment plan is on hold. We will contact you before your next session."
        case "journey_withdrawn":
            subject = "Your treatment plan is closed"
            text = "Your treatment plan has been closed. Please contact us if this is unexpected."
        # --- issue 18 items 2-3: answers to the patient's own replies (activities/replies.py) ---
        case "contact_opt_out":
            channel = "text messages" if params.get("channel") == "sms" else "e-mails"
            subject = "You will receive no more messages"
            text = (
                f"You will receive no more {channel} from us, except essential safety "
                "information about your treatment. Reply START to receive them again."
            )
        case "contact_opt_in":
            channel = "text messages" if params.get("channel") == "sms" else "e-mails"
            subject = "Messages are on again"
            text = f"You will receive {channel} about your treatment again. Reply STOP to end them."
        case "reply_reschedule_offer":
            offers = "".join(
                f"\n- {format_when(params[k], zone)}"
                for k in ("offer_1", "offer_2", "offer_3")
                if params.get(k)
            )
            subject = "Choose another date"
            times = f" These times are free:{offers}\n\n" if offers else " "
            link = params.get("link")
            choose = f"Choose one on your page: {link}" if link else "Please contact us to choose."
            text = f"You asked to move session {session}.{times}{choose}"
        case _:
            subject = "An update about your treatment"
            text = "There is an update to your treatment plan. Please contact us for details."
    greeting = f"Dear {patient_name}," if patient_name else "Hello,"
    signature = f"\n\n{clinic_name}" if clinic_name else ""
    return RenderedMessage(subject=subject, body=f"{greeting}\n\n{text}{signature}\n")


def _render_staff(kind: str, params: dict[str, str], patient_id: str) -> RenderedMessage:
    if kind == "rescreen_due":
        title, todo = "Screening needed", "Record the patient's screening answers."
    else:
        title, todo = _STAFF_ALERTS.get(
            params.get("alert", ""), ("Action needed", "Open the journey and check its timeline.")
        )
        todo = todo.format(session=params.get("session", "?"))
    return RenderedMessage(
        subject=f"[journey] {title}: patient {patient_id}",
        body=f"Patient {patient_id}: {todo}\n",
    )
