"""Informed consent (issue 19 item 1): versioned texts per clinic and language, the patient's
signature, paper consents, withdrawals, and "this version is now required".

PostgreSQL keeps the record (migration 0019): ``consent_texts`` (append-only: a new text is a
new version), ``consent_records`` (append-only: signed, paper, withdrawn) and
``consent_requirements`` (a version made required, with the progress of asking the clinic's
open journeys again). The journey keeps only the version and the record's id
(``record_consent`` / ``require_consent`` / ``withdraw_consent``): it books no session until the
consent is valid in a clinic that requires it (``ClinicSettings.consent_required``).

Order of writes: the record is stored first, then the journey is told. If Temporal is down the
record stays (it is what the patient did) and the caller gets a 503; the patient's retry stores
a second record and tells the journey again (the journey keeps the last version).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from datetime import UTC, datetime
from typing import Final, Literal

import asyncpg
from pydantic import BaseModel, ConfigDict

from api.service import (
    InvalidRequest,
    JourneyNotFound,
    JourneyService,
    RequestRefused,
    ServiceUnavailable,
)
from workflows.bounds import check_text
from workflows.guards import CLOSED_STAGES
from workflows.ids import workflow_id
from workflows.messages import (
    Actor,
    ConsentRequest,
    ConsentRequiredRequest,
    ConsentResult,
    ConsentWithdrawRequest,
    JourneyStatus,
)

__all__ = [
    "ConsentRecord",
    "ConsentRequirement",
    "ConsentText",
    "add_text",
    "gate_reason",
    "list_texts",
    "record_paper",
    "require_version",
    "sign",
    "text_to_sign",
    "withdraw",
]

logger = logging.getLogger(__name__)

DEFAULT_LANGUAGE: Final = "en"
# Asking the open journeys again: this many updates in flight at once, read in pages of
# REQUIRE_PAGE journeys (a clinic with 100,000 journeys is asked in bounded steps).
REQUIRE_CONCURRENCY: Final = 8
REQUIRE_PAGE: Final = 200
_ADDRESS_SALT: Final = b"journey.consent-address.v1"
_background: set[asyncio.Task[None]] = set()


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True)


class ConsentText(_Row):
    """One version of a clinic's consent text in one language."""

    id: int
    clinic_id: str
    language: str
    version: str
    title: str
    body: str
    body_sha256: str
    created_by: str
    created_at: datetime


class ConsentRequirement(_Row):
    """A version made required, and how far asking the open journeys again has got."""

    id: int
    clinic_id: str
    version: str
    requested_by: str
    created_at: datetime
    total: int
    asked: int
    skipped: int
    failed: int
    finished_at: datetime | None
    last_error: str | None


class ConsentRecord(_Row):
    """A signature, a paper consent or a withdrawal."""

    id: int
    kind: Literal["patient_signed", "paper", "withdrawn"]
    version: str | None
    language: str | None
    typed_name: str | None
    signed_at: datetime
    paper_reference: str | None
    reason: str | None
    staff_name: str | None
    text_sha256: str | None
    created_at: datetime


# ---------------------------------------------------------------- texts


async def add_text(
    pool: asyncpg.Pool,
    clinic_id: str,
    language: str,
    version: str,
    title: str,
    body: str,
    created_by: str,
) -> ConsentText:
    """Store a new version (never an edit).

    Raises:
        InvalidRequest: an unknown clinic (``unknown_clinic``), or this clinic already has the
            version in this language (``version_exists``: a changed text is a new version).
    """
    digest = hashlib.sha256(body.encode()).hexdigest()
    try:
        row = await pool.fetchrow(
            """
            INSERT INTO consent_texts
                (clinic_id, language, version, title, body, body_sha256, created_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7)
            RETURNING *
            """,
            clinic_id,
            language,
            version,
            title,
            body,
            digest,
            created_by,
        )
    except asyncpg.UniqueViolationError:
        raise InvalidRequest(
            "body.version",
            "version_exists",
            f"Version {version} ({language}) exists already; a changed text is a new version.",
        ) from None
    except asyncpg.ForeignKeyViolationError:
        raise InvalidRequest(
            "path.clinic_id", "unknown_clinic", f"No clinic {clinic_id!r}."
        ) from None
    assert row is not None
    return ConsentText.model_validate(dict(row))


async def list_texts(pool: asyncpg.Pool, clinic_id: str) -> list[ConsentText]:
    """Every version of the clinic's texts, newest first."""
    rows = await pool.fetch(
        "SELECT * FROM consent_texts WHERE clinic_id = $1 ORDER BY created_at DESC, id DESC",
        clinic_id,
    )
    return [ConsentText.model_validate(dict(r)) for r in rows]


async def get_text(pool: asyncpg.Pool, text_id: int) -> ConsentText | None:
    row = await pool.fetchrow("SELECT * FROM consent_texts WHERE id = $1", text_id)
    return None if row is None else ConsentText.model_validate(dict(row))


async def required_version(pool: asyncpg.Pool, clinic_id: str) -> str | None:
    """The version the clinic made required last, or None."""
    value = await pool.fetchval(
        "SELECT version FROM consent_requirements WHERE clinic_id = $1 ORDER BY id DESC LIMIT 1",
        clinic_id,
    )
    return None if value is None else str(value)


async def text_to_sign(
    pool: asyncpg.Pool, clinic_id: str, language: str | None, wanted_version: str | None
) -> tuple[ConsentText | None, list[str]]:
    """The text a patient of ``clinic_id`` signs and the languages it exists in.

    The version: ``wanted_version`` (the journey's required one), else the clinic's required
    one, else its newest. The language: ``language`` when that version exists in it, else
    English, else the first there is.
    """
    version = wanted_version or await required_version(pool, clinic_id)
    if version is None:
        version = await pool.fetchval(
            "SELECT version FROM consent_texts WHERE clinic_id = $1 "
            "ORDER BY created_at DESC, id DESC LIMIT 1",
            clinic_id,
        )
    if version is None:
        return None, []
    rows = await pool.fetch(
        "SELECT * FROM consent_texts WHERE clinic_id = $1 AND version = $2 ORDER BY language",
        clinic_id,
        version,
    )
    texts = {r["language"]: ConsentText.model_validate(dict(r)) for r in rows}
    languages = sorted(texts)
    chosen = texts.get(language or "") or texts.get(DEFAULT_LANGUAGE)
    if chosen is None and languages:
        chosen = texts[languages[0]]
    return chosen, languages


# ---------------------------------------------------------------- records


async def records(pool: asyncpg.Pool, patient_id: str, limit: int = 20) -> list[ConsentRecord]:
    """The journey's consent records, newest first."""
    rows = await pool.fetch(
        """
        SELECT id, kind, version, language, typed_name, signed_at, paper_reference, reason,
               staff_name, text_sha256, created_at
        FROM consent_records WHERE workflow_id = $1 ORDER BY id DESC LIMIT $2
        """,
        workflow_id(patient_id),
        limit,
    )
    return [ConsentRecord.model_validate(dict(r)) for r in rows]


def address_hmac(secret: bytes, address: str) -> str:
    """A keyed hash of the request's address: comparable between records, not reversible by
    trying the 2^32 IPv4 addresses (a plain sha256 would be)."""
    return hmac.new(secret + _ADDRESS_SALT, address.encode(), hashlib.sha256).hexdigest()


async def _journey_clinic(service: JourneyService, patient_id: str) -> str:
    row = await service.db(
        service.pool.fetchrow(
            "SELECT clinic_id FROM journeys WHERE workflow_id = $1", workflow_id(patient_id)
        )
    )
    if row is None:
        patient = await service.patient(patient_id)
        if patient is None:
            raise JourneyNotFound(patient_id)
        return patient.clinic_id
    return str(row["clinic_id"])


async def sign(
    service: JourneyService,
    patient_id: str,
    *,
    text_id: int,
    typed_name: str,
    confirmed: bool,
    address: str,
    request_id: str | None = None,
) -> tuple[ConsentRecord, ConsentResult]:
    """The patient signs a text on their page: stored, then the journey is told.

    Raises:
        InvalidRequest: no box ticked, an empty name, a text of another clinic.
        RequestRefused: the journey is closed (``ConsentRefused`` / ``JourneyClosed``).
    """
    if not confirmed:
        raise InvalidRequest(
            "body.confirmed", "confirmation_required", "Tick the box to confirm you agree."
        )
    name = check_text(typed_name.strip())
    if not 1 <= len(name) <= 200:
        raise InvalidRequest(
            "body.typed_name", "typed_name", "Type your full name (1 to 200 characters)."
        )
    clinic_id = await _journey_clinic(service, patient_id)
    text = await service.db(get_text(service.pool, text_id))
    if text is None or text.clinic_id != clinic_id:
        raise InvalidRequest("body.text_id", "unknown_text", "This consent text is not offered.")
    secret = service.settings.journey_patient_link_secret.get_secret_value().encode()
    signed_at = datetime.now(UTC)
    row = await service.db(
        service.pool.fetchrow(
            """
            INSERT INTO consent_records
                (workflow_id, patient_id, clinic_id, kind, version, language, consent_text_id,
                 text_sha256, typed_name, confirmed, signed_at, address_hmac)
            VALUES ($1, $2, $3, 'patient_signed', $4, $5, $6, $7, $8, true, $9, $10)
            RETURNING id, kind, version, language, typed_name, signed_at, paper_reference,
                      reason, staff_name, text_sha256, created_at
            """,
            workflow_id(patient_id),
            patient_id,
            clinic_id,
            text.version,
            text.language,
            text.id,
            text.body_sha256,
            name,
            signed_at,
            address_hmac(secret, address),
        )
    )
    assert row is not None
    record = ConsentRecord.model_validate(dict(row))
    result = await service.record_consent(
        patient_id,
        ConsentRequest(
            version=text.version,
            kind="patient_signed",
            reference=f"consent_records:{record.id}",
            signed_at=signed_at,
            requested_by="patient",
        ),
        request_id=request_id,
    )
    return record, result


async def record_paper(
    service: JourneyService,
    patient_id: str,
    *,
    version: str,
    reference: str,
    signed_at: datetime | None,
    actor: Actor,
    staff_id: int,
    staff_name: str,
    staff_ref: str,
    request_id: str | None = None,
) -> tuple[ConsentRecord, ConsentResult]:
    """Staff record a paper consent with its reference (the scan's or the binder's)."""
    clinic_id = await _journey_clinic(service, patient_id)
    known = await service.db(
        service.pool.fetchval(
            "SELECT 1 FROM consent_texts WHERE clinic_id = $1 AND version = $2 LIMIT 1",
            clinic_id,
            version,
        )
    )
    if known is None:
        raise InvalidRequest(
            "body.version", "unknown_version", f"The clinic has no consent version {version}."
        )
    required = await service.db(required_version(service.pool, clinic_id))
    if required is not None and version != required:
        # A journey started after the requirement does not know it (the journey takes any
        # version until require_consent names one): the door refuses an outdated paper.
        raise InvalidRequest(
            "body.version",
            "not_required_version",
            f"The clinic requires consent version {required}; this paper is version {version}.",
        )
    at = signed_at or datetime.now(UTC)
    row = await service.db(
        service.pool.fetchrow(
            """
            INSERT INTO consent_records
                (workflow_id, patient_id, clinic_id, kind, version, signed_at, paper_reference,
                 staff_id, staff_name)
            VALUES ($1, $2, $3, 'paper', $4, $5, $6, $7, $8)
            RETURNING id, kind, version, language, typed_name, signed_at, paper_reference,
                      reason, staff_name, text_sha256, created_at
            """,
            workflow_id(patient_id),
            patient_id,
            clinic_id,
            version,
            at,
            reference,
            staff_id,
            staff_name,
        )
    )
    assert row is not None
    record = ConsentRecord.model_validate(dict(row))
    result = await service.record_consent(
        patient_id,
        ConsentRequest(
            version=version,
            kind="paper",
            reference=reference,
            signed_at=at,
            requested_by=actor,
            staff_ref=staff_ref,
        ),
        request_id=request_id,
    )
    return record, result


async def withdraw(
    service: JourneyService,
    patient_id: str,
    *,
    reason: str,
    actor: Actor,
    staff_id: int | None = None,
    staff_name: str | None = None,
    staff_ref: str | None = None,
    request_id: str | None = None,
) -> tuple[ConsentRecord, ConsentResult]:
    """Consent withdrawn (by the patient on their page, or staff): recorded, and the journey
    pauses."""
    clinic_id = await _journey_clinic(service, patient_id)
    row = await service.db(
        service.pool.fetchrow(
            """
            INSERT INTO consent_records
                (workflow_id, patient_id, clinic_id, kind, signed_at, reason, staff_id,
                 staff_name)
            VALUES ($1, $2, $3, 'withdrawn', now(), $4, $5, $6)
            RETURNING id, kind, version, language, typed_name, signed_at, paper_reference,
                      reason, staff_name, text_sha256, created_at
            """,
            workflow_id(patient_id),
            patient_id,
            clinic_id,
            reason,
            staff_id,
            staff_name,
        )
    )
    assert row is not None
    record = ConsentRecord.model_validate(dict(row))
    result = await service.withdraw_consent(
        patient_id,
        ConsentWithdrawRequest(reason=reason, requested_by=actor, staff_ref=staff_ref),
        request_id=request_id,
    )
    return record, result


# ---------------------------------------------------------------- a version made required


async def get_requirement(pool: asyncpg.Pool, run_id: int) -> ConsentRequirement | None:
    row = await pool.fetchrow("SELECT * FROM consent_requirements WHERE id = $1", run_id)
    return None if row is None else ConsentRequirement.model_validate(dict(row))


async def list_requirements(
    pool: asyncpg.Pool, clinic_id: str, limit: int = 10
) -> list[ConsentRequirement]:
    rows = await pool.fetch(
        "SELECT * FROM consent_requirements WHERE clinic_id = $1 ORDER BY id DESC LIMIT $2",
        clinic_id,
        limit,
    )
    return [ConsentRequirement.model_validate(dict(r)) for r in rows]


async def require_version(
    service: JourneyService,
    clinic_id: str,
    version: str,
    *,
    actor: Actor,
    requested_by: str,
    staff_ref: str | None,
    background: bool = True,
) -> ConsentRequirement:
    """Make ``version`` the clinic's required consent and ask every open journey again.

    The run is recorded first (its row counts the progress); the journeys are asked in pages,
    a bounded number at a time, in the background (``background=False``: before returning).
    Asking again is idempotent: a journey already at the version is skipped, so a run cut
    short (the process stopped) is finished by making the same version required again.

    Raises:
        InvalidRequest: the clinic has no text of this version.
    """
    known = await service.db(
        service.pool.fetchval(
            "SELECT 1 FROM consent_texts WHERE clinic_id = $1 AND version = $2 LIMIT 1",
            clinic_id,
            version,
        )
    )
    if known is None:
        raise InvalidRequest(
            "path.version", "unknown_version", f"The clinic has no consent version {version}."
        )
    row = await service.db(
        service.pool.fetchrow(
            "INSERT INTO consent_requirements (clinic_id, version, requested_by) "
            "VALUES ($1, $2, $3) RETURNING *",
            clinic_id,
            version,
            requested_by,
        )
    )
    assert row is not None
    run = ConsentRequirement.model_validate(dict(row))
    job = _ask_open_journeys(
        service,
        run,
        ConsentRequiredRequest(version=version, requested_by=actor, staff_ref=staff_ref),
    )
    if background:
        task = asyncio.create_task(job)
        _background.add(task)
        task.add_done_callback(_background.discard)
    else:
        await job
    return run


async def _ask_open_journeys(
    service: JourneyService, run: ConsentRequirement, request: ConsentRequiredRequest
) -> None:
    pool = service.pool
    closed = list(CLOSED_STAGES)
    gate = asyncio.Semaphore(REQUIRE_CONCURRENCY)
    last_error: str | None = None

    async def ask(patient_id: str) -> bool:
        nonlocal last_error
        async with gate:
            try:
                await service.require_consent(
                    patient_id, request, request_id=f"{run.clinic_id}:{request.version}"
                )
                return True
            except (RequestRefused, ServiceUnavailable) as err:
                last_error = f"{patient_id}: {err.message}"[:500]
                return False

    try:
        total = await pool.fetchval(
            "SELECT count(*) FROM journeys WHERE clinic_id = $1 AND stage <> ALL($2::text[])",
            run.clinic_id,
            closed,
        )
        await pool.execute(
            "UPDATE consent_requirements SET total = $2 WHERE id = $1", run.id, int(total)
        )
        after = ""
        while True:
            page = await pool.fetch(
                """
                SELECT workflow_id, patient_id, status->>'consent_required_version' AS required
                FROM journeys
                WHERE clinic_id = $1 AND stage <> ALL($2::text[]) AND workflow_id > $3
                ORDER BY workflow_id LIMIT $4
                """,
                run.clinic_id,
                closed,
                after,
                REQUIRE_PAGE,
            )
            if not page:
                break
            after = page[-1]["workflow_id"]
            todo = [r["patient_id"] for r in page if r["required"] != request.version]
            skipped = len(page) - len(todo)
            results = await asyncio.gather(*(ask(p) for p in todo))
            asked = sum(results)
            await pool.execute(
                """
                UPDATE consent_requirements
                SET asked = asked + $2, skipped = skipped + $3, failed = failed + $4,
                    last_error = coalesce($5, last_error)
                WHERE id = $1
                """,
                run.id,
                asked,
                skipped,
                len(todo) - asked,
                last_error,
            )
    except Exception as err:  # the run's row says it stopped; making it required again resumes
        logger.exception("asking journeys for consent %s stopped", request.version)
        await pool.execute(
            "UPDATE consent_requirements SET last_error = $2 WHERE id = $1",
            run.id,
            f"stopped: {type(err).__name__}",
        )
        return
    await pool.execute("UPDATE consent_requirements SET finished_at = now() WHERE id = $1", run.id)


# ---------------------------------------------------------------- what the pages say


def gate_reason(
    status: JourneyStatus | None, consent_required: bool, last: ConsentRecord | None = None
) -> str | None:
    """Why the journey waits for consent, in one sentence, or None when it does not.

    ``last`` is the journey's newest consent record: a withdrawal is named as the reason.
    """
    if status is None or status.stage in CLOSED_STAGES or status.consent_valid:
        return None
    if last is not None and last.kind == "withdrawn":
        return (
            f"Consent was withdrawn ({last.reason}): the journey is paused and no session is "
            "booked until the informed consent is signed again and the journey resumed."
        )
    if not consent_required:
        return None
    required = status.consent_required_version
    # The gate holds the next booking; a session booked before stays booked.
    no_more = (
        "No further session is booked"
        if any(s.state == "booked" for s in status.sessions)
        else "No session is booked"
    )
    if status.consent_version and required and status.consent_version != required:
        return (
            f"{no_more} until the informed consent is signed again: the clinic "
            f"now requires version {required} (signed: version {status.consent_version})."
        )
    return f"{no_more} until the informed consent is signed" + (
        f" (version {required})." if required else "."
    )
