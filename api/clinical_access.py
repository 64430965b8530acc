"""Who may see and change the clinical record (issue 19 item 5): one small module, so the
permission table of issue 16 (``api/access/permissions.py``) can map these three checks to its
permissions later without touching the routes.

* ``clinical.view`` / ``clinical.write`` (:data:`CLINICAL_ROLES`): photos (view / upload) and
  outcomes (the clinician's grades, the patient's satisfaction): clinicians and admins.
* ``consent.manage`` (:data:`CONSENT_ADMIN_ROLES`): add a consent text version, mark a version
  required for a clinic: admins (and managers once issue 16 adds the role).
* ``consent.record`` (:data:`CONSENT_RECORD_ROLES`): record a paper consent or a withdrawal
  for a patient: every staff role (reception takes the signed paper at the desk).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Final, Literal

from fastapi import Depends, HTTPException, status

from activities.repository import StaffRow
from api.deps import StaffDep

__all__ = [
    "CLINICAL_ROLES",
    "CONSENT_ADMIN_ROLES",
    "CONSENT_RECORD_ROLES",
    "ClinicalPermission",
    "ClinicalStaffDep",
    "ClinicalWriterDep",
    "ConsentAdminDep",
    "ConsentRecorderDep",
    "may",
]

ClinicalPermission = Literal["clinical.view", "clinical.write", "consent.manage", "consent.record"]

CLINICAL_ROLES: Final[frozenset[str]] = frozenset({"clinician", "admin"})
CONSENT_ADMIN_ROLES: Final[frozenset[str]] = frozenset({"admin", "manager"})
CONSENT_RECORD_ROLES: Final[frozenset[str]] = frozenset(
    {"staff", "reception", "clinician", "manager", "admin"}
)
_ROLES: Final[dict[ClinicalPermission, frozenset[str]]] = {
    "clinical.view": CLINICAL_ROLES,
    "clinical.write": CLINICAL_ROLES,
    "consent.manage": CONSENT_ADMIN_ROLES,
    "consent.record": CONSENT_RECORD_ROLES,
}
_WHAT: Final[dict[ClinicalPermission, str]] = {
    "clinical.view": "Photos and outcomes are for clinicians and admins",
    "clinical.write": "Photos are added by clinicians and admins",
    "consent.manage": "Consent texts are managed by admins and managers",
    "consent.record": "Recording consent needs a staff member",
}


def may(staff: StaffRow, permission: ClinicalPermission) -> bool:
    """True when ``staff`` holds ``permission`` (by role; the pages use it to hide forms)."""
    return staff.role in _ROLES[permission]


def refusal_message(staff: StaffRow, permission: ClinicalPermission) -> str:
    """The sentence a refused member reads."""
    return f"{_WHAT[permission]}; you are {staff.role}."


def _require(permission: ClinicalPermission) -> Callable[[StaffRow], Awaitable[StaffRow]]:
    async def check(staff: StaffDep) -> StaffRow:
        if not may(staff, permission):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=[{"rule": "forbidden", "message": refusal_message(staff, permission)}],
            )
        return staff

    return check


ClinicalStaffDep = Annotated[StaffRow, Depends(_require("clinical.view"))]
ClinicalWriterDep = Annotated[StaffRow, Depends(_require("clinical.write"))]
ConsentAdminDep = Annotated[StaffRow, Depends(_require("consent.manage"))]
ConsentRecorderDep = Annotated[StaffRow, Depends(_require("consent.record"))]
