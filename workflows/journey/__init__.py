"""The patient journey, one module per stage.

* :mod:`.state`: everything the journey knows (``JourneyState``), what continue-as-new carries;
* :mod:`.effects`: the clock, waits, sticky stage moves and the lean writes;
* :mod:`.screening`, :mod:`.planning` (and the season gate), :mod:`.sessions`,
  :mod:`.recovery`, :mod:`.aftercare` (sun-protection window and review): the stages;
* :mod:`.facts`: facts from outside, applied once or kept as anomalies;
* :mod:`.workflow`: the ``PatientJourney`` definition, its handlers and the run loop.

Which stage accepts which request or fact is :mod:`workflows.guards`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workflows.journey.workflow import PatientJourney

__all__ = ["PatientJourney"]


def __getattr__(name: str) -> Any:
    # Lazy, so the pure state model can be imported (by workflows.messages) without pulling
    # the workflow definition and Temporal in with it.
    if name == "PatientJourney":
        from workflows.journey.workflow import PatientJourney

        return PatientJourney
    raise AttributeError(name)
