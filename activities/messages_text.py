"""The words of each notification: plain patient language, no clinical detail beyond what the
patient needs to act (when to come, how early for the numbing cream, sun protection until when).

Patient messages greet the patient by name (from the patients table) and are written in the
patient's language: every word comes from the gettext catalogs in ``activities/locales`` (keys
``msg.<kind>.subject``/``.body``; :mod:`activities.i18n`, docs/languages.md), dates and times in
the clinic's zone formatted for the language's locale. Staff alerts name only the patient id and
what to do, in English; the details are in the journey's timeline.
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict

from activities.i18n import Translator, translator


class RenderedMessage(BaseModel):
    """Subject and body of one message."""

    model_config = ConfigDict(frozen=True)

    subject: str
    body: str
    # The language it is written in (a BCP 47 tag: the e-mail's Content-Language, html lang).
    language: str = "en"


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


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def _day(value: str) -> date:
    return date.fromisoformat(value[:10])


def format_when(value: str, zone: ZoneInfo, language: str | None = None) -> str:
    """``2026-03-03T09:00:00+00:00`` → ``Tuesday 3 March at 09:00`` in the clinic's zone (in
    the patient's language: ``Dienstag, 3. März um 09:00 Uhr``)."""
    return translator(language).when(_at(value), zone)


def format_day(value: str, language: str | None = None) -> str:
    """``2026-05-01`` → ``Friday 1 May 2026`` (``Freitag, 1. Mai 2026``)."""
    return translator(language).weekday_date(_day(value))


def _sunscreen(t: Translator, params: dict[str, str]) -> str:
    """The sun protection the clinic's protocol names (``spf_factor`` from the journey)."""
    factor = params.get("spf_factor")
    return t("msg.sunscreen.factor", factor=factor) if factor else t("msg.sunscreen.generic")


def _arrive_line(t: Translator, params: dict[str, str]) -> str:
    # Only a patient who chose numbing cream gets an arrive-by time from the workflow.
    minutes = params.get("arrive_early_minutes")
    if not minutes or not minutes.isdigit():
        return ""
    return " " + t("msg.arrive_early", duration=t.minutes(minutes))


def _channel_key(params: dict[str, str]) -> str:
    return "body_sms" if params.get("channel") == "sms" else "body_email"


def render(
    kind: str,
    params: dict[str, str],
    *,
    patient_name: str | None,
    patient_id: str,
    clinic_name: str | None = None,
    clinic_timezone: str | None = None,
    audience: str = "patient",
    language: str | None = None,
) -> RenderedMessage:
    """The subject and body of a notification.

    Patient messages are in the patient's language, every word from its catalog
    (:mod:`activities.i18n`, ``activities/locales``); staff alerts are in English.

    Args:
        kind: The notification kind (``workflows.records.NotificationKind``).
        params: The parameters the journey gave (dates as ISO strings, session number, ...).
        patient_name: The patient's full name (patient messages only).
        patient_id: The opaque id (staff messages name only this).
        clinic_name: Signs patient messages.
        clinic_timezone: Used when the parameters carry no ``timezone``.
        audience: ``patient`` or ``staff``.
        language: The patient's language (``patients.language``); English when unknown.
    """
    zone = _zone(params, clinic_timezone)
    if audience == "staff" or kind in ("staff_alert", "rescreen_due"):
        return _render_staff(kind, params, patient_id)

    t = translator(language)
    session = params.get("session", "")
    when = t.when(_at(params["starts_at"]), zone) if params.get("starts_at") else ""
    subject = t(f"msg.{kind}.subject")
    text: str
    match kind:
        case "booking_confirmation" | "session_reminder" | "session_rebooked":
            text = t(f"msg.{kind}.body", session=session, when=when) + _arrive_line(t, params)
            if kind == "session_reminder":
                text += "\n\n" + t("msg.session_reminder.reply")
        case "aftercare":
            low, high = params.get("recovery_days_min"), params.get("recovery_days_max")
            recovery = (
                t("msg.aftercare.recovery_range", low=low, high=t.days(high))
                if low and high and high.isdigit()
                else t("msg.aftercare.recovery_unknown")
            )
            text = t("msg.aftercare.body", recovery=recovery, sunscreen=_sunscreen(t, params))
        case "recovery_checkin":
            text = t("msg.recovery_checkin.body", session=session)
        case "spf_reminder":
            until = params.get("spf_until")
            sunscreen = _sunscreen(t, params)
            text = (
                t("msg.spf_reminder.body", sunscreen=sunscreen, until=t.weekday_date(_day(until)))
                if until
                else t("msg.spf_reminder.body_open", sunscreen=sunscreen)
            )
        case "review_invite":
            on = params.get("review_on")
            text = (
                t("msg.review_invite.body", on=t.weekday_date(_day(on)))
                if on
                else t("msg.review_invite.body_open")
            )
        case "season_waiting":
            starts = params.get("starts_on")
            text = (
                t("msg.season_waiting.body", on=t.weekday_date(_day(starts)))
                if starts
                else t("msg.season_waiting.body_open")
            )
        case "journey_paused" | "journey_withdrawn":
            text = t(f"msg.{kind}.body")
        # --- issue 18 items 2-3: answers to the patient's own replies (activities/replies.py) ---
        case "contact_opt_out" | "contact_opt_in":
            text = t(f"msg.{kind}.{_channel_key(params)}")
        case "reply_reschedule_offer":
            offers = "".join(
                f"\n- {t.when(_at(params[k]), zone)}"
                for k in ("offer_1", "offer_2", "offer_3")
                if params.get(k)
            )
            intro = t("msg.reply_reschedule_offer.intro", session=session)
            times = f" {t('msg.reply_reschedule_offer.offers')}{offers}\n\n" if offers else " "
            link = params.get("link")
            choose = (
                t("msg.reply_reschedule_offer.choose_link", link=link)
                if link
                else t("msg.reply_reschedule_offer.choose_contact")
            )
            text = f"{intro}{times}{choose}"
        case _:
            subject = t("msg.update.subject")
            text = t("msg.update.body")
    greeting = (
        t("msg.greeting.named", name=patient_name) if patient_name else t("msg.greeting.anonymous")
    )
    signature = f"\n\n{clinic_name}" if clinic_name else ""
    return RenderedMessage(
        subject=subject, body=f"{greeting}\n\n{text}{signature}\n", language=t.language
    )


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
