"""Names integrators rely on: the workflow type, its id format, the task queue, search attributes.

Side-effect free so the API, CLI, worker, tests and the workflow sandbox can all import it.
"""

from __future__ import annotations

import re

from temporalio.common import SearchAttributeKey

WORKFLOW_TYPE = "PatientJourney"
DEFAULT_TASK_QUEUE = "patient-journey"
WORKFLOW_ID_PREFIX = "journey-"

# Patient ids are opaque database keys; refusing anything else keeps names out of workflow ids.
PATIENT_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
_PATIENT_ID_RE = re.compile(PATIENT_ID_PATTERN)

JOURNEY_STAGE = SearchAttributeKey.for_keyword("JourneyStage")
NEXT_ACTION_AT = SearchAttributeKey.for_datetime("NextActionAt")
CLINIC_ID = SearchAttributeKey.for_keyword("ClinicId")
JOURNEY_FLAGS = SearchAttributeKey.for_keyword_list("JourneyFlags")

# Name → type as the Temporal CLI spells it (`--search-attribute Name=Type`).
SEARCH_ATTRIBUTES: dict[str, str] = {
    "JourneyStage": "Keyword",
    "NextActionAt": "Datetime",
    "ClinicId": "Keyword",
    "JourneyFlags": "KeywordList",
}


def workflow_id(patient_id: str) -> str:
    """The journey's workflow id, ``journey-<patient_id>``.

    Raises:
        ValueError: the patient id is not an opaque id (letters, digits, ``-``, ``_``).
    """
    if not _PATIENT_ID_RE.match(patient_id):
        raise ValueError(f"patient id {patient_id!r} must match {PATIENT_ID_PATTERN}")
    return f"{WORKFLOW_ID_PREFIX}{patient_id}"


def patient_id_from_workflow_id(wf_id: str) -> str:
    """The patient id inside a journey's workflow id."""
    if not wf_id.startswith(WORKFLOW_ID_PREFIX):
        raise ValueError(f"{wf_id!r} is not a journey workflow id")
    return wf_id[len(WORKFLOW_ID_PREFIX) :]
