"""The clinical record over HTTP (issue 19): consent texts and records, photos, outcomes.

Who may do what is decided in one place, :mod:`api.clinical_access` (photos and outcomes:
clinicians and admins; consent texts: admins and managers; paper consents and withdrawals:
every staff role); patients act on their own journey through their link (``/api/me``).
Every route is also declared with its permission in issue 16's table
(``api/access/permissions.py``), which its ``enforce`` checks first.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, File, Form, Path, Query, Request, Response, UploadFile, status
from pydantic import BaseModel, ConfigDict, Field

from activities.repository import StaffRow
from api import consent, outcomes, photos, schemas
from api.clinical_access import (
    ClinicalStaffDep,
    ClinicalWriterDep,
    ConsentAdminDep,
    ConsentRecorderDep,
)
from api.deps import (
    ERROR_RESPONSES,
    IdempotencyKeyHeader,
    PatientDep,
    PatientIdPath,
    ServiceDep,
    SettingsDep,
)
from api.service import InvalidRequest, JourneyNotFound, JourneyService, actor_for, staff_ref
from workflows.bounds import safe_multiline_text, safe_text
from workflows.ids import workflow_id
from workflows.messages import ConsentResult

if TYPE_CHECKING:
    Title = str
    Body = str
    Reason500 = str
    Reference = str
    Name200 = str
    Comment = str
else:
    Title = safe_text(200, min_length=1)
    Body = safe_multiline_text(20_000, min_length=1)
    Reason500 = safe_multiline_text(500, min_length=1)
    Reference = safe_text(200, min_length=1)
    Name200 = safe_text(200, min_length=1)
    Comment = safe_multiline_text(1000)

router = APIRouter(tags=["clinical record"])

ClinicIdPath = Annotated[str, Path(max_length=64, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[A-Z]{2})?$"
ERRORS: dict[int | str, dict[str, object]] = {
    **ERROR_RESPONSES,
    401: {"model": schemas.ErrorBody, "description": "Missing or bad credential."},
    403: {"model": schemas.ErrorBody, "description": "Not this role, or another journey."},
    404: {"model": schemas.ErrorBody, "description": "Unknown journey, clinic or photo."},
    409: {"model": schemas.ErrorBody, "description": "Refused, with every reason."},
    503: {"model": schemas.ErrorBody, "description": "Temporarily unavailable; retry."},
}


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConsentTextIn(_In):
    """A new version of the clinic's consent text in one language (never an edit)."""

    language: str = Field(default="en", pattern=LANGUAGE_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    title: Title
    body: Body


class ConsentTextOut(BaseModel):
    id: int
    clinic_id: str
    language: str
    version: str
    title: str
    body: str
    body_sha256: str
    created_by: str
    created_at: datetime


class RequirementOut(BaseModel):
    """A version made required and how far asking the open journeys again has got."""

    id: int
    clinic_id: str
    version: str
    requested_by: str
    created_at: datetime
    total: int
    asked: int
    skipped: int
    failed: int
    finished: bool
    last_error: str | None


class ConsentOut(BaseModel):
    """The journey's consent after a request."""

    record_id: int
    consent_valid: bool
    version: str | None
    required_version: str | None
    stage: str


class PaperConsentIn(_In):
    version: str = Field(pattern=VERSION_PATTERN)
    reference: Reference
    signed_at: datetime | None = None


class WithdrawIn(_In):
    reason: Reason500


class SignIn(_In):
    """The patient signs: the text shown (its id), their typed name and the ticked box."""

    text_id: int = Field(ge=1, le=2**62)
    typed_name: Name200
    confirmed: bool


class MyConsentOut(BaseModel):
    consent_valid: bool
    signed_version: str | None
    required_version: str | None
    reason: str | None
    text: ConsentTextOut | None
    languages: list[str]


class SatisfactionIn(_In):
    score: int = Field(ge=1, le=5)
    comment: Comment | None = None


class SatisfactionOut(BaseModel):
    score: int
    comment: str | None
    course_number: int
    created_at: datetime
    new: bool


class PhotoOut(BaseModel):
    id: int
    kind: str
    course_number: int
    sha256: str
    store: str
    media_type: str
    bytes: int
    width: int
    height: int
    uploader_name: str
    uploaded_at: datetime
    url: str


class OutcomeOut(BaseModel):
    review: dict[str, object] | None
    satisfaction: SatisfactionOut | None


def _requirement_out(r: consent.ConsentRequirement) -> RequirementOut:
    return RequirementOut(
        **r.model_dump(exclude={"finished_at"}), finished=r.finished_at is not None
    )


def _consent_out(record_id: int, result: ConsentResult) -> ConsentOut:
    return ConsentOut(
        record_id=record_id,
        consent_valid=result.consent_valid,
        version=result.version,
        required_version=result.required_version,
        stage=result.stage,
    )


def _photo_out(p: photos.PhotoRow) -> PhotoOut:
    return PhotoOut(
        **p.model_dump(exclude={"patient_id", "clinic_id", "note"}),
        url=f"/api/journeys/{p.patient_id}/photos/{p.id}",
    )


async def _known_clinic(service: JourneyService, clinic_id: str) -> None:
    await service.clinic(clinic_id)  # InvalidRequest (422 unknown_clinic) otherwise


async def _journey_row(service: JourneyService, patient_id: str) -> tuple[str, int]:
    """The journey's clinic and course, from the read model (404 when there is none)."""
    try:
        wf = workflow_id(patient_id)
    except ValueError:
        raise JourneyNotFound(patient_id) from None
    row = await service.db(
        service.pool.fetchrow(
            "SELECT clinic_id, course_number FROM journeys WHERE workflow_id = $1", wf
        )
    )
    if row is None:
        raise JourneyNotFound(patient_id)
    return str(row["clinic_id"]), int(row["course_number"])


# ---------------------------------------------------------------- consent texts (staff)


@router.get(
    "/api/clinics/{clinic_id}/consent-texts",
    response_model=list[ConsentTextOut],
    responses=ERRORS,
)
async def list_consent_texts(
    clinic_id: ClinicIdPath,
    service: ServiceDep,
    staff: ConsentRecorderDep,
) -> list[ConsentTextOut]:
    """Every version of the clinic's consent texts, newest first."""
    await _known_clinic(service, clinic_id)
    texts = await service.db(consent.list_texts(service.pool, clinic_id))
    return [ConsentTextOut.model_validate(t.model_dump()) for t in texts]


@router.post(
    "/api/clinics/{clinic_id}/consent-texts",
    response_model=ConsentTextOut,
    status_code=status.HTTP_201_CREATED,
    responses=ERRORS,
)
async def add_consent_text(
    clinic_id: ClinicIdPath,
    body: ConsentTextIn,
    service: ServiceDep,
    staff: ConsentAdminDep,
) -> ConsentTextOut:
    """A new version (an existing version is never edited: 422 ``version_exists``)."""
    await _known_clinic(service, clinic_id)
    text = await service.db(
        consent.add_text(
            service.pool,
            clinic_id,
            body.language,
            body.version,
            body.title,
            body.body,
            staff_ref(staff),
        )
    )
    return ConsentTextOut.model_validate(text.model_dump())


@router.post(
    "/api/clinics/{clinic_id}/consent-texts/{version}/require",
    response_model=RequirementOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=ERRORS,
)
async def require_consent_version(
    clinic_id: ClinicIdPath,
    version: Annotated[str, Path(max_length=64)],
    service: ServiceDep,
    staff: ConsentAdminDep,
) -> RequirementOut:
    """Make the version required: every open journey of the clinic asks again before its
    next booking. Runs in the background, a few journeys at a time; follow it with
    ``GET /api/clinics/{clinic_id}/consent-requirements/{id}`` (total, asked, skipped, failed,
    finished)."""
    await _known_clinic(service, clinic_id)
    run = await consent.require_version(
        service,
        clinic_id,
        version,
        actor=actor_for(staff),
        requested_by=staff_ref(staff),
        staff_ref=staff_ref(staff),
    )
    return _requirement_out(run)


@router.get(
    "/api/clinics/{clinic_id}/consent-requirements/{run_id}",
    response_model=RequirementOut,
    responses=ERRORS,
)
async def consent_requirement(
    clinic_id: ClinicIdPath,
    run_id: Annotated[int, Path(ge=1, le=2**62)],
    service: ServiceDep,
    staff: ConsentAdminDep,
) -> RequirementOut:
    """How far asking the open journeys again has got."""
    run = await service.db(consent.get_requirement(service.pool, run_id))
    if run is None or run.clinic_id != clinic_id:
        raise InvalidRequest("path.run_id", "unknown_run", "No such consent requirement.")
    return _requirement_out(run)


# ---------------------------------------------------------------- a journey's consent (staff)


@router.post(
    "/api/journeys/{patient_id}/consent/paper", response_model=ConsentOut, responses=ERRORS
)
async def record_paper_consent(
    patient_id: PatientIdPath,
    body: PaperConsentIn,
    service: ServiceDep,
    staff: ConsentRecorderDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> ConsentOut:
    """A consent signed on paper, with its reference (the scan's or the binder's)."""
    await _journey_row(service, patient_id)
    if body.signed_at is not None and body.signed_at.tzinfo is None:
        raise InvalidRequest("body.signed_at", "offset_required", "Give the time with an offset.")
    record, result = await consent.record_paper(
        service,
        patient_id,
        version=body.version,
        reference=body.reference,
        signed_at=body.signed_at,
        actor=actor_for(staff),
        staff_id=staff.id,
        staff_name=staff.name,
        staff_ref=staff_ref(staff),
        request_id=idempotency_key,
    )
    return _consent_out(record.id, result)


@router.post(
    "/api/journeys/{patient_id}/consent/withdraw", response_model=ConsentOut, responses=ERRORS
)
async def withdraw_consent_staff(
    patient_id: PatientIdPath,
    body: WithdrawIn,
    service: ServiceDep,
    staff: ConsentRecorderDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> ConsentOut:
    """The patient withdrew consent (told the clinic): the journey pauses."""
    await _journey_row(service, patient_id)
    record, result = await consent.withdraw(
        service,
        patient_id,
        reason=body.reason,
        actor=actor_for(staff),
        staff_id=staff.id,
        staff_name=staff.name,
        staff_ref=staff_ref(staff),
        request_id=idempotency_key,
    )
    return _consent_out(record.id, result)


@router.get("/api/journeys/{patient_id}/consent", responses=ERRORS)
async def journey_consent(
    patient_id: PatientIdPath, service: ServiceDep, staff: ConsentRecorderDep
) -> dict[str, object]:
    """The journey's consent (from its status) and its records, newest first."""
    clinic_id, _ = await _journey_row(service, patient_id)
    st = await service.status(patient_id)
    cp = await service.clinic(clinic_id)
    found = await service.db(consent.records(service.pool, patient_id))
    return {
        "consent_valid": st.consent_valid,
        "signed_version": st.consent_version,
        "required_version": st.consent_required_version,
        "reason": consent.gate_reason(st, cp.clinic.consent_required, found[0] if found else None),
        "records": [r.model_dump(mode="json") for r in found],
    }


# ---------------------------------------------------------------- outcomes and photos (clinicians)


@router.get("/api/journeys/{patient_id}/outcome", response_model=OutcomeOut, responses=ERRORS)
async def journey_outcome(
    patient_id: PatientIdPath, service: ServiceDep, staff: ClinicalStaffDep
) -> OutcomeOut:
    """The clinician's outcome of the latest review and the patient's satisfaction."""
    await _journey_row(service, patient_id)
    st = await service.status(patient_id)
    review = await service.db(outcomes.review_outcome(service.pool, patient_id, st))
    sat = await service.db(outcomes.get_satisfaction(service.pool, patient_id))
    return OutcomeOut(
        review=review,
        satisfaction=SatisfactionOut(**sat.model_dump(), new=False) if sat else None,
    )


def photo_store(request: Request) -> photos.PhotoStore:
    """The app's photo store (built on first use from the settings)."""
    store: photos.PhotoStore | None = getattr(request.app.state, "photo_store", None)
    if store is None:
        store = photos.build_store(request.app.state.settings)
        request.app.state.photo_store = store
    return store


def photo_limits(request: Request) -> photos.PhotoSettings:
    found: photos.PhotoSettings | None = getattr(request.app.state, "photo_settings", None)
    if found is None:
        found = photos.PhotoSettings()
        request.app.state.photo_settings = found
    return found


@router.get("/api/journeys/{patient_id}/photos", response_model=list[PhotoOut], responses=ERRORS)
async def list_journey_photos(
    patient_id: PatientIdPath, service: ServiceDep, staff: ClinicalStaffDep
) -> list[PhotoOut]:
    """The journey's photos (references; each ``url`` serves the image and logs the view)."""
    await _journey_row(service, patient_id)
    return [_photo_out(p) for p in await service.db(photos.list_photos(service.pool, patient_id))]


@router.post(
    "/api/photos/{patient_id}",
    response_model=PhotoOut,
    status_code=status.HTTP_201_CREATED,
    responses={**ERRORS, 413: {"model": schemas.ErrorBody, "description": "Too large."}},
)
async def upload_photo(
    request: Request,
    patient_id: PatientIdPath,
    service: ServiceDep,
    staff: ClinicalWriterDep,
    file: Annotated[UploadFile, File(description="A JPEG or PNG.")],
    kind: Annotated[Literal["baseline", "review"], Form()],
) -> PhotoOut | Response:
    """A baseline photo (before the first session) or a review photo (at the review): checked
    (size, JPEG/PNG, pixels), re-encoded without EXIF (location) and stored by its hash."""
    await _journey_row(service, patient_id)
    limits = photo_limits(request)
    data = await file.read(limits.max_bytes + 1)
    try:
        row = await photos.upload(
            service.pool,
            photo_store(request),
            limits,
            patient_id=patient_id,
            kind=kind,
            data=data,
            declared_type=file.content_type,
            note=None,
            staff=staff,
        )
    except LookupError:
        raise JourneyNotFound(patient_id) from None
    except photos.PhotoRefused as refused:
        return Response(
            schemas.ErrorBody(
                detail=[
                    schemas.ErrorItem(field="body.file", rule=refused.rule, message=refused.message)
                ]
            ).model_dump_json(exclude_none=True),
            status_code=refused.status_code,
            media_type="application/json",
        )
    return _photo_out(row)


async def serve_photo(
    request: Request, service: JourneyService, staff: StaffRow, patient_id: str, photo_id: int
) -> Response:
    """The photo's bytes after its view is logged (404 for another journey's photo)."""
    try:
        workflow_id(patient_id)
    except ValueError:
        raise JourneyNotFound(patient_id) from None
    found = await service.db(photos.get_photo(service.pool, patient_id, photo_id))
    if found is None:
        return Response(
            schemas.ErrorBody(
                detail=[schemas.ErrorItem(rule="photo_not_found", message="No such photo.")]
            ).model_dump_json(exclude_none=True),
            status_code=404,
            media_type="application/json",
        )
    route = getattr(request.scope.get("route"), "path", request.url.path)
    await service.db(
        photos.log_view(
            service.pool,
            found,
            staff,
            f"{request.method} {route}",
            also_access_log=not hasattr(request.state, "principal"),
        )
    )
    data = await photo_store(request).get(found.sha256)
    return Response(
        data,
        media_type=found.media_type,
        headers={
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'",
            "ETag": f'"{found.sha256}"',
        },
    )


@router.get(
    "/api/journeys/{patient_id}/photos/{photo_id}",
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}, "image/png": {}}}},
    response_class=Response,
)
async def get_journey_photo(
    request: Request,
    patient_id: PatientIdPath,
    photo_id: Annotated[int, Path(ge=1, le=2**62)],
    service: ServiceDep,
    staff: ClinicalStaffDep,
) -> Response:
    """The photo itself; every view is written to the audit log first."""
    return await serve_photo(request, service, staff, patient_id, photo_id)


# ---------------------------------------------------------------- the patient (link token)


@router.get("/api/me/consent", response_model=MyConsentOut, responses=ERRORS, tags=["patients"])
async def my_consent(
    patient_id: PatientDep,
    service: ServiceDep,
    language: Annotated[str | None, Query(pattern=LANGUAGE_PATTERN)] = None,
) -> MyConsentOut:
    """My consent: is it valid, why not, and the text to sign (in ``language`` if it exists)."""
    clinic_id, _ = await _journey_row(service, patient_id)
    st = await service.status(patient_id)
    cp = await service.clinic(clinic_id)
    found = await service.db(consent.records(service.pool, patient_id, limit=1))
    text, languages = await service.db(
        consent.text_to_sign(service.pool, clinic_id, language, st.consent_required_version)
    )
    return MyConsentOut(
        consent_valid=st.consent_valid,
        signed_version=st.consent_version,
        required_version=st.consent_required_version,
        reason=consent.gate_reason(st, cp.clinic.consent_required, found[0] if found else None),
        text=ConsentTextOut.model_validate(text.model_dump()) if text else None,
        languages=languages,
    )


@router.post("/api/me/consent", response_model=ConsentOut, responses=ERRORS, tags=["patients"])
async def my_consent_sign(
    request: Request,
    body: SignIn,
    patient_id: PatientDep,
    service: ServiceDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> ConsentOut:
    """I sign the consent text shown to me (my typed name and the ticked box)."""
    await _journey_row(service, patient_id)
    record, result = await consent.sign(
        service,
        patient_id,
        text_id=body.text_id,
        typed_name=body.typed_name,
        confirmed=body.confirmed,
        address=request.client.host if request.client else "",
        request_id=idempotency_key,
    )
    return _consent_out(record.id, result)


@router.post(
    "/api/me/consent/withdraw", response_model=ConsentOut, responses=ERRORS, tags=["patients"]
)
async def my_consent_withdraw(
    body: WithdrawIn,
    patient_id: PatientDep,
    service: ServiceDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> ConsentOut:
    """I withdraw my consent: my journey pauses and the clinic is told."""
    await _journey_row(service, patient_id)
    record, result = await consent.withdraw(
        service, patient_id, reason=body.reason, actor="patient", request_id=idempotency_key
    )
    return _consent_out(record.id, result)


@router.post(
    "/api/me/satisfaction",
    response_model=SatisfactionOut,
    responses=ERRORS,
    tags=["patients"],
)
async def my_satisfaction(
    body: SatisfactionIn, patient_id: PatientDep, service: ServiceDep, settings: SettingsDep
) -> SatisfactionOut:
    """How satisfied I am with the course (1-5), asked before the review; once per course
    (a second answer keeps the first: ``new`` is false)."""
    _, course = await _journey_row(service, patient_id)
    row = await service.db(
        service.pool.fetchval(
            "SELECT stage FROM journeys WHERE workflow_id = $1", workflow_id(patient_id)
        )
    )
    if row not in outcomes.ASK_SATISFACTION_STAGES:
        raise InvalidRequest(
            "body.score",
            "not_now",
            "Satisfaction is asked once the sessions are done, before the review.",
        )
    sat, new = await service.db(
        outcomes.save_satisfaction(
            service.pool, patient_id, course, body.score, body.comment or None
        )
    )
    return SatisfactionOut(**sat.model_dump(), new=new)
