"""Status patches for hand-written ``StepRecord`` fixtures, shaped as the journey writes them.

The journey's first write of a run carries its whole status (``JourneyStatus`` dumped as JSON);
later writes carry only the top-level fields that changed. The store derives the list columns
(stage, sessions planned and done, next action, flags...) from the merged status.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

from workflows.messages import JourneyStatus, SessionStatus

DAY1 = date(2026, 3, 2)


def sessions(planned: int, done: int = 0, first: date = DAY1) -> list[SessionStatus]:
    """``planned`` sessions 21 days apart, the first ``done`` of them done."""
    return [
        SessionStatus(
            number=n,
            planned_on=first + timedelta(days=21 * (n - 1)),
            state="done" if n <= done else "planned",
        )
        for n in range(1, planned + 1)
    ]


def full_status(
    patient_id: str,
    clinic_id: str = "default",
    *,
    stage: str = "scheduled",
    sessions_planned: int = 3,
    sessions_done: int = 0,
    next_action: str | None = None,
    next_action_at: datetime | None = None,
    flags: list[str] | None = None,
    course_number: int = 1,
    protocol_version: str = "pore-2026.1",
    **changes: Any,
) -> dict[str, Any]:
    """A whole status as the journey's first write of a run carries it."""
    return JourneyStatus(
        patient_id=patient_id,
        clinic_id=clinic_id,
        stage=stage,  # type: ignore[arg-type]
        protocol_version=protocol_version,
        course_number=course_number,
        pore_grade="moderate",
        numbing_cream=False,
        sessions=sessions(sessions_planned, sessions_done),
        next_action=next_action,
        next_action_at=next_action_at,
        flags=flags or [],
        **changes,
    ).model_dump(mode="json")
