"""Stage: screening → eligible, deferred (wait, then screen again) or excluded (closed).

The rules themselves are :func:`workflows.screening.screen`; this module runs them at the right
time and records the outcome. Only a clinician's answers may override a permanent
contraindication or set a drug washout (the rule module refuses anyone else's).
"""

from __future__ import annotations

import functools
from datetime import datetime

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.journey.effects import Effects, Write
    from workflows.reasons import format_date
    from workflows.screening import ScreeningAnswers, ScreeningResult, screen


def apply_answers(fx: Effects, answers: ScreeningAnswers, by_clinician: bool) -> ScreeningResult:
    """Screen ``answers`` today; keep them, the outcome, its flags and clinician tasks."""
    st = fx.state
    result = screen(answers, fx.today(), fx.cp.protocol, by_clinician=by_clinician)
    for f in result.flags:
        st.flag(f)
    for t in result.clinician_tasks:
        st.add_task(t)
    st.answers = answers
    st.answers_by_clinician = by_clinician
    st.answers_version += 1
    st.screening = result
    return result


def _reasons(result: ScreeningResult) -> str:
    return "; ".join(r.message for r in result.reasons)


async def screen_until_eligible(fx: Effects) -> bool:
    """Screen, and on a deferral wait for its date, then ask for fresh answers.

    Returns False when the patient is excluded (the journey is then closed).
    """
    st = fx.state
    while True:
        fx.check_open()
        if st.answers is None:

            def ask() -> Write:
                fx.set_stage("screening", "Record the screening answers", None)
                return Write(
                    events=[fx.event("screening_requested", "system", "Screening answers needed.")],
                    notifications=[
                        fx.notify("rescreen_due", f"rescreen-{st.answers_version}", "staff")
                    ],
                )

            await fx.advance(ask)
            await fx.sleep_until(None, lambda: st.answers is not None, "screening")
            continue
        result = st.screening or apply_answers(fx, st.answers, st.answers_by_clinician)
        if result.outcome == "eligible":
            return True
        if result.outcome == "excluded":

            def exclude(result: ScreeningResult = result) -> Write:
                fx.close("excluded", _reasons(result))
                return Write(
                    events=[
                        fx.event(
                            "excluded",
                            "system",
                            f"Excluded: {_reasons(result)}",
                            {"reasons": [r.model_dump() for r in result.reasons]},
                        )
                    ]
                )

            await fx.advance(exclude)
            return False
        at = fx.day_start(result.until) if result.until else None
        version = st.answers_version
        await fx.advance(functools.partial(_defer, fx, result, at))
        await fx.sleep_until(at, functools.partial(_answered_since, fx, version), "deferred")
        if st.answers_version == version:
            # The date came: ask for fresh answers rather than reuse the old ones.
            st.answers = None
            st.screening = None


def _defer(fx: Effects, result: ScreeningResult, at: datetime | None) -> Write:
    until = result.until
    fx.set_stage("deferred", "Re-screen the patient", at)
    when = f" until {format_date(until)}" if until else " until a clinician decides"
    return Write(
        events=[
            fx.event(
                "deferred",
                "system",
                f"Deferred{when}: {_reasons(result)}",
                {
                    "until": until.isoformat() if until else None,
                    "reasons": [r.model_dump() for r in result.reasons],
                },
            )
        ]
    )


def _answered_since(fx: Effects, version: int) -> bool:
    return fx.state.answers_version != version
