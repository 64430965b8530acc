"""Protocol model, clinic settings and the clinic file loader."""

from __future__ import annotations

import json
from datetime import date, time
from pathlib import Path

import pytest
from pydantic import ValidationError

from workflows.protocol import (
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
    assert (s.isotretinoin_washout_months, s.photosensitising_drug_washout_days) == (6, 30)
    assert "st johns wort" in s.photosensitising_drugs
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
    rules = ScreeningRules(photosensitising_drugs=("St John's  Wort", "NSAIDs", "nsaids"))
    assert rules.photosensitising_drugs == ("st johns wort", "nsaids")
    assert rules.is_photosensitising("ST. JOHN'S WORT".replace(".", ""))
    assert not rules.is_photosensitising("paracetamol")
    with pytest.raises(ValidationError):
        ScreeningRules(isotretinoin_washout_months=0)
    with pytest.raises(ValidationError):
        ScreeningRules(photosensitising_drugs=("  ",))


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

    def test_example_yaml_south(self) -> None:
        cp = load_clinic_protocol(str(EXAMPLES / "clinic-south.yaml"))
        assert cp.clinic.effective_summer_months() == (12, 1, 2)
        assert cp.clinic.open_weekdays == (0, 1, 2, 3, 4, 5)
        assert cp.protocol.spf_months == 3
        assert cp.protocol.screening.is_photosensitising("St John's Wort")
        assert cp.protocol.screening.is_photosensitising("Amiodarone")

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
