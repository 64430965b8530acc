"""Stages: the sun-protection window after the last session, then the review of the result.

The window's reminders and the review invitation are written once, with their send times, when
the window opens. The review is accepted from ``review_early_days`` before the review date (not
from the end of the sun-protection window), and is chased when it is late. A further course
continues as new with everything the journey knows.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.guards import refusal
    from workflows.journey.effects import Effects, Write
    from workflows.messages import ReviewRequest, SpfAttestedSignal
    from workflows.planner import review_date, spf_window_end
    from workflows.reasons import Reason, format_date
    from workflows.records import NotificationRecord


def _spf(fx: Effects) -> str:
    return f"SPF {fx.cp.protocol.spf_factor}"


async def spf_window(fx: Effects) -> None:
    """Daily sun protection until the window ends; reminders scheduled up front."""
    st = fx.state
    p = fx.cp.protocol
    last = st.last_done_on()
    assert last is not None
    spf_until = spf_window_end(last, p)
    st.spf_until = spf_until
    st.review_on = review_date(last, p)
    spf_end = fx.day_start(spf_until + timedelta(days=1))

    def open_window() -> Write:
        fx.set_stage("spf_window", f"{_spf(fx)} every day until {format_date(spf_until)}", spf_end)
        messages: list[NotificationRecord] = []
        k = 0
        while True:
            at = fx.day_start(last + timedelta(days=p.spf_reminder_interval_days * k))
            if at >= spf_end:
                break
            messages.append(
                fx.notify(
                    "spf_reminder",
                    f"spf-{k + 1}",
                    send_at=at if k else None,
                    spf_until=spf_until.isoformat(),
                    spf_factor=str(p.spf_factor),
                )
            )
            k += 1
        assert st.review_on is not None
        messages.append(
            fx.notify(
                "review_invite",
                "review-invite",
                send_at=fx.day_start(st.review_on),
                review_on=st.review_on.isoformat(),
                review_months=str(p.review_months),
            )
        )
        return Write(
            events=[
                fx.event(
                    "spf_window",
                    "system",
                    f"{_spf(fx)} every day until {format_date(spf_until)}.",
                    {"spf_until": spf_until.isoformat()},
                )
            ],
            notifications=messages,
        )

    if fx.now() < spf_end:
        await fx.advance(open_window)
        await fx.sleep_until(spf_end, lambda: False, "spf_window")
    st.phase = "review"


async def await_review(
    fx: Effects, continue_further_course: Callable[[ReviewRequest], Awaitable[None]]
) -> None:
    """Wait for ``record_review``; alert staff when it is late; close or continue."""
    st = fx.state
    p = fx.cp.protocol
    assert st.review_on is not None
    review_at = fx.day_start(st.review_on)
    action = f"Record the {p.review_months}-month review"

    def reviewed() -> bool:
        return st.review is not None

    def awaiting() -> Write:
        fx.set_stage("awaiting_review", action, review_at)
        assert st.review_on is not None
        return Write(
            events=[
                fx.event("awaiting_review", "system", f"Review due on {format_date(st.review_on)}.")
            ]
        )

    if st.stage != "awaiting_review":
        await fx.advance(awaiting)
    if not await fx.sleep_until(review_at, reviewed, "awaiting_review"):
        overdue_at = review_at + timedelta(days=p.review_overdue_days)
        fx.set_stage("awaiting_review", action, overdue_at)
        if not await fx.sleep_until(overdue_at, reviewed, "awaiting_review"):
            await fx.advance(lambda: _overdue(fx))
            await fx.sleep_until(None, reviewed, "awaiting_review")
    review = st.review
    assert review is not None
    if review.outcome == "complete":
        await fx.advance(lambda: _completed(fx, review))
        return
    await continue_further_course(review)


def _overdue(fx: Effects) -> Write:
    st = fx.state
    st.flag("review_overdue")
    fx.set_stage("awaiting_review", "Record the overdue review", None)
    return Write(
        events=[
            fx.event(
                "review_overdue",
                "system",
                f"The {fx.cp.protocol.review_months}-month review is overdue.",
            )
        ],
        notifications=[fx.notify("staff_alert", "review-overdue", "staff", alert="review_overdue")],
    )


def outcome_data(review: ReviewRequest) -> dict[str, object]:
    """The review's outcome as the timeline keeps it (what the clinic reports read)."""
    return {
        "outcome": review.outcome,
        "global_improvement": review.global_improvement,
        "pore_visibility": review.pore_visibility,
        "adverse_events_summary": review.adverse_events_summary,
        "note_ref": review.note_ref,
    }


def _completed(fx: Effects, review: ReviewRequest) -> Write:
    by = review.staff_ref or review.reviewed_by
    fx.close("completed", "Course complete after the review.")
    return Write(
        events=[
            fx.event(
                "completed",
                review.reviewed_by,
                f"Review by {by}: journey completed.",
                outcome_data(review),
            )
        ]
    )


def further_course_write(fx: Effects, review: ReviewRequest) -> Write:
    """The last write of a course that continues with another one."""
    by = review.staff_ref or review.reviewed_by
    return Write(
        events=[
            fx.event(
                "further_course",
                review.reviewed_by,
                f"Review by {by}: further course of {review.further_sessions} sessions; "
                "screening again.",
                {
                    **outcome_data(review),
                    "sessions": review.further_sessions,
                    "next_course": fx.state.course_number + 1,
                },
            )
        ]
    )


# ----------------------------------------------------------------- requests and facts


def review_problems(fx: Effects, request: ReviewRequest) -> list[Reason]:
    """The review is recorded once, from its early window, with a valid further course."""
    st = fx.state
    reasons: list[Reason] = []
    stage_refusal = refusal("record_review", st.stage)
    if stage_refusal is not None or st.review is not None:
        reasons.append(
            stage_refusal
            or Reason(rule="review_not_due", message="The review was already recorded.")
        )
    elif st.review_on is not None:
        p = fx.cp.protocol
        opens = st.review_on - timedelta(days=p.review_early_days)
        if fx.today() < opens:
            reasons.append(
                Reason(
                    rule="review_too_early",
                    message=f"The review is due on {format_date(st.review_on)}; it can be "
                    f"recorded from {format_date(opens)}.",
                )
            )
    if request.outcome == "further_course":
        limit = fx.cp.protocol.max_sessions_per_course if st.cp else 0
        if request.further_sessions is None or request.further_sessions > limit:
            reasons.append(
                Reason(
                    rule="further_sessions",
                    message=f"A further course needs a number of sessions between 1 and {limit}.",
                )
            )
    return reasons


def spf_problems(fx: Effects, fact: SpfAttestedSignal) -> list[Reason]:
    st = fx.state
    stage_refusal = refusal("spf_attested", st.stage)
    if stage_refusal is not None:
        return [stage_refusal]
    if st.last_done_on() is None:
        return [
            Reason(rule="no_session_yet", message="SPF attestations start after the first session.")
        ]
    first = min(
        (s.completed_at for s in st.sessions if s.state == "done" and s.completed_at),
        default=None,
    )
    if first is not None and fact.on < first.date() - timedelta(days=1):
        return [
            Reason(
                rule="before_first_session",
                message=f"{format_date(fact.on)} is before the course's first session.",
            )
        ]
    if fact.on > fx.today():
        return [Reason(rule="in_future", message=f"{format_date(fact.on)} has not come yet.")]
    return []


def apply_spf(fx: Effects, fact: SpfAttestedSignal) -> Write:
    st = fx.state
    if fact.on not in st.spf_attestations:
        st.spf_attestations.append(fact.on)
    return Write(
        events=[
            fx.event(
                "spf_attested",
                fact.reported_by,
                f"{_spf(fx)} use attested for {format_date(fact.on)}.",
                {"on": fact.on.isoformat()},
            )
        ]
    )
