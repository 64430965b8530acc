"""``journey plan``: the installed command (subprocess) and a throwaway Typer app."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli import plan

JOURNEY = Path(sys.executable).parent / "journey"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_journey(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(JOURNEY), "plan", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "120", "LC_ALL": "C.UTF-8"},
    )


def make_app() -> typer.Typer:
    app = typer.Typer()
    plan.register(app)
    return app


runner = CliRunner()


@pytest.mark.skipif(not JOURNEY.exists(), reason="journey console script not installed")
class TestInstalledCommand:
    def test_table(self) -> None:
        result = run_journey("--pore-size", "large", "--from", "2027-04-20")
        assert result.returncode == 0, result.stderr
        out = result.stdout
        assert "Wednesday 1 September 2027" in out
        assert "21 days" in out
        assert "Starts on: Wednesday 1 September 2027" in out
        assert "Last session: Wednesday 3 November 2027" in out
        assert "SPF 50 until: Monday 3 January 2028" in out
        assert "Review on: Thursday 3 February 2028" in out
        assert "Waiting: A course of 4 sessions starting on 20 April 2027" in out
        assert result.stderr == ""

    def test_json_with_clinic_file(self) -> None:
        result = run_journey(
            "--pore-size",
            "large",
            "--from",
            "2026-09-01",
            "--clinic",
            str(EXAMPLES / "clinic-south.yaml"),
            "--json",
        )
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        assert data["requested_from"] == "2026-09-01"
        assert data["sessions"] == ["2027-03-01", "2027-03-22", "2027-04-12", "2027-05-03"]
        assert data["starts_on"] == "2027-03-01"
        assert data["last_session_on"] == "2027-05-03"
        assert data["spf_until"] == "2027-08-03"  # this clinic: 3 months
        assert data["review_on"] == "2027-08-03"
        assert "summer starts on 1 December 2026" in data["waiting_reason"]
        assert data["reasons"][0]["rule"] == "after_season_cutoff"

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--pore-size", "huge"], "unknown pore-size grade 'huge'"),
            (["--pore-size", "large", "--from", "2027-02-30"], "is not a date"),
            (["--pore-size", "large", "--timezone", "Mars/Base"], "unknown time zone"),
            (["--pore-size", "large", "--clinic", "/nonexistent.toml"], "cannot read the file"),
        ],
    )
    def test_bad_input_exit_2(self, args: list[str], message: str) -> None:
        result = run_journey(*args)
        assert result.returncode == 2
        assert result.stderr.startswith("error: ")
        assert message in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def test_trip_and_timezone_json() -> None:
    result = runner.invoke(
        make_app(),
        [
            "plan",
            "--pore-size",
            "small",
            "--from",
            "2026-10-01",
            "--timezone",
            "Pacific/Kiritimati",
            "--hemisphere",
            "north",
            "--trip",
            "2026-12-01:2026-12-10",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["starts_on"] == "2026-12-11"
    assert data["reasons"][0]["rule"] == "too_close_to_trip"


def test_conservative_and_default_from() -> None:
    result = runner.invoke(
        make_app(), ["plan", "--pore-size", "moderate", "--conservative", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["interval_days"] == [28, 42]
    assert len(data["sessions"]) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--pore-size is required"),
        (["--pore-size", "large", "--trip", "2027-05-01"], "must be START:END"),
        (["--pore-size", "large", "--trip", "2027-05-10:2027-05-01"], "ends before it starts"),
        (["--pore-size", "large", "--trip", "2027-05-01:soon"], "is not a date"),
        (["--pore-size", "large", "--hemisphere", "east"], "clinic.hemisphere"),
        (
            ["--pore-size", "large", "--clinic", "x.toml", "--timezone", "UTC"],
            "either --clinic or --timezone",
        ),
    ],
)
def test_bad_input_in_process(args: list[str], message: str) -> None:
    result = runner.invoke(make_app(), ["plan", *args])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert message in result.stderr


def test_invalid_clinic_file_one_line_per_problem(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[clinic]\ntimezone = 'Nowhere/City'\nopen_days = [1]\n")
    result = runner.invoke(make_app(), ["plan", "--pore-size", "large", "--clinic", str(f)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"error: {f}: clinic.") for line in lines)


def test_register_keeps_existing_callback() -> None:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Root."""

    plan.register(app)
    result = runner.invoke(app, ["plan", "--pore-size", "small", "--from", "2026-10-01"])
    assert result.exit_code == 0
    assert "Starts on: Thursday 1 October 2026" in result.stdout
