"""A test-only workflow registered under the journey's type name, ``PatientJourney``, whose
run raises a plain exception when asked to: on a worker without
``workflow_failure_exception_types`` that fails the workflow task over and over, exactly like a
bug in the real journey. Asked not to fail, it waits (a healthy open journey)."""

from __future__ import annotations

from temporalio import workflow

from workflows.ids import WORKFLOW_TYPE

BUG_MESSAGE = "deliberate bug in a test journey"


@workflow.defn(name=WORKFLOW_TYPE)
class BrokenJourney:
    """``PatientJourney`` as far as visibility can tell."""

    def __init__(self) -> None:
        self._done = False

    @workflow.run
    async def run(self, fail: bool) -> None:
        if fail:
            raise RuntimeError(BUG_MESSAGE)
        await workflow.wait_condition(lambda: self._done)
