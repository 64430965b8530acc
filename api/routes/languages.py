"""The patient's language (issue 18 item 4; docs/languages.md).

* ``PUT /api/journeys/{patient_id}/language``: staff change a patient's language; messages not
  sent yet, the patient's page and calendar invitations follow at once.
* ``GET``/``PUT /api/admin/clinics/{clinic_id}/default-language``: the language a clinic's new
  patients get when the enrolment names none (English until set).

A language outside the list (``activities.i18n.LANGUAGES``) is a 422 naming the field.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path

from activities import repository
from api import schemas
from api.deps import PatientIdPath, ServiceDep
from api.service import JourneyNotFound

router = APIRouter(tags=["languages"])

CLINIC_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"

ClinicPath = Annotated[str, Path(min_length=1, max_length=64, pattern=CLINIC_ID_PATTERN)]
ERRORS: dict[int | str, dict[str, object]] = {
    401: {"model": schemas.ErrorBody, "description": "Missing or bad staff token."},
    403: {"model": schemas.ErrorBody, "description": "Token outside its scope or role."},
    404: {"model": schemas.ErrorBody, "description": "Unknown patient or clinic."},
    422: {"model": schemas.ErrorBody, "description": "Not a language we have (en, de, …)."},
    503: {"model": schemas.ErrorBody, "description": "PostgreSQL down; retry."},
}


def _no_clinic(clinic_id: str) -> HTTPException:
    return HTTPException(
        404, detail=[{"rule": "unknown_clinic", "message": f"No clinic {clinic_id!r}."}]
    )


@router.put(
    "/api/journeys/{patient_id}/language",
    response_model=schemas.PatientLanguageOut,
    responses=ERRORS,
)
async def set_patient_language(
    patient_id: PatientIdPath, body: schemas.LanguageIn, service: ServiceDep
) -> schemas.PatientLanguageOut:
    """Change the patient's language (messages, page, calendar)."""
    row = await service.db(repository.set_patient_language(service.pool, patient_id, body.language))
    if row is None:
        raise JourneyNotFound(patient_id)
    return schemas.PatientLanguageOut(patient_id=row.patient_id, language=row.language)


@router.get(
    "/api/admin/clinics/{clinic_id}/default-language",
    response_model=schemas.ClinicLanguageOut,
    responses=ERRORS,
)
async def get_clinic_language(
    clinic_id: ClinicPath, service: ServiceDep
) -> schemas.ClinicLanguageOut:
    """The language the clinic's new patients get when the enrolment names none."""
    found = await service.db(repository.clinic_default_language(service.pool, clinic_id))
    if found is None:
        raise _no_clinic(clinic_id)
    return schemas.ClinicLanguageOut(clinic_id=clinic_id, default_language=found)


@router.put(
    "/api/admin/clinics/{clinic_id}/default-language",
    response_model=schemas.ClinicLanguageOut,
    responses=ERRORS,
)
async def set_clinic_language(
    clinic_id: ClinicPath, body: schemas.LanguageIn, service: ServiceDep
) -> schemas.ClinicLanguageOut:
    """Set the language the clinic's new patients get (enrolled patients keep theirs)."""
    changed = await service.db(
        repository.set_clinic_default_language(service.pool, clinic_id, body.language)
    )
    if not changed:
        raise _no_clinic(clinic_id)
    return schemas.ClinicLanguageOut(clinic_id=clinic_id, default_language=body.language)
