"""Screening: contraindications → eligible, deferred until a date, or excluded.

Outcome precedence: **excluded** beats **deferred** beats **eligible**.

Boundaries (defaults; ``today`` is the screening day in the clinic's zone):
    * open wounds → deferred until ``today + wound_deferral_days`` (14);
    * recent tan → ``today + tan_deferral_days`` (28);
    * active herpes / skin infection → ``today + infection_deferral_days`` (14);
    * isotretinoin → until ``add_months(last dose, isotretinoin_washout_months)`` (6); eligible
      on that day itself; with no last-dose date (still taking it) until
      ``add_months(today, isotretinoin_washout_months)``, the earliest it could end;
    * a listed photosensitising drug → until the clinician's ``drug_washout_until``, or
      ``today + photosensitising_drug_washout_days`` (30) when none is given; a drug not on the
      clinic's list → deferred with no date, a clinician decides;
    * pregnancy → until the staff's ``pregnancy_recheck_on`` if it is after today, else no date;
    * other condition (free text) → deferred with no date, a clinician decides;
    * photosensitivity, malignant lesions → excluded, unless a clinician overrides with a reason.
A washout or re-check date on or before ``today`` means that contraindication is over.
The deferred ``until`` is the latest deferral date, or None if any deferral has no date (staff
or a clinician must decide; re-screening on a date would not resolve it).

Pure and deterministic; safe in the Temporal workflow sandbox.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.calendar import add_months
from workflows.protocol import Protocol
from workflows.reasons import Reason, format_date

__all__ = ["ScreeningAnswers", "ScreeningResult", "screen"]

ANTIVIRAL_TASK = "antiviral prophylaxis before each session"
CONSERVATIVE_FLAG = "conservative_settings"


class ScreeningAnswers(BaseModel):
    """Answers to the screening questions (intake or pre-session check); all default to "no".

    Attributes:
        pregnant: Pregnant or breastfeeding.
        pregnancy_recheck_on: Date given by staff to screen again after pregnancy/breastfeeding.
        photosensitivity: Known photosensitivity (excludes).
        open_wounds: Open wounds in the treatment area.
        recent_tan: Tan from recent sun or solarium.
        active_infection: Active herpes or another skin infection in the area.
        malignant_lesions: Malignant skin lesions (excludes; refer to a dermatologist).
        isotretinoin: Takes or took isotretinoin.
        isotretinoin_last_dose_on: Date of the last dose, if stopped.
        photosensitising_drugs: Systemic drugs that raise photosensitivity (free names).
        drug_washout_until: Washout end set by the clinician for those drugs.
        fitzpatrick_type: Skin type 1–6; from ``conservative_fitzpatrick_from`` the
            ``conservative_settings`` flag is raised.
        cold_sore_history: History of herpes labialis (adds a clinician task).
        other_condition: Anything else (free text); a clinician decides.
        clinician_override_reason: A clinician's reason to override an exclusion.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    pregnant: bool = False
    pregnancy_recheck_on: date | None = None
    photosensitivity: bool = False
    open_wounds: bool = False
    recent_tan: bool = False
    active_infection: bool = False
    malignant_lesions: bool = False
    isotretinoin: bool = False
    isotretinoin_last_dose_on: date | None = None
    photosensitising_drugs: tuple[str, ...] = ()
    drug_washout_until: date | None = None
    fitzpatrick_type: int | None = Field(default=None, ge=1, le=6)
    cold_sore_history: bool = False
    other_condition: str | None = None
    clinician_override_reason: str | None = None


class ScreeningResult(BaseModel):
    """The outcome of a screening.

    Attributes:
        outcome: ``"excluded"`` beats ``"deferred"`` beats ``"eligible"``.
        until: Re-screen date when deferred (the first day the patient may be eligible); None
            when eligible or excluded, or when a deferral needs a date from staff or a clinician.
        reasons: One per contraindication found (rule codes ``pregnancy``,
            ``photosensitivity``, ``open_wounds``, ``recent_tan``, ``active_infection``,
            ``malignant_lesions``, ``isotretinoin``, ``photosensitising_drug``,
            ``other_condition``), plus ``clinician_override`` when an exclusion was overridden.
        flags: e.g. ``"conservative_settings"``.
        clinician_tasks: e.g. ``"antiviral prophylaxis before each session"``.
    """

    model_config = ConfigDict(frozen=True)

    outcome: Literal["eligible", "deferred", "excluded"]
    until: date | None = None
    reasons: list[Reason] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list)
    clinician_tasks: list[str] = Field(default_factory=list)


def _text(value: str | None) -> str | None:
    """Stripped text, or None if empty."""
    if value is None:
        return None
    stripped = value.strip()
    return stripped or None


def screen(answers: ScreeningAnswers, today: date, protocol: Protocol) -> ScreeningResult:
    """Screen the answers on ``today`` with the clinic's protocol.

    Args:
        answers: The screening answers.
        today: The screening day, in the clinic's time zone.
        protocol: Numbers (deferral days, washouts, drug list, Fitzpatrick threshold).

    Returns:
        A :class:`ScreeningResult`; see the module docstring for every boundary.
    """
    rules = protocol.screening
    reasons: list[Reason] = []
    exclusions: list[Reason] = []
    deferrals: list[date | None] = []

    def defer(rule: str, message: str, until: date | None) -> None:
        reasons.append(Reason(rule=rule, message=message))
        deferrals.append(until)

    def defer_days(rule: str, what: str, days: int) -> None:
        until = today + timedelta(days=days)
        defer(
            rule,
            f"{what}: treatment is deferred for {days} days; screen again on {format_date(until)}.",
            until,
        )

    # Exclusions.
    if answers.photosensitivity:
        exclusions.append(
            Reason(
                rule="photosensitivity",
                message="The patient is photosensitive, so laser treatment is not possible.",
            )
        )
    if answers.malignant_lesions:
        exclusions.append(
            Reason(
                rule="malignant_lesions",
                message=(
                    "The patient has malignant skin lesions, so laser treatment is not possible; "
                    "refer the patient to a dermatologist."
                ),
            )
        )
    override = _text(answers.clinician_override_reason)
    if exclusions and override is not None:
        reasons.extend(
            Reason(rule=r.rule, message=f"{r.message} A clinician has overridden this.")
            for r in exclusions
        )
        reasons.append(
            Reason(
                rule="clinician_override",
                message=f"A clinician overrode the exclusion, with this reason: {override}",
            )
        )
        exclusions = []
    else:
        reasons.extend(exclusions)

    # Deferrals.
    if answers.pregnant:
        recheck = answers.pregnancy_recheck_on
        if recheck is not None and recheck > today:
            defer(
                "pregnancy",
                "The patient is pregnant or breastfeeding: treatment is deferred; screen again "
                f"on {format_date(recheck)}, the date given by staff.",
                recheck,
            )
        else:
            defer(
                "pregnancy",
                "The patient is pregnant or breastfeeding: treatment is deferred; staff must "
                "give a date (after pregnancy and breastfeeding) to screen again.",
                None,
            )
    if answers.open_wounds:
        defer_days("open_wounds", "Open wounds in the area", rules.wound_deferral_days)
    if answers.recent_tan:
        defer_days("recent_tan", "A recent tan", rules.tan_deferral_days)
    if answers.active_infection:
        defer_days(
            "active_infection",
            "Active herpes or another skin infection in the area",
            rules.infection_deferral_days,
        )
    if answers.isotretinoin:
        months = rules.isotretinoin_washout_months
        last_dose = answers.isotretinoin_last_dose_on
        if last_dose is None:
            until = add_months(today, months)
            defer(
                "isotretinoin",
                f"The patient still takes isotretinoin: treatment waits {months} months after "
                f"the last dose; screen again no earlier than {format_date(until)}.",
                until,
            )
        else:
            until = add_months(last_dose, months)
            if until > today:
                defer(
                    "isotretinoin",
                    f"The last isotretinoin dose was on {format_date(last_dose)}: treatment "
                    f"waits {months} months; screen again on {format_date(until)}.",
                    until,
                )
    known: list[str] = []
    unknown: list[str] = []
    for drug in answers.photosensitising_drugs:
        if not drug.strip():
            continue
        (known if rules.is_photosensitising(drug) else unknown).append(drug.strip())
    washout = answers.drug_washout_until
    if known:
        names = ", ".join(known)
        if washout is None:
            until = today + timedelta(days=rules.photosensitising_drug_washout_days)
            defer(
                "photosensitising_drug",
                f"The patient takes {names}, which make the skin sensitive to light: treatment "
                f"is deferred for the clinic's {rules.photosensitising_drug_washout_days}-day "
                f"washout; screen again on {format_date(until)} (a clinician may set another "
                f"date).",
                until,
            )
        elif washout > today:
            defer(
                "photosensitising_drug",
                f"The patient takes {names}, which make the skin sensitive to light: treatment "
                f"is deferred until the washout set by the clinician ends; screen again on "
                f"{format_date(washout)}.",
                washout,
            )
    if unknown:
        names = ", ".join(unknown)
        if washout is not None and washout > today:
            defer(
                "photosensitising_drug",
                f"The patient takes {names}, not on the clinic's list of light-sensitising "
                f"drugs; the clinician set a washout: screen again on {format_date(washout)}.",
                washout,
            )
        elif washout is None:
            defer(
                "photosensitising_drug",
                f"The patient takes {names}, not on the clinic's list of light-sensitising "
                f"drugs: a clinician must decide whether and how long to wait.",
                None,
            )
    other = _text(answers.other_condition)
    if other is not None:
        defer(
            "other_condition",
            f"Other condition reported ({other}): a clinician must decide before treatment.",
            None,
        )

    flags: list[str] = []
    fitzpatrick = answers.fitzpatrick_type
    if fitzpatrick is not None and fitzpatrick >= rules.conservative_fitzpatrick_from:
        flags.append(CONSERVATIVE_FLAG)
    tasks = [ANTIVIRAL_TASK] if answers.cold_sore_history else []

    if exclusions:
        return ScreeningResult(
            outcome="excluded", until=None, reasons=reasons, flags=flags, clinician_tasks=tasks
        )
    if deferrals:
        dated = [d for d in deferrals if d is not None]
        until = max(dated) if len(dated) == len(deferrals) else None
        return ScreeningResult(
            outcome="deferred", until=until, reasons=reasons, flags=flags, clinician_tasks=tasks
        )
    return ScreeningResult(
        outcome="eligible", until=None, reasons=reasons, flags=flags, clinician_tasks=tasks
    )
