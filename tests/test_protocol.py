"""Protocol model, clinic settings and the clinic file loader."""

from __future__ import annotations

import json
from datetime import date, time
from pathlib import Path

import pytest
from pydantic import ValidationError

from workflows.protocol import (
    DEFAULT_PHOTOSENSITISING_DRUGS,
    ClinicProtocol,
    ClinicSettings,
    DateRange,
    Protocol,
    ProtocolFileError,
    ScreeningRules,
    clinic_protocol_from_dict,
    load_clinic_protocol,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_defaults_match_domain() -> None:
    p = Protocol()
    assert p.version == "pore-2026.1"
    assert p.sessions_by_grade == {"small": 3, "moderate": 3, "large": 4}
    assert (p.min_interval_days, p.target_interval_min_days, p.target_interval_max_days) == (
        21,
        21,
        28,
    )
    assert (p.conservative_interval_min_days, p.conservative_interval_max_days) == (28, 42)
    assert (p.session_minutes_min, p.session_minutes_max, p.numbing_lead_minutes) == (20, 30, 20)
    assert (p.recovery_days_min, p.recovery_days_max, p.recovery_checkin_day) == (5, 7, 7)
    assert (p.spf_months, p.review_months) == (2, 3)
    assert (p.summer_buffer_days, p.trip_buffer_days) == (30, 30)
    assert (p.no_show_grace_hours, p.reminder_lead_hours) == (12, 24)
    assert (p.spf_reminder_interval_days, p.review_overdue_days, p.checkin_overdue_days) == (
        14,
        14,
        2,
    )
    assert p.max_sessions_per_course == 6
    s = p.screening
    assert (s.wound_deferral_days, s.tan_deferral_days, s.infection_deferral_days) == (14, 28, 14)
    assert s.isotretinoin_washout_months == 6
    assert set(s.photosensitising_drugs) == {
        "tetracyclines",
        "fluoroquinolones",
        "sulfonamides",
        "thiazides",
        "nsaids",
        "retinoids",
        "st johns wort",
    }
    assert (p.review_early_days, p.spf_factor, p.completion_clock_skew_minutes) == (3, 50, 10)
    assert s.conservative_fitzpatrick_from == 4


def test_sessions_for_known_and_unknown_grade() -> None:
    p = Protocol()
    assert p.sessions_for("small") == 3
    assert p.sessions_for("moderate") == 3
    assert p.sessions_for("large") == 4
    with pytest.raises(ValueError, match="known grades: small, moderate, large"):
        p.sessions_for("huge")


def test_interval_bounds() -> None:
    p = Protocol()
    assert p.interval_bounds() == (21, 21, 28)
    assert p.interval_bounds(conservative=True) == (28, 28, 42)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"min_interval_days": 0}, "greater than or equal to 1"),
        ({"target_interval_min_days": 29}, "must not exceed target_interval_max_days"),
        ({"min_interval_days": 22}, "min_interval_days (22) must not exceed target_interval_min"),
        ({"conservative_interval_min_days": 43}, "must not exceed conservative_interval_max"),
        ({"sessions_by_grade": {"small": 3, "large": 4}}, "missing: moderate"),
        ({"sessions_by_grade": {"small": 0, "moderate": 3, "large": 4}}, "at least 1"),
        ({"sessions_by_grade": {"small": 3, "moderate": 3, "large": 7}}, "max_sessions_per"),
        ({"spf_months": 0}, "greater than or equal to 1"),
        ({"review_months": 0}, "greater than or equal to 1"),
        ({"session_minutes_min": 40}, "session_minutes_min (40) must not exceed"),
        ({"recovery_days_min": 8}, "recovery_days_min (8) must not exceed"),
        ({"unknown_key": 1}, "Extra inputs"),
    ],
)
def test_protocol_validators(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        Protocol.model_validate(changes)
    assert message in str(info.value)


def test_min_interval_equal_to_target_min_is_allowed() -> None:
    assert Protocol(min_interval_days=21, target_interval_min_days=21).min_interval_days == 21


def test_screening_rules_validate_and_normalise_drugs() -> None:
    rules = ScreeningRules(photosensitising_drugs={"St John's  Wort": ("Hypericum",), "NSAIDs": ()})
    assert rules.photosensitising_drugs == {"st johns wort": ("hypericum",), "nsaids": ()}
    assert rules.is_photosensitising("ST. JOHN'S WORT".replace(".", ""))
    assert rules.drug_class("HYPERICUM") == "st johns wort"
    assert not rules.is_photosensitising("paracetamol")
    assert rules.drug_class("  ") is None
    with pytest.raises(ValidationError):
        ScreeningRules(isotretinoin_washout_months=0)
    with pytest.raises(ValidationError, match="must not be empty"):
        ScreeningRules(photosensitising_drugs=("  ",))
    with pytest.raises(ValidationError, match="must not be empty"):
        ScreeningRules(photosensitising_drugs={"nsaids": ("ibuprofen", " ")})
    with pytest.raises(ValidationError, match="class names must not be empty"):
        ScreeningRules(photosensitising_drugs={" ": ("ibuprofen",)})


DEFAULT_GENERICS = [
    (name, drug_class)
    for drug_class, names in DEFAULT_PHOTOSENSITISING_DRUGS.items()
    for name in names
]


@pytest.mark.parametrize(("name", "drug_class"), DEFAULT_GENERICS)
def test_default_generic_names_match_their_class(name: str, drug_class: str) -> None:
    rules = ScreeningRules()
    assert rules.drug_class(name) == drug_class
    assert rules.drug_class(f"  {name.upper()} ") == drug_class
    assert rules.drug_class(drug_class) == drug_class
    assert rules.is_photosensitising(name)


def test_default_drug_list_examples() -> None:
    rules = ScreeningRules()
    assert rules.drug_class("Doxycycline") == "tetracyclines"
    assert rules.drug_class("Ciprofloxacin") == "fluoroquinolones"
    assert rules.drug_class("co-trimoxazole") == "sulfonamides"
    assert rules.drug_class("Hydrochlorothiazide") == "thiazides"
    assert rules.drug_class("Ibuprofen") == "nsaids"
    assert rules.drug_class("Acitretin") == "retinoids"
    assert rules.drug_class("St John's Wort") == "st johns wort"
    assert rules.drug_class("Hypericum") == "st johns wort"
    # isotretinoin has its own question and washout: not on the drug list
    assert rules.drug_class("isotretinoin") is None
    assert rules.drug_class("amiodarone") is None


def test_a_drug_in_two_classes_is_refused() -> None:
    with pytest.raises(ValidationError, match="'ibuprofen' is listed under two classes"):
        ScreeningRules(photosensitising_drugs={"nsaids": ("ibuprofen",), "other": ("Ibuprofen",)})
    with pytest.raises(ValidationError, match="two classes"):
        ScreeningRules(photosensitising_drugs={"nsaids": ("tetracyclines",), "tetracyclines": ()})


def test_flat_drug_list_is_still_accepted() -> None:
    rules = ScreeningRules(photosensitising_drugs=["Tetracyclines", "Amiodarone", "amiodarone"])
    # a default class name brings its generic names; another entry is its own class
    assert rules.photosensitising_drugs == {
        "tetracyclines": DEFAULT_PHOTOSENSITISING_DRUGS["tetracyclines"],
        "amiodarone": (),
    }
    assert rules.drug_class("doxycycline") == "tetracyclines"
    assert rules.drug_class("AMIODARONE") == "amiodarone"
    assert rules.drug_class("ibuprofen") is None  # the clinic left NSAIDs out
    # a generic name listed next to its default class is not a second class
    both = ScreeningRules(photosensitising_drugs=["doxycycline", "tetracyclines"])
    assert list(both.photosensitising_drugs) == ["tetracyclines"]


# A protocol as stored before the drug classes (clinics table, recorded histories).
LEGACY_SCREENING = {
    "wound_deferral_days": 14,
    "tan_deferral_days": 28,
    "infection_deferral_days": 14,
    "isotretinoin_washout_months": 6,
    "photosensitising_drug_washout_days": 30,
    "photosensitising_drugs": [
        "tetracyclines",
        "fluoroquinolones",
        "sulfonamides",
        "thiazides",
        "nsaids",
        "retinoids",
        "st johns wort",
    ],
    "conservative_fitzpatrick_from": 4,
}


def test_stored_legacy_protocol_still_parses() -> None:
    cp = ClinicProtocol.model_validate({"protocol": {"screening": LEGACY_SCREENING}})
    rules = cp.protocol.screening
    assert rules == ScreeningRules()  # the old default list means the new default classes
    assert rules.drug_class("minocycline") == "tetracyclines"
    dumped = cp.model_dump(mode="json")
    # the invented default washout is accepted but ignored, and never written back
    assert "photosensitising_drug_washout_days" not in dumped["protocol"]["screening"]
    assert not hasattr(rules, "photosensitising_drug_washout_days")
    assert ClinicProtocol.model_validate(dumped) == cp
    assert ClinicProtocol.model_validate_json(cp.model_dump_json()) == cp


def test_protocol_wording_helpers() -> None:
    assert Protocol().spf_label() == "SPF 50"
    assert Protocol(spf_factor=30).spf_label() == "SPF 30"
    assert Protocol().spf_period() == "2 months"
    assert Protocol(spf_months=1).spf_period() == "1 month"
    assert Protocol().review_period() == "3 months"
    assert Protocol(review_months=1).review_period() == "1 month"


@pytest.mark.parametrize(
    ("field", "ok", "bad"),
    [
        ("review_early_days", (0, 14), (-1, 15)),
        ("spf_factor", (15, 100), (14, 101)),
        ("completion_clock_skew_minutes", (0, 120), (-1, 121)),
    ],
)
def test_new_protocol_field_bounds(field: str, ok: tuple[int, int], bad: tuple[int, int]) -> None:
    for value in ok:
        assert getattr(Protocol.model_validate({field: value}), field) == value
    for value in bad:
        with pytest.raises(ValidationError, match=field):
            Protocol.model_validate({field: value})


def test_models_are_frozen() -> None:
    p = Protocol()
    with pytest.raises(ValidationError):
        p.spf_months = 3  # type: ignore[misc]


def test_date_range_inclusive_and_validated() -> None:
    one_day = DateRange(start=date(2027, 5, 1), end=date(2027, 5, 1))
    assert one_day.contains(date(2027, 5, 1))
    assert not one_day.contains(date(2027, 5, 2))
    with pytest.raises(ValidationError, match="must be on or after start"):
        DateRange(start=date(2027, 5, 2), end=date(2027, 5, 1))


class TestClinicSettings:
    def test_default_and_hemisphere_summers(self) -> None:
        assert ClinicSettings().effective_summer_months() == (6, 7, 8)
        assert ClinicSettings(hemisphere="south").effective_summer_months() == (12, 1, 2)

    def test_explicit_summer_overrides_and_is_normalised(self) -> None:
        c = ClinicSettings(hemisphere="south", summer_months=(1, 2, 12))
        assert c.effective_summer_months() == (12, 1, 2)
        assert ClinicSettings(summer_months=(7,)).effective_summer_months() == (7,)
        assert ClinicSettings(summer_months=(8, 6, 7)).effective_summer_months() == (6, 7, 8)

    @pytest.mark.parametrize(
        ("months", "message"),
        [
            ((6, 8), "contiguous"),
            ((12, 2), "contiguous"),
            ((0, 1), "1–12"),
            ((13,), "1–12"),
            ((6, 6, 7), "repeat"),
            (tuple(range(1, 13)), "at least one month outside summer"),
            ((), "at least one month"),
        ],
    )
    def test_bad_summer_months(self, months: tuple[int, ...], message: str) -> None:
        with pytest.raises(ValidationError, match=message):
            ClinicSettings(summer_months=months)

    def test_eleven_summer_months_allowed_by_settings(self) -> None:
        c = ClinicSettings(summer_months=tuple(m for m in range(1, 13) if m != 3))
        assert c.effective_summer_months()[0] == 4

    def test_timezone(self) -> None:
        assert ClinicSettings(timezone="Pacific/Kiritimati").tz().key == "Pacific/Kiritimati"
        with pytest.raises(ValidationError, match="unknown time zone 'Mars/Base'"):
            ClinicSettings(timezone="Mars/Base")
        with pytest.raises(ValidationError, match="unknown time zone"):
            ClinicSettings(timezone="../etc/passwd")

    def test_open_weekdays(self) -> None:
        assert ClinicSettings(open_weekdays=(4, 0, 0)).open_weekdays == (0, 4)
        with pytest.raises(ValidationError, match="at least one day"):
            ClinicSettings(open_weekdays=())
        with pytest.raises(ValidationError, match="0–6"):
            ClinicSettings(open_weekdays=(7,))

    def test_session_start(self) -> None:
        assert ClinicSettings(session_start="10:30").session_start == time(10, 30)
        with pytest.raises(ValidationError, match="quote it in YAML"):
            ClinicSettings(session_start=630)


def test_clinic_protocol_season_must_be_longer_than_buffer() -> None:
    # Only February outside summer: 28 days in the shortest year.
    eleven = tuple(m for m in range(1, 13) if m != 2)
    with pytest.raises(ValidationError, match=r"\(28 days\) must be longer"):
        ClinicProtocol.model_validate({"clinic": {"summer_months": eleven}})
    ok = ClinicProtocol.model_validate(
        {"clinic": {"summer_months": eleven}, "protocol": {"summer_buffer_days": 27}}
    )
    assert ok.protocol.summer_buffer_days == 27


class TestLoader:
    def test_example_toml(self) -> None:
        cp = load_clinic_protocol(EXAMPLES / "clinic.toml")
        assert cp.clinic.timezone == "Europe/Paris"
        assert cp.protocol.numbing_lead_minutes == 30
        assert cp.protocol.version == "pore-2026.1-paris"
        assert cp.clinic.session_start == time(9, 0)
        assert cp.protocol.screening.drug_class("doxycycline") == "tetracyclines"
        assert cp.protocol.screening == ScreeningRules()
        assert cp.protocol.spf_factor == 50
        assert cp.protocol.review_early_days == 3

    def test_legacy_washout_key_in_a_file_is_accepted(self, tmp_path: Path) -> None:
        f = tmp_path / "old.toml"
        f.write_text(
            "[protocol.screening]\nphotosensitising_drug_washout_days = 30\n"
            'photosensitising_drugs = ["nsaids", "amiodarone"]\n'
        )
        rules = load_clinic_protocol(f).protocol.screening
        assert rules.drug_class("naproxen") == "nsaids"
        assert rules.drug_class("amiodarone") == "amiodarone"

    def test_drug_classes_in_toml_and_yaml(self, tmp_path: Path) -> None:
        f = tmp_path / "c.toml"
        f.write_text(
            "[protocol.screening.photosensitising_drugs]\n"
            'tetracyclines = ["doxycycline"]\n'
            '"St John\'s wort" = ["hypericum"]\n'
            'antiarrhythmics = ["amiodarone"]\n'
        )
        rules = load_clinic_protocol(f).protocol.screening
        assert rules.drug_class("Amiodarone") == "antiarrhythmics"
        assert rules.drug_class("minocycline") is None  # the clinic's list, not the code's
        assert rules.drug_class("st johns wort") == "st johns wort"
        y = tmp_path / "c.yaml"
        y.write_text("protocol:\n  screening:\n    photosensitising_drugs:\n      nsaids: []\n")
        assert load_clinic_protocol(y).protocol.screening.photosensitising_drugs == {"nsaids": ()}

    def test_example_yaml_south(self) -> None:
        cp = load_clinic_protocol(str(EXAMPLES / "clinic-south.yaml"))
        assert cp.clinic.effective_summer_months() == (12, 1, 2)
        assert cp.clinic.open_weekdays == (0, 1, 2, 3, 4, 5)
        assert cp.protocol.spf_months == 3
        assert cp.protocol.screening.is_photosensitising("St John's Wort")
        assert cp.protocol.screening.is_photosensitising("Amiodarone")
        # the flat list's default classes bring their generic names
        assert cp.protocol.screening.drug_class("Doxycycline") == "tetracyclines"

    def test_json_and_empty_files(self, tmp_path: Path) -> None:
        f = tmp_path / "c.json"
        f.write_text(json.dumps({"clinic": {"hemisphere": "south"}}))
        assert load_clinic_protocol(f).clinic.hemisphere == "south"
        empty = tmp_path / "empty.yaml"
        empty.write_text("")
        assert load_clinic_protocol(empty) == ClinicProtocol()
        yml = tmp_path / "c.yml"
        yml.write_text("protocol:\n  spf_months: 3\n")
        assert load_clinic_protocol(yml).protocol.spf_months == 3

    def test_unknown_keys_one_line_each(self, tmp_path: Path) -> None:
        f = tmp_path / "bad.toml"
        f.write_text(
            "[clinic]\ntimezon = 'UTC'\n[protocol]\nspf_month = 3\n"
            "[protocol.screening]\ntan_days = 3\n[extra]\na = 1\n"
        )
        with pytest.raises(ProtocolFileError) as info:
            load_clinic_protocol(f)
        lines = info.value.problems
        assert len(lines) == 4
        assert str(info.value).count("\n") == 3
        assert all(line.startswith(f"{f}: ") for line in lines)
        joined = str(info.value)
        assert "clinic.timezon: unknown key; allowed keys here: clinic_id" in joined
        assert "protocol.spf_month: unknown key" in joined
        assert "protocol.screening.tan_days: unknown key" in joined
        assert "extra: unknown key; allowed keys here: clinic, protocol" in joined

    def test_rule_violations_name_field(self, tmp_path: Path) -> None:
        f = tmp_path / "bad.yaml"
        f.write_text(
            "clinic:\n  timezone: Mars/Base\n  summer_months: [6, 8]\n"
            "protocol:\n  target_interval_min_days: 30\n"
        )
        with pytest.raises(ProtocolFileError) as info:
            load_clinic_protocol(f)
        text = str(info.value)
        assert f"{f}: clinic.timezone: unknown time zone 'Mars/Base'" in text
        assert f"{f}: clinic.summer_months: summer months must be one contiguous run" in text
        assert "target_interval_min_days (30) must not exceed target_interval_max_days" in text
        assert "Value error" not in text

    def test_unquoted_yaml_time_is_refused(self, tmp_path: Path) -> None:
        f = tmp_path / "t.yaml"
        f.write_text("clinic:\n  session_start: 10:30\n")
        with pytest.raises(ProtocolFileError, match=r"clinic.session_start: .*quote it in YAML"):
            load_clinic_protocol(f)

    def test_toml_local_time_is_accepted(self, tmp_path: Path) -> None:
        f = tmp_path / "t.toml"
        f.write_text("[clinic]\nsession_start = 10:30:00\n")
        assert load_clinic_protocol(f).clinic.session_start == time(10, 30)

    @pytest.mark.parametrize(
        ("name", "content", "message"),
        [
            ("c.toml", "[clinic\n", "not valid TOML"),
            ("c.yaml", "clinic: [\n", "not valid YAML"),
            ("c.json", "{", "not valid JSON"),
            ("c.yaml", "- 1\n- 2\n", "must be a mapping"),
            ("c.ini", "", "unknown file type '.ini'"),
        ],
    )
    def test_unparseable(self, tmp_path: Path, name: str, content: str, message: str) -> None:
        f = tmp_path / name
        f.write_text(content)
        with pytest.raises(ProtocolFileError, match=message) as info:
            load_clinic_protocol(f)
        assert str(info.value).startswith(str(f))
        assert "\n" not in str(info.value)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(ProtocolFileError, match="cannot read the file"):
            load_clinic_protocol(tmp_path / "nope.toml")

    def test_from_dict(self) -> None:
        cp = clinic_protocol_from_dict({"protocol": {"screening": {"tan_deferral_days": 21}}})
        assert cp.protocol.screening.tan_deferral_days == 21
        assert clinic_protocol_from_dict(None) == ClinicProtocol()
        with pytest.raises(ProtocolFileError, match=r"^clinic settings: clinic.hemisphere: "):
            clinic_protocol_from_dict({"clinic": {"hemisphere": "east"}})
        with pytest.raises(ProtocolFileError, match="must be a mapping"):
            clinic_protocol_from_dict([1, 2])

    def test_protocol_error_is_value_error(self) -> None:
        assert issubclass(ProtocolFileError, ValueError)
