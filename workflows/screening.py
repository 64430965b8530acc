"""Screening: contraindications → eligible, deferred until a date, or excluded.

Outcome precedence: **excluded** beats **deferred** beats **eligible**.

Boundaries (defaults; ``today`` is the screening day in the clinic's zone):
    * open wounds → deferred until ``today + wound_deferral_days`` (14);
    * recent tan → ``today + tan_deferral_days`` (28);
    * active herpes / skin infection → ``today + infection_deferral_days`` (14);
    * isotretinoin → until ``add_months(last dose, isotretinoin_washout_months)`` (6); eligible
      on that day itself; with no last-dose date (still taking it) until
      ``add_months(today, isotretinoin_washout_months)``, the earliest it could end;
    * a photosensitising drug on the clinic's list (a class such as "tetracyclines" or one of
      its generic names such as "doxycycline") → until the clinician's ``drug_washout_until``;
      with no washout date → deferred with **no** date and the clinician task "set the washout
      date for doxycycline (tetracyclines)" (there is no default washout); a drug not on the
      list → deferred with no date (unless the clinician gave a washout), a clinician decides;
    * pregnancy → until the staff's ``pregnancy_recheck_on`` if it is after today, else no date;
    * other condition (free text) → deferred with no date, a clinician decides;
    * photosensitivity, malignant lesions → excluded, unless a clinician overrides with a reason.
A washout or re-check date on or before ``today`` means that contraindication is over.
The deferred ``until`` is the latest deferral date, or None if any deferral has no date (staff
or a clinician must decide; re-screening on a date would not resolve it).

Clinician-only answers: ``clinician_override_reason`` and ``drug_washout_until`` count only when
``screen(..., by_clinician=True)``. Otherwise each is ignored, with a reason ``clinician_only``
and a clinician task (the exclusion stays; a listed drug waits for a clinician's date).

Pure and deterministic; safe in the Temporal workflow sandbox.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.bounds import ClinicDate, bounded_tuple, safe_multiline_text, safe_text
from workflows.calendar import add_months
from workflows.protocol import Protocol, normalise_drug_name
from workflows.reasons import Reason, format_date

__all__ = ["ScreeningAnswers", "ScreeningResult", "reaction_is_prolonged", "screen"]

if TYPE_CHECKING:
    DrugNames = tuple[str, ...]
    FreeText = str
else:
    DrugNames = bounded_tuple(safe_text(100), 30)
    FreeText = safe_multiline_text(1000)

ANTIVIRAL_TASK = "antiviral prophylaxis before each session"
CONSERVATIVE_FLAG = "conservative_settings"
CLINICIAN_OVERRIDE_TASK = "review the exclusion override entered without a clinician"


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
        drug_washout_until: Washout end for those drugs; only a clinician may set it (it is
            ignored unless ``screen(..., by_clinician=True)``).
        fitzpatrick_type: Skin type 1–6; from ``conservative_fitzpatrick_from`` the
            ``conservative_settings`` flag is raised.
        cold_sore_history: History of herpes labialis (adds a clinician task).
        other_condition: Anything else (free text); a clinician decides.
        clinician_override_reason: A clinician's reason to override an exclusion (ignored
            unless ``screen(..., by_clinician=True)``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    pregnant: bool = False
    pregnancy_recheck_on: ClinicDate | None = None
    photosensitivity: bool = False
    open_wounds: bool = False
    recent_tan: bool = False
    active_infection: bool = False
    malignant_lesions: bool = False
    isotretinoin: bool = False
    isotretinoin_last_dose_on: ClinicDate | None = None
    photosensitising_drugs: DrugNames = ()
    drug_washout_until: ClinicDate | None = None
    fitzpatrick_type: int | None = Field(default=None, ge=1, le=6)
    cold_sore_history: bool = False
    other_condition: FreeText | None = None
    clinician_override_reason: FreeText | None = None


class ScreeningResult(BaseModel):
    """The outcome of a screening.

    Attributes:
        outcome: ``"excluded"`` beats ``"deferred"`` beats ``"eligible"``.
        until: Re-screen date when deferred (the first day the patient may be eligible); None
            when eligible or excluded, or when a deferral needs a date from staff or a clinician.
        reasons: One per contraindication found (rule codes ``pregnancy``,
            ``photosensitivity``, ``open_wounds``, ``recent_tan``, ``active_infection``,
            ``malignant_lesions``, ``isotretinoin``, ``photosensitising_drug``,
            ``other_condition``), plus ``clinician_override`` when an exclusion was overridden
            and ``clinician_only`` for each clinician-only answer given without a clinician.
        flags: e.g. ``"conservative_settings"``.
        clinician_tasks: e.g. ``"antiviral prophylaxis before each session"``, ``"set the
            washout date for doxycycline (tetracyclines)"``.
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


def _drug_label(given: str, drug_class: str | None) -> str:
    """``"doxycycline (tetracyclines)"``; just the name when it is the class itself."""
    if drug_class is None or normalise_drug_name(given) == drug_class:
        return given
    return f"{given} ({drug_class})"


def screen(
    answers: ScreeningAnswers,
    today: date,
    protocol: Protocol,
    *,
    by_clinician: bool = False,
) -> ScreeningResult:
    """Screen the answers on ``today`` with the clinic's protocol.

    Args:
        answers: The screening answers.
        today: The screening day, in the clinic's time zone.
        protocol: Numbers (deferral days, washouts, drug list, Fitzpatrick threshold).
        by_clinician: True only when a clinician gave (or confirmed) the answers. Without it,
            ``clinician_override_reason`` does not lift an exclusion and
            ``drug_washout_until`` is ignored; each adds a reason ``clinician_only`` and a
            clinician task.

    Returns:
        A :class:`ScreeningResult`; see the module docstring for every boundary.
    """
    rules = protocol.screening
    reasons: list[Reason] = []
    exclusions: list[Reason] = []
    deferrals: list[date | None] = []
    tasks: list[str] = [ANTIVIRAL_TASK] if answers.cold_sore_history else []

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
    if override is not None and not by_clinician:
        reasons.append(
            Reason(
                rule="clinician_only",
                message=(
                    "Only a clinician may override an exclusion, so the override reason given "
                    "here was not applied."
                ),
            )
        )
        tasks.append(CLINICIAN_OVERRIDE_TASK)
        override = None
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

    washout = answers.drug_washout_until
    if washout is not None and not by_clinician:
        reasons.append(
            Reason(
                rule="clinician_only",
                message=(
                    "Only a clinician may set a drug washout date, so the date given "
                    f"({format_date(washout)}) was not applied."
                ),
            )
        )
        tasks.append(
            f"confirm the drug washout date ({format_date(washout)}) entered without a clinician"
        )
        washout = None
    known: list[str] = []
    unknown: list[str] = []
    seen: set[str] = set()
    for drug in answers.photosensitising_drugs:
        name = drug.strip()
        key = normalise_drug_name(name)
        if not name or key in seen:
            continue
        seen.add(key)
        drug_class = rules.drug_class(name)
        (known if drug_class is not None else unknown).append(_drug_label(name, drug_class))
    if known:
        names = ", ".join(known)
        if washout is None:
            defer(
                "photosensitising_drug",
                f"The patient takes {names}, which make the skin sensitive to light: treatment "
                f"is deferred until a clinician sets the washout date.",
                None,
            )
            tasks.append(f"set the washout date for {names}")
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
        if washout is None:
            defer(
                "photosensitising_drug",
                f"The patient takes {names}, not on the clinic's list of light-sensitising "
                f"drugs: a clinician must decide whether and how long to wait.",
                None,
            )
            tasks.append(f"decide whether {names} (not on the clinic's drug list) needs a washout")
        elif washout > today:
            defer(
                "photosensitising_drug",
                f"The patient takes {names}, not on the clinic's list of light-sensitising "
                f"drugs; the clinician set a washout: screen again on {format_date(washout)}.",
                washout,
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

    if exclusions:
        return ScreeningResult(
            outcome="excluded", until=None, reasons=reasons, flags=flags, clinician_tasks=tasks
        )
    if deferrals:
        dated = [d for d in deferrals if d is not None]
        rescreen_on = max(dated) if len(dated) == len(deferrals) else None
        return ScreeningResult(
            outcome="deferred",
            until=rescreen_on,
            reasons=reasons,
            flags=flags,
            clinician_tasks=tasks,
        )
    return ScreeningResult(
        outcome="eligible", until=None, reasons=reasons, flags=flags, clinician_tasks=tasks
    )


def reaction_is_prolonged(reaction: str, day: int, protocol: Protocol) -> bool:
    """Whether a recovery reaction is prolonged (a clinician must see it).

    A reaction labelled ``"prolonged"`` always is. Any other reaction except ``"none"`` is
    prolonged when it is still present on a day after ``protocol.recovery_days_max`` (day 8 or
    later by default), whatever label the reporter chose: an "expected" redness on day 9 is not
    expected any more.

    Args:
        reaction: The reported reaction (``"none"``, ``"expected"`` or ``"prolonged"``).
        day: Days since the session (the session day is day 0).
        protocol: Gives ``recovery_days_max``.
    """
    if reaction == "prolonged":
        return True
    return reaction != "none" and day > protocol.recovery_days_max
