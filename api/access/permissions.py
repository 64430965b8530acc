"""The one permission table (issue 16): which role may do what, and which permission every
route of the app needs.

* :data:`ROLE_PERMISSIONS`: reception, clinician, manager, admin. ``staff`` (the role of
  ``journey staff add`` before issue 16) is reception under its old name.
* :data:`ROUTE_PERMISSIONS`: ``(method, path template)`` → the permission the route needs, a
  :class:`ByAction` (a form route whose ``{action}`` decides), or :class:`Public` with the
  credential the route checks itself (a patient link, a webhook signature, a feed token...).
  ``api.access.enforce`` applies it to every request before the route runs; a route missing
  from the table is refused (403 ``no_permission_declared``) and ``tests/test_access_routes.py``
  fails on it.

Clinic scoping is not a permission: every principal carries its clinics (or all) and
``api.access.enforce`` refuses a patient outside them (404, as an unknown journey), while the
lists filter by them in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, get_args

__all__ = [
    "PERMISSIONS",
    "PERMISSION_LABELS",
    "REQUEST_PERMISSIONS",
    "ROLES",
    "ROLE_PERMISSIONS",
    "ROUTE_PERMISSIONS",
    "ByAction",
    "Permission",
    "Public",
    "Role",
    "permissions_of",
]

Role = Literal["reception", "clinician", "manager", "admin"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)

Permission = Literal[
    "journey.view",
    "journey.enrol",
    "journey.reschedule",
    "journey.pause",
    "journey.screening",
    "screening.override",
    "journey.pre_session_check",
    "journey.review",
    "journey.adverse_event",
    "anomaly.resolve",
    "reports.view",
    "export.read",
    "access_log.view",
    "staff.manage",
    "clinics.manage",
    "integrations.manage",
    "codec.use",
    "clinical.view",
    "clinical.write",
    "consent.manage",
    "consent.record",
    "scheduling.manage",
]
PERMISSIONS: Final[tuple[Permission, ...]] = get_args(Permission)

PERMISSION_LABELS: Final[dict[Permission, str]] = {
    "journey.view": "see journeys, patients and timelines",
    "journey.enrol": "enrol a patient, preview a plan, give calendar links",
    "journey.reschedule": "move a session, answer a patient's reply",
    "journey.pause": "pause, resume or withdraw a journey",
    "journey.screening": "submit screening answers (no overrides)",
    "screening.override": "override a screening exclusion, set washout dates",
    "journey.pre_session_check": "record a pre-session check",
    "journey.review": "record the 3-month review",
    "journey.adverse_event": "record an adverse event",
    "anomaly.resolve": "apply or dismiss a fact kept for staff",
    "reports.view": "reports (stuck journeys)",
    "export.read": "exports (FHIR reads and searches)",
    "access_log.view": "the access log and its CSV export",
    "staff.manage": "staff members and API tokens",
    "clinics.manage": "clinics and their protocols",
    "integrations.manage": "webhooks, external ids, clinic calendar feeds",
    "codec.use": "the payload codec (Temporal UI)",
    "clinical.view": "see the clinical record (photos, outcomes)",
    "clinical.write": "add to the clinical record",
    "consent.manage": "consent text versions and which one a clinic requires",
    "consent.record": "record a patient's paper consent or its withdrawal",
    "scheduling.manage": "the clinic's lasers, rooms, practitioners, hours, closures and slots",
}

_RECEPTION: Final[frozenset[Permission]] = frozenset(
    {
        "journey.view",
        "journey.enrol",
        "journey.reschedule",
        "journey.pause",
        "journey.screening",
        "consent.record",
    }
)
_CLINICAL: Final[frozenset[Permission]] = frozenset(
    {
        "screening.override",
        "journey.pre_session_check",
        "journey.review",
        "journey.adverse_event",
        "anomaly.resolve",
        "clinical.view",
        "clinical.write",
    }
)
_MANAGER: Final[frozenset[Permission]] = frozenset(
    {
        "journey.view",
        "reports.view",
        "export.read",
        "access_log.view",
        "consent.manage",
        "consent.record",
        "scheduling.manage",
    }
)
_ADMIN_ONLY: Final[frozenset[Permission]] = frozenset(
    {"staff.manage", "clinics.manage", "integrations.manage", "codec.use"}
)

# The table. A clinician does reception's work too (an intake by a clinician may carry the
# overrides); an admin may do everything except the clinical judgements in an intake
# (screening overrides and washout dates stay a clinician's, as before issue 16).
ROLE_PERMISSIONS: Final[dict[Role, frozenset[Permission]]] = {
    "reception": _RECEPTION,
    "clinician": _RECEPTION | _CLINICAL,
    "manager": _MANAGER,
    "admin": frozenset(PERMISSIONS) - {"screening.override"},
}


_BY_NAME: Final[dict[str, frozenset[Permission]]] = {
    "staff": ROLE_PERMISSIONS["reception"],
    **{str(role): found for role, found in ROLE_PERMISSIONS.items()},
}

# The journey's requests (workflows.guards.Request) → the permission a page form for it needs.
REQUEST_PERMISSIONS: Final[dict[str, Permission]] = {
    "submit_screening": "journey.screening",
    "pre_session_check": "journey.pre_session_check",
    "reschedule": "journey.reschedule",
    "pause": "journey.pause",
    "resume": "journey.pause",
    "withdraw": "journey.pause",
    "record_review": "journey.review",
    "resolve_anomaly": "anomaly.resolve",
    "record_consent": "consent.record",
    "require_consent": "consent.manage",
    "withdraw_consent": "consent.record",
}


def permissions_of(roles: frozenset[str] | set[str] | tuple[str, ...]) -> frozenset[Permission]:
    """Every permission of ``roles`` (``staff`` counts as ``reception``)."""
    found: set[Permission] = set()
    for role in roles:
        found |= _BY_NAME.get(role, frozenset())
    return frozenset(found)


@dataclass(frozen=True)
class Public:
    """A route without a staff permission: ``by`` names the credential it checks itself."""

    by: str


@dataclass(frozen=True)
class ByAction:
    """A form route whose ``{action}`` path parameter decides the permission; an action not
    listed needs ``default`` (the route itself refuses it, after its CSRF check)."""

    actions: dict[str, Permission]
    default: Permission = "journey.view"

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.actions.items())))


Rule = Permission | Public | ByAction

_PATIENT_LINK = Public("the patient's signed link token, scoped to their own journey")
_DOCS = Public("none: the API's own description")

ROUTE_PERMISSIONS: Final[dict[tuple[str, str], Rule]] = {
    # --- public: no staff credential
    ("GET", "/openapi.json"): _DOCS,
    ("GET", "/docs"): _DOCS,
    ("GET", "/docs/oauth2-redirect"): _DOCS,
    ("GET", "/redoc"): _DOCS,
    ("GET", "/healthz"): Public("none: liveness probe"),
    ("GET", "/readyz"): Public("none: readiness probe"),
    ("GET", "/static/web/{name}"): Public("none: stylesheet and script"),
    ("GET", "/login"): Public("none: the sign-in page"),
    ("POST", "/login"): Public("the pasted staff token (development and break-glass)"),
    ("POST", "/logout"): Public("the session cookie and its CSRF token"),
    ("GET", "/auth/oidc/login"): Public("none: starts the OpenID Connect sign-in"),
    ("GET", "/auth/oidc/callback"): Public("the provider's code, state and PKCE verifier"),
    ("POST", "/api/integrations/session-completed"): Public("the integration's signature"),
    ("POST", "/api/messaging/sms-status"): Public("the SMS provider's signature (auth token)"),
    ("POST", "/api/messaging/sms-reply"): Public("the SMS provider's signature (auth token)"),
    ("POST", "/api/messaging/email-reply"): Public(
        "the mail relay's signature (Standard Webhooks, MAIL_RELAY_SECRET)"
    ),
    ("POST", "/api/booking/{clinic_id}/events"): Public(
        "the clinic's booking system's signature (Standard Webhooks)"
    ),
    ("GET", "/api/me/journey"): _PATIENT_LINK,
    ("POST", "/api/me/reschedule"): _PATIENT_LINK,
    ("POST", "/api/me/spf-attestation"): _PATIENT_LINK,
    ("POST", "/api/me/reaction"): _PATIENT_LINK,
    ("GET", "/api/me/sessions/{session}.ics"): _PATIENT_LINK,
    ("POST", "/api/me/calendar-feeds"): _PATIENT_LINK,
    ("DELETE", "/api/me/calendar-feeds"): _PATIENT_LINK,
    ("GET", "/calendar/feeds/{token}.ics"): Public("the feed's own revocable token"),
    ("GET", "/p/{token}"): _PATIENT_LINK,
    ("POST", "/p/{token}/{action}"): _PATIENT_LINK,
    ("OPTIONS", "/codec/encode"): Public("none: CORS preflight"),
    ("OPTIONS", "/codec/decode"): Public("none: CORS preflight"),
    # --- staff API
    ("POST", "/api/journeys"): "journey.enrol",
    ("GET", "/api/journeys"): "journey.view",
    ("GET", "/api/journeys/{patient_id}"): "journey.view",
    ("POST", "/api/journeys/{patient_id}/pause"): "journey.pause",
    ("POST", "/api/journeys/{patient_id}/resume"): "journey.pause",
    ("POST", "/api/journeys/{patient_id}/withdraw"): "journey.pause",
    ("POST", "/api/journeys/{patient_id}/review"): "journey.review",
    ("POST", "/api/journeys/{patient_id}/screening"): "journey.screening",
    ("POST", "/api/journeys/{patient_id}/pre-session-check"): "journey.pre_session_check",
    ("POST", "/api/journeys/{patient_id}/reschedule"): "journey.reschedule",
    ("POST", "/api/journeys/{patient_id}/anomalies/{anomaly_id}/resolve"): "anomaly.resolve",
    ("POST", "/api/journeys/{patient_id}/replies/{reply_id}/answered"): "journey.reschedule",
    # The patient's language (docs/languages.md): whoever enrols may correct it.
    ("PUT", "/api/journeys/{patient_id}/language"): "journey.enrol",
    ("GET", "/api/admin/clinics/{clinic_id}/default-language"): "journey.view",
    ("PUT", "/api/admin/clinics/{clinic_id}/default-language"): "clinics.manage",
    ("POST", "/api/plans/preview"): "journey.enrol",
    ("GET", "/api/journeys/{patient_id}/sessions/{session}.ics"): "journey.view",
    ("POST", "/api/journeys/{patient_id}/calendar-feeds"): "journey.enrol",
    ("DELETE", "/api/journeys/{patient_id}/calendar-feeds"): "journey.enrol",
    ("POST", "/api/admin/clinics/{clinic_id}/calendar-feeds"): "integrations.manage",
    ("DELETE", "/api/admin/calendar-feeds/{feed_id}"): "integrations.manage",
    ("POST", "/api/admin/webhooks/subscribers"): "integrations.manage",
    ("GET", "/api/admin/webhooks/subscribers"): "integrations.manage",
    ("DELETE", "/api/admin/webhooks/subscribers/{subscriber_id}"): "integrations.manage",
    ("GET", "/api/admin/webhooks/deliveries"): "integrations.manage",
    ("POST", "/api/admin/webhooks/deliveries/{delivery_id}/replay"): "integrations.manage",
    ("POST", "/api/admin/webhooks/subscribers/{subscriber_id}/replay-dead"): (
        "integrations.manage"
    ),
    ("PUT", "/api/admin/external-ids"): "integrations.manage",
    # --- a clinic's own booking system (docs/booking-systems.md)
    ("PUT", "/api/booking/{clinic_id}/system"): "integrations.manage",
    ("GET", "/api/booking/{clinic_id}/system"): "integrations.manage",
    ("DELETE", "/api/booking/{clinic_id}/system"): "integrations.manage",
    ("PUT", "/api/booking/{clinic_id}/patients"): "integrations.manage",
    ("GET", "/api/booking/{clinic_id}/patients"): "integrations.manage",
    ("GET", "/api/booking/{clinic_id}/appointments"): "journey.view",
    ("GET", "/api/booking/{clinic_id}/events"): "integrations.manage",
    ("GET", "/api/admin/access-log"): "access_log.view",
    ("POST", "/codec/encode"): "codec.use",
    ("POST", "/codec/decode"): "codec.use",
    ("GET", "/fhir/R4/metadata"): "export.read",
    **{
        ("GET", f"/fhir/R4/{kind}{suffix}"): "export.read"
        for kind in (
            "Patient",
            "CarePlan",
            "Appointment",
            "Procedure",
            "QuestionnaireResponse",
            "Flag",
        )
        for suffix in ("", "/{rid}")
    },
    # --- the dashboard
    ("GET", "/"): "journey.view",
    ("GET", "/stuck"): "reports.view",
    ("GET", "/live"): "journey.view",
    ("GET", "/journeys"): "journey.view",
    ("GET", "/journeys/{patient_id}"): "journey.view",
    ("POST", "/journeys/{patient_id}/{action}"): ByAction(
        {
            "pause": "journey.pause",
            "resume": "journey.pause",
            "withdraw": "journey.pause",
            "reschedule": "journey.reschedule",
            "review": "journey.review",
            "pre-session-check": "journey.pre_session_check",
            "resolve-anomaly": "anomaly.resolve",
            "answer-reply": "journey.reschedule",
            "language": "journey.enrol",  # the patient's language (docs/languages.md)
        }
    ),
    ("GET", "/access-log"): "access_log.view",
    ("GET", "/access-log.csv"): "access_log.view",
    # --- reports (docs/reports.md)
    ("GET", "/reports"): "reports.view",
    ("GET", "/reports/{name}.csv"): "export.read",
    ("GET", "/reports/export/{name}.csv"): "export.read",
    # --- the clinical record (issue 19: consent, photos, outcomes)
    ("GET", "/api/clinics/{clinic_id}/consent-texts"): "consent.record",
    ("POST", "/api/clinics/{clinic_id}/consent-texts"): "consent.manage",
    ("POST", "/api/clinics/{clinic_id}/consent-texts/{version}/require"): "consent.manage",
    ("GET", "/api/clinics/{clinic_id}/consent-requirements/{run_id}"): "consent.manage",
    ("GET", "/api/journeys/{patient_id}/consent"): "consent.record",
    ("POST", "/api/journeys/{patient_id}/consent/paper"): "consent.record",
    ("POST", "/api/journeys/{patient_id}/consent/withdraw"): "consent.record",
    ("GET", "/api/journeys/{patient_id}/outcome"): "clinical.view",
    ("GET", "/api/journeys/{patient_id}/photos"): "clinical.view",
    ("GET", "/api/journeys/{patient_id}/photos/{photo_id}"): "clinical.view",
    ("POST", "/api/photos/{patient_id}"): "clinical.write",
    ("GET", "/api/me/consent"): _PATIENT_LINK,
    ("POST", "/api/me/consent"): _PATIENT_LINK,
    ("POST", "/api/me/consent/withdraw"): _PATIENT_LINK,
    ("POST", "/api/me/satisfaction"): _PATIENT_LINK,
    ("GET", "/clinics/{clinic_id}/consent"): "consent.manage",
    ("POST", "/clinics/{clinic_id}/consent/{action}"): "consent.manage",
    ("GET", "/clinics/{clinic_id}/messaging"): "journey.view",  # issue 18: deliveries, opt-outs
    ("POST", "/journeys/{patient_id}/consent/{action}"): "consent.record",
    ("POST", "/photos/{patient_id}"): "clinical.write",
    ("GET", "/photos/{patient_id}/{photo_id}"): "clinical.view",
    ("POST", "/p/{token}/clinical/{action}"): _PATIENT_LINK,
    # --- built-in scheduling (docs/scheduling.md)
    ("GET", "/api/clinics/{clinic_id}/scheduling"): "journey.view",
    ("PUT", "/api/clinics/{clinic_id}/scheduling/rules"): "scheduling.manage",
    ("PUT", "/api/clinics/{clinic_id}/scheduling/hours"): "scheduling.manage",
    ("PUT", "/api/clinics/{clinic_id}/scheduling/resources/{resource_id}"): "scheduling.manage",
    ("DELETE", "/api/clinics/{clinic_id}/scheduling/resources/{resource_id}"): (
        "scheduling.manage"
    ),
    ("POST", "/api/clinics/{clinic_id}/scheduling/closures"): "scheduling.manage",
    ("DELETE", "/api/clinics/{clinic_id}/scheduling/closures/{closure_id}"): "scheduling.manage",
    ("GET", "/api/journeys/{patient_id}/sessions/{session}/free-times"): "journey.view",
    ("GET", "/api/journeys/{patient_id}/scheduling-preferences"): "journey.view",
    ("PUT", "/api/journeys/{patient_id}/scheduling-preferences"): "journey.reschedule",
    ("GET", "/api/me/sessions/{session}/free-times"): _PATIENT_LINK,
}
