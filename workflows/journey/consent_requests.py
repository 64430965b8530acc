"""The informed-consent requests of ``PatientJourney`` (a base class of the workflow, so the
handlers live beside the gate they open; :mod:`.consent` holds what they do)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows.guards import refusals
    from workflows.journey import consent
    from workflows.journey.effects import Effects, Write
    from workflows.journey.refusals import refuse_if, starting_refusals
    from workflows.journey.state import JourneyState
    from workflows.messages import (
        ConsentRequest,
        ConsentRequiredRequest,
        ConsentResult,
        ConsentWithdrawRequest,
    )


class ConsentRequests:
    """``record_consent``, ``require_consent`` and ``withdraw_consent``."""

    _fx: Effects
    _state: JourneyState

    def _consent_result(self) -> ConsentResult:
        st = self._state
        return ConsentResult(
            consent_valid=st.consent_valid(),
            version=st.consent_version,
            required_version=st.consent_required_version,
            stage=st.stage,
        )

    def _validate_consent(self, what: str) -> None:
        refuse_if("Consent", starting_refusals(self._fx) + refusals(what, self._state.stage))

    @workflow.update
    async def record_consent(self, request: ConsentRequest) -> ConsentResult:
        """The patient's informed consent (signed on their page, or on paper): opens the
        booking gate when it is the required version. Refused (``ConsentRefused``) when closed."""
        async with self._fx.lock:
            self._validate_consent("record_consent")
            await self._consent_write(consent.record(self._fx, request))
        return self._consent_result()

    @record_consent.validator
    def _validate_record_consent(self, request: ConsentRequest) -> None:
        self._validate_consent("record_consent")

    @workflow.update
    async def require_consent(self, request: ConsentRequiredRequest) -> ConsentResult:
        """A new consent version is required: the next booking waits until it is signed.
        Refused (``ConsentRefused``) when closed."""
        async with self._fx.lock:
            self._validate_consent("require_consent")
            await self._consent_write(consent.require(self._fx, request))
        return self._consent_result()

    @require_consent.validator
    def _validate_require_consent(self, request: ConsentRequiredRequest) -> None:
        self._validate_consent("require_consent")

    @workflow.update
    async def withdraw_consent(self, request: ConsentWithdrawRequest) -> ConsentResult:
        """Consent withdrawn: the journey pauses (scheduled messages cancelled) until a new
        consent and a resume. Refused (``ConsentRefused``) when closed."""
        async with self._fx.lock:
            self._validate_consent("withdraw_consent")
            await self._consent_write(consent.withdraw(self._fx, request))
        return self._consent_result()

    @withdraw_consent.validator
    def _validate_withdraw_consent(self, request: ConsentWithdrawRequest) -> None:
        self._validate_consent("withdraw_consent")

    async def _consent_write(self, write: Write) -> None:
        self._state.changes += 1
        await self._fx.write(write)
