"""A patient's reply to a message, as a fact of the journey (issue 18 item 2, docs/messaging.md).

The reply's text stays in PostgreSQL (``patient_replies``); the ``report_reply`` update brings
only its id, its kind and the session of the message it answers
(:class:`~workflows.replies.PatientReplyReport`). Applied once per idempotency key (built from
the provider's message id), like every fact (:mod:`workflows.journey.facts`); a reply is never
kept as an anomaly: what the journey cannot do with it becomes a staff task instead, so nothing a
patient writes is lost.

* ``confirm``: the session's ``confirmed_at`` is set and the timeline says so. A session that is
  not booked or planned any more (done, cancelled...) cannot be confirmed: a staff task.
* ``reschedule``: the answer offers up to three allowed start times (the session's allowed days,
  :mod:`workflows.booking_window`, at the session's time of day) and the patient's link (added by
  the dispatcher at send time). No allowed day: a staff task.
* ``other``: a staff task (the dashboard shows the text from PostgreSQL) and a staff alert.
* ``stop``/``start``: already applied in PostgreSQL when the reply arrived (at once, whatever the
  journey's state); the journey records it in the timeline.
"""

from __future__ import annotations

from datetime import time
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows import calendar
    from workflows.journey import slots
    from workflows.journey.effects import Effects, Write
    from workflows.messages import FactResult, SessionStatus
    from workflows.reasons import Reason
    from workflows.records import JourneyEvent
    from workflows.replies import PatientReplyReport, ReplyAnsweredRequest

MAX_OFFERS = 3
CONFIRMABLE = ("planned", "booked")


async def receive(fx: Effects, report: PatientReplyReport) -> FactResult:
    """Apply ``report`` once (``applied``) or answer ``duplicate`` for a key seen before."""
    st = fx.state
    key = report.idempotency_key
    if key in st.seen_keys:
        return FactResult(outcome="duplicate", stage=st.stage)
    await workflow.wait_condition(lambda: fx.ready)
    async with fx.lock:
        if key in st.seen_keys:
            return FactResult(outcome="duplicate", stage=st.stage)
        st.seen_keys.add(key)
        write, reasons = apply_reply(fx, report)
        st.changes += 1
        await fx.write(write)
        return FactResult(outcome="applied", reasons=reasons, stage=st.stage)


def _session(fx: Effects, number: int | None) -> SessionStatus | None:
    st = fx.state
    if number is not None:
        return next((s for s in st.sessions if s.number == number), None)
    return st.current_session()


def apply_reply(fx: Effects, report: PatientReplyReport) -> tuple[Write, list[Reason]]:
    """The journey's part of a reply: the write, and why it became a staff task (if it did)."""
    session = _session(fx, report.session_number)
    if report.kind in ("stop", "start"):
        verb = "opted out of" if report.kind == "stop" else "opted back in to"
        return Write(
            events=[
                _event(
                    fx,
                    report,
                    f"contact_opted_{'out' if report.kind == 'stop' else 'in'}",
                    f"The patient {verb} {_channel(report)} messages (reply #{report.reply_id}).",
                )
            ]
        ), []
    if report.kind == "confirm":
        if session is not None and session.state in CONFIRMABLE:
            fx.state.replace_session(session.number, confirmed_at=fx.now())
            return Write(
                events=[
                    _event(
                        fx,
                        report,
                        "reply_confirmed",
                        f"The patient confirmed session {session.number} by "
                        f"{_channel(report)} (reply #{report.reply_id}).",
                    )
                ]
            ), []
        reason = Reason(
            rule="nothing_to_confirm",
            message=(
                f"Session {session.number} is {session.state}: nothing to confirm."
                if session is not None
                else "No session to confirm."
            ),
        )
        return _staff_task(fx, report, session, reason), [reason]
    if report.kind == "reschedule":
        if session is not None and session.state in CONFIRMABLE:
            offers = _offers(fx, session, report)
            if offers:
                params = {
                    "session": str(session.number),
                    "timezone": fx.cp.clinic.timezone,
                    **{f"offer_{i}": at for i, at in enumerate(offers, start=1)},
                }
                return Write(
                    events=[
                        _event(
                            fx,
                            report,
                            "reply_reschedule_asked",
                            f"The patient asked to move session {session.number} "
                            f"(reply #{report.reply_id}); {len(offers)} times offered.",
                            {"offers": offers},
                        )
                    ],
                    notifications=[
                        fx.notify_params(
                            "reply_reschedule_offer", f"reply-{report.reply_id}", params
                        )
                    ],
                ), []
            reason = Reason(
                rule="no_allowed_day",
                message=f"No day is allowed for session {session.number} now.",
            )
        else:
            reason = Reason(rule="nothing_to_move", message="No planned or booked session.")
        return _staff_task(fx, report, session, reason), [reason]
    return _staff_task(fx, report, session, None), []


def _offers(fx: Effects, session: SessionStatus, report: PatientReplyReport) -> list[str]:
    """Up to three start times (ISO): the free times the report brings (the clinic's slots,
    found by the API with ``scheduling.store.free_times``) that fall on an allowed day; without
    any (a clinic without resources on file), the allowed days at the session's time of day
    (not checked against slots: the patient's page checks the slot when the patient picks one).
    """
    tz = fx.cp.clinic.timezone
    days = slots.window(fx, session.number)
    if report.offers:
        allowed = set(days)
        zone = fx.cp.clinic.tz()
        kept = [t for t in report.offers if t.astimezone(zone).date() in allowed]
        if kept:
            return [t.isoformat() for t in kept[:MAX_OFFERS]]
    at: time = fx.cp.clinic.session_start
    if session.starts_at is not None:
        at = session.starts_at.astimezone(fx.cp.clinic.tz()).time().replace(tzinfo=None)
    days = [d for d in days if d != session.planned_on][:MAX_OFFERS]
    return [calendar.local_datetime(d, at, tz).isoformat() for d in days]


def _task_prefix(reply_id: int) -> str:
    return f"Answer the patient's reply #{reply_id}"


def _open_tasks(fx: Effects, reply_id: int) -> list[str]:
    prefix = _task_prefix(reply_id)
    # "#1" must not match "#12": the prefix is followed by the end or " about …".
    return [t for t in fx.state.clinician_tasks if t == prefix or t.startswith(f"{prefix} about ")]


def answered_problems(fx: Effects, request: ReplyAnsweredRequest) -> list[Reason]:
    """Why staff cannot mark reply ``request.reply_id`` answered (empty: they can)."""
    if _open_tasks(fx, request.reply_id):
        return []
    return [
        Reason(
            rule="no_open_reply_task",
            message=f"No open task for the patient's reply #{request.reply_id}.",
        )
    ]


def apply_answered(fx: Effects, request: ReplyAnsweredRequest) -> tuple[Write, int]:
    """Close the reply's task; the note and the staff member go to the timeline."""
    tasks = _open_tasks(fx, request.reply_id)
    for task in tasks:
        fx.state.clinician_tasks.remove(task)
    by = request.staff_ref or request.requested_by
    write = Write(
        events=[
            fx.event(
                "reply_answered",
                request.requested_by,
                f"The patient's reply #{request.reply_id} answered by {by}: {request.note}",
                {"reply_id": request.reply_id, "by": by},
            )
        ]
    )
    return write, len(tasks)


def _staff_task(
    fx: Effects, report: PatientReplyReport, session: SessionStatus | None, reason: Reason | None
) -> Write:
    about = f" about session {session.number}" if session is not None else ""
    fx.state.add_task(f"{_task_prefix(report.reply_id)}{about}")
    why = f" ({reason.message})" if reason is not None else ""
    return Write(
        events=[
            _event(
                fx,
                report,
                "reply_for_staff",
                f"The patient replied by {_channel(report)}{about} (reply #{report.reply_id},"
                f" {report.kind}){why}: a task for staff.",
                {"reasons": [reason.model_dump()] if reason else []},
            )
        ],
        notifications=[
            fx.notify(
                "staff_alert",
                f"reply-{report.reply_id}",
                "staff",
                alert="patient_reply",
                session=str(session.number) if session is not None else "?",
                reply=str(report.reply_id),
            )
        ],
    )


def _channel(report: PatientReplyReport) -> str:
    return "SMS" if report.channel == "sms" else "e-mail"


def _event(
    fx: Effects,
    report: PatientReplyReport,
    kind: str,
    summary: str,
    extra: dict[str, Any] | None = None,
) -> JourneyEvent:
    return fx.event(
        kind,
        "patient",
        summary,
        {
            "reply_id": report.reply_id,
            "reply_kind": report.kind,
            "channel": report.channel,
            "session": report.session_number,
            **(extra or {}),
        },
    )
