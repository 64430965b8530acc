"""Hostile messages by name straight to Temporal (no API in between): a hypothesis fuzz of
every signal and update of ``PatientJourney`` (issue 12, item 6).

Each example starts a real journey in the time-skipping server (its writes go to the real
PostgreSQL store, so a value PostgreSQL would refuse shows up as a refused write), optionally
moves the clock, then sends a batch of messages by name. Payloads are crafted as raw JSON
payloads (:class:`temporalio.common.RawValue`), so anything JSON can carry reaches the worker
exactly as sent: extreme dates and date-times (year 1, 9999, offsets ±14:00, naive), control
characters and lone surrogates (as ``\\ud800`` escapes), strings up to ~1 MB, wrong types,
missing and extra fields, huge and negative integers, a payload that is not an object at all.
Some payloads are valid, so the batch also reaches the journey's rules (a valid withdraw closes
the journey).

After each batch:

* the journey is Running, or closed as intended (a withdraw or review it accepted);
* its ``status`` query answers;
* no run of it has a ``WorkflowTaskFailed`` event (or failed at all);
* the read model (``journeys.status`` in PostgreSQL, the merged status patches) matches the
  query.

CI runs a few examples; ``make fuzz`` runs many more (``TEMPORAL_FUZZ_EXAMPLES``). With
``TEMPORAL_FUZZ_REPORT=1`` the test prints the messages sent and their outcomes by kind.
"""

from __future__ import annotations

import collections
import json
import os
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.api.common.v1 import Payload, WorkflowExecution
from temporalio.api.enums.v1 import EventType, WorkflowExecutionStatus
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import (
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import RawValue
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities.repository import upsert_clinic
from activities.store import JourneyStore
from tests.fixtures_temporal import new_worker
from tests.journey_helpers import eventually, settle
from tests.test_journey import BERLIN, start
from workflows.guards import CLOSED_STAGES
from workflows.journey import PatientJourney
from workflows.messages import ConsentRequest, JourneyStatus
from workflows.protocol import ClinicProtocol, ClinicSettings

EXAMPLES = int(os.environ.get("TEMPORAL_FUZZ_EXAMPLES", "5"))
MAX_BATCH = int(os.environ.get("TEMPORAL_FUZZ_BATCH", "6"))
REPORT = bool(os.environ.get("TEMPORAL_FUZZ_REPORT"))

CONSENT = ClinicProtocol(
    clinic=ClinicSettings(clinic_id="consent", timezone="Europe/Berlin", consent_required=True)
)
OPEN = ("scheduled", "session_due", "awaiting_season", "screening", "deferred")
PLANNED = ("scheduled", "session_due", "awaiting_season")

SIGNALS = ("session_completed", "recovery_checkin", "spf_attested", "adverse_event")
UPDATES = (
    "submit_screening",
    "pre_session_check",
    "reschedule",
    "pause",
    "resume",
    "withdraw",
    "record_review",
    "resolve_anomaly",
    "report_session_completed",
    "report_recovery_checkin",
    "report_spf_attested",
    "report_adverse_event",
    "record_consent",
    "require_consent",
    "withdraw_consent",
    "report_appointment",
    "report_reply",
    "answer_reply",
)

# ---------------------------------------------------------------- hostile values


@dataclass(frozen=True)
class Rel:
    """A date-time relative to the journey's clock, resolved when the message is sent."""

    minutes: int
    offset: str  # "" (naive), "Z", "+14:00", ...

    def resolve(self, now: datetime) -> str:
        at = now.replace(tzinfo=None) + timedelta(minutes=self.minutes)
        return at.isoformat() + self.offset


class RawJson:
    """Payload bytes that are not valid JSON (or not what any converter would write)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"RawJson({self.data[:40]!r})"


BIG = st.one_of(
    st.sampled_from([65, 201, 501, 1_001, 65_537]).map(lambda n: "é" * n),
    st.just("x" * 1_000_000),  # ~1 MB
)
# gRPC's default message limit is 4 MiB: a bigger payload never reaches the journey (the
# client retries the refused RPC for a minute), so it is counted and not sent.
GRPC_LIMIT = 3_500_000
CONTROL = st.text(
    alphabet=st.characters(codec=None, categories=["Cc", "Cs"]), min_size=1, max_size=5
).map(lambda s: f"a{s}b")
LONE_SURROGATES = st.sampled_from(["\ud800", "x\udfff", "\udbff\udbff", "ok\ud83d"])
WRONG = st.sampled_from(
    [None, True, False, 0, -1, 1.5, float("inf"), "", "x", [], {}, [1, 2], {"a": {"b": []}}]
)
HUGE_INTS = st.sampled_from(
    [0, -1, -(2**31), 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30)]
)
DATES = st.one_of(
    st.sampled_from(
        [
            "0001-01-01",
            "9999-12-31",
            "1899-12-31",
            "1900-01-01",
            "2100-12-31",
            "2101-01-01",
            "2026-02-30",
            "20261201",
            "2026-12-01T00:00:00Z",
            "",
            "tomorrow",
        ]
    ),
    st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)).map(date.isoformat),
)
OFFSETS = st.sampled_from(["", "Z", "+14:00", "-14:00", "+00:00", "+05:30", "-23:59", "+24:00"])
DATETIMES = st.one_of(
    st.sampled_from(
        [
            "9999-12-31T23:59:59-14:00",
            "0001-01-01T00:00:00+14:00",
            "9999-12-31T23:59:59.999999+00:00",
            "0001-01-01T00:00:00",
            "2100-12-31T23:59:59-14:00",
            "1900-01-01T00:00:00+14:00",
            "2026-12-01T09:00:00",
            "2026-13-01T09:00:00Z",
            "1e9",
        ]
    ),
    st.builds(
        Rel,
        st.one_of(st.integers(-60 * 24 * 400, 60 * 24 * 400), st.sampled_from([-30, 0, 60])),
        OFFSETS,
    ),
    st.builds(
        lambda d, o: f"{d.isoformat()}T12:00:00{o}",
        st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)),
        OFFSETS,
    ),
)
TIMES = st.sampled_from(["09:00:00", "00:00", "23:59:59.999999", "24:00:00", "9", "09:00+14:00"])
ACTORS = st.sampled_from(["patient", "staff", "clinician", "integration", "system", "root"])


def text(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, BIG, CONTROL, LONE_SURROGATES, WRONG)


def integer(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(valid, HUGE_INTS, WRONG, st.sampled_from(["1", "1.0", 1.0, 2.5]))


def choice(*values: Any) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(values), text(st.just("x")))


KEYS = st.text(alphabet="abcdef0123456789-", min_size=1, max_size=12).map(lambda s: f"k{s}")
SHORT = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "Zs"]), min_size=1, max_size=20
)
SESSION = st.integers(1, 5)

# Per field: (a valid value, any value). The "any" side mixes valid and hostile values.
Field = tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]


def field(valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]) -> Field:
    return valid, st.one_of(valid, hostile)


def f_text(valid: st.SearchStrategy[Any] = SHORT) -> Field:
    return field(valid, text(valid))


def f_int(valid: st.SearchStrategy[Any]) -> Field:
    return field(valid, integer(valid))


def f_date() -> Field:
    return field(st.dates(date(2024, 1, 1), date(2030, 12, 31)).map(date.isoformat), DATES)


def f_datetime() -> Field:
    return field(st.builds(Rel, st.integers(-60 * 24 * 30, 60), st.just("+00:00")), DATETIMES)


def f_enum(*values: str) -> Field:
    return field(st.sampled_from(values), choice(*values))


def f_bool() -> Field:
    return field(st.booleans(), WRONG)


@st.composite
def answers(draw: st.DrawFn) -> Any:
    """Screening answers: mostly clean, with hostile values in any field."""
    fields = {
        "pregnant": f_bool(),
        "recent_tan": f_bool(),
        "pregnancy_recheck_on": f_date(),
        "isotretinoin_last_dose_on": f_date(),
        "drug_washout_until": f_date(),
        "fitzpatrick_type": f_int(st.integers(1, 6)),
        "photosensitising_drugs": field(
            st.lists(SHORT, max_size=2),
            st.one_of(
                st.lists(text(SHORT), max_size=3),
                st.integers(31, 5_000).map(lambda n: ["drug"] * n),
                WRONG,
            ),
        ),
        "other_condition": f_text(),
        "clinician_override_reason": f_text(),
    }
    if draw(st.booleans()):
        return {}
    chosen = draw(st.sets(st.sampled_from(sorted(fields)), max_size=3))
    return {name: draw(fields[name][1]) for name in sorted(chosen)}


ANSWERS = field(answers(), st.one_of(answers(), WRONG))

FACT_FIELDS: dict[str, dict[str, Field]] = {
    "session_completed": {
        "idempotency_key": f_text(KEYS),
        "session_number": f_int(SESSION),
        "completed_at": f_datetime(),
        "source": f_text(),
    },
    "recovery_checkin": {
        "idempotency_key": f_text(KEYS),
        "session_number": f_int(SESSION),
        "day": f_int(st.integers(0, 60)),
        "reaction": f_enum("none", "expected", "prolonged"),
        "reported_by": field(ACTORS, WRONG),
    },
    "spf_attested": {
        "idempotency_key": f_text(KEYS),
        "on": f_date(),
        "reported_by": field(ACTORS, WRONG),
    },
    "adverse_event": {
        "idempotency_key": f_text(KEYS),
        "severity": f_enum("mild", "moderate", "severe"),
        "note_ref": f_text(),
        "reported_by": field(ACTORS, WRONG),
    },
}
_REASON = {"reason": f_text(), "requested_by": field(ACTORS, WRONG)}
FIELDS: dict[str, dict[str, Field]] = {
    **FACT_FIELDS,
    **{f"report_{name}": fields for name, fields in FACT_FIELDS.items()},
    "submit_screening": {
        "answers": ANSWERS,
        "requested_by": field(ACTORS, WRONG),
        "staff_ref": f_text(),
    },
    "pre_session_check": {
        "session_number": f_int(SESSION),
        "answers": ANSWERS,
        "checked_by": field(ACTORS, WRONG),
        "staff_ref": f_text(),
    },
    "reschedule": {
        "session_number": f_int(SESSION),
        "new_date": f_date(),
        "new_time": field(st.just("10:00:00"), TIMES),
        "requested_by": f_enum("patient", "staff"),
    },
    "pause": _REASON,
    "resume": _REASON,
    "withdraw": _REASON,
    "record_review": {
        "outcome": f_enum("complete", "further_course"),
        "further_sessions": f_int(st.integers(1, 4)),
        "reviewed_by": field(ACTORS, WRONG),
        "note_ref": f_text(),
        "global_improvement": f_int(st.integers(1, 5)),
        "pore_visibility": f_int(st.integers(1, 5)),
        "adverse_events_summary": f_text(),
    },
    "resolve_anomaly": {
        "anomaly_id": f_int(st.integers(1, 3)),
        "action": f_enum("apply", "dismiss"),
        "note": f_text(),
        "requested_by": field(ACTORS, WRONG),
    },
    "record_consent": {
        "version": f_text(st.sampled_from(["v1", "v2"])),
        "kind": f_enum("patient_signed", "paper"),
        "reference": f_text(),
        "signed_at": f_datetime(),
        "requested_by": field(ACTORS, WRONG),
        "staff_ref": f_text(),
    },
    "require_consent": {
        "version": f_text(st.sampled_from(["v1", "v2"])),
        "requested_by": field(ACTORS, WRONG),
    },
    "withdraw_consent": {**_REASON, "staff_ref": f_text()},
    "report_reply": {
        "idempotency_key": f_text(KEYS),
        "reply_id": f_int(st.integers(1, 3)),
        "kind": f_enum("confirm", "reschedule", "other", "stop", "start"),
        "session_number": f_int(SESSION),
        "channel": f_enum("email", "sms"),
        "received_at": f_datetime(),
    },
    "answer_reply": {
        "reply_id": f_int(st.integers(1, 3)),
        "note": f_text(),
        "requested_by": f_enum("staff", "clinician"),
        "staff_ref": f_text(),
    },
    "report_appointment": {
        "event": f_enum("created", "rescheduled", "cancelled", "no_show", "completed"),
        "session_number": f_int(SESSION),
        "starts_at": f_datetime(),
        "external_appointment_id": f_text(),
        "idempotency_key": f_text(KEYS),
        "source": f_text(),
    },
}
REQUIRED = {
    "session_completed": {"idempotency_key", "session_number", "completed_at"},
    "recovery_checkin": {"idempotency_key", "session_number", "day", "reaction"},
    "spf_attested": {"idempotency_key", "on"},
    "adverse_event": {"idempotency_key", "severity", "note_ref"},
    "submit_screening": {"answers"},
    "pre_session_check": {"session_number", "answers"},
    "reschedule": {"session_number", "new_date"},
    "pause": {"reason"},
    "resume": {"reason"},
    "withdraw": {"reason"},
    "record_review": {"outcome"},
    "resolve_anomaly": {"anomaly_id", "action", "note"},
    "record_consent": {"version", "kind", "signed_at"},
    "require_consent": {"version"},
    "withdraw_consent": {"reason"},
    "report_appointment": {"event", "session_number", "external_appointment_id", "idempotency_key"},
    "report_reply": {"idempotency_key", "reply_id", "kind", "channel"},
    "answer_reply": {"reply_id", "note"},
}
for _name in FACT_FIELDS:
    REQUIRED[f"report_{_name}"] = REQUIRED[_name]
assert set(FIELDS) == set(SIGNALS) | set(UPDATES) == set(REQUIRED)


@st.composite
def message(draw: st.DrawFn) -> tuple[str, str, Any]:
    """(name, how it was made, payload)."""
    name = draw(st.sampled_from([*SIGNALS, *UPDATES]))
    fields = FIELDS[name]
    mode = draw(st.sampled_from(["valid", "one_hostile", "any", "shape", "not_an_object"]))
    if mode == "not_an_object":
        return name, mode, draw(st.one_of(WRONG, BIG, st.builds(RawJson, st.binary(max_size=20))))
    optional = sorted(set(fields) - REQUIRED[name])
    keep = REQUIRED[name] | draw(st.sets(st.sampled_from(optional))) if optional else REQUIRED[name]
    payload = {f: draw(fields[f][0]) for f in sorted(keep)}
    if mode == "one_hostile":
        f = draw(st.sampled_from(sorted(fields)))
        payload[f] = draw(fields[f][1])
    elif mode == "any":
        payload = {f: draw(fields[f][1]) for f in sorted(keep)}
    elif mode == "shape":
        for f in draw(st.sets(st.sampled_from(sorted(payload)), max_size=2)):
            del payload[f]
        if draw(st.booleans()):
            payload[draw(st.sampled_from(["extra", "", "\x00", "é" * 300]))] = draw(WRONG)
    return name, mode, payload


# ---------------------------------------------------------------- sending


def _resolve(value: Any, now: datetime) -> Any:
    if isinstance(value, Rel):
        return value.resolve(now)
    if isinstance(value, dict):
        return {k: _resolve(v, now) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, now) for v in value]
    return value


def raw(value: Any) -> RawValue:
    """The payload exactly as given: JSON with lone surrogates as ``\\udXXX`` escapes, NaN and
    infinities as JavaScript writes them, or bytes that are not JSON at all."""
    data = value.data if isinstance(value, RawJson) else json.dumps(value).encode()
    return RawValue(Payload(metadata={"encoding": b"json/plain"}, data=data))


@dataclass
class Tally:
    sent: collections.Counter[str]
    outcomes: collections.Counter[str]

    def line(self) -> str:
        return (
            f"sent by kind: {dict(sorted(self.sent.items()))}\n"
            f"outcomes: {dict(sorted(self.outcomes.items()))}"
        )


TALLY = Tally(collections.Counter(), collections.Counter())


async def send(
    handle: WorkflowHandle[PatientJourney, JourneyStatus], name: str, payload: Any
) -> str:
    """Send one message by name; the outcome, as a short label."""
    arg = raw(payload)
    if len(arg.payload.data) > GRPC_LIMIT:
        return "not sent (over the gRPC limit)"
    try:
        if name in SIGNALS:
            await handle.signal(name, arg)
            return "signal sent"
        update_id = str(uuid.uuid4())
        for attempt in range(10):
            try:
                result = await handle.execute_update(
                    name, arg, id=update_id, rpc_timeout=timedelta(seconds=5)
                )
                break
            except WorkflowUpdateRPCTimeoutOrCancelledError:
                # The time-skipping server now and then drops an update that arrives while a
                # workflow task is in flight; the same id is deduplicated.
                if attempt == 9:
                    raise
        outcome = result.get("outcome") if isinstance(result, dict) else None
        return f"accepted ({outcome})" if isinstance(outcome, str) else "accepted"
    except WorkflowUpdateFailedError as error:
        cause = error.cause
        return f"refused ({getattr(cause, 'type', None) or type(cause).__name__})"
    except RPCError as error:
        # A closed journey, or a payload the server itself refuses (too large).
        return f"rpc error ({error.status.name})"


# ---------------------------------------------------------------- checks


async def _runs(handle: WorkflowHandle[Any, Any]) -> list[list[Any]]:
    """The history events of every run of the journey, following continue-as-new."""
    client = handle._client
    run_id: str | None = handle.first_execution_run_id or handle.result_run_id
    runs = []
    while run_id:
        history = await client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
        events = list(history.events)
        runs.append(events)
        last = events[-1] if events else None
        run_id = None
        if (
            last is not None
            and last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
        ):
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return runs


async def _execution_status(handle: WorkflowHandle[Any, Any]) -> int:
    # The raw RPC: the SDK's describe() cannot decode the test server's Datetime attributes.
    desc = await handle._client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(
            namespace=handle._client.namespace,
            execution=WorkflowExecution(workflow_id=handle.id),
        )
    )
    return int(desc.workflow_execution_info.status)


# The status fields every write carries in its patch when they change (``journey_now`` moves
# with the clock between writes; "due" is a search attribute only, see test_journey_model).
COMPARED = (
    "sessions",
    "flags",
    "anomalies",
    "course_number",
    "paused_from",
    "closed_reason",
    "consent_version",
    "consent_required_version",
    "consent_valid",
    "spf_until",
    "review_on",
    "clinician_tasks",
)


async def check(
    handle: WorkflowHandle[PatientJourney, JourneyStatus],
    pool: asyncpg.Pool,
    closing: list[str],
    log: list[tuple[str, str, str]],
) -> None:
    try:
        await settle(handle, timeout=30)
    except RPCError:
        pass
    status = await _execution_status(handle)
    query = await handle.query(PatientJourney.get_status)  # the query answers
    for i, events in enumerate(_ for _ in await _runs(handle)):
        failed = [
            e
            for e in events
            if e.event_type
            in (
                EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
                EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED,
                EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
            )
        ]
        assert not failed, f"run {i}: {failed[0]}\nmessages: {log}"
    if closing:
        assert status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_COMPLETED, (
            f"accepted {closing} but the journey is {WorkflowExecutionStatus.Name(status)}"
        )
        assert query.stage in CLOSED_STAGES
        assert query.stage == ("withdrawn" if closing[0] == "withdraw" else "completed")
    else:
        assert status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING, (
            f"journey {WorkflowExecutionStatus.Name(status)} ({query.stage})\nmessages: {log}"
        )
        assert query.stage not in CLOSED_STAGES, log
    stored = await pool.fetchval("SELECT status FROM journeys WHERE workflow_id = $1", handle.id)
    assert stored is not None
    dumped = query.model_dump(mode="json")
    for name in COMPARED:
        assert stored.get(name) == dumped[name], (
            f"read model {name}={stored.get(name)!r} but the query says {dumped[name]!r}\n"
            f"messages: {log}"
        )
    allowed = (
        {dumped["stage"], "scheduled"} if dumped["stage"] == "session_due" else {dumped["stage"]}
    )
    assert stored["stage"] in allowed, (stored["stage"], dumped["stage"], log)
    refused_writes = await pool.fetchval(
        "SELECT count(*) FROM journey_events WHERE workflow_id = $1 AND kind = 'write_refused'",
        handle.id,
    )
    assert refused_writes == 0, f"PostgreSQL refused a write of the journey\nmessages: {log}"


# ---------------------------------------------------------------- the fuzz


@pytest.fixture
async def fuzz_worker(ts_env: WorkflowEnvironment, pg_pool: asyncpg.Pool) -> Any:
    await upsert_clinic(pg_pool, BERLIN)
    await upsert_clinic(pg_pool, CONSENT)
    store = JourneyStore(pg_pool)
    async with new_worker(ts_env.client, store.activities()) as worker:
        yield worker
    if REPORT:
        print(f"\nTemporal fuzz, {EXAMPLES} examples\n{TALLY.line()}")


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(
    clinic=st.sampled_from(["berlin", "consent"]),
    signed=st.booleans(),
    days=st.sampled_from([0, 0, 1, 30, 120]),
    batch=st.lists(message(), min_size=1, max_size=MAX_BATCH),
)
async def test_hostile_messages_by_name_never_fail_or_stall_a_journey(
    ts_env: WorkflowEnvironment,
    pg_pool: asyncpg.Pool,
    fuzz_worker: Any,
    clinic: str,
    signed: bool,
    days: int,
    batch: list[tuple[str, str, Any]],
) -> None:
    handle = await start(ts_env, fuzz_worker.task_queue, clinic_id=clinic, pore_grade="moderate")
    try:
        await eventually(handle, lambda s: s.stage in PLANNED, timeout=30)
        if clinic == "consent" and signed:
            # Signed at enrolment; unsigned, the journey waits for consent while its days pass
            # (test_consent_wait_keeps_the_read_model_current).
            await handle.execute_update(
                PatientJourney.record_consent,
                ConsentRequest(
                    version="v1", kind="paper", signed_at=await ts_env.get_current_time()
                ),
            )
        for _ in range(days // 10):  # in steps: one long skip can outlast the RPC's timeout
            await ts_env.sleep(timedelta(days=10))
        if days % 10:
            await ts_env.sleep(timedelta(days=days % 10))
        closing: list[str] = []
        log: list[tuple[str, str, str]] = []
        for name, mode, payload in batch:
            now = await ts_env.get_current_time()
            outcome = await send(handle, name, _resolve(payload, now))
            log.append((name, mode, outcome))
            TALLY.sent[name] += 1
            TALLY.outcomes[f"{name}: {outcome}"] += 1
            if outcome.startswith("accepted") and (
                name == "withdraw"
                or (name == "record_review" and payload.get("outcome") == "complete")
            ):
                closing.append(name)
        await check(handle, pg_pool, closing, [(n, m, o) for n, m, o in log])
    finally:
        if (
            await _execution_status(handle)
            == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING
        ):
            await handle.terminate("fuzz example over")


async def test_consent_wait_keeps_the_read_model_current(
    ts_env: WorkflowEnvironment, pg_pool: asyncpg.Pool, fuzz_worker: Any
) -> None:
    """Found by the fuzz: no hostile message needed, only days passing without consent."""
    handle = await start(ts_env, fuzz_worker.task_queue, clinic_id="consent", pore_grade="moderate")
    await eventually(handle, lambda s: s.stage in OPEN, timeout=30)
    await ts_env.sleep(timedelta(days=30))
    await settle(handle, timeout=30)
    query = (await handle.query(PatientJourney.get_status)).model_dump(mode="json")
    stored = await pg_pool.fetchval("SELECT status FROM journeys WHERE workflow_id = $1", handle.id)
    await handle.terminate("test over")
    assert stored["sessions"] == query["sessions"]
