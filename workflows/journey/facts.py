"""Facts from outside: applied once, or kept as an anomaly for staff; never lost.

Every fact goes through :func:`receive`: its idempotency key is checked, the stage module says
whether it can be applied now, and it is either applied (the key is then spent) or kept as an
anomaly with a clinician task (the key stays free, so a resend once the journey can take it is
applied). Staff resolve an anomaly by applying it (when the journey now can) or dismissing it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.booking import AppointmentReport
    from workflows.guards import refusals
    from workflows.journey import aftercare, recovery, sessions
    from workflows.journey.effects import Effects, Write
    from workflows.messages import (
        AdverseEventSignal,
        Anomaly,
        FactResult,
        RecoveryCheckinSignal,
        SessionCompletedSignal,
        SpfAttestedSignal,
    )
    from workflows.reasons import Reason

Fact = (
    SessionCompletedSignal
    | RecoveryCheckinSignal
    | SpfAttestedSignal
    | AdverseEventSignal
    | AppointmentReport
)

# Patches (docs/versioning.md).
REPEAT_REPORT_IS_DUPLICATE = "202612-repeat-report-is-duplicate"

# A fact under another key that repeats what the journey already applied: a duplicate.
REPEAT_RULES = frozenset({"already_completed"})

# Anomalies kept in the state at most (the timeline keeps every one): a flood of bad facts must
# not grow the journey's history without bound.
MAX_ANOMALIES = 50


def adverse_problems(fx: Effects, fact: AdverseEventSignal) -> list[Reason]:
    return refusals("adverse_event", fx.state.stage)


def apply_adverse(fx: Effects, fact: AdverseEventSignal) -> Write:
    """An adverse reaction: the journey pauses and a clinician is flagged."""
    st = fx.state
    st.flag("adverse_event")
    st.add_task(f"Adverse event ({fact.severity}): see note {fact.note_ref}")
    fx.pause(f"Adverse event ({fact.severity}); see note {fact.note_ref}.")
    cancelled = st.take_pending_messages()
    return Write(
        events=[
            fx.event(
                "adverse_event",
                fact.reported_by,
                f"Adverse event ({fact.severity}), note {fact.note_ref}. Journey paused for a "
                "clinician.",
                {"severity": fact.severity, "note_ref": fact.note_ref},
            )
        ],
        notifications=[
            fx.notify(
                "staff_alert",
                f"adverse-{fact.idempotency_key}",
                "staff",
                alert="adverse_event",
                severity=fact.severity,
            )
        ],
        cancel=cancelled,
    )


_RULES: dict[str, tuple[Callable[[Effects, Any], list[Reason]], Callable[[Effects, Any], Write]]]
_RULES = {
    "session_completed": (sessions.completion_problems, sessions.apply_completion),
    "recovery_checkin": (recovery.checkin_problems, recovery.apply_checkin),
    "spf_attested": (aftercare.spf_problems, aftercare.apply_spf),
    "adverse_event": (adverse_problems, apply_adverse),
    "appointment": (sessions.appointment_problems, sessions.apply_appointment),
}

_MODELS: dict[str, type[Fact]] = {
    "session_completed": SessionCompletedSignal,
    "recovery_checkin": RecoveryCheckinSignal,
    "spf_attested": SpfAttestedSignal,
    "adverse_event": AdverseEventSignal,
    "appointment": AppointmentReport,
}


def _anomaly_task(anomaly: Anomaly) -> str:
    return f"Resolve anomaly #{anomaly.id} ({anomaly.kind.replace('_', ' ')})"


async def receive(fx: Effects, kind: str, fact: Fact) -> FactResult:
    """Apply ``fact`` once, or keep it as an anomaly. Idempotency key: ``fact.idempotency_key``.

    The caller need not hold the lock; this waits for the clinic to be loaded, then works under
    the write lock so the main loop cannot interleave.
    """
    st = fx.state
    key = fact.idempotency_key
    if key in st.seen_keys:
        return FactResult(outcome="duplicate", stage=st.stage)
    await workflow.wait_condition(lambda: fx.ready)
    async with fx.lock:
        if key in st.seen_keys:
            return FactResult(outcome="duplicate", stage=st.stage)
        problems, apply = _RULES[kind]
        reasons = problems(fx, fact)
        if (
            reasons
            and all(r.rule in REPEAT_RULES for r in reasons)
            and workflow.patched(REPEAT_REPORT_IS_DUPLICATE)
        ):
            # Another system reporting what is already applied (the device after the EMR):
            # nothing to apply and nothing for staff to resolve.
            st.seen_keys.add(key)
            return FactResult(outcome="duplicate", reasons=reasons, stage=st.stage)
        kept = next((a for a in st.open_anomalies() if a.idempotency_key == key), None)
        if reasons:
            if kept is not None:
                return FactResult(
                    outcome="anomaly", reasons=kept.reasons, anomaly_id=kept.id, stage=st.stage
                )
            anomaly = _keep(fx, kind, fact, reasons)
            await fx.write(_anomaly_write(fx, anomaly, fact))
            return FactResult(
                outcome="anomaly", reasons=reasons, anomaly_id=anomaly.id, stage=st.stage
            )
        st.seen_keys.add(key)
        write = apply(fx, fact)
        if kept is not None:
            _settle(fx, kept, "applied on resend")
        st.changes += 1
        await fx.write(write)
        return FactResult(outcome="applied", stage=st.stage)


def _keep(fx: Effects, kind: str, fact: Fact, reasons: list[Reason]) -> Anomaly:
    st = fx.state
    anomaly = Anomaly(
        id=max((a.id for a in st.anomalies), default=0) + 1,
        kind=kind,
        idempotency_key=fact.idempotency_key,
        received_at=fx.now(),
        reasons=reasons,
        fact=fact.model_dump(mode="json"),
    )
    st.anomalies.append(anomaly)
    # Old resolved ones go first; the timeline keeps them all.
    while len(st.anomalies) > MAX_ANOMALIES:
        oldest = next((a for a in st.anomalies if a.resolved), st.anomalies[0])
        st.anomalies.remove(oldest)
    st.add_task(_anomaly_task(anomaly))
    return anomaly


def _anomaly_write(fx: Effects, anomaly: Anomaly, fact: Fact) -> Write:
    actor = getattr(fact, "reported_by", "integration")
    return Write(
        events=[
            fx.event(
                "fact_kept",
                actor,
                f"Kept for staff (anomaly #{anomaly.id}), {anomaly.kind.replace('_', ' ')}: "
                + "; ".join(r.message for r in anomaly.reasons),
                {
                    "anomaly": anomaly.id,
                    "kind": anomaly.kind,
                    "idempotency_key": anomaly.idempotency_key,
                    "reasons": [r.model_dump() for r in anomaly.reasons],
                },
            )
        ],
        notifications=[
            fx.notify(
                "staff_alert",
                f"anomaly-{anomaly.id}",
                "staff",
                alert="fact_kept",
                kind=anomaly.kind,
            )
        ],
    )


def _settle(fx: Effects, anomaly: Anomaly, resolution: str) -> None:
    st = fx.state
    task = _anomaly_task(anomaly)
    if task in st.clinician_tasks:
        st.clinician_tasks.remove(task)
    st.anomalies = [
        a.model_copy(update={"resolved": True, "resolution": resolution})
        if a.id == anomaly.id
        else a
        for a in st.anomalies
    ]


def resolve_problems(fx: Effects, anomaly_id: int, action: str) -> list[Reason]:
    """Why anomaly ``anomaly_id`` cannot be resolved so (empty: it can)."""
    st = fx.state
    anomaly = next((a for a in st.open_anomalies() if a.id == anomaly_id), None)
    if anomaly is None:
        return [Reason(rule="no_such_anomaly", message=f"No open anomaly #{anomaly_id}.")]
    if action == "apply":
        if anomaly.idempotency_key in st.seen_keys:
            return []
        fact = _MODELS[anomaly.kind].model_validate(anomaly.fact)
        return _RULES[anomaly.kind][0](fx, fact)
    return []


def resolve(fx: Effects, anomaly_id: int, action: str, note: str, by: str) -> Write:
    """Apply or dismiss an open anomaly (the caller checked :func:`resolve_problems`)."""
    st = fx.state
    anomaly = next(a for a in st.open_anomalies() if a.id == anomaly_id)
    write = Write()
    if action == "apply" and anomaly.idempotency_key not in st.seen_keys:
        fact = _MODELS[anomaly.kind].model_validate(anomaly.fact)
        st.seen_keys.add(anomaly.idempotency_key)
        write = _RULES[anomaly.kind][1](fx, fact)
    resolution = "applied" if action == "apply" else "dismissed"
    _settle(fx, anomaly, f"{resolution} by {by}: {note}")
    write.events.insert(
        0,
        fx.event(
            "anomaly_resolved",
            "staff",
            f"Anomaly #{anomaly.id} {resolution} by {by}: {note}",
            {"anomaly": anomaly.id, "resolution": resolution},
        ),
    )
    return write
