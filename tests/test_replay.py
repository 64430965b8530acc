"""Recorded journey histories replay against the current workflow code.

The histories in ``tests/histories/`` are real runs (see ``tests/record_histories.py``). A change
to workflow code that running journeys execute must keep them replaying, or go behind
``workflow.patched``. The known-bad case proves the test can fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from worker.registry import WORKFLOWS, workflow_runner
from workflows.journey import PatientJourney
from workflows.messages import JourneyStartRequest, JourneyStatus

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def _history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"journey-{path.stem}", path.read_text())


def _replayer(workflows: list[type]) -> Replayer:
    return Replayer(
        workflows=workflows,
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(),
    )


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    result = await _replayer(WORKFLOWS).replay_workflow(_history(path))
    assert result.replay_failure is None


def test_histories_are_recorded() -> None:
    assert len(HISTORIES) >= 2


@workflow.defn(name="PatientJourney")
class JourneyWithoutBooking(PatientJourney):
    """An incompatible change: the journey no longer records its start before screening."""

    @workflow.run
    async def run(self, request: JourneyStartRequest) -> JourneyStatus:
        await workflow.sleep(1)
        return await super().run(request)


async def test_incompatible_change_fails_replay() -> None:
    with pytest.raises(NondeterminismError):
        await _replayer([JourneyWithoutBooking]).replay_workflow(_history(HISTORIES[0]))
