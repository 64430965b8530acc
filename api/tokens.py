"""Patient links: a signed, expiring token per journey, so a patient reaches their own journey only.

The token is an itsdangerous ``URLSafeTimedSerializer`` signature of the patient id (an opaque
id, never PHI) with ``JOURNEY_PATIENT_LINK_SECRET`` and a fixed salt, valid for
``JOURNEY_PATIENT_LINK_DAYS``. Nothing is stored: rotating the secret revokes every link.
"""

from __future__ import annotations

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from worker.settings import Settings
from workflows.ids import workflow_id

__all__ = [
    "PATIENT_LINK_SALT",
    "InvalidPatientToken",
    "PatientTokenExpired",
    "make_patient_token",
    "patient_link",
    "verify_patient_token",
]

# A salt per purpose: a token signed for another feature with the same secret never passes here.
PATIENT_LINK_SALT = "journey.patient-link.v1"


class InvalidPatientToken(ValueError):
    """The token is malformed, signed with another secret, or not a patient link."""


class PatientTokenExpired(InvalidPatientToken):
    """The token was valid but is older than ``journey_patient_link_days``."""


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(
        settings.journey_patient_link_secret.get_secret_value(), salt=PATIENT_LINK_SALT
    )


def make_patient_token(settings: Settings, patient_id: str) -> str:
    """A URL-safe token naming ``patient_id``, signed now.

    Raises:
        ValueError: ``patient_id`` is not an opaque id (see ``workflows.ids.workflow_id``).
    """
    workflow_id(patient_id)  # refuses anything that is not an opaque id
    return _serializer(settings).dumps({"p": patient_id})


def verify_patient_token(settings: Settings, token: str) -> str:
    """The patient id a token was made for.

    Raises:
        PatientTokenExpired: signed more than ``journey_patient_link_days`` ago.
        InvalidPatientToken: bad signature, wrong salt or secret, or an unexpected payload.
    """
    max_age = settings.journey_patient_link_days * 86_400
    try:
        payload = _serializer(settings).loads(token, max_age=max_age)
    except SignatureExpired:
        raise PatientTokenExpired("the patient link has expired") from None
    except BadSignature:
        raise InvalidPatientToken("the patient link is not valid") from None
    patient_id = payload.get("p") if isinstance(payload, dict) else None
    if not isinstance(patient_id, str):
        raise InvalidPatientToken("the patient link is not valid")
    try:
        workflow_id(patient_id)
    except ValueError:
        raise InvalidPatientToken("the patient link is not valid") from None
    return patient_id


def patient_link(settings: Settings, patient_id: str) -> str:
    """The link a patient opens: ``<JOURNEY_PUBLIC_URL>/p/<token>``."""
    base = settings.journey_public_url.rstrip("/")
    return f"{base}/p/{make_patient_token(settings, patient_id)}"
