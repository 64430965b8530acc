"""Screening outcomes per contraindication, precedence, overrides, flags and tasks."""

from __future__ import annotations

from datetime import date

import pytest

from workflows.protocol import Protocol, ScreeningRules
from workflows.screening import ScreeningAnswers, screen

TODAY = date(2026, 10, 1)
P = Protocol()


def run(**answers: object) -> tuple[str, date | None, list[str]]:
    result = screen(ScreeningAnswers.model_validate(answers), TODAY, P)
    return result.outcome, result.until, [r.rule for r in result.reasons]


def test_no_answers_eligible() -> None:
    result = screen(ScreeningAnswers(), TODAY, P)
    assert result.outcome == "eligible"
    assert result.until is None
    assert result.reasons == result.flags == result.clinician_tasks == []


@pytest.mark.parametrize(
    ("answers", "until", "rule"),
    [
        ({"open_wounds": True}, date(2026, 10, 15), "open_wounds"),
        ({"recent_tan": True}, date(2026, 10, 29), "recent_tan"),
        ({"active_infection": True}, date(2026, 10, 15), "active_infection"),
        ({"pregnant": True, "pregnancy_recheck_on": date(2027, 9, 1)}, date(2027, 9, 1),
         "pregnancy"),
        ({"isotretinoin": True, "isotretinoin_last_dose_on": date(2026, 8, 31)},
         date(2027, 2, 28), "isotretinoin"),
        ({"isotretinoin": True}, date(2027, 4, 1), "isotretinoin"),
        ({"photosensitising_drugs": ["Tetracyclines"]}, date(2026, 10, 31),
         "photosensitising_drug"),
        ({"photosensitising_drugs": ["nsaids"], "drug_washout_until": date(2026, 12, 1)},
         date(2026, 12, 1), "photosensitising_drug"),
    ],
)  # fmt: skip
def test_dated_deferrals(answers: dict[str, object], until: date, rule: str) -> None:
    assert run(**answers) == ("deferred", until, [rule])


@pytest.mark.parametrize(
    ("answers", "rule", "words"),
    [
        ({"pregnant": True}, "pregnancy", "staff must give a date"),
        ({"pregnant": True, "pregnancy_recheck_on": TODAY}, "pregnancy", "staff must give"),
        ({"photosensitising_drugs": ["amiodarone"]}, "photosensitising_drug",
         "a clinician must decide"),
        ({"other_condition": "rosacea flare"}, "other_condition", "rosacea flare"),
    ],
)  # fmt: skip
def test_undated_deferrals(answers: dict[str, object], rule: str, words: str) -> None:
    result = screen(ScreeningAnswers.model_validate(answers), TODAY, P)
    assert result.outcome == "deferred"
    assert result.until is None
    assert [r.rule for r in result.reasons] == [rule]
    assert words in result.reasons[0].message


def test_blank_other_condition_ignored() -> None:
    assert run(other_condition="   ") == ("eligible", None, [])


def test_exclusions() -> None:
    assert run(photosensitivity=True) == ("excluded", None, ["photosensitivity"])
    result = screen(ScreeningAnswers(malignant_lesions=True), TODAY, P)
    assert result.outcome == "excluded"
    assert "refer the patient to a dermatologist" in result.reasons[0].message


def test_precedence_excluded_beats_deferred() -> None:
    outcome, until, rules = run(malignant_lesions=True, recent_tan=True, pregnant=True)
    assert outcome == "excluded"
    assert until is None
    assert set(rules) == {"malignant_lesions", "recent_tan", "pregnancy"}


def test_until_is_latest_deferral_and_none_if_any_undated() -> None:
    assert run(open_wounds=True, recent_tan=True) == (
        "deferred",
        date(2026, 10, 29),
        ["open_wounds", "recent_tan"],
    )
    outcome, until, _ = run(recent_tan=True, other_condition="eczema")
    assert (outcome, until) == ("deferred", None)


def test_clinician_override_of_exclusion() -> None:
    result = screen(
        ScreeningAnswers(photosensitivity=True, clinician_override_reason="patch test passed"),
        TODAY,
        P,
    )
    assert result.outcome == "eligible"
    assert [r.rule for r in result.reasons] == ["photosensitivity", "clinician_override"]
    assert "patch test passed" in result.reasons[1].message
    deferred = screen(
        ScreeningAnswers(malignant_lesions=True, recent_tan=True, clinician_override_reason="ok"),
        TODAY,
        P,
    )
    assert deferred.outcome == "deferred"
    blank = screen(ScreeningAnswers(photosensitivity=True, clinician_override_reason=" "), TODAY, P)
    assert blank.outcome == "excluded"
    unused = screen(ScreeningAnswers(clinician_override_reason="just in case"), TODAY, P)
    assert unused.outcome == "eligible" and unused.reasons == []


def test_isotretinoin_washout_boundary() -> None:
    # Last dose 1 April 2026 + 6 months = 1 October 2026 = today: eligible that day.
    assert run(isotretinoin=True, isotretinoin_last_dose_on=date(2026, 4, 1)) == (
        "eligible",
        None,
        [],
    )
    assert run(isotretinoin=True, isotretinoin_last_dose_on=date(2026, 4, 2)) == (
        "deferred",
        date(2026, 10, 2),
        ["isotretinoin"],
    )
    # a clinic with a 4-month washout
    looser = Protocol(screening=ScreeningRules(isotretinoin_washout_months=4))
    result = screen(
        ScreeningAnswers(isotretinoin=True, isotretinoin_last_dose_on=date(2026, 6, 30)),
        TODAY,
        looser,
    )
    assert result.until == date(2026, 10, 30)


def test_drug_matching_and_washout() -> None:
    assert run(photosensitising_drugs=["ST JOHN'S WORT"])[0:2] == ("deferred", date(2026, 10, 31))
    assert run(photosensitising_drugs=["  Retinoids "])[2] == ["photosensitising_drug"]
    # the washout set by the clinician is over
    assert run(photosensitising_drugs=["thiazides"], drug_washout_until=TODAY) == (
        "eligible",
        None,
        [],
    )
    # a known and an unknown drug: the unknown one needs a clinician
    outcome, until, rules = run(photosensitising_drugs=["nsaids", "amiodarone"])
    assert (outcome, until) == ("deferred", None)
    assert rules == ["photosensitising_drug", "photosensitising_drug"]
    # the clinician's date covers an unknown drug too
    assert run(photosensitising_drugs=["amiodarone"], drug_washout_until=date(2026, 11, 1))[
        0:2
    ] == ("deferred", date(2026, 11, 1))
    # the clinic's own list decides
    clinic = Protocol(screening=ScreeningRules(photosensitising_drugs=("amiodarone",)))
    result = screen(ScreeningAnswers(photosensitising_drugs=("Amiodarone",)), TODAY, clinic)
    assert result.until == date(2026, 10, 31)
    assert "not on the clinic" not in result.reasons[0].message


@pytest.mark.parametrize(("skin", "flagged"), [(None, False), (1, False), (3, False), (4, True),
                                               (6, True)])  # fmt: skip
def test_fitzpatrick_flag(skin: int | None, flagged: bool) -> None:
    result = screen(ScreeningAnswers(fitzpatrick_type=skin), TODAY, P)
    assert result.outcome == "eligible"
    assert (result.flags == ["conservative_settings"]) is flagged


def test_fitzpatrick_validated() -> None:
    with pytest.raises(ValueError):
        ScreeningAnswers(fitzpatrick_type=7)
    with pytest.raises(ValueError):
        ScreeningAnswers(fitzpatrick_type=0)


def test_cold_sores_add_task_never_exclude() -> None:
    result = screen(ScreeningAnswers(cold_sore_history=True, fitzpatrick_type=5), TODAY, P)
    assert result.outcome == "eligible"
    assert result.clinician_tasks == ["antiviral prophylaxis before each session"]
    assert result.flags == ["conservative_settings"]


def test_messages_have_concrete_dates() -> None:
    result = screen(ScreeningAnswers(recent_tan=True), TODAY, P)
    assert "29 October 2026" in result.reasons[0].message
