"""Which stage accepts which request or fact, and why not: the one table of "may this happen now?".

Pure and deterministic. The workflow's validators and fact handlers, the API (to explain a
refusal before it reaches Temporal) and the web pages (which buttons to show) all read this
table, so they cannot disagree. Date rules (the review's early window, the minimum interval)
stay with the rule modules; this table is only about stages.

Stage moves (``TRANSITIONS``) are what the model-based test checks after every step: the
journey's stage changes only along this table, and a closed stage never changes.
"""

from __future__ import annotations

from typing import Literal, get_args

from workflows.reasons import Reason

Stage = Literal[
    "screening",
    "deferred",
    "excluded",
    "awaiting_season",
    "scheduled",
    "session_due",
    "recovery",
    "spf_window",
    "awaiting_review",
    "completed",
    "paused",
    "withdrawn",
]
STAGES: tuple[str, ...] = get_args(Stage)
CLOSED_STAGES: frozenset[str] = frozenset({"excluded", "completed", "withdrawn"})
OPEN_STAGES: frozenset[str] = frozenset(STAGES) - CLOSED_STAGES
# Stages the main loop may never leave: closed ones for good, ``paused`` until a resume.
STICKY_STAGES: frozenset[str] = CLOSED_STAGES | {"paused"}

Request = Literal[
    "submit_screening",
    "pre_session_check",
    "reschedule",
    "pause",
    "resume",
    "withdraw",
    "record_review",
    "resolve_anomaly",
    "record_consent",
    "require_consent",
    "withdraw_consent",
]
Fact = Literal["session_completed", "recovery_checkin", "spf_attested", "adverse_event"]

_WITH_SESSIONS = frozenset({"awaiting_season", "scheduled", "session_due", "recovery"})

# Request → the stages that accept it.
ACCEPTS: dict[str, frozenset[str]] = {
    "submit_screening": frozenset({"screening", "deferred"}),
    "pre_session_check": frozenset({"scheduled", "session_due"}),
    # While paused only when the pause left a stage with sessions (checked by the workflow).
    "reschedule": _WITH_SESSIONS | {"paused"},
    "pause": OPEN_STAGES - {"paused"},
    "resume": frozenset({"paused"}),
    "withdraw": OPEN_STAGES,
    "record_review": frozenset({"awaiting_review"}),
    "resolve_anomaly": OPEN_STAGES,
    "record_consent": OPEN_STAGES,
    "require_consent": OPEN_STAGES,
    "withdraw_consent": OPEN_STAGES,
    # Facts: applied in these stages; anywhere else open they become an anomaly for staff.
    "session_completed": frozenset({"scheduled", "session_due"}),
    # Harmless to apply while paused (a pause holds timers, not what the patient reports).
    "recovery_checkin": frozenset({"recovery", "scheduled", "session_due", "spf_window", "paused"}),
    "spf_attested": frozenset(
        {"recovery", "spf_window", "awaiting_review", "scheduled", "session_due", "paused"}
    ),
    "adverse_event": OPEN_STAGES,
}

_WHAT: dict[str, str] = {
    "submit_screening": "A screening is taken",
    "pre_session_check": "A pre-session check is taken",
    "reschedule": "A session can be moved",
    "pause": "A journey can be paused",
    "resume": "A journey can be resumed",
    "withdraw": "A journey can be withdrawn",
    "record_review": "The review is recorded",
    "resolve_anomaly": "An anomaly is resolved",
    "record_consent": "Consent is recorded",
    "require_consent": "A consent version is required",
    "withdraw_consent": "Consent is withdrawn",
    "session_completed": "A completed session is applied",
    "recovery_checkin": "A recovery check-in is applied",
    "spf_attested": "An SPF attestation is applied",
    "adverse_event": "An adverse event is applied",
}

_RULE: dict[str, str] = {
    "submit_screening": "not_screening",
    "pre_session_check": "no_session_due",
    "reschedule": "nothing_to_reschedule",
    "pause": "cannot_pause",
    "resume": "not_paused",
    "withdraw": "journey_closed",
    "record_review": "review_not_due",
    "resolve_anomaly": "journey_closed",
    "record_consent": "journey_closed",
    "require_consent": "journey_closed",
    "withdraw_consent": "journey_closed",
    "session_completed": "not_expecting_session",
    "recovery_checkin": "no_recovery",
    "spf_attested": "no_spf_window",
    "adverse_event": "journey_closed",
}

# Stage → stages the journey may move to next (the resume from ``paused`` goes back to the
# stage it left, any open one).
TRANSITIONS: dict[str, frozenset[str]] = {
    "screening": frozenset(
        {"deferred", "excluded", "awaiting_season", "scheduled", "paused", "withdrawn"}
    ),
    "deferred": frozenset(
        {"screening", "excluded", "awaiting_season", "scheduled", "paused", "withdrawn"}
    ),
    "awaiting_season": frozenset({"scheduled", "deferred", "paused", "withdrawn"}),
    "scheduled": frozenset(
        {"session_due", "recovery", "awaiting_season", "deferred", "paused", "withdrawn"}
    ),
    "session_due": frozenset(
        {"scheduled", "recovery", "awaiting_season", "deferred", "paused", "withdrawn"}
    ),
    "recovery": frozenset(
        {"scheduled", "awaiting_season", "deferred", "spf_window", "paused", "withdrawn"}
    ),
    "spf_window": frozenset({"awaiting_review", "paused", "withdrawn"}),
    "awaiting_review": frozenset({"completed", "screening", "paused", "withdrawn"}),
    "paused": OPEN_STAGES - {"paused"} | {"withdrawn"},
    "completed": frozenset(),
    "excluded": frozenset(),
    "withdrawn": frozenset(),
}


def stage_words(stage: str) -> str:
    """A stage as people read it: ``session_due`` → "session due"."""
    return stage.replace("_", " ")


def accepts(what: str, stage: str) -> bool:
    """True if ``stage`` accepts the request or fact ``what`` (see ``ACCEPTS``)."""
    return stage in ACCEPTS[what]


def refusal(what: str, stage: str) -> Reason | None:
    """The reason ``stage`` does not accept ``what``, or None when it does.

    The message names the stages that would accept it, so a person knows what to wait for.
    """
    if accepts(what, stage):
        return None
    if stage in CLOSED_STAGES:
        return Reason(rule="journey_closed", message=f"The journey is {stage_words(stage)}.")
    allowed = ", ".join(stage_words(s) for s in STAGES if s in ACCEPTS[what])
    return Reason(
        rule=_RULE[what],
        message=f"{_WHAT[what]} while the journey is {allowed}; it is {stage_words(stage)}.",
    )


def refusals(what: str, stage: str) -> list[Reason]:
    """:func:`refusal` as a list (empty when ``stage`` accepts ``what``), to join other rules."""
    found = refusal(what, stage)
    return [found] if found else []


def may_move(src: str, dst: str) -> bool:
    """True if the journey may move from stage ``src`` to ``dst`` (or stays)."""
    return src == dst or dst in TRANSITIONS[src]


def available_requests(stage: str) -> list[str]:
    """The requests a person may make in ``stage`` (what the pages offer)."""
    return [r for r in get_args(Request) if accepts(r, stage)]
