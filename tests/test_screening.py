"""Screening outcomes per contraindication, precedence, overrides, flags and tasks."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflows.protocol import DEFAULT_PHOTOSENSITISING_DRUGS, Protocol, ScreeningRules
from workflows.screening import (
    CLINICIAN_OVERRIDE_TASK,
    ScreeningAnswers,
    reaction_is_prolonged,
    screen,
)

TODAY = date(2026, 10, 1)
P = Protocol()


def run(**answers: object) -> tuple[str, date | None, list[str]]:
    result = screen(ScreeningAnswers.model_validate(answers), TODAY, P)
    return result.outcome, result.until, [r.rule for r in result.reasons]


def run_by_clinician(**answers: object) -> tuple[str, date | None, list[str]]:
    result = screen(ScreeningAnswers.model_validate(answers), TODAY, P, by_clinician=True)
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
        ({"photosensitising_drugs": ["Tetracyclines"]}, "photosensitising_drug",
         "until a clinician sets the washout date"),
        ({"photosensitising_drugs": ["doxycycline"]}, "photosensitising_drug",
         "doxycycline (tetracyclines)"),
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
        by_clinician=True,
    )
    assert result.outcome == "eligible"
    assert [r.rule for r in result.reasons] == ["photosensitivity", "clinician_override"]
    assert "patch test passed" in result.reasons[1].message
    assert result.clinician_tasks == []
    deferred = screen(
        ScreeningAnswers(malignant_lesions=True, recent_tan=True, clinician_override_reason="ok"),
        TODAY,
        P,
        by_clinician=True,
    )
    assert deferred.outcome == "deferred"
    blank = screen(
        ScreeningAnswers(photosensitivity=True, clinician_override_reason=" "),
        TODAY,
        P,
        by_clinician=True,
    )
    assert blank.outcome == "excluded"
    unused = screen(
        ScreeningAnswers(clinician_override_reason="just in case"), TODAY, P, by_clinician=True
    )
    assert unused.outcome == "eligible" and unused.reasons == []


@pytest.mark.parametrize("exclusion", ["photosensitivity", "malignant_lesions"])
def test_only_a_clinician_may_override_an_exclusion(exclusion: str) -> None:
    answers = ScreeningAnswers.model_validate(
        {exclusion: True, "clinician_override_reason": "patch test passed"}
    )
    result = screen(answers, TODAY, P)  # by_clinician defaults to False
    assert result.outcome == "excluded"
    rules = [r.rule for r in result.reasons]
    assert "clinician_override" not in rules
    assert sorted(rules) == sorted([exclusion, "clinician_only"])
    only = next(r for r in result.reasons if r.rule == "clinician_only")
    assert "Only a clinician may override" in only.message
    assert result.clinician_tasks == [CLINICIAN_OVERRIDE_TASK]
    assert "overridden" not in " ".join(r.message for r in result.reasons)
    # the same answers from a clinician lift the exclusion
    assert screen(answers, TODAY, P, by_clinician=True).outcome == "eligible"


def test_only_a_clinician_may_set_a_drug_washout() -> None:
    answers = ScreeningAnswers(
        photosensitising_drugs=("doxycycline",), drug_washout_until=date(2026, 12, 1)
    )
    result = screen(answers, TODAY, P)
    assert (result.outcome, result.until) == ("deferred", None)
    assert [r.rule for r in result.reasons] == ["clinician_only", "photosensitising_drug"]
    assert "Only a clinician may set a drug washout date" in result.reasons[0].message
    assert "1 December 2026" in result.reasons[0].message
    assert result.clinician_tasks == [
        "confirm the drug washout date (1 December 2026) entered without a clinician",
        "set the washout date for doxycycline (tetracyclines)",
    ]
    by_clinician = screen(answers, TODAY, P, by_clinician=True)
    assert (by_clinician.outcome, by_clinician.until) == ("deferred", date(2026, 12, 1))
    assert [r.rule for r in by_clinician.reasons] == ["photosensitising_drug"]
    assert by_clinician.clinician_tasks == []
    # a past washout from a non-clinician does not end the deferral either
    over = ScreeningAnswers(photosensitising_drugs=("thiazides",), drug_washout_until=TODAY)
    assert screen(over, TODAY, P).outcome == "deferred"
    assert screen(over, TODAY, P, by_clinician=True).outcome == "eligible"
    # a washout date with no drug is still flagged, and changes nothing else
    alone = screen(ScreeningAnswers(drug_washout_until=date(2026, 12, 1)), TODAY, P)
    assert alone.outcome == "eligible"
    assert [r.rule for r in alone.reasons] == ["clinician_only"]


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
    assert run(photosensitising_drugs=["ST JOHN'S WORT"])[0:2] == ("deferred", None)
    assert run(photosensitising_drugs=["  Retinoids "])[2] == ["photosensitising_drug"]
    # the washout set by the clinician is over
    assert run_by_clinician(photosensitising_drugs=["thiazides"], drug_washout_until=TODAY) == (
        "eligible",
        None,
        [],
    )
    assert run_by_clinician(
        photosensitising_drugs=["nsaids"], drug_washout_until=date(2026, 12, 1)
    ) == (
        "deferred",
        date(2026, 12, 1),
        ["photosensitising_drug"],
    )
    # a known and an unknown drug: the unknown one needs a clinician
    outcome, until, rules = run(photosensitising_drugs=["nsaids", "amiodarone"])
    assert (outcome, until) == ("deferred", None)
    assert rules == ["photosensitising_drug", "photosensitising_drug"]
    # the clinician's date covers an unknown drug too
    assert run_by_clinician(
        photosensitising_drugs=["amiodarone"], drug_washout_until=date(2026, 11, 1)
    )[0:2] == ("deferred", date(2026, 11, 1))
    # the clinic's own list decides
    clinic = Protocol(screening=ScreeningRules(photosensitising_drugs=("amiodarone",)))
    result = screen(ScreeningAnswers(photosensitising_drugs=("Amiodarone",)), TODAY, clinic)
    assert (result.outcome, result.until) == ("deferred", None)
    assert "not on the clinic" not in result.reasons[0].message
    assert result.clinician_tasks == ["set the washout date for Amiodarone"]


def test_listed_drug_has_no_invented_washout() -> None:
    result = screen(ScreeningAnswers(photosensitising_drugs=("doxycycline",)), TODAY, P)
    assert (result.outcome, result.until) == ("deferred", None)
    assert [r.rule for r in result.reasons] == ["photosensitising_drug"]
    assert "doxycycline (tetracyclines)" in result.reasons[0].message
    assert "screen again on" not in result.reasons[0].message
    assert result.clinician_tasks == ["set the washout date for doxycycline (tetracyclines)"]
    # several listed drugs: one deferral, one task naming each with its class
    two = screen(
        ScreeningAnswers(photosensitising_drugs=("Ibuprofen", "ibuprofen ", "Tetracyclines")),
        TODAY,
        P,
    )
    assert two.clinician_tasks == ["set the washout date for Ibuprofen (nsaids), Tetracyclines"]
    # with dated deferrals too, until stays None: the washout has no date yet
    mixed = screen(
        ScreeningAnswers(recent_tan=True, photosensitising_drugs=("ciprofloxacin",)), TODAY, P
    )
    assert (mixed.outcome, mixed.until) == ("deferred", None)


def test_class_name_is_not_repeated_in_the_task() -> None:
    result = screen(ScreeningAnswers(photosensitising_drugs=("St John's Wort",)), TODAY, P)
    assert result.clinician_tasks == ["set the washout date for St John's Wort"]
    both = screen(
        ScreeningAnswers(photosensitising_drugs=("St John's Wort", "st johns  wort")), TODAY, P
    )
    assert both.clinician_tasks == result.clinician_tasks  # the same drug, counted once


def test_unknown_drug_adds_a_clinician_task() -> None:
    result = screen(ScreeningAnswers(photosensitising_drugs=("amiodarone",)), TODAY, P)
    assert result.clinician_tasks == [
        "decide whether amiodarone (not on the clinic's drug list) needs a washout"
    ]
    assert (
        screen(ScreeningAnswers(photosensitising_drugs=("isotretinoin",)), TODAY, P).until is None
    )


@pytest.mark.parametrize(
    ("drug", "drug_class"),
    [(name, cls) for cls, names in DEFAULT_PHOTOSENSITISING_DRUGS.items() for name in names],
)
def test_every_default_generic_name_defers_without_a_date(drug: str, drug_class: str) -> None:
    result = screen(ScreeningAnswers(photosensitising_drugs=(drug.title(),)), TODAY, P)
    assert (result.outcome, result.until) == ("deferred", None)
    assert result.clinician_tasks == [f"set the washout date for {drug.title()} ({drug_class})"]


@pytest.mark.parametrize(
    ("reaction", "day", "prolonged"),
    [
        ("none", 0, False),
        ("none", 30, False),
        ("expected", 1, False),
        ("expected", 7, False),  # recovery_days_max: still expected
        ("expected", 8, True),  # past it: prolonged whatever the label
        ("expected", 21, True),
        ("prolonged", 0, True),
        ("prolonged", 3, True),
        ("prolonged", 8, True),
    ],
)
def test_reaction_is_prolonged(reaction: str, day: int, prolonged: bool) -> None:
    assert reaction_is_prolonged(reaction, day, P) is prolonged


def test_reaction_is_prolonged_follows_the_protocol() -> None:
    short = Protocol(recovery_days_min=1, recovery_days_max=3, recovery_checkin_day=3)
    assert not reaction_is_prolonged("expected", 3, short)
    assert reaction_is_prolonged("expected", 4, short)
    assert not reaction_is_prolonged("expected", 9, Protocol(recovery_days_max=10))


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["none", "expected", "prolonged"]),
    st.integers(min_value=0, max_value=60),
    st.integers(min_value=1, max_value=30),
)
def test_reaction_is_prolonged_property(reaction: str, day: int, days_max: int) -> None:
    protocol = Protocol(recovery_days_min=0, recovery_days_max=days_max)
    expected = reaction == "prolonged" or (reaction != "none" and day > days_max)
    assert reaction_is_prolonged(reaction, day, protocol) is expected


ANSWERS = st.fixed_dictionaries(
    {},
    optional={
        "photosensitivity": st.booleans(),
        "malignant_lesions": st.booleans(),
        "recent_tan": st.booleans(),
        "open_wounds": st.booleans(),
        "photosensitising_drugs": st.lists(
            st.sampled_from(["doxycycline", "nsaids", "amiodarone", "St John's wort", " "]),
            max_size=3,
        ),
        "drug_washout_until": st.dates(min_value=date(2026, 1, 1), max_value=date(2027, 12, 31)),
        "clinician_override_reason": st.sampled_from(["patch test passed", " ", "ok"]),
    },
)


@settings(max_examples=300, deadline=None)
@given(ANSWERS)
def test_clinician_only_answers_change_nothing_without_a_clinician(
    raw: dict[str, object],
) -> None:
    answers = ScreeningAnswers.model_validate(raw)
    without = answers.model_copy(
        update={"drug_washout_until": None, "clinician_override_reason": None}
    )
    result = screen(answers, TODAY, P)
    baseline = screen(without, TODAY, P)
    assert (result.outcome, result.until) == (baseline.outcome, baseline.until)
    if answers.photosensitivity or answers.malignant_lesions:
        assert result.outcome == "excluded"
    assert "clinician_override" not in [r.rule for r in result.reasons]
    ignored = answers.drug_washout_until is not None or bool(
        (answers.clinician_override_reason or "").strip()
    )
    assert ("clinician_only" in [r.rule for r in result.reasons]) is ignored
    assert set(baseline.clinician_tasks) <= set(result.clinician_tasks)


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
