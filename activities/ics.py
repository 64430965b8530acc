"""Calendar files (RFC 5545) of journey sessions, built with the ``icalendar`` package.

Built from the ``appointments`` read model, never from the workflow:

* **UID** per session, stable for the life of the journey: ``<workflow id>.c<course>.s<session>
  @pore-journey`` (a reschedule is the same event moved, so calendar programs update it);
* **SEQUENCE** is the appointment row's ``version`` (the journey step that last changed it),
  so it only grows: every reschedule or cancellation a calendar receives supersedes the last;
* ``DTSTART``/``DTEND`` in the clinic's zone with its ``VTIMEZONE``; the numbing-cream
  arrive-early time is in ``DESCRIPTION``;
* the patient's words (``SUMMARY``, ``DESCRIPTION``) in the patient's language, from the
  catalogs (``ics.*`` keys; :mod:`activities.i18n`), times as the locale writes them; the staff
  feed stays in English;
* ``METHOD:REQUEST`` for a booking or a move, ``METHOD:CANCEL`` (``STATUS:CANCELLED``) for a
  cancelled or deferred session, ``METHOD:PUBLISH`` for the subscription feeds.

No names or contacts: a patient's own calendar knows who they are, and the staff feed names the
opaque patient id only (feeds end up in third-party calendar clouds).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

import asyncpg
from icalendar import Calendar, Event

from activities.i18n import DEFAULT_LANGUAGE, translator

__all__ = [
    "CalendarSession",
    "build_calendar",
    "clinic_sessions",
    "invitation",
    "journey_sessions",
    "session_uid",
]

PRODID = "-//Pore journey//Laser sessions//EN"
UID_DOMAIN = "pore-journey"
Method = Literal["REQUEST", "CANCEL", "PUBLISH"]
Audience = Literal["patient", "staff"]
CANCELLED_STATES = frozenset({"cancelled", "deferred"})


def session_uid(workflow_id: str, course_number: int, session_number: int) -> str:
    """The UID of one session's calendar event, the same across every change to it."""
    return f"{workflow_id}.c{course_number}.s{session_number}@{UID_DOMAIN}"


@dataclass(frozen=True)
class CalendarSession:
    """One appointment as a calendar needs it (a row of ``appointments`` and its clinic)."""

    workflow_id: str
    patient_id: str
    course_number: int
    session_number: int
    starts_at: datetime
    arrive_by: datetime | None
    duration_minutes: int
    status: str
    version: int
    timezone: str
    clinic_name: str
    language: str = DEFAULT_LANGUAGE  # the patient's (patients.language)

    @property
    def uid(self) -> str:
        """See :func:`session_uid`."""
        return session_uid(self.workflow_id, self.course_number, self.session_number)

    @property
    def cancelled(self) -> bool:
        """A cancelled or deferred session (no longer at this time)."""
        return self.status in CANCELLED_STATES


def _event(s: CalendarSession, audience: Audience, stamp: datetime) -> Event:
    zone = ZoneInfo(s.timezone)
    start = s.starts_at.astimezone(zone)
    # The patient's words in the patient's language; the staff feed is in English.
    t = translator(s.language if audience == "patient" else DEFAULT_LANGUAGE)
    if audience == "patient":
        summary = t("ics.summary", session=s.session_number, clinic=s.clinic_name)
    else:
        summary = f"Laser session {s.session_number}: {s.patient_id}"
    lines = [t("ics.description", session=s.session_number) if audience == "patient" else ""]
    if s.arrive_by is not None:
        arrive = t.time(s.arrive_by, zone)
        minutes = int((s.starts_at - s.arrive_by).total_seconds() // 60)
        lines.append(
            t("ics.arrive_early", time=arrive, duration=t.minutes(minutes))
            if 0 < minutes <= 240
            else t("ics.arrive", time=arrive)
        )
    status = "CANCELLED" if s.cancelled else "CONFIRMED" if s.status == "booked" else "TENTATIVE"
    if s.status in ("done", "no_show"):
        status = "CONFIRMED"
    event = Event.new(
        uid=s.uid,
        sequence=s.version,
        stamp=stamp,
        start=start,
        end=start + timedelta(minutes=s.duration_minutes),
        summary=summary,
        description=" ".join(line for line in lines if line) or None,
        location=s.clinic_name,
        status=status,  # type: ignore[arg-type]
    )
    return event


def build_calendar(
    sessions: Sequence[CalendarSession],
    *,
    method: Method,
    audience: Audience = "patient",
    name: str | None = None,
    calendar_uid: str | None = None,
    refresh: timedelta | None = None,
    now: datetime | None = None,
) -> bytes:
    """An ``.ics`` file with one ``VEVENT`` per session and a ``VTIMEZONE`` per zone used.

    Args:
        sessions: The appointments to include (for ``REQUEST``/``CANCEL`` usually one).
        method: ``REQUEST`` (a booking or a move), ``CANCEL``, or ``PUBLISH`` (a feed).
        audience: ``patient`` (wording for the patient) or ``staff`` (patient id in the title).
        name: The feed's display name (``NAME``/``X-WR-CALNAME``).
        calendar_uid: A stable ``UID`` of the calendar itself (a feed's); derived from the
            sessions' UIDs when omitted, so the same sessions always give the same file.
        refresh: How often a subscribed calendar should fetch the feed again.
        now: ``DTSTAMP`` (the time the file was made); the current time by default.
    """
    stamp = (now or datetime.now(UTC)).astimezone(UTC)
    uid = calendar_uid or (
        f"{method.lower()}.{sessions[0].uid}" if sessions else f"empty@{UID_DOMAIN}"
    )
    calendar = Calendar.new(prodid=PRODID, method=method, name=name, uid=uid)
    if refresh is not None:
        calendar.add("refresh-interval", refresh, parameters={"VALUE": "DURATION"})
    for s in sessions:
        calendar.add_component(_event(s, audience, stamp))
    if sessions:
        first = min(s.starts_at for s in sessions).date()
        last = max(s.starts_at for s in sessions).date()
        # A window around the sessions keeps the VTIMEZONE small (not 1970–2038).
        calendar.add_missing_timezones(
            first_date=date(first.year - 1, 1, 1), last_date=date(last.year + 2, 1, 1)
        )
    ical: bytes = calendar.to_ical()
    return ical


_SESSIONS = """
SELECT a.workflow_id, j.patient_id, a.course_number, a.session_number, a.starts_at, a.arrive_by,
       a.duration_minutes, a.status, a.version,
       coalesce(c.timezone, 'UTC') AS timezone, coalesce(c.name, 'the clinic') AS clinic_name,
       coalesce(p.language, 'en') AS language
FROM appointments a
JOIN journeys j ON j.workflow_id = a.workflow_id
LEFT JOIN clinics c ON c.clinic_id = j.clinic_id
LEFT JOIN patients p ON p.patient_id = j.patient_id
"""


async def journey_sessions(
    pool: asyncpg.Pool | asyncpg.Connection,
    workflow_id: str,
    *,
    course_number: int | None = None,
    session_number: int | None = None,
) -> list[CalendarSession]:
    """The journey's appointments (optionally one course or one session), by course and
    session."""
    rows = await pool.fetch(
        _SESSIONS
        + """
        WHERE a.workflow_id = $1 AND ($2::int IS NULL OR a.course_number = $2)
          AND ($3::int IS NULL OR a.session_number = $3)
        ORDER BY a.course_number, a.session_number
        """,
        workflow_id,
        course_number,
        session_number,
    )
    return [CalendarSession(**dict(r)) for r in rows]


async def clinic_sessions(
    pool: asyncpg.Pool, clinic_id: str, *, since: datetime, limit: int = 5000
) -> list[CalendarSession]:
    """A clinic's appointments starting from ``since`` (the staff feed), soonest first."""
    rows = await pool.fetch(
        _SESSIONS
        + """
        WHERE j.clinic_id = $1 AND a.starts_at >= $2
        ORDER BY a.starts_at, a.workflow_id LIMIT $3
        """,
        clinic_id,
        since,
        limit,
    )
    return [CalendarSession(**dict(r)) for r in rows]


# ---------------------------------------------------------------- notification attachments

# Which notifications carry an invitation, and its method.
INVITATION_KINDS: dict[str, Method] = {
    "booking_confirmation": "REQUEST",
    "session_rebooked": "REQUEST",
    "journey_withdrawn": "CANCEL",
}
_COURSE_IN_KEY = re.compile(r"^c(\d{1,4}):")


async def invitation(
    pool: asyncpg.Pool,
    workflow_id: str,
    kind: str,
    params: Mapping[str, str],
    key: str,
    *,
    language: str | None = None,
) -> tuple[str, Method, bytes] | None:
    """The ``.ics`` a patient notification carries: ``(filename, method, content)``, or
    ``None`` when the kind carries none or the appointment is not in the read model.

    A booking or a move is a ``REQUEST`` of that session at its current state (the latest
    SEQUENCE; a session cancelled meanwhile is a ``CANCEL``); a withdrawal cancels every
    cancelled session of the course. The course comes from the notification key
    (``c<course>:...``) or the journey row. ``language`` (the message's) overrides the
    patient's stored one, so the invitation speaks the language of the e-mail it rides on.
    """
    method = INVITATION_KINDS.get(kind)
    if method is None:
        return None
    m = _COURSE_IN_KEY.match(key)
    course = (
        int(m.group(1))
        if m
        else await pool.fetchval(
            "SELECT course_number FROM journeys WHERE workflow_id = $1", workflow_id
        )
    )
    if course is None:
        return None
    if method == "REQUEST":
        session = params.get("session", "")
        if not session.isdigit():
            return None
        found = await journey_sessions(
            pool, workflow_id, course_number=int(course), session_number=int(session)
        )
        if not found:
            return None
        method = "CANCEL" if found[0].cancelled else "REQUEST"
        name = f"session-{session}.ics"
    else:
        found = [
            s
            for s in await journey_sessions(pool, workflow_id, course_number=int(course))
            if s.cancelled
        ]
        if not found:
            return None
        name = "cancelled-sessions.ics"
    if language is not None:
        found = [replace(s, language=language) for s in found]
    return name, method, build_calendar(found, method=method)
