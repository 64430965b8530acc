"""The errors a request's validator raises: a type per request, every reason in the details."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.journey.effects import Effects
    from workflows.reasons import Reason


def refused(kind: str, reasons: list[Reason]) -> ApplicationError:
    """The error a validator raises: a type per request, every reason in the details."""
    return ApplicationError(
        "; ".join(r.message for r in reasons),
        *[r.model_dump() for r in reasons],
        type=f"{kind}Refused",
        non_retryable=True,
    )


def refuse_if(kind: str, reasons: list[Reason]) -> None:
    if reasons:
        raise refused(kind, reasons)


_STARTING = Reason(rule="journey_starting", message="The journey is starting; try again shortly.")


def starting_refusals(fx: Effects) -> list[Reason]:
    """Before the clinic is loaded the journey cannot judge a request: ask again shortly."""
    return [] if fx.ready else [_STARTING]
