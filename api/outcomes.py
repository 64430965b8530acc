"""Outcomes at the review (issue 19 item 3): the patient's satisfaction, asked on their page
before the review (``patient_satisfaction``, read by the clinic reports), and the clinician's
outcome, which the journey keeps (``ReviewRequest``: grades and adverse-events summary, in
``status.review`` and on the timeline)."""

from __future__ import annotations

from datetime import datetime
from typing import Final

import asyncpg
from pydantic import BaseModel, ConfigDict

from workflows.ids import workflow_id
from workflows.messages import JourneyStatus

__all__ = [
    "ASK_SATISFACTION_STAGES",
    "Satisfaction",
    "get_satisfaction",
    "save_satisfaction",
]

# The patient is asked once the sessions are done and until the review is recorded.
ASK_SATISFACTION_STAGES: Final = frozenset({"spf_window", "awaiting_review"})
SCORES: Final[dict[int, str]] = {
    1: "Very unsatisfied",
    2: "Unsatisfied",
    3: "Neither",
    4: "Satisfied",
    5: "Very satisfied",
}
GLOBAL_IMPROVEMENT: Final[dict[int, str]] = {
    1: "Worse",
    2: "No change",
    3: "Improved",
    4: "Much improved",
    5: "Very much improved",
}
PORE_VISIBILITY: Final[dict[int, str]] = {
    1: "No visible pores",
    2: "Barely visible",
    3: "Visible",
    4: "Clearly visible",
    5: "Very visible",
}


class Satisfaction(BaseModel):
    """One answer of the patient."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    patient_id: str
    course_number: int
    score: int
    comment: str | None
    created_at: datetime


async def save_satisfaction(
    pool: asyncpg.Pool, patient_id: str, course_number: int, score: int, comment: str | None
) -> tuple[Satisfaction, bool]:
    """Store the answer once per course; returns it and whether it is new (a second answer
    keeps the first)."""
    wf = workflow_id(patient_id)
    row = await pool.fetchrow(
        """
        INSERT INTO patient_satisfaction (workflow_id, patient_id, course_number, score, comment)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (workflow_id, course_number) DO NOTHING
        RETURNING workflow_id, patient_id, course_number, score, comment, created_at
        """,
        wf,
        patient_id,
        course_number,
        score,
        comment,
    )
    if row is not None:
        return Satisfaction.model_validate(dict(row)), True
    existing = await get_satisfaction(pool, patient_id, course_number)
    assert existing is not None
    return existing, False


async def get_satisfaction(
    pool: asyncpg.Pool, patient_id: str, course_number: int | None = None
) -> Satisfaction | None:
    """The answer for ``course_number`` (None: the newest)."""
    row = await pool.fetchrow(
        """
        SELECT workflow_id, patient_id, course_number, score, comment, created_at
        FROM patient_satisfaction
        WHERE workflow_id = $1 AND ($2::int IS NULL OR course_number = $2)
        ORDER BY course_number DESC LIMIT 1
        """,
        workflow_id(patient_id),
        course_number,
    )
    return None if row is None else Satisfaction.model_validate(dict(row))


async def review_outcome(
    pool: asyncpg.Pool, patient_id: str, status: JourneyStatus | None
) -> dict[str, object] | None:
    """The clinician's outcome of the latest review, with the grades' words: the journey's
    ``status.review``, else the newest ``completed`` / ``further_course`` timeline event (a
    further course starts a new run)."""
    data: dict[str, object] | None = None
    review = status.review if status is not None else None
    if review is not None:
        data = review.model_dump(mode="json")
    else:
        row = await pool.fetchrow(
            "SELECT data FROM journey_events WHERE workflow_id = $1 "
            "AND kind IN ('completed', 'further_course') ORDER BY id DESC LIMIT 1",
            workflow_id(patient_id),
        )
        if row is not None and isinstance(row["data"], dict) and "outcome" in row["data"]:
            data = dict(row["data"])
    if data is None:
        return None
    gi = data.get("global_improvement")
    pv = data.get("pore_visibility")
    data["global_improvement_text"] = GLOBAL_IMPROVEMENT.get(gi, "") if isinstance(gi, int) else ""
    data["pore_visibility_text"] = PORE_VISIBILITY.get(pv, "") if isinstance(pv, int) else ""
    return data
