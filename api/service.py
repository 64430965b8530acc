"""The one place the HTTP API and the ``journey`` CLI reach Temporal and PostgreSQL.

:class:`JourneyService` turns a caller's request into a typed workflow call (start, signal,
update, query) or a read-model query, and every failure into one of four typed errors the front
ends map to an HTTP status or a CLI line:

* :class:`InvalidRequest` (422): a field breaks a rule the workflow never sees (unknown clinic).
* :class:`JourneyNotFound` (404): no journey for the patient id.
* :class:`RequestRefused` (409): the workflow's validator refused an update (``*Refused``), with
  every reason; the refusal is also appended to the timeline (``request_refused``), since a
  refused update never reaches workflow history.
* :class:`FactKept` (409, a :class:`RequestRefused`): a reported fact the journey could not
  apply now; it is kept for staff as an anomaly (the journey's own timeline says so), and its
  idempotency key stays free, so a resend once the journey can take it is applied.
* :class:`ServiceUnavailable` (503 + ``Retry-After``): Temporal or PostgreSQL is unreachable
  or did not answer in time. Nothing was accepted; the caller may retry.

Personal data goes to PostgreSQL only; Temporal sees the opaque patient id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Protocol, TypeVar

import asyncpg
import pydantic
from temporalio.client import (
    Client,
    Interceptor,
    RPCError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowQueryRejectedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCStatusCode

from activities import repository
from activities.repository import (
    DEFAULT_CLINIC_ID,
    EventRow,
    JourneyOrder,
    JourneyRow,
    PatientCreate,
    PatientRow,
    StaffRole,
    StaffRow,
    new_patient_id,
)
from api import schemas
from api.tokens import patient_link
from worker.client import connect_client
from worker.settings import Settings
from worker.telemetry import get_metrics
from workflows.booking import AppointmentReport
from workflows.calendar import clinic_today
from workflows.ids import workflow_id
from workflows.journey import PatientJourney
from workflows.messages import (
    CLOSED_STAGES,
    Actor,
    AdverseEventSignal,
    ConsentRequest,
    ConsentRequiredRequest,
    ConsentResult,
    ConsentWithdrawRequest,
    ControlResult,
    FactResult,
    JourneyStartRequest,
    JourneyStatus,
    PauseRequest,
    PreSessionCheckRequest,
    PreSessionCheckResult,
    RecoveryCheckinSignal,
    RescheduleRequest,
    RescheduleResult,
    ResolveAnomalyRequest,
    ResolveAnomalyResult,
    ResumeRequest,
    ReviewRequest,
    ReviewResult,
    ScreeningDecision,
    ScreeningRequest,
    SessionCompletedSignal,
    SpfAttestedSignal,
    WithdrawRequest,
)
from workflows.planner import plan_course
from workflows.protocol import ClinicProtocol
from workflows.reasons import Reason
from workflows.replies import PatientReplyReport, ReplyAnsweredRequest, ReplyAnsweredResult
from workflows.screening import ScreeningAnswers, screen

__all__ = [
    "ClientSource",
    "InvalidRequest",
    "JourneyNotFound",
    "JourneyService",
    "NotPermitted",
    "RequestRefused",
    "ServiceError",
    "ServiceUnavailable",
    "TemporalConnector",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Every Temporal RPC gets a deadline: an unreachable server or a missing worker must become a
# 503 the caller can retry, never a request that hangs. Updates wait for the handler's database
# write, so they get a little longer than reads and signals.
RPC_TIMEOUT = timedelta(seconds=10)
UPDATE_RPC_TIMEOUT = timedelta(seconds=15)
CONNECT_TIMEOUT_SECONDS = 5.0
DB_TIMEOUT_SECONDS = 10.0
RETRY_AFTER_SECONDS = 5
# Rules that need today (docs/security.md): an earliest start, a washout or a re-check date
# further ahead than this is a typo, not a plan; a last dose cannot be in the future.
MAX_LEAD_DAYS = 2 * 366
# An enrolment whose Idempotency-Key is reserved but not answered yet (started, or crashed
# half-way: the retry finishes it with the same patient id).
PENDING = 0

_UNAVAILABLE_STATUSES = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
    }
)
_DB_DOWN_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # includes ConnectionRefusedError on connect
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # admin/crash shutdown, cannot connect now
    asyncpg.exceptions.ConnectionDoesNotExistError,
    TimeoutError,
)

_CLEANUP_ERRORS: tuple[type[BaseException], ...] = (asyncpg.PostgresError, *_DB_DOWN_ERRORS)


# ---------------------------------------------------------------- errors


class ServiceError(Exception):
    """Base of the errors the API and the CLI turn into a status code or a line."""

    status_code = 500
    rule = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ServiceError):
    """A field breaks a rule checked outside the workflow (HTTP 422)."""

    status_code = 422

    def __init__(self, field: str, rule: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.rule = rule


class NotPermitted(InvalidRequest):
    """The caller's role may not set this field (HTTP 403), e.g. a clinician-only answer."""

    status_code = 403


class JourneyNotFound(ServiceError):
    """No journey (or patient) with this id (HTTP 404)."""

    status_code = 404
    rule = "journey_not_found"

    def __init__(self, patient_id: str) -> None:
        super().__init__(f"No journey for patient {patient_id}.")
        self.patient_id = patient_id


class RequestRefused(ServiceError):
    """The journey refused the request (HTTP 409), with every reason from its validator.

    Attributes:
        error_type: The ``ApplicationError.type``, e.g. ``RescheduleRefused``.
        reasons: Every rule the request breaks.
    """

    status_code = 409
    rule = "refused"

    def __init__(self, error_type: str, reasons: list[Reason]) -> None:
        super().__init__("; ".join(r.message for r in reasons) or error_type)
        self.error_type = error_type
        self.reasons = reasons


class FactKept(RequestRefused):
    """The journey could not apply a reported fact now and kept it for staff (HTTP 409).

    Nothing is lost: the fact is an anomaly with a clinician task (``result.anomaly_id``) and
    its idempotency key is not spent. The reasons say why it could not be applied.
    """

    rule = "kept_for_staff"

    def __init__(self, result: FactResult) -> None:
        super().__init__("FactKeptForStaff", list(result.reasons))
        self.result = result


class ServiceUnavailable(ServiceError):
    """Temporal or PostgreSQL is down or slow (HTTP 503 with ``Retry-After``)."""

    status_code = 503
    rule = "unavailable"

    def __init__(self, message: str, retry_after: int = RETRY_AFTER_SECONDS) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# ---------------------------------------------------------------- the Temporal client


class ClientSource(Protocol):
    """Something that hands out a connected Temporal client (or raises ServiceUnavailable)."""

    async def get(self) -> Client:
        """The client, connecting first if needed."""
        ...


class _FixedClient:
    def __init__(self, client: Client) -> None:
        self._client = client

    async def get(self) -> Client:
        return self._client


class TemporalConnector:
    """Connects on first use and keeps the client; a failed connect is retried next time.

    The API starts even while Temporal is down (it answers 503 until it is back) instead of
    failing its lifespan; once connected, the SDK reconnects by itself.
    """

    def __init__(self, settings: Settings, interceptors: list[Interceptor] | None = None) -> None:
        """Args:
        settings: Where Temporal is (``TEMPORAL_ADDRESS`` etc.).
        interceptors: Client interceptors (tracing), passed to ``connect_client``.
        """
        self._settings = settings
        self._interceptors = interceptors
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    @property
    def connected(self) -> bool:
        """True once a connection succeeded."""
        return self._client is not None

    async def get(self) -> Client:
        """The client.

        Raises:
            ServiceUnavailable: Temporal could not be reached within the connect timeout.
        """
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(
                        connect_client(self._settings, interceptors=self._interceptors),
                        CONNECT_TIMEOUT_SECONDS,
                    )
                except (RuntimeError, OSError, TimeoutError) as err:
                    logger.warning("cannot connect to Temporal: %s", type(err).__name__)
                    raise ServiceUnavailable("Temporal is not reachable.") from None
        return self._client


# ---------------------------------------------------------------- the service


def _actor_for_role(role: StaffRole) -> Actor:
    return "clinician" if role == "clinician" else "staff"


def _reasons_from(err: ApplicationError) -> list[Reason]:
    reasons: list[Reason] = []
    for item in err.details:
        try:
            reasons.append(Reason.model_validate(item))
        except pydantic.ValidationError:
            reasons.append(Reason(rule="refused", message=str(item)))
    return reasons or [Reason(rule=err.type or "refused", message=err.message)]


class JourneyService:
    """Enrol, steer, report to and read journeys (see the module docstring for the errors).

    Every method raises :class:`ServiceUnavailable` when Temporal or PostgreSQL is down.
    """

    def __init__(
        self, client: Client | ClientSource, pool: asyncpg.Pool, settings: Settings
    ) -> None:
        """Args:
        client: A connected Temporal client, or a source that connects on demand (the API's
            :class:`TemporalConnector`), so reads of the read model work while Temporal is down.
        pool: The asyncpg pool of the product database.
        settings: Task queue, patient link secret and public URL.
        """
        self._clients: ClientSource = _FixedClient(client) if isinstance(client, Client) else client
        self.pool = pool
        self.settings = settings
        # Deadlines of Temporal RPCs; the SDK retries an unreachable server until then.
        self.rpc_timeout = RPC_TIMEOUT
        self.update_rpc_timeout = UPDATE_RPC_TIMEOUT

    # ------------------------------------------------------------ plumbing

    async def _handle(self, patient_id: str) -> WorkflowHandle[PatientJourney, JourneyStatus]:
        try:
            wf_id = workflow_id(patient_id)
        except ValueError:
            raise JourneyNotFound(patient_id) from None
        client = await self._clients.get()
        return client.get_workflow_handle_for(PatientJourney.run, wf_id)

    @staticmethod
    def _known_id(patient_id: str) -> None:
        """Refuse an id no journey can have before it reaches SQL or Temporal.

        Raises:
            JourneyNotFound: ``patient_id`` does not match ``PATIENT_ID_PATTERN``.
        """
        try:
            workflow_id(patient_id)
        except ValueError:
            raise JourneyNotFound(patient_id) from None

    async def db(self, call: Awaitable[T]) -> T:
        """Await a read-model call with a deadline; a database outage becomes a 503."""
        try:
            return await asyncio.wait_for(call, DB_TIMEOUT_SECONDS)
        except _DB_DOWN_ERRORS as err:
            logger.warning("database unavailable: %s", type(err).__name__)
            raise ServiceUnavailable("The database is not reachable.") from None

    async def _rpc(self, call: Awaitable[T], timeout: timedelta) -> T:
        """Await a Temporal call within ``timeout`` overall: the SDK retries an unreachable
        server with backoff for about 10 s whatever the per-attempt ``rpc_timeout`` says."""
        try:
            return await asyncio.wait_for(call, timeout.total_seconds())
        except TimeoutError:
            raise ServiceUnavailable("Temporal did not answer in time.") from None

    @contextmanager
    def _temporal(self, patient_id: str) -> Iterator[None]:
        """Map Temporal's errors to the service's (refusals are handled by ``_update``)."""
        try:
            yield
        except WorkflowUpdateRPCTimeoutOrCancelledError:
            raise ServiceUnavailable("The journey did not answer in time.") from None
        except (WorkflowQueryRejectedError, WorkflowQueryFailedError) as err:
            raise ServiceUnavailable(f"The journey could not be read: {err}") from None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                raise JourneyNotFound(patient_id) from None
            if err.status == RPCStatusCode.RESOURCE_EXHAUSTED:
                # Temporal caps the updates in flight per workflow (10 by default): a burst
                # of facts for one journey (they are updates) waits its turn.
                logger.warning("Temporal busy for %s: RESOURCE_EXHAUSTED", patient_id)
                raise ServiceUnavailable(
                    "The journey is busy with other requests; retry shortly.", retry_after=1
                ) from None
            if err.status in _UNAVAILABLE_STATUSES:
                logger.warning("Temporal unavailable: %s", err.status.name)
                raise ServiceUnavailable("Temporal is not reachable.") from None
            raise
        except (RuntimeError, OSError) as err:
            # The core SDK reports a lost connection as a RuntimeError on some paths.
            if "connect" in str(err).lower() or "transport" in str(err).lower():
                raise ServiceUnavailable("Temporal is not reachable.") from None
            raise

    async def _update(
        self,
        patient_id: str,
        update: Any,
        arg: Any,
        actor: str,
        request_id: str | None,
    ) -> Any:
        """Execute a typed update; a validator's ``*Refused`` becomes :class:`RequestRefused`
        (recorded in the timeline), an update on a closed journey a ``journey_closed``
        refusal. ``request_id`` (e.g. an ``Idempotency-Key``) makes retries safe: Temporal
        runs an update once per id."""
        handle = await self._handle(patient_id)
        try:
            with self._temporal(patient_id):
                return await self._rpc(
                    handle.execute_update(
                        update,
                        arg,
                        id=f"{update.__name__}:{request_id}" if request_id else None,
                        rpc_timeout=self.update_rpc_timeout,
                    ),
                    self.update_rpc_timeout,
                )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError):
                refused = RequestRefused(cause.type or "Refused", _reasons_from(cause))
            else:
                refused = RequestRefused(
                    "Refused", [Reason(rule="refused", message=str(cause or err))]
                )
            await self._log_refusal(patient_id, update.__name__, actor, refused, arg)
            raise refused from None
        except JourneyNotFound:
            row = await self.db(repository.get_journey(self.pool, patient_id))
            if row is None or row.stage not in CLOSED_STAGES:
                raise
            refused = RequestRefused(
                "JourneyClosed",
                [Reason(rule="journey_closed", message=f"The journey is {row.stage}.")],
            )
            await self._log_refusal(patient_id, update.__name__, actor, refused, arg)
            raise refused from None

    async def _log_refusal(
        self, patient_id: str, request: str, actor: str, refused: RequestRefused, arg: Any
    ) -> None:
        """Append ``request_refused`` to the timeline: the workflow cannot (validators run
        before history), and count it in ``refused_requests`` by its type (one per request,
        e.g. ``RescheduleRefused``, ``JourneyClosed``). Best effort: the caller gets the 409
        even if this write fails."""
        get_metrics().record_refused(refused.error_type)
        try:
            await self.db(
                self.pool.execute(
                    """
                    INSERT INTO journey_events
                        (workflow_id, event_key, step, kind, actor, occurred_at, summary, data)
                    VALUES ($1, $2, 0, 'request_refused', $3, now(), $4, $5)
                    ON CONFLICT (workflow_id, event_key) DO NOTHING
                    """,
                    workflow_id(patient_id),
                    f"refused:{uuid.uuid4()}",
                    actor,
                    f"Refused {request}: {refused.message}",
                    {
                        "request": request,
                        "type": refused.error_type,
                        "reasons": [r.model_dump() for r in refused.reasons],
                        "input": arg.model_dump(mode="json")
                        if isinstance(arg, pydantic.BaseModel)
                        else None,
                    },
                )
            )
        except (ServiceUnavailable, asyncpg.PostgresError) as err:
            logger.warning("could not record a refusal for %s: %s", patient_id, err)

    # ------------------------------------------------------------ enrol and read

    async def clinic(self, clinic_id: str) -> ClinicProtocol:
        """The clinic's protocol (the default clinic is created on first use).

        Raises:
            InvalidRequest: no such clinic (field ``body.clinic_id``, rule ``unknown_clinic``).
        """
        if clinic_id == DEFAULT_CLINIC_ID:
            return await self.db(repository.ensure_default_clinic(self.pool))
        found = await self.db(repository.get_clinic(self.pool, clinic_id))
        if found is None:
            raise InvalidRequest("body.clinic_id", "unknown_clinic", f"No clinic {clinic_id!r}.")
        return found

    def check_answers(
        self,
        answers: schemas.ScreeningAnswersIn,
        today: date,
        *,
        role: StaffRole | None,
        field: str,
    ) -> None:
        """Refuse answers a journey cannot use or the caller may not give.

        Raises:
            NotPermitted: ``clinician_override_reason`` or ``drug_washout_until`` set by
                someone without the clinician role (``role`` None means an operator at the
                CLI, who may).
            InvalidRequest: a last isotretinoin dose in the future, or a washout or re-check
                date more than ``MAX_LEAD_DAYS`` ahead.
        """
        if role is not None and role != "clinician":
            for name in answers.needs_clinician:
                raise NotPermitted(
                    f"{field}.{name}",
                    "clinician_required",
                    f"Only a clinician may set {name.replace('_', ' ')}; you are {role}.",
                )
        last_dose = answers.isotretinoin_last_dose_on
        if last_dose is not None and last_dose > today:
            raise InvalidRequest(
                f"{field}.isotretinoin_last_dose_on",
                "date_in_future",
                "The last isotretinoin dose cannot be in the future; leave it empty while "
                "the patient still takes it.",
            )
        for name in ("drug_washout_until", "pregnancy_recheck_on"):
            value = getattr(answers, name)
            if value is not None and (value - today).days > MAX_LEAD_DAYS:
                raise InvalidRequest(
                    f"{field}.{name}",
                    "too_far_ahead",
                    f"{name.replace('_', ' ')} is more than {MAX_LEAD_DAYS} days ahead.",
                )

    def _check_enrolment(
        self, request: schemas.EnrolRequest, cp: ClinicProtocol, role: StaffRole | None
    ) -> None:
        today = clinic_today(datetime.now(UTC), cp.clinic.timezone)
        if (
            request.time_scale != 1
            and self.settings.journey_env != "development"
            and not cp.clinic.sandbox
        ):
            raise InvalidRequest(
                "body.time_scale",
                "simulation_clock_not_allowed",
                "The simulation clock (time_scale other than 1) runs only in development or "
                "in a sandbox clinic.",
            )
        if (
            request.earliest_start is not None
            and (request.earliest_start - today).days > MAX_LEAD_DAYS
        ):
            raise InvalidRequest(
                "body.earliest_start",
                "too_far_ahead",
                f"The earliest start is more than {MAX_LEAD_DAYS} days ahead.",
            )
        self.check_answers(request.screening, today, role=role, field="body.screening")

    async def enrol(
        self,
        request: schemas.EnrolRequest,
        *,
        caller: str = "cli",
        idempotency_key: str | None = None,
        staff: StaffRow | None = None,
    ) -> schemas.EnrolResponse:
        """Store the patient, then start their journey (PHI never reaches Temporal).

        Guarantees:
            * No patient row without its journey: if the start fails, the row is deleted
              again and ``enrolment_failed`` is appended to that journey id's timeline (no
              personal data in it). If Temporal did start it (a lost answer), the row stays.
            * With ``idempotency_key`` (scoped per ``caller``: ``staff:<id>``, ``cli``) a
              retry returns the same patient and journey, with a fresh patient link; the
              key is reserved with the patient id before anything is written, so a retry
              after a crash half-way finishes the same enrolment. The same key with a
              different request is refused (``idempotency_key_reused``).

        Raises:
            InvalidRequest: unknown clinic, no contact for the preferred channel, the
                simulation clock outside development or a sandbox clinic, an earliest start
                more than ``MAX_LEAD_DAYS`` ahead, impossible screening dates, a reused key.
            NotPermitted: clinician-only answers from another role.
            ServiceUnavailable: nothing was kept (or the key's enrolment is pending); retry.
        """
        cp = await self.clinic(request.clinic_id)
        self._check_enrolment(request, cp, staff.role if staff else None)
        try:
            create = PatientCreate(**request.patient.model_dump(), clinic_id=request.clinic_id)
        except pydantic.ValidationError as err:
            first = err.errors()[0]
            raise InvalidRequest("body.patient", "contact_for_channel", first["msg"]) from None
        scope = f"enrol:{caller}"
        patient_id = new_patient_id()
        if idempotency_key is not None:
            request_hash = hashlib.sha256(
                json.dumps(request.model_dump(mode="json"), sort_keys=True).encode()
            ).hexdigest()
            stored = await self.db(
                repository.save_idempotent_response(
                    self.pool,
                    scope,
                    idempotency_key,
                    request_hash,
                    PENDING,
                    {"patient_id": patient_id},
                )
            )
            if stored.request_hash != request_hash:
                raise InvalidRequest(
                    "header.Idempotency-Key",
                    "idempotency_key_reused",
                    "This Idempotency-Key was already used for a different enrolment.",
                )
            if stored.status_code != PENDING:
                return self._enrol_response(stored.response)
            patient_id = str(stored.response["patient_id"])
        await self.db(_insert_patient(self.pool, patient_id, create))
        if request.scheduling_preferences is not None:
            # Before the start: the journey's first reservation reads them (docs/scheduling.md).
            from scheduling.store import set_preferences

            await self.db(set_preferences(self.pool, patient_id, request.scheduling_preferences))
        start = JourneyStartRequest(
            patient_id=patient_id,
            clinic_id=request.clinic_id,
            pore_grade=request.pore_grade,
            numbing_cream=request.numbing_cream,
            screening=request.screening.to_answers(),
            # Who took the intake answers: only a clinician's may override or set a washout.
            screening_by=_actor_for_role(staff.role) if staff is not None else "staff",
            trips=[t.to_range() for t in request.trips],
            time_scale=request.time_scale,
            sim_start=request.sim_start if request.time_scale != 1 else None,
            earliest_start=request.earliest_start,
        )
        try:
            client = await self._clients.get()
            with self._temporal(patient_id):
                handle = await self._rpc(
                    client.start_workflow(
                        PatientJourney.run,
                        start,
                        id=workflow_id(patient_id),
                        task_queue=self.settings.temporal_task_queue,
                        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                        rpc_timeout=self.rpc_timeout,
                    ),
                    self.rpc_timeout,
                )
        except BaseException as err:
            # Shielded: a client that hangs up must not leave the personal data behind.
            await asyncio.shield(self._undo_patient(patient_id, err))
            raise
        logger.info("journey started for %s", patient_id)
        answer = {
            "patient_id": patient_id,
            "workflow_id": handle.id,
            "run_id": handle.result_run_id,
            "clinic_id": request.clinic_id,
        }
        if idempotency_key is not None:
            await self.db(
                self.pool.execute(
                    "UPDATE idempotency_keys SET status_code = 201, response = $3 "
                    "WHERE scope = $1 AND key = $2",
                    scope,
                    idempotency_key,
                    answer,
                )
            )
        if staff is not None and request.screening.needs_clinician:
            await self.record_clinician(patient_id, staff, request.screening.needs_clinician)
        return self._enrol_response(answer)

    def _enrol_response(self, answer: dict[str, Any]) -> schemas.EnrolResponse:
        """The answer of an enrolment; the link is minted afresh (never stored)."""
        return schemas.EnrolResponse(
            patient_id=answer["patient_id"],
            workflow_id=answer["workflow_id"],
            run_id=answer["run_id"],
            clinic_id=answer["clinic_id"],
            stage="screening",
            patient_link=patient_link(self.settings, answer["patient_id"]),
            link_valid_days=self.settings.journey_patient_link_days,
        )

    async def _undo_patient(self, patient_id: str, err: BaseException) -> None:
        """After a failed start: delete the patient row unless the journey exists after all
        (Temporal started it but the answer was lost), and record why in the timeline."""
        started: bool | None = None
        with contextlib.suppress(Exception):
            client = await asyncio.wait_for(self._clients.get(), CONNECT_TIMEOUT_SECONDS)
            handle = client.get_workflow_handle(workflow_id(patient_id))
            try:
                await asyncio.wait_for(handle.describe(rpc_timeout=self.rpc_timeout), 5)
                started = True
            except RPCError as rpc:
                if rpc.status == RPCStatusCode.NOT_FOUND:
                    started = False
        if started:
            logger.warning("journey start for %s answered late; it runs", patient_id)
            return
        why = err.message if isinstance(err, ServiceError) else type(err).__name__
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    "DELETE FROM patients p WHERE p.patient_id = $1 "
                    "AND NOT EXISTS (SELECT 1 FROM journeys j WHERE j.patient_id = $1)",
                    patient_id,
                )
                await conn.execute(
                    """
                    INSERT INTO journey_events
                        (workflow_id, event_key, step, kind, actor, occurred_at, summary, data)
                    VALUES ($1, $2, 0, 'enrolment_failed', 'system', now(), $3, $4)
                    ON CONFLICT (workflow_id, event_key) DO NOTHING
                    """,
                    workflow_id(patient_id),
                    f"enrolment_failed:{uuid.uuid4()}",
                    "Enrolment failed before the journey started; the patient's personal data "
                    f"was removed ({why}).",
                    {"reason": why, "journey_started": started},
                )
        except _CLEANUP_ERRORS as db_err:
            logger.error(
                "could not remove the patient row of a failed enrolment %s: %s",
                patient_id,
                type(db_err).__name__,
            )

    async def record_clinician(self, patient_id: str, staff: StaffRow, fields: list[str]) -> None:
        """Name the clinician who set clinician-only answers in the journey's timeline (the
        workflow's messages carry the role only). Best effort: the change was made."""
        names = ", ".join(f.replace("_", " ") for f in fields)
        try:
            await self.db(
                self.pool.execute(
                    """
                    INSERT INTO journey_events
                        (workflow_id, event_key, step, kind, actor, occurred_at, summary, data)
                    VALUES ($1, $2, 0, 'clinician_authorised', 'clinician', now(), $3, $4)
                    ON CONFLICT (workflow_id, event_key) DO NOTHING
                    """,
                    workflow_id(patient_id),
                    f"clinician:{uuid.uuid4()}",
                    f"{staff.name} (staff #{staff.id}, clinician) set {names}.",
                    {"staff_id": staff.id, "staff_name": staff.name, "fields": fields},
                )
            )
        except (ServiceUnavailable, asyncpg.PostgresError) as err:
            logger.warning("could not name the clinician for %s: %s", patient_id, err)

    async def status(self, patient_id: str) -> JourneyStatus:
        """The journey's status: the workflow's ``status`` query while it runs; for a closed
        journey the final status kept in the read model (a query to a closed workflow makes
        a worker replay its whole history).

        Raises:
            JourneyNotFound: no such journey.
        """
        self._known_id(patient_id)
        with contextlib.suppress(ServiceUnavailable):  # PostgreSQL down: ask Temporal instead
            row = await self.db(repository.get_journey(self.pool, patient_id))
            if row is not None and row.stage in CLOSED_STAGES and row.status:
                return JourneyStatus.model_validate(row.status)
        handle = await self._handle(patient_id)
        with self._temporal(patient_id):
            result: JourneyStatus = await self._rpc(
                handle.query(PatientJourney.get_status, rpc_timeout=self.rpc_timeout),
                self.rpc_timeout,
            )
        return result

    async def timeline(self, patient_id: str, limit: int = 500) -> list[EventRow]:
        """The journey's timeline from PostgreSQL (including refused requests)."""
        self._known_id(patient_id)
        return await self.db(repository.get_timeline(self.pool, workflow_id(patient_id), limit))

    async def patient(self, patient_id: str) -> PatientRow | None:
        """The patient's record (personal data: staff and the patient only)."""
        self._known_id(patient_id)
        return await self.db(repository.get_patient(self.pool, patient_id))

    async def list(
        self,
        *,
        stage: str | None = None,
        clinic_id: str | None = None,
        flag: str | None = None,
        next_action_before: datetime | None = None,
        name_query: str | None = None,
        order: JourneyOrder = "next_action_at",
        limit: int = 50,
        offset: int = 0,
        clinics: Sequence[str] | None = None,
    ) -> tuple[list[JourneyRow], int]:
        """A page of the read model and the total matching (no Temporal call); ``clinics``:
        the caller's scope (None: every clinic)."""
        return await self.db(
            repository.list_journeys(
                self.pool,
                stage=stage,
                clinic_id=clinic_id,
                flag=flag,
                next_action_before=next_action_before,
                name_query=name_query,
                order=order,
                limit=limit,
                offset=offset,
                clinics=clinics,
            )
        )

    async def patient_link(self, patient_id: str) -> str:
        """A fresh link for an existing patient.

        Raises:
            JourneyNotFound: no such patient.
        """
        if await self.patient(patient_id) is None:
            raise JourneyNotFound(patient_id)
        return patient_link(self.settings, patient_id)

    async def staff_by_token(self, token: str) -> StaffRow | None:
        """The enabled staff user holding ``token``, or ``None``."""
        return await self.db(repository.get_staff_by_token(self.pool, token))

    async def add_staff(self, name: str, role: StaffRole) -> tuple[StaffRow, str]:
        """Create a staff user; the token is returned once and stored hashed."""
        return await self.db(repository.create_staff_user(self.pool, name, role))

    # ------------------------------------------------------------ requests (updates)

    async def pause(
        self, patient_id: str, reason: str, *, actor: Actor = "staff", request_id: str | None = None
    ) -> ControlResult:
        """Pause the journey. Refused (``PauseRefused``) when closed or already paused."""
        result: ControlResult = await self._update(
            patient_id,
            PatientJourney.pause,
            PauseRequest(reason=reason, requested_by=actor),
            actor,
            request_id,
        )
        return result

    async def resume(
        self, patient_id: str, reason: str, *, actor: Actor = "staff", request_id: str | None = None
    ) -> ControlResult:
        """Resume a paused journey. Refused (``ResumeRefused``) unless paused."""
        result: ControlResult = await self._update(
            patient_id,
            PatientJourney.resume,
            ResumeRequest(reason=reason, requested_by=actor),
            actor,
            request_id,
        )
        return result

    async def withdraw(
        self, patient_id: str, reason: str, *, actor: Actor = "staff", request_id: str | None = None
    ) -> ControlResult:
        """End the journey. Refused (``WithdrawRefused``) when already closed."""
        result: ControlResult = await self._update(
            patient_id,
            PatientJourney.withdraw,
            WithdrawRequest(reason=reason, requested_by=actor),
            actor,
            request_id,
        )
        return result

    async def review(
        self,
        patient_id: str,
        request: ReviewRequest,
        *,
        request_id: str | None = None,
    ) -> ReviewResult:
        """Record the review. Refused (``ReviewRefused``) before it is due."""
        result: ReviewResult = await self._update(
            patient_id, PatientJourney.record_review, request, request.reviewed_by, request_id
        )
        return result

    async def screening(
        self,
        patient_id: str,
        answers: ScreeningAnswers,
        *,
        actor: Actor = "staff",
        request_id: str | None = None,
        staff_ref: str | None = None,
    ) -> ScreeningDecision:
        """Submit re-screen answers. Refused (``ScreeningRefused``) unless screening/deferred."""
        result: ScreeningDecision = await self._update(
            patient_id,
            PatientJourney.submit_screening,
            ScreeningRequest(answers=answers, requested_by=actor, staff_ref=staff_ref),
            actor,
            request_id,
        )
        return result

    async def pre_session_check(
        self,
        patient_id: str,
        session_number: int,
        answers: ScreeningAnswers,
        *,
        actor: Actor = "staff",
        request_id: str | None = None,
        staff_ref: str | None = None,
    ) -> PreSessionCheckResult:
        """The check on the day. Refused (``PreSessionCheckRefused``) unless for the next
        session of a scheduled or due course."""
        result: PreSessionCheckResult = await self._update(
            patient_id,
            PatientJourney.pre_session_check,
            PreSessionCheckRequest(
                session_number=session_number,
                answers=answers,
                checked_by=actor,
                staff_ref=staff_ref,
            ),
            actor,
            request_id,
        )
        return result

    async def reschedule(
        self,
        patient_id: str,
        session_number: int,
        new_date: date,
        new_time: time | None = None,
        *,
        by_patient: bool = False,
        request_id: str | None = None,
    ) -> RescheduleResult:
        """Move a session. Refused (``RescheduleRefused``) with every planner rule it breaks."""
        result: RescheduleResult = await self._update(
            patient_id,
            PatientJourney.reschedule,
            RescheduleRequest(
                session_number=session_number,
                new_date=new_date,
                new_time=new_time,
                requested_by="patient" if by_patient else "staff",
            ),
            "patient" if by_patient else "staff",
            request_id,
        )
        return result

    async def resolve_anomaly(
        self,
        patient_id: str,
        request: ResolveAnomalyRequest,
        *,
        request_id: str | None = None,
    ) -> ResolveAnomalyResult:
        """Apply (when the journey now can) or dismiss a kept fact, with a note. Refused
        (``ResolveAnomalyRefused``) for an unknown or resolved anomaly, or one that still
        cannot be applied (with the reasons)."""
        result: ResolveAnomalyResult = await self._update(
            patient_id, PatientJourney.resolve_anomaly, request, request.requested_by, request_id
        )
        return result

    async def record_consent(
        self, patient_id: str, request: ConsentRequest, *, request_id: str | None = None
    ) -> ConsentResult:
        """Informed consent given (signed by the patient, or on paper); the journey books once
        it is the required version. Refused (``ConsentRefused``) when closed."""
        result: ConsentResult = await self._update(
            patient_id, PatientJourney.record_consent, request, request.requested_by, request_id
        )
        return result

    async def require_consent(
        self, patient_id: str, request: ConsentRequiredRequest, *, request_id: str | None = None
    ) -> ConsentResult:
        """A new consent version is required: the journey asks again before the next booking.
        Refused (``ConsentRefused``) when closed."""
        result: ConsentResult = await self._update(
            patient_id, PatientJourney.require_consent, request, request.requested_by, request_id
        )
        return result

    async def withdraw_consent(
        self, patient_id: str, request: ConsentWithdrawRequest, *, request_id: str | None = None
    ) -> ConsentResult:
        """Consent withdrawn: the journey pauses. Refused (``ConsentRefused``) when closed."""
        result: ConsentResult = await self._update(
            patient_id, PatientJourney.withdraw_consent, request, request.requested_by, request_id
        )
        return result

    # ------------------------------------------------------------ facts (report_* updates)

    async def _report(self, patient_id: str, update: Any, fact: Any, actor: str) -> FactResult:
        """Report a fact through its ``report_*`` update and answer what became of it.

        ``applied`` or ``duplicate`` (its key was applied before) are returned; a fact the
        journey kept as an anomaly raises :class:`FactKept`. No update id is passed: the
        journey's own idempotency key decides, so a resend of a kept fact reaches it again.
        """
        result: FactResult = await self._update(patient_id, update, fact, actor, None)
        if result.outcome == "anomaly":
            raise FactKept(result)
        return result

    async def complete_session(
        self,
        patient_id: str,
        session_number: int,
        completed_at: datetime,
        *,
        idempotency_key: str,
        source: str = "integration",
    ) -> FactResult:
        """Report a completed session; the journey applies it once per ``idempotency_key``.

        Raises:
            FactKept: the journey could not apply it now (a wrong session, a date in its
                future, a paused journey...): it is kept for staff with the reasons.
        """
        return await self._report(
            patient_id,
            PatientJourney.report_session_completed,
            SessionCompletedSignal(
                idempotency_key=idempotency_key,
                session_number=session_number,
                completed_at=completed_at,
                source=source,
            ),
            source,
        )

    async def report_appointment(self, patient_id: str, report: AppointmentReport) -> FactResult:
        """Report an appointment event of the clinic's booking system (``api/booking``); the
        journey applies it once per ``report.idempotency_key``.

        Raises:
            FactKept: the journey could not apply it (e.g. a start outside the session's
                allowed days): it is kept for staff with the reasons.
        """
        return await self._report(
            patient_id, PatientJourney.report_appointment, report, "integration"
        )

    async def report_reply(self, patient_id: str, report: PatientReplyReport) -> FactResult:
        """Report a patient's reply (issue 18; its text stays in PostgreSQL): applied once per
        ``report.idempotency_key``, never kept as an anomaly (what the journey cannot do with
        it becomes a staff task)."""
        return await self._report(patient_id, PatientJourney.report_reply, report, "patient")

    async def answer_reply(
        self, patient_id: str, request: ReplyAnsweredRequest, *, request_id: str | None = None
    ) -> ReplyAnsweredResult:
        """Staff dealt with a patient's reply that became their task: close it, with a note.
        Refused (``AnswerReplyRefused``) when the journey has no such task."""
        result: ReplyAnsweredResult = await self._update(
            patient_id, PatientJourney.answer_reply, request, request.requested_by, request_id
        )
        return result

    async def spf_attested(
        self,
        patient_id: str,
        on: date,
        *,
        idempotency_key: str | None = None,
        reported_by: Actor = "patient",
    ) -> FactResult:
        """Report SPF use on a date; the default key makes one attestation per day count once.

        Raises:
            FactKept: the journey could not apply it now; kept for staff with the reasons.
        """
        key = idempotency_key or f"spf:{on.isoformat()}"
        return await self._report(
            patient_id,
            PatientJourney.report_spf_attested,
            SpfAttestedSignal(idempotency_key=key, on=on, reported_by=reported_by),
            reported_by,
        )

    async def report_reaction(
        self,
        patient_id: str,
        session_number: int,
        day: int,
        reaction: str,
        *,
        severity: str | None = None,
        idempotency_key: str | None = None,
        reported_by: Actor = "patient",
    ) -> FactResult:
        """A recovery check-in, or with ``severity`` an adverse event (the journey pauses).

        The default idempotency key is one per session and day.

        Raises:
            FactKept: the journey could not apply it now; kept for staff with the reasons.
        """
        if severity is not None:
            key = idempotency_key or f"adverse:{session_number}:{day}:{severity}"
            return await self._report(
                patient_id,
                PatientJourney.report_adverse_event,
                AdverseEventSignal(
                    idempotency_key=key,
                    severity=severity,  # type: ignore[arg-type]
                    note_ref=f"{reported_by}-report:{key}",
                    reported_by=reported_by,
                ),
                reported_by,
            )
        key = idempotency_key or f"checkin:{session_number}:{day}"
        return await self._report(
            patient_id,
            PatientJourney.report_recovery_checkin,
            RecoveryCheckinSignal(
                idempotency_key=key,
                session_number=session_number,
                day=day,
                reaction=reaction,  # type: ignore[arg-type]
                reported_by=reported_by,
            ),
            reported_by,
        )

    # ------------------------------------------------------------ planning

    async def preview_plan(self, request: schemas.PlanPreviewRequest) -> schemas.PlanPreviewOut:
        """The planner's answer for a prospective patient (nothing is stored or started).

        ``earliest`` defaults to today in the clinic's zone plus the booking notice.
        """
        cp = await self.clinic(request.clinic_id)
        today = clinic_today(datetime.now(UTC), cp.clinic.timezone)
        earliest = request.earliest or today + timedelta(days=cp.protocol.booking_notice_days)
        screening = (
            screen(request.screening, today, cp.protocol) if request.screening is not None else None
        )
        conservative = request.conservative or (
            screening is not None and "conservative_settings" in screening.flags
        )
        plan = plan_course(
            earliest,
            cp.protocol.sessions_for(request.pore_grade),
            cp,
            trips=request.trips,
            conservative=conservative,
        )
        return schemas.PlanPreviewOut(
            clinic_id=cp.clinic.clinic_id,
            protocol_version=cp.protocol.version,
            requested_from=plan.requested_from,
            sessions=plan.sessions,
            starts_on=plan.starts_on,
            last_session_on=plan.last_session_on,
            spf_until=plan.spf_until,
            review_on=plan.review_on,
            waiting_reason=plan.waiting_reason,
            reasons=[schemas.ReasonOut(rule=r.rule, message=r.message) for r in plan.reasons],
            interval_days=plan.interval_days,
            conservative=plan.conservative,
            screening_outcome=screening.outcome if screening else None,
            screening_reasons=[
                schemas.ReasonOut(rule=r.rule, message=r.message) for r in screening.reasons
            ]
            if screening
            else [],
        )


def actor_for(staff: StaffRow) -> Actor:
    """The actor recorded for a staff user's requests (``clinician`` or ``staff``)."""
    return _actor_for_role(staff.role)


def staff_ref(staff: StaffRow) -> str:
    """The staff member as the workflow's messages name them (``staff_ref``): an id and the
    name, never a patient's data; at most 64 characters."""
    return f"staff:{staff.id} {staff.name}"[:64]


async def _insert_patient(pool: asyncpg.Pool, patient_id: str, patient: PatientCreate) -> None:
    """Store the patient under ``patient_id``; a repeat (an idempotent retry) is a no-op."""
    try:
        await pool.execute(
            """
            INSERT INTO patients (patient_id, full_name, email, phone, preferred_channel,
                                  clinic_id, language)
            VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, (
                SELECT default_language FROM clinics WHERE clinic_id = $6), 'en'))
            ON CONFLICT (patient_id) DO NOTHING
            """,
            patient_id,
            patient.full_name,
            patient.email,
            patient.phone,
            patient.preferred_channel,
            patient.clinic_id,
            patient.language,
        )
    except asyncpg.ForeignKeyViolationError:
        raise InvalidRequest(
            "body.clinic_id", "unknown_clinic", f"No clinic {patient.clinic_id!r}."
        ) from None
