"""The informed-consent gate: in a clinic that requires consent, no session is booked until the
patient's consent is valid (signed, and the version the clinic requires now).

Consent itself lives in PostgreSQL (the signed text version, the time, a hash of the request's
address, or the paper reference); the journey keeps only the version and a reference. A new
required version asks again before the next booking; a withdrawal pauses the journey.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.journey.effects import Effects, Write
    from workflows.messages import ConsentRequest, ConsentRequiredRequest, ConsentWithdrawRequest

CONSENT_FLAG = "consent_needed"
CONSENT_ACTION = "Informed consent needed before the session is booked"


def gate_closed(fx: Effects) -> bool:
    """True when this clinic requires consent and the journey has no valid one."""
    return fx.cp.clinic.consent_required and not fx.state.consent_valid()


async def wait_for_consent(fx: Effects, number: int) -> None:
    """Hold the booking of session ``number`` until consent is valid (or the plan changes)."""
    st = fx.state

    def needed() -> Write | None:
        fx.set_stage("scheduled", CONSENT_ACTION, None)
        if CONSENT_FLAG in st.flags:
            # A replan while waiting (its day passed) is noted to ride with the booking, which
            # waits for the consent: write it now so the read model shows the current plan.
            return Write() if fx.has_noted() else None
        st.flag(CONSENT_FLAG)
        return Write(
            events=[
                fx.event(
                    "consent_needed",
                    "system",
                    f"Session {number} waits for the patient's informed consent"
                    + (
                        f" (version {st.consent_required_version})."
                        if st.consent_required_version
                        else "."
                    ),
                )
            ],
            notifications=[
                fx.notify(
                    "staff_alert",
                    f"consent-needed-{st.consent_required_version or 'any'}",
                    "staff",
                    alert="consent_needed",
                )
            ],
        )

    await fx.advance(needed)
    day_start = fx.day_start(st.session(number).planned_on)
    if fx.now() < day_start:
        # Until the session's day: then it is planned again (the caller sees its day passed).
        await fx.wait(day_start, st.consent_valid, "consent")
        return
    # Its day has come without consent: wait for the consent itself, then plan it again.
    await fx.sleep_until(None, st.consent_valid, "consent")
    st.replan_requested = True


def record(fx: Effects, request: ConsentRequest) -> Write:
    st = fx.state
    st.consent_version = request.version
    if st.consent_valid():
        st.flag(CONSENT_FLAG, on=False)
    by = request.staff_ref or request.requested_by
    return Write(
        events=[
            fx.event(
                "consent_recorded",
                request.requested_by,
                f"Informed consent version {request.version} "
                + ("signed by the patient" if request.kind == "patient_signed" else "on paper")
                + f", recorded by {by}.",
                {
                    "version": request.version,
                    "kind": request.kind,
                    "reference": request.reference,
                    "signed_at": request.signed_at.isoformat(),
                },
            )
        ]
    )


def require(fx: Effects, request: ConsentRequiredRequest) -> Write:
    st = fx.state
    st.consent_required_version = request.version
    if not st.consent_valid() and fx.cp.clinic.consent_required:
        st.flag(CONSENT_FLAG)
    return Write(
        events=[
            fx.event(
                "consent_required",
                request.requested_by,
                f"Consent version {request.version} is now required"
                + ("" if st.consent_valid() else ": the patient is asked again")
                + ".",
                {"version": request.version},
            )
        ]
    )


def withdraw(fx: Effects, request: ConsentWithdrawRequest) -> Write:
    st = fx.state
    st.consent_version = None
    st.flag(CONSENT_FLAG)
    fx.pause(f"Consent withdrawn: {request.reason}")
    cancelled = st.take_pending_messages()
    return Write(
        events=[
            fx.event(
                "consent_withdrawn",
                request.requested_by,
                f"Consent withdrawn: {request.reason}. Journey paused.",
            )
        ],
        notifications=[
            fx.notify(
                "staff_alert", f"consent-withdrawn-{st.step}", "staff", alert="consent_withdrawn"
            )
        ],
        cancel=cancelled,
    )
