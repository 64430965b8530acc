"""The bare journey of tests/bench_throughput.py, in a module of its own: the workflow
sandbox re-imports a workflow's module for every run, so it holds nothing but the workflow."""

from __future__ import annotations

import contextlib
from datetime import timedelta

from pydantic import BaseModel
from temporalio import activity, workflow

# The benchmark clinic's calendar (tests/bench_throughput.py: BENCH_CLINIC), in days from the
# start: 3 sessions 14 days apart from the day after enrolment, a check-in on day 3, the review
# 1 month after the last session.
SESSIONS = 3
FIRST_DAY = 1.0 + 9.75 / 24  # the day after enrolment, 09:00, reported done at 09:45
INTERVAL = 14.0
CHECKIN = 3.0
REVIEW = 30.0


class BareShape(BaseModel):
    day_seconds: float
    sessions: int = SESSIONS
    first_day: float = FIRST_DAY
    interval: float = INTERVAL
    review: float = REVIEW


class BareFact(BaseModel):
    key: str


@activity.defn(name="bare_write")
async def bare_write(step: int) -> None:
    """A no-op write."""


@workflow.defn(name="ScaledBareJourney")
class ScaledBareJourney:
    """tests/bench_history.py's ``BareJourney`` on a simulation clock: per session a booking
    write, a wait for the day, the completion signal with its write, the check-in signal with
    its write; then the review update and a closing write. Deadlines are measured from the
    start, so a late step does not push the rest."""

    def __init__(self) -> None:
        self._completed = 0
        self._checked_in = 0
        self._reviewed = False

    async def _write(self, step: int) -> None:
        await workflow.execute_activity(
            bare_write, step, start_to_close_timeout=timedelta(seconds=30)
        )

    @workflow.run
    async def run(self, shape: BareShape) -> int:
        start = workflow.now()

        def at(days: float) -> timedelta:
            return max(
                start + timedelta(seconds=days * shape.day_seconds) - workflow.now(), timedelta(0)
            )

        await self._write(0)
        for n in range(1, shape.sessions + 1):
            await self._write(n)
            day = shape.first_day + (n - 1) * shape.interval
            await workflow.sleep(at(day - 0.5))
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(lambda n=n: self._completed >= n, timeout=at(day + 3))
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda n=n: self._checked_in >= n, timeout=at(day + CHECKIN + 4)
                )
        await self._write(90)
        last = shape.first_day + (shape.sessions - 1) * shape.interval
        await workflow.sleep(at(last + shape.review - 0.5))
        await workflow.wait_condition(lambda: self._reviewed)
        await self._write(99)
        return shape.sessions

    @workflow.signal
    async def completed(self, fact: BareFact) -> None:
        self._completed += 1
        await self._write(100 + self._completed)

    @workflow.signal
    async def checked_in(self, fact: BareFact) -> None:
        self._checked_in += 1
        await self._write(200 + self._checked_in)

    @workflow.update
    async def report_completed(self, fact: BareFact) -> str:
        """The webhook's shape: a completion answered once its write is done."""
        self._completed += 1
        await self._write(100 + self._completed)
        return "applied"

    @workflow.update
    async def review(self, fact: BareFact) -> None:
        self._reviewed = True
