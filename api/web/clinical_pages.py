"""The clinical record on the web pages (issue 19): consent on the patient's page and the
journey page, the clinic's consent texts, photos side by side, outcomes at the review.

The journey page and the patient page (``api/web/routes.py``) add :func:`journey_context` /
:func:`patient_context` to what they render; their templates include ``_clinical_journey.html``
and ``_clinical_patient.html``. The forms post here; a refusal is shown next to its form on the
same page, as everywhere on the dashboard. Who may do what: :mod:`api.clinical_access`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from itertools import zip_longest
from typing import Any, Final
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from starlette.datastructures import FormData, UploadFile

from activities import repository
from activities.i18n import translator
from activities.repository import JourneyRow, StaffRow
from api import consent, outcomes, photos
from api.clinical_access import may, refusal_message
from api.routes.clinical import photo_limits, photo_store, serve_photo
from api.service import InvalidRequest, JourneyNotFound, RequestRefused, actor_for, staff_ref
from api.web import routes, views
from workflows.guards import CLOSED_STAGES
from workflows.ids import workflow_id
from workflows.messages import JourneyStatus
from workflows.protocol import ClinicProtocol
from workflows.reasons import Reason

__all__ = ["journey_context", "patient_context", "review_grades", "router"]

router = APIRouter(route_class=routes._PageRoute, include_in_schema=False)

STAFF_MESSAGES: Final[dict[str, str]] = {
    "consent_paper": "Paper consent recorded.",
    "consent_withdrawn": "Consent withdrawn: the journey is paused.",
    "photo": "Photo uploaded (metadata and location removed).",
    "consent_text": "Consent text version added.",
    "consent_required": "Version made required: the clinic's open journeys are being asked again.",
}
PATIENT_MESSAGES: Final[dict[str, str]] = {
    "consent": "Thank you: your consent is recorded. The clinic can now book your sessions.",
    "consent_withdrawn": "Your consent is withdrawn and your journey is paused. "
    "The clinic will contact you.",
    "satisfaction": "Thank you for telling us how satisfied you are.",
}


def _reasons(message: str, rule: str = "invalid_form") -> list[Reason]:
    return [Reason(rule=rule, message=message)]


def _when(at: datetime | None, tz: str) -> str:
    return views.format_local_datetime(at, tz) if at else ""


# ---------------------------------------------------------------- what the pages show


async def journey_context(
    request: Request,
    staff: StaffRow,
    row: JourneyRow,
    status: JourneyStatus | None,
    cp: ClinicProtocol,
) -> dict[str, Any]:
    """Consent, photos and outcomes for the journey page (photos and outcomes only for the
    roles that may see them)."""
    pool = routes._pool(request)
    tz = cp.clinic.timezone
    records = await consent.records(pool, row.patient_id, limit=5)
    texts = await consent.list_texts(pool, row.clinic_id)
    closed = row.stage in CLOSED_STAGES
    context: dict[str, Any] = {
        "consent_required": cp.clinic.consent_required,
        "consent_reason": consent.gate_reason(
            status, cp.clinic.consent_required, records[0] if records else None
        ),
        "consent_records": [{"r": r, "when": _when(r.signed_at, tz)} for r in records],
        "consent_versions": sorted({t.version for t in texts}, reverse=True),
        "may_record_consent": may(staff, "consent.record") and not closed,
        "may_manage_consent": may(staff, "consent.manage"),
        "may_see_clinical": may(staff, "clinical.view"),
        "clinical_message": STAFF_MESSAGES.get(request.query_params.get("msg") or ""),
        "grade_scales": {
            "global_improvement": outcomes.GLOBAL_IMPROVEMENT,
            "pore_visibility": outcomes.PORE_VISIBILITY,
        },
    }
    if not context["may_see_clinical"]:
        return context
    found = await photos.list_photos(pool, row.patient_id)
    baseline = [p for p in found if p.kind == "baseline"]
    review = [p for p in found if p.kind == "review"]
    paused_from = status.paused_from if status else None
    upload_kinds = [
        kind
        for kind in ("baseline", "review")
        if photos.kind_allowed_now(kind, row.stage, row.sessions_done, paused_from) is None
    ]

    def item(p: photos.PhotoRow | None) -> dict[str, Any] | None:
        if p is None:
            return None
        return {
            "p": p,
            "url": f"/photos/{row.patient_id}/{p.id}",
            "when": _when(p.uploaded_at, tz),
        }

    sat = await outcomes.get_satisfaction(pool, row.patient_id)
    context.update(
        {
            "photo_pairs": [
                (item(b), item(r)) for b, r in zip_longest(baseline, review, fillvalue=None)
            ],
            "photo_count": len(found),
            # Review photos may follow the recorded review (a completed journey).
            "upload_kinds": upload_kinds
            if may(staff, "clinical.write") and row.stage not in ("withdrawn", "excluded")
            else [],
            "photo_max_mb": photo_limits(request).max_bytes // (1024 * 1024),
            "photo_views": await photos.photo_views(pool, row.patient_id, limit=5),
            "review_outcome": await outcomes.review_outcome(pool, row.patient_id, status),
            "satisfaction": sat,
            "satisfaction_text": outcomes.SCORES.get(sat.score, "") if sat else "",
            "tz": tz,
        }
    )
    return context


async def patient_context(
    request: Request,
    token: str,
    patient_id: str,
    row: JourneyRow,
    status: JourneyStatus | None,
    cp: ClinicProtocol,
) -> dict[str, Any]:
    """Consent (why the journey waits, the text to sign, withdrawing) and the satisfaction
    question for the patient's page."""
    pool = routes._pool(request)
    records = await consent.records(pool, patient_id, limit=1)
    last = records[0] if records else None
    closed = row.stage in CLOSED_STAGES
    # The page's words in the patient's language; the text to sign in it too when the clinic
    # has one (docs/languages.md), unless the patient picked another.
    t = translator(await repository.patient_language(pool, patient_id))
    language = request.query_params.get("lang") or t.language.split("-")[0]
    text, languages = await consent.text_to_sign(
        pool, row.clinic_id, language, status.consent_required_version if status else None
    )
    valid = bool(status and status.consent_valid)
    wants_consent = cp.clinic.consent_required or bool(status and status.consent_required_version)
    sat = await outcomes.get_satisfaction(pool, patient_id, row.course_number)
    reason = consent.gate_reason(status, cp.clinic.consent_required, last)
    extra: dict[str, Any] = {}
    booked = bool(status and any(s.state == "booked" for s in status.sessions))
    if reason is not None and row.stage != "paused" and not booked:
        # The stage says "booked" while the journey waits for the signature: say what it is.
        extra["headline"] = t("page.headline.consent_needed")
    return {
        **extra,
        "consent_reason": reason,
        "consent_text": text,
        "consent_languages": languages,
        "consent_valid": valid,
        "consent_version": status.consent_version if status else None,
        "can_sign": not closed and not valid and text is not None and (wants_consent or last),
        "can_withdraw_consent": not closed and valid,
        "ask_satisfaction": row.stage in outcomes.ASK_SATISFACTION_STAGES and sat is None,
        "satisfaction": sat,
        "satisfaction_scores": {n: t(f"page.satisfaction.score.{n}") for n in outcomes.SCORES},
        "clinical_message": t(f"page.flash.{code}")
        if (code := request.query_params.get("msg") or "") in PATIENT_MESSAGES
        else None,
    }


def review_grades(form: FormData) -> dict[str, Any]:
    """The clinician's outcome from the review form (both grades 1-5, the adverse-events
    summary); an empty field is no answer.

    Raises:
        routes._FormError: a grade outside 1-5, a summary with control characters or too long.
    """
    grades: dict[str, Any] = {}
    for name, label in (
        ("global_improvement", "the global improvement grade"),
        ("pore_visibility", "the pore visibility grade"),
    ):
        grades[name] = (
            routes._int_field(form, name, label, maximum=5) if routes._field(form, name) else None
        )
    summary = routes._text(form, "adverse_events_summary", "the adverse-events summary", 500)
    grades["adverse_events_summary"] = summary or None
    return grades


# ---------------------------------------------------------------- the staff's forms


async def _staff_form(request: Request) -> tuple[StaffRow, FormData] | Response:
    form = await request.form()
    try:
        await routes._check_staff_csrf(request, form)
    except routes._Forbidden:
        if await routes._session_staff(request) is None:
            await routes._page_staff(request)  # to the login page
        return routes._error_page(request, 403, "Form expired", "Reload the page and try again.")
    return await routes._page_staff(request), form


def _form_values(form: FormData) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}


async def _refused(
    request: Request,
    staff: StaffRow,
    patient_id: str,
    form: FormData,
    key: str,
    reasons: list[Reason],
    status_code: int,
) -> Response:
    return await routes._journey_page(
        request,
        staff,
        patient_id,
        errors={key: reasons},
        values=_form_values(form),
        status_code=status_code,
    )


@router.post("/journeys/{patient_id}/consent/{action}")
async def staff_consent(request: Request, patient_id: str, action: str) -> Response:
    """A paper consent with its reference, or a withdrawal the patient told the clinic."""
    got = await _staff_form(request)
    if isinstance(got, Response):
        return got
    staff, form = got
    if action not in ("paper", "withdraw"):
        raise JourneyNotFound(patient_id)
    key = f"consent-{action}"
    service = routes._service(request)
    try:
        workflow_id(patient_id)
        if not may(staff, "consent.record"):
            raise RequestRefused(
                "Forbidden", _reasons(refusal_message(staff, "consent.record"), "role")
            )
        if action == "paper":
            version = routes._field(form, "version")
            if not version:
                raise routes._FormError("Choose the consent version that was signed.")
            reference = routes._required(form, "reference", "the paper's reference")
            if len(reference) > 200:
                raise routes._FormError("The reference must be at most 200 characters.")
            signed_on = routes._field(form, "signed_on")
            signed_at = None
            if signed_on:
                day = routes._date_field(signed_on, "the date it was signed")
                signed_at = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
            await consent.record_paper(
                service,
                patient_id,
                version=version[:64],
                reference=reference,
                signed_at=signed_at,
                actor=actor_for(staff),
                staff_id=staff.id,
                staff_name=staff.name,
                staff_ref=staff_ref(staff),
                request_id=routes._request_id(form),
            )
            code = "consent_paper"
        else:
            reason = routes._required(form, "reason", "a reason")
            await consent.withdraw(
                service,
                patient_id,
                reason=reason,
                actor=actor_for(staff),
                staff_id=staff.id,
                staff_name=staff.name,
                staff_ref=staff_ref(staff),
                request_id=routes._request_id(form),
            )
            code = "consent_withdrawn"
    except ValueError:
        raise JourneyNotFound(patient_id) from None
    except InvalidRequest as bad:
        return await _refused(
            request, staff, patient_id, form, key, _reasons(bad.message, bad.rule), 422
        )
    except RequestRefused as refused:
        return await _refused(request, staff, patient_id, form, key, refused.reasons, 409)
    except routes._FormError as bad:
        return await _refused(request, staff, patient_id, form, key, bad.reasons, 422)
    raise routes._Redirect(f"/journeys/{patient_id}?msg={code}#consent")


@router.post("/photos/{patient_id}")
async def upload_photo(request: Request, patient_id: str) -> Response:
    """A baseline or review photo from the journey page (multipart)."""
    got = await _staff_form(request)
    if isinstance(got, Response):
        return got
    staff, form = got
    try:
        workflow_id(patient_id)
    except ValueError:
        raise JourneyNotFound(patient_id) from None
    if not may(staff, "clinical.write"):
        return await _refused(
            request,
            staff,
            patient_id,
            form,
            "photo",
            _reasons(refusal_message(staff, "clinical.write"), "role"),
            403,
        )
    kind = routes._field(form, "kind")
    upload = form.get("photo")
    if kind not in ("baseline", "review"):
        return await _refused(
            request, staff, patient_id, form, "photo", _reasons("Choose the photo's kind."), 422
        )
    if not isinstance(upload, UploadFile):
        return await _refused(
            request, staff, patient_id, form, "photo", _reasons("Choose a photo to upload."), 422
        )
    limits = photo_limits(request)
    data = await upload.read(limits.max_bytes + 1)
    try:
        await photos.upload(
            routes._pool(request),
            photo_store(request),
            limits,
            patient_id=patient_id,
            kind="baseline" if kind == "baseline" else "review",
            data=data,
            declared_type=upload.content_type,
            note=None,
            staff=staff,
        )
    except LookupError:
        raise JourneyNotFound(patient_id) from None
    except photos.PhotoRefused as refused:
        return await _refused(
            request,
            staff,
            patient_id,
            form,
            "photo",
            _reasons(refused.message, refused.rule),
            refused.status_code,
        )
    raise routes._Redirect(f"/journeys/{patient_id}?msg=photo#photos")


@router.get("/photos/{patient_id}/{photo_id}")
async def view_photo(request: Request, patient_id: str, photo_id: str) -> Response:
    """A photo for the journey page: clinicians and admins; every view is logged first."""
    staff = await routes._page_staff(request)
    if not may(staff, "clinical.view"):
        return Response(status_code=403)
    try:
        number = int(photo_id)
    except ValueError:
        return Response(status_code=404)
    if not 1 <= number <= 2**62:
        return Response(status_code=404)
    return await serve_photo(request, routes._service(request), staff, patient_id, number)


# ---------------------------------------------------------------- the clinic's consent texts


@router.get("/clinics/{clinic_id}/consent")
async def consent_texts_page(request: Request, clinic_id: str) -> Response:
    """Every version of the clinic's consent texts, adding one, making one required (with the
    progress of asking the open journeys again)."""
    return await _consent_texts_page(request, clinic_id)


async def _consent_texts_page(
    request: Request,
    clinic_id: str,
    errors: Mapping[str, list[Reason]] | None = None,
    status_code: int = 200,
) -> Response:
    staff = await routes._page_staff(request)
    if not may(staff, "consent.manage"):
        return routes._error_page(
            request, 403, "Not allowed", refusal_message(staff, "consent.manage")
        )
    pool = routes._pool(request)
    cp = await pool.fetchval("SELECT name FROM clinics WHERE clinic_id = $1", clinic_id)
    if cp is None:
        return routes._error_page(request, 404, "No such clinic", "There is no clinic here.")
    texts = await consent.list_texts(pool, clinic_id)
    runs = await consent.list_requirements(pool, clinic_id)
    return routes._render(
        request,
        "clinic_consent.html",
        {
            "staff": staff,
            "page": "journeys",
            "clinic_id": clinic_id,
            "clinic_name": cp,
            "texts": texts,
            "versions": sorted({t.version for t in texts}, reverse=True),
            "required": await consent.required_version(pool, clinic_id),
            "runs": runs,
            "errors": errors or {},
            "message": STAFF_MESSAGES.get(request.query_params.get("msg") or ""),
            "values": _form_values(await request.form()) if request.method == "POST" else {},
        },
        status_code=status_code,
    )


@router.post("/clinics/{clinic_id}/consent/{action}")
async def consent_texts_action(request: Request, clinic_id: str, action: str) -> Response:
    """Add a text version, or make a version required."""
    got = await _staff_form(request)
    if isinstance(got, Response):
        return got
    staff, form = got
    if not may(staff, "consent.manage"):
        return routes._error_page(
            request, 403, "Not allowed", refusal_message(staff, "consent.manage")
        )
    if action not in ("texts", "require"):
        return routes._error_page(request, 404, "Not found", "There is nothing here.")
    service = routes._service(request)
    try:
        if action == "texts":
            language = routes._field(form, "language") or "en"
            version = routes._field(form, "version")
            title = routes._required(form, "title", "a title")
            body = routes._text(form, "body", "the text", 20_000)
            if not body:
                raise routes._FormError("Please fill in the text.")
            if not re.fullmatch(r"[a-z]{2,3}(-[A-Z]{2})?", language):
                raise routes._FormError("The language is a code such as en, de or pt-BR.")
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", version):
                raise routes._FormError(
                    "The version is letters, digits, dots, dashes (e.g. 2027-01 or v3)."
                )
            await consent.add_text(
                service.pool, clinic_id, language, version, title[:200], body, staff_ref(staff)
            )
            code = "consent_text"
        else:
            version = routes._field(form, "version")
            await consent.require_version(
                service,
                clinic_id,
                version[:64],
                actor=actor_for(staff),
                requested_by=staff_ref(staff),
                staff_ref=staff_ref(staff),
            )
            code = "consent_required"
    except InvalidRequest as bad:
        return await _consent_texts_page(
            request, clinic_id, errors={action: _reasons(bad.message, bad.rule)}, status_code=422
        )
    except routes._FormError as bad:
        return await _consent_texts_page(
            request, clinic_id, errors={action: bad.reasons}, status_code=422
        )
    raise routes._Redirect(f"/clinics/{quote(clinic_id, safe='')}/consent?msg={code}")


# ---------------------------------------------------------------- the patient's forms


@router.post("/p/{token}/clinical/{action}")
async def patient_clinical(request: Request, token: str, action: str) -> Response:
    """Sign the consent, withdraw it, or say how satisfied I am (the link's journey only)."""
    try:
        patient_id = routes._patient_id(request, token)
    except routes._LinkError as bad:
        return routes._link_error_page(request, str(bad))
    form = await request.form()
    try:
        routes._check_csrf(request, form)
    except routes._Forbidden:
        return routes._error_page(request, 403, "Form expired", "Reload the page and try again.")
    if action not in ("consent", "withdraw", "satisfaction"):
        return routes._error_page(request, 404, "Not found", "There is nothing here.")
    service = routes._service(request)
    pool = routes._pool(request)
    row = await pool.fetchrow(
        "SELECT stage, course_number FROM journeys WHERE workflow_id = $1",
        workflow_id(patient_id),
    )
    if row is None:
        raise JourneyNotFound(patient_id)
    try:
        if action == "consent":
            try:
                text_id = int(routes._field(form, "text_id"))
            except ValueError:
                raise routes._FormError("Please reload the page and sign again.") from None
            if routes._field(form, "confirm") != "yes":
                raise routes._FormError("Tick the box to confirm you have read and agree.")
            name = routes._required(form, "typed_name", "your full name")
            if len(name) > 200:
                raise routes._FormError("Your name must be at most 200 characters.")
            await consent.sign(
                service,
                patient_id,
                text_id=max(1, min(text_id, 2**62)),
                typed_name=name,
                confirmed=True,
                address=request.client.host if request.client else "",
                request_id=routes._request_id(form),
            )
            code = "consent"
        elif action == "withdraw":
            reason = routes._required(form, "reason", "a reason")
            await consent.withdraw(
                service,
                patient_id,
                reason=reason,
                actor="patient",
                request_id=routes._request_id(form),
            )
            code = "consent_withdrawn"
        else:
            if row["stage"] not in outcomes.ASK_SATISFACTION_STAGES:
                raise routes._FormError("We ask how satisfied you are once your sessions are done.")
            score = routes._int_field(form, "score", "how satisfied you are", maximum=5)
            comment = routes._text(form, "comment", "your comment", 1000) or None
            await outcomes.save_satisfaction(
                pool, patient_id, int(row["course_number"]), score, comment
            )
            code = "satisfaction"
    except InvalidRequest as bad:
        return await routes._patient_page(
            request,
            token,
            patient_id,
            errors={action: _reasons(bad.message, bad.rule)},
            status_code=422,
        )
    except RequestRefused as refused:
        return await routes._patient_page(
            request, token, patient_id, errors={action: refused.reasons}, status_code=409
        )
    except routes._FormError as bad:
        return await routes._patient_page(
            request, token, patient_id, errors={action: bad.reasons}, status_code=422
        )
    anchor = "satisfaction" if action == "satisfaction" else "consent"
    raise routes._Redirect(f"/p/{token}?msg={code}#{anchor}")
